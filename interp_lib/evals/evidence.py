"""Evidence for a conclusion: intervals, nulls, controls, and a record of what was found.

A sentence in the book that concludes something rests on a :class:`Finding`: what is claimed,
the statistic, its 95% interval over the unit that was sampled (texts, prompts, windows), the
value of a control or null model, and whether the claim holds. :func:`findings_table` shows a
list of findings as the visible "what the evidence says" table of a section; the chapter's
sentence then follows ``finding.holds`` (:func:`verdict` picks its words) rather than a number
typed in by hand.

The tools:

* :func:`bootstrap_ci`: a percentile bootstrap interval of any statistic over resampled units;
  for the share of yes/no outcomes (0/1 units, the mean) it gives the exact Clopper-Pearson
  interval instead (:func:`interval_method` says which), since the bootstrap of a share from a
  few outcomes is degenerate (7 of 7 would give [1, 1]).
* :func:`proportion_ci`, :func:`share_ci`: Clopper-Pearson (exact) or Wilson (score) intervals
  for a share, valid at any n; :func:`difference_ci`: Newcombe's interval for a difference of
  two shares (what :func:`two_sample_ci` gives for two groups of 0/1 units).
* :func:`binomial_test`, :func:`fisher_test`: exact p-values for a count against a chance level
  and for a 2x2 table.
* :func:`permutation_null`: the statistic under shuffled labels (a null model) and a p-value.
* :func:`random_directions`: random directions of matched norm, the control for an intervention
  along a feature's direction.
* :func:`rank_agreement`, :func:`sign_agreement`, :func:`size_ratio`: how well a prediction
  (e.g. attribution) agrees with a measurement (e.g. a real ablation).
* :func:`auroc`, :func:`auroc_table`, :func:`auroc_test`: a detection AUROC, one per feature and
  explanation, and whether it is above chance (0.5).
"""

from __future__ import annotations

from typing import Callable, Literal, NamedTuple, Sequence

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
    method: str = ""
    """How the interval was computed, e.g. ``"Clopper-Pearson"``, ``"Wilson"``,
    ``"bootstrap (percentile, 2000 resamples)"`` (empty where the caller built it by hand)."""

    def excludes(self, value: float) -> bool:
        """True if ``value`` lies outside the interval."""
        return not (self.low <= value <= self.high)

    def __str__(self) -> str:
        return f"{self.estimate:.3g} [{self.low:.3g}, {self.high:.3g}]"


IntervalMethod = Literal["auto", "bootstrap", "clopper-pearson", "wilson"]
"""What :func:`bootstrap_ci` may be asked to use: ``"auto"`` picks an exact interval for a
share of 0/1 outcomes and the percentile bootstrap otherwise."""

_PROPORTION_METHODS = {"clopper-pearson": "Clopper-Pearson", "wilson": "Wilson"}
_ALTERNATIVES = ("greater", "less", "two-sided")


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise InvalidArgumentError(f"level must be in (0, 1), got {level}")


def _is_count(x: object) -> bool:
    try:
        return float(x).is_integer()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _check_counts(successes: int, n: int, suffix: str = "") -> tuple[int, int]:
    """``successes`` and ``n`` as ints, checked: 1 <= n and 0 <= successes <= n (``suffix``
    names the arguments, e.g. ``"_a"`` for ``successes_a`` and ``n_a``)."""
    if not _is_count(n) or n < 1:
        raise InvalidArgumentError(f"n{suffix} must be an integer >= 1, got {n}")
    if not _is_count(successes) or not 0 <= successes <= n:
        raise InvalidArgumentError(
            f"successes{suffix} must be an integer in [0, n{suffix}] = [0, {int(n)}], "
            f"got {successes}"
        )
    return int(successes), int(n)


def proportion_ci(
    successes: int,
    n: int,
    *,
    level: float = LEVEL,
    method: Literal["clopper-pearson", "wilson"] = "clopper-pearson",
) -> Interval:
    """Interval of a share from ``successes`` of ``n`` yes/no outcomes, valid at any n."""
    k, n = _check_counts(successes, n)
    _check_level(level)
    if method not in _PROPORTION_METHODS:
        raise InvalidArgumentError(
            f"method must be one of {sorted(_PROPORTION_METHODS)}, got {method!r}"
        )
    alpha = 1 - level
    if method == "clopper-pearson":
        low = float(stats.beta.ppf(alpha / 2, k, n - k + 1)) if k > 0 else 0.0
        high = float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k)) if k < n else 1.0
    else:
        z = float(stats.norm.ppf(1 - alpha / 2))
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        low = 0.0 if k == 0 else max(0.0, float(centre - half))
        high = 1.0 if k == n else min(1.0, float(centre + half))
    return Interval(k / n, low, high, _PROPORTION_METHODS[method])


def is_binary(values: Sequence | np.ndarray) -> bool:
    """True if ``values`` is a non-empty 1-D array of yes/no outcomes: booleans, one per unit.

    The type says it, not the values: a share measured per unit (of tokens, of samples) can come
    out exactly 0 or 1 on every unit without being one yes/no trial each, and a paired difference
    of outcomes can happen to be all 0 and 1; both keep the bootstrap unless passed as booleans.
    """
    arr = np.asarray(values)
    return arr.dtype == np.bool_ and arr.ndim == 1 and arr.size > 0


