"""Evidence for a conclusion: intervals, nulls, controls, and a record of what was found.

A sentence in the book that concludes something rests on a :class:`Finding`: what is claimed,
the statistic, its 95% interval over the unit that was sampled (texts, prompts, windows), the
value of a control or null model, and whether the claim holds. :func:`findings_table` shows a
list of findings as the visible "what the evidence says" table of a section; the chapter's
sentence then follows ``finding.holds`` (:func:`verdict` picks its words) rather than a number
typed in by hand.

The tools:

* :func:`bootstrap_ci`: a percentile bootstrap interval of any statistic over resampled units.
* :func:`permutation_null`: the statistic under shuffled labels (a null model) and a p-value.
* :func:`random_directions`: random directions of matched norm, the control for an intervention
  along a feature's direction.
* :func:`rank_agreement`, :func:`sign_agreement`, :func:`size_ratio`: how well a prediction
  (e.g. attribution) agrees with a measurement (e.g. a real ablation).
* :func:`auroc`, :func:`auroc_table`, :func:`auroc_test`: a detection AUROC, one per feature and
  explanation, and whether it is above chance (0.5).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from interp_lib.errors import InvalidArgumentError

LEVEL = 0.95
"""Coverage of every interval the book reports."""


class Interval(NamedTuple):
    """A point estimate with its confidence interval."""

    estimate: float
    """The statistic on the data as observed."""
    low: float
    """Lower end of the interval."""
    high: float
    """Upper end of the interval."""

    def excludes(self, value: float) -> bool:
        """True if ``value`` lies outside the interval."""
        return not (self.low <= value <= self.high)

    def __str__(self) -> str:
        return f"{self.estimate:.3g} [{self.low:.3g}, {self.high:.3g}]"


def bootstrap_ci(
    units: Sequence | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    n_boot: int = 2000,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` over ``units`` resampled with replacement.

    ``units``: one value (or row) per sampled unit, e.g. one score per prompt; ``statistic``
    maps an array of units (same layout) to a number. Units, not tokens: resample what was
    drawn independently.
    """
    arr = np.asarray(units, dtype=np.float64)
    if arr.shape[0] < 2:
        raise InvalidArgumentError(
            f"need at least 2 units for a bootstrap interval, got {arr.shape[0]}"
        )
    if not 0 < level < 1:
        raise InvalidArgumentError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.shape[0], size=(n_boot, arr.shape[0]))
    boot = np.array([statistic(arr[i]) for i in idx], dtype=np.float64)
    return _percentile_interval(float(statistic(arr)), boot[~np.isnan(boot)], level)


def _percentile_interval(estimate: float, boot: np.ndarray, level: float) -> Interval:
    """``estimate`` with the central ``level`` range of its bootstrap draws ``boot`` (NaN bounds
    when there are none)."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail]) if boot.size else (np.nan, np.nan)
    return Interval(float(estimate), float(low), float(high))


class Null(NamedTuple):
    """A statistic against its distribution under a null model."""

    observed: float
    """The statistic on the real labels."""
    null_mean: float
    """Mean of the statistic under the null."""
    null_high: float
    """The null's upper ``LEVEL`` quantile: an observed value above it beats the null."""
    p_value: float
    """Share of null draws at least as large as the observed value (add-one corrected; NaN
    where the statistic is undefined on the real labels)."""


def permutation_null(
    statistic: Callable[[np.ndarray], float],
    labels: Sequence,
    *,
    n: int = 200,
    level: float = LEVEL,
    seed: int = 0,
) -> Null:
    """``statistic(labels)`` against ``statistic(shuffled labels)`` over ``n`` shuffles."""
    lab = np.asarray(list(labels), dtype=object)
    rng = np.random.default_rng(seed)
    observed = float(statistic(lab))
    draws = np.array([statistic(rng.permutation(lab)) for _ in range(n)], dtype=np.float64)
    draws = draws[~np.isnan(draws)]
    if np.isnan(observed) or not draws.size:
        return Null(observed, float("nan"), float("nan"), float("nan"))
    p = (1 + int((draws >= observed).sum())) / (draws.size + 1)
    return Null(observed, float(draws.mean()), float(np.quantile(draws, level)), p)