def _zero_one(values: Sequence | np.ndarray) -> bool:
    """A non-empty 1-D array whose every value is 0 or 1 (for a method asked for by name)."""
    arr = np.asarray(values, dtype=np.float64)
    return arr.ndim == 1 and arr.size > 0 and bool(np.isin(arr, (0.0, 1.0)).all())


def share_ci(
    outcomes: Sequence | np.ndarray,
    *,
    level: float = LEVEL,
    method: Literal["clopper-pearson", "wilson"] = "clopper-pearson",
) -> Interval:
    """Interval of the share of yes outcomes among ``outcomes`` (booleans or 0/1, one per unit)."""
    if not _zero_one(outcomes):
        raise InvalidArgumentError("outcomes must be a non-empty 1-D sequence of 0/1 or booleans")
    arr = np.asarray(outcomes, dtype=np.float64)
    return proportion_ci(int(arr.sum()), arr.size, level=level, method=method)


def binomial_test(
    successes: int,
    n: int,
    p0: float,
    *,
    alternative: Literal["greater", "less", "two-sided"] = "greater",
) -> float:
    """Exact binomial p-value of ``successes`` of ``n`` against the chance share ``p0``
    (default one-sided: that the true share exceeds ``p0``)."""
    k, n = _check_counts(successes, n)
    if not 0 <= p0 <= 1:
        raise InvalidArgumentError(f"p0 must be in [0, 1], got {p0}")
    if alternative not in _ALTERNATIVES:
        raise InvalidArgumentError(
            f"alternative must be one of {_ALTERNATIVES}, got {alternative!r}"
        )
    return float(stats.binomtest(k, n, float(p0), alternative=alternative).pvalue)


def fisher_test(
    table: Sequence[Sequence[int]] | np.ndarray,
    *,
    alternative: Literal["greater", "less", "two-sided"] = "two-sided",
) -> float:
    """Fisher's exact p-value for a 2x2 table of counts ``[[yes_a, no_a], [yes_b, no_b]]``
    (``"greater"``: group a has the larger share of yes)."""
    t = np.asarray(table, dtype=np.float64)
    if t.shape != (2, 2) or (t < 0).any() or (t != np.round(t)).any():
        raise InvalidArgumentError(
            f"table must be 2x2 of non-negative integer counts, got {t.tolist()}"
        )
    if alternative not in _ALTERNATIVES:
        raise InvalidArgumentError(
            f"alternative must be one of {_ALTERNATIVES}, got {alternative!r}"
        )
    return float(stats.fisher_exact(t.astype(np.int64), alternative=alternative).pvalue)


def difference_ci(
    successes_a: int,
    n_a: int,
    successes_b: int,
    n_b: int,
    *,
    level: float = LEVEL,
) -> Interval:
    """Newcombe's hybrid score interval of share a minus share b (two independent groups of
    yes/no outcomes), from the Wilson intervals of each share; valid at small n."""
    ka, na = _check_counts(successes_a, n_a, "_a")
    kb, nb = _check_counts(successes_b, n_b, "_b")
    a = proportion_ci(ka, na, level=level, method="wilson")
    b = proportion_ci(kb, nb, level=level, method="wilson")
    d = a.estimate - b.estimate
    low = d - float(np.hypot(a.estimate - a.low, b.high - b.estimate))
    high = d + float(np.hypot(a.high - a.estimate, b.estimate - b.low))
    return Interval(d, max(-1.0, low), min(1.0, high), "Newcombe (Wilson score)")


def _bootstrap_method(n_boot: int) -> str:
    return f"bootstrap (percentile, {n_boot} resamples)"


def _is_mean(statistic: Callable) -> bool:
    return statistic is np.mean or statistic is np.average


def interval_method(
    units: Sequence | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    n_boot: int = 2000,
) -> str:
    """The method :func:`bootstrap_ci` uses by default for ``units`` and ``statistic``: the exact
    Clopper-Pearson interval for the mean of yes/no outcomes passed as booleans (a share), else
    the bootstrap."""
    if _is_mean(statistic) and is_binary(units):
        return "Clopper-Pearson"
    return _bootstrap_method(n_boot)