def random_directions(direction: torch.Tensor, n: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` random directions ``[n, d]`` with the norm of ``direction`` [d] (Gaussian, then
    rescaled): the control for adding ``direction`` to the model."""
    d = direction.detach().flatten()
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, d.numel(), generator=g, dtype=torch.float32)
    return (r / r.norm(dim=1, keepdim=True) * d.float().norm()).to(d.dtype)


def rank_agreement(predicted: Sequence[float], actual: Sequence[float]) -> float:
    """Spearman rank correlation between a prediction and a measurement (NaN if constant)."""
    p, a = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    if p.shape != a.shape or p.size < 2:
        raise InvalidArgumentError(
            f"need two equal-length sequences of 2+ values, got {p.shape}, {a.shape}"
        )
    if np.ptp(p) == 0 or np.ptp(a) == 0:
        return float("nan")
    return float(stats.spearmanr(p, a).statistic)


def sign_agreement(predicted: Sequence[float], actual: Sequence[float]) -> float:
    """Share of pairs where prediction and measurement have the same sign (zeros left out)."""
    p, a = np.sign(np.asarray(predicted, dtype=float)), np.sign(np.asarray(actual, dtype=float))
    keep = (p != 0) & (a != 0)
    return float((p[keep] == a[keep]).mean()) if keep.any() else float("nan")


def size_ratio(predicted: Sequence[float], actual: Sequence[float]) -> float:
    """Median of |actual| / |predicted| over pairs with a non-zero prediction: 1 means the sizes
    are right, above 1 the prediction is too small."""
    p, a = np.abs(np.asarray(predicted, dtype=float)), np.abs(np.asarray(actual, dtype=float))
    keep = p > 0
    return float(np.median(a[keep] / p[keep])) if keep.any() else float("nan")


def auroc(scores, labels) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative
    (ties count half), which is the Mann-Whitney U statistic over n_pos * n_neg (scipy computes
    U)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise InvalidArgumentError(f"{s.shape[0]} scores for {y.shape[0]} labels")
    if y.all() or not y.any():
        raise InvalidArgumentError("AUROC needs at least one positive and one negative")
    return float(stats.mannwhitneyu(s[y], s[~y]).statistic / (y.sum() * (~y).sum()))


def auroc_table(windows: pd.DataFrame) -> pd.DataFrame:
    """AUROC per feature (rows) and explanation (columns) from one row per scored window
    (columns ``feature``, ``explanation``, ``score``, ``fires``), as :func:`auroc` computes it."""
    values = {
        key: auroc(w["score"], w["fires"])
        for key, w in windows.groupby(["feature", "explanation"], sort=True)
    }
    table = pd.Series(values).unstack()
    return table.rename_axis(index="feature", columns="explanation")


def auroc_test(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """One-sided p-value (Mann-Whitney U) that positives score above negatives, i.e. that the
    AUROC (:func:`auroc`) exceeds chance, 0.5."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape or y.all() or not y.any():
        raise InvalidArgumentError(
            "need one label per score, and at least one positive and one negative"
        )
    return float(stats.mannwhitneyu(s[y], s[~y], alternative="greater").pvalue)


class Finding(NamedTuple):
    """One conclusion and the evidence for it: a row of a section's evidence table."""

    claim: str
    """What is claimed, in a few words."""
    statistic: str
    """What was measured."""
    value: Interval
    """The statistic with its 95% interval."""
    control: str
    """The control or null it is compared with."""
    control_value: float
    """The control's value (NaN where the comparison is with a fixed number)."""
    holds: bool
    """Whether the claim holds on this evidence."""


def finding(
    claim: str,
    statistic: str,
    value: Interval,
    *,
    control: str,
    control_value: float = float("nan"),
    holds: bool,
) -> Finding:
    """A :class:`Finding` (``holds`` computed by the caller from the interval and the control)."""
    return Finding(claim, statistic, value, control, float(control_value), bool(holds))


def verdict(f: Finding, holds: str, fails: str) -> str:
    """The words a chapter's sentence uses: ``holds`` if the finding holds, else ``fails``."""
    return holds if f.holds else fails


def findings_table(findings: Sequence[Finding]) -> pd.DataFrame:
    """The evidence table of a section: one row per finding, intervals written out."""
    rows = [
        {
            "claim": f.claim,
            "statistic": f.statistic,
            "estimate": f.value.estimate,
            "95% interval": f"[{f.value.low:.3g}, {f.value.high:.3g}]",
            "control": f.control,
            "control value": f.control_value,
            "holds": "yes" if f.holds else "no",
        }
        for f in findings
    ]
    return pd.DataFrame(rows)


def unit_sums(values: torch.Tensor | np.ndarray, units: torch.Tensor | np.ndarray) -> np.ndarray:
    """``values`` ([n] or [n, m], one row per token) summed within each unit (``units`` [n]: the
    id of the unit each row belongs to, e.g. its context), as float64 [n_units, m] in order of
    unit id: the units over which a ratio of sums (variance explained, a share of tokens) is
    bootstrapped with :func:`bootstrap_ci`."""
    v = torch.as_tensor(values).detach().double().cpu().numpy()
    u = torch.as_tensor(units).detach().cpu().numpy().ravel()
    v = v.reshape(v.shape[0], -1)
    if v.shape[0] != u.shape[0]:
        raise InvalidArgumentError(f"{v.shape[0]} rows of values for {u.shape[0]} unit ids")
    _, inverse = np.unique(u, return_inverse=True)
    out = np.zeros((int(inverse.max()) + 1 if u.size else 0, v.shape[1]))
    np.add.at(out, inverse, v)
    return out


def two_sample_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float] | None = None,
    *,
    n_boot: int = 2000,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``statistic(a, b)`` (default: mean of ``a`` minus mean of
    ``b``, NaNs left out) with the two groups of units resampled independently."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if x.size < 2 or y.size < 2:
        raise InvalidArgumentError(
            f"need at least 2 units in each group, got {x.size} and {y.size}"
        )
    stat = statistic or (lambda p, q: float(p.mean() - q.mean()))
    rng = np.random.default_rng(seed)
    boot = np.array(
        [
            stat(x[rng.integers(0, x.size, x.size)], y[rng.integers(0, y.size, y.size)])
            for _ in range(n_boot)
        ]
    )
    return _percentile_interval(stat(x, y), boot, level)


def grouped_bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    rows: Sequence | np.ndarray,
    groups: Sequence,
    *,
    n_boot: int = 2000,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """Bootstrap interval of ``statistic(rows)`` resampling whole groups of rows (e.g. all the
    features measured on one prompt) with replacement: the interval over the sampled groups."""
    arr = np.asarray(rows, dtype=np.float64)
    keys = np.asarray(list(groups), dtype=object)
    if keys.shape[0] != arr.shape[0]:
        raise InvalidArgumentError(
            f"need one group per row, got {keys.shape[0]} groups for {arr.shape[0]}"
        )
    members = [np.flatnonzero(keys == k) for k in dict.fromkeys(keys.tolist())]

    def pooled(idx: np.ndarray) -> float:
        return statistic(arr[np.concatenate([members[int(i)] for i in idx])])

    return bootstrap_ci(np.arange(len(members)), pooled, n_boot=n_boot, level=level, seed=seed)