def bootstrap_ci(
    units: Sequence | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    n_boot: int = 2000,
    level: float = LEVEL,
    seed: int = 0,
    method: IntervalMethod = "auto",
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` over ``units`` resampled with replacement.

    ``units``: one value (or row) per sampled unit, e.g. one score per prompt; ``statistic``
    maps an array of units (same layout) to a number. Units, not tokens: resample what was
    drawn independently. With ``method="auto"``, the share of yes/no outcomes (1-D booleans, one
    per unit, ``statistic`` ``np.mean``) gets the exact Clopper-Pearson interval instead, which
    stays valid at small n where the bootstrap collapses (7 of 7 would give [1, 1]);
    ``"clopper-pearson"`` or ``"wilson"`` ask for that interval (0/1 units only),
    ``"bootstrap"`` for the bootstrap always. ``Interval.method`` records which was used.
    """
    auto_share = interval_method(units, statistic) == "Clopper-Pearson"
    arr = np.asarray(units, dtype=np.float64)
    if arr.shape[0] < 2:
        raise InvalidArgumentError(
            f"need at least 2 units for a bootstrap interval, got {arr.shape[0]}"
        )
    _check_level(level)
    if method not in ("auto", "bootstrap", *_PROPORTION_METHODS):
        raise InvalidArgumentError(
            "method must be one of 'auto', 'bootstrap', 'clopper-pearson', 'wilson', "
            f"got {method!r}"
        )
    if method in _PROPORTION_METHODS and not (_is_mean(statistic) and _zero_one(arr)):
        raise InvalidArgumentError(
            f"method {method!r} is for the share of 0/1 units (statistic np.mean): units must "
            "be 1-D, every value 0 or 1"
        )
    if method in _PROPORTION_METHODS or (method == "auto" and auto_share):
        pick = "clopper-pearson" if method == "auto" else method
        return proportion_ci(int(arr.sum()), arr.size, level=level, method=pick)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.shape[0], size=(n_boot, arr.shape[0]))
    boot = np.array([statistic(arr[i]) for i in idx], dtype=np.float64)
    return _percentile_interval(
        float(statistic(arr)), boot[~np.isnan(boot)], level, _bootstrap_method(n_boot)
    )


def _percentile_interval(
    estimate: float, boot: np.ndarray, level: float, method: str = ""
) -> Interval:
    """``estimate`` with the central ``level`` range of its bootstrap draws ``boot`` (NaN bounds
    when there are none)."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail]) if boot.size else (np.nan, np.nan)
    return Interval(float(estimate), float(low), float(high), method)


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
    method: str = ""
    """How the evidence was computed (the interval's method, or the test that decided
    ``holds``, e.g. ``"exact binomial"``, ``"permutation"``)."""


def finding(
    claim: str,
    statistic: str,
    value: Interval,
    *,
    control: str,
    control_value: float = float("nan"),
    holds: bool,
    method: str | None = None,
) -> Finding:
    """A :class:`Finding` (``holds`` computed by the caller; ``method`` defaults to the
    interval's)."""
    how = value.method if method is None and isinstance(value, Interval) else method
    return Finding(claim, statistic, value, control, float(control_value), bool(holds), how or "")


def outcome(f: Finding) -> str:
    """What a chapter glues for a ``verdict`` block: ``"holds"`` or ``"does not hold"``."""
    return "holds" if f.holds else "does not hold"


def verdict(f: Finding, holds: str, fails: str) -> str:
    """The words a sentence uses: ``holds`` if the finding holds, else ``fails`` (chapters write
    their sentences as ``verdict`` blocks in Markdown and glue :func:`outcome` instead)."""
    return holds if f.holds else fails


def findings_table(findings: Sequence[Finding]) -> pd.DataFrame:
    """The evidence table of a section: one row per finding, intervals and methods written
    out."""
    rows = [
        {
            "claim": f.claim,
            "statistic": f.statistic,
            "estimate": f.value.estimate,
            "95% interval": f"[{f.value.low:.3g}, {f.value.high:.3g}]",
            "method": f.method or getattr(f.value, "method", ""),
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
    method: Literal["auto", "bootstrap", "newcombe"] = "auto",
) -> Interval:
    """Percentile bootstrap interval of ``statistic(a, b)`` (default: mean of ``a`` minus mean of
    ``b``, NaNs left out) with the two groups of units resampled independently.

    With ``method="auto"``, two groups of yes/no outcomes (booleans) and the default
    statistic get Newcombe's score interval of the difference of shares (:func:`difference_ci`)
    instead, valid at small n; ``"newcombe"`` asks for it, ``"bootstrap"`` for the bootstrap.
    """
    auto_shares = statistic is None and is_binary(a) and is_binary(b)
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if x.size < 2 or y.size < 2:
        raise InvalidArgumentError(
            f"need at least 2 units in each group, got {x.size} and {y.size}"
        )
    _check_level(level)
    if method not in ("auto", "bootstrap", "newcombe"):
        raise InvalidArgumentError(
            f"method must be one of 'auto', 'bootstrap', 'newcombe', got {method!r}"
        )
    shares = statistic is None and _zero_one(x) and _zero_one(y)
    if method == "newcombe" and not shares:
        raise InvalidArgumentError(
            "method 'newcombe' is for two groups of 0/1 units with the default statistic"
        )
    if method == "newcombe" or (method == "auto" and auto_shares):
        return difference_ci(int(x.sum()), x.size, int(y.sum()), y.size, level=level)
    stat = statistic or (lambda p, q: float(p.mean() - q.mean()))
    rng = np.random.default_rng(seed)
    boot = np.array(
        [
            stat(x[rng.integers(0, x.size, x.size)], y[rng.integers(0, y.size, y.size)])
            for _ in range(n_boot)
        ]
    )
    return _percentile_interval(stat(x, y), boot, level, _bootstrap_method(n_boot))


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
