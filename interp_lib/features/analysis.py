"""Which features matter over a set of texts: rankings, categories, specialists.

Every function takes a per-text activation matrix ``pooled`` of shape [n_texts, d_sae] (usually
``Encoded.max`` from :func:`interp_lib.model.encoding.encode_texts`: each feature's largest
activation over the text's tokens), as a torch tensor or a numpy array, and returns numpy arrays or
small
pandas tables: :func:`strongest_features`, :func:`frequent_features`, :func:`selective_features`,
:func:`specialist_scores` and :func:`category_specialists` (with "strong" defined relative to each
feature's own maximum, see :func:`strong_mask`), :func:`category_means`,
:func:`category_common_features`, :func:`coactivation`, :func:`features_for_concept` (composite
score = frequency x mean activation, optionally contrasted with a background).
:func:`category_concentration`, :func:`specialisation_summary` and :func:`paired_subsamples`
compare how specialised the features of several SAEs are; :mod:`interp_lib.features.emoji` finds
token-level specialists. :func:`top_activating` and
:func:`feature_peaks` say where a feature fires in an :class:`~interp_lib.model.encoding.Encoded`.

Against chance (the nulls and intervals behind the chapters' conclusions, see
:mod:`interp_lib.evals.evidence`): :func:`expected_concentration` and :func:`concentration_excess`
(concentration above what shuffled category labels give a feature strong on as many texts),
:func:`concentration_null`, :func:`specialist_null`, :func:`concept_null`,
(statistics against shuffled labels), :func:`subsample_interval`
(an interval from :func:`paired_subsamples`), :func:`pair_counts` / :func:`jaccard_of_counts`
(token co-activation against within-text independence).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from interp_lib.errors import InvalidArgumentError
from interp_lib.evals.evidence import LEVEL, Interval, Null, permutation_null
from interp_lib.model.encoding import Encoded

# ----------------------------------------------------------------------------------------------
# Feature statistics over a set of texts (the chapters' "which features matter?" questions)
#
# Every function below takes a per-text activation matrix ``pooled`` of shape [n_texts, d_sae]
# (usually ``Encoded.max``: each feature's largest activation over the text's tokens), as a torch
# tensor or a numpy array, and returns numpy arrays or small pandas tables.
#
# "Strong" is defined relative to each feature, so that it means the same on any SAE whatever its
# activation scale: a text activates a feature *strongly* when the feature's activation on it is
# positive and at least ``frac`` (default one half) of the largest activation that feature reaches
# on any of the texts considered.

STRONG_FRAC = 0.5
"""Default share of a feature's largest activation above which an activation counts as strong."""


def as_matrix(pooled) -> np.ndarray:
    """A [n_texts, d_sae] float64 numpy copy of ``pooled`` (torch tensor or array-like)."""
    if isinstance(pooled, torch.Tensor):
        pooled = pooled.detach().float().cpu().numpy()
    arr = np.asarray(pooled, dtype=np.float64)
    if arr.ndim != 2:
        raise InvalidArgumentError(f"expected a [n_texts, d_sae] matrix, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InvalidArgumentError("expected at least one text (row), got none")
    return arr


def check_categories(categories: Sequence[str], n_rows: int) -> tuple[np.ndarray, list[str]]:
    """The category labels as an array (one per text) and the distinct categories in order."""
    cats = np.asarray(list(categories), dtype=object)
    if len(cats) != n_rows:
        raise InvalidArgumentError(f"got {len(cats)} categories for {n_rows} texts")
    return cats, list(dict.fromkeys(cats.tolist()))


def feature_frequency(pooled, threshold: float = 0.0) -> np.ndarray:
    """Share of texts on which each feature's activation exceeds ``threshold``, shape [d_sae]."""
    return (as_matrix(pooled) > threshold).mean(0)


def strong_thresholds(pooled, frac: float = STRONG_FRAC) -> np.ndarray:
    """Per feature, the activation counted as strong: ``frac`` x its max over the texts (inf if it
    never fires)."""
    if not 0.0 < frac <= 1.0:
        raise InvalidArgumentError(f"frac must be in (0, 1], got {frac}")
    top = as_matrix(pooled).max(0)
    return np.where(top > 0, frac * top, np.inf)


def strong_mask(pooled, frac: float = STRONG_FRAC) -> np.ndarray:
    """Boolean [n_texts, d_sae]: True where a text activates a feature strongly (>= its strong
    threshold)."""
    arr = as_matrix(pooled)
    return (arr > 0) & (arr >= strong_thresholds(arr, frac))


def strongest_features(pooled, n: int = 10) -> pd.DataFrame:
    """The ``n`` features with the largest single activation: feature, max_act, text (its row),
    n_active."""
    arr = as_matrix(pooled)
    top = arr.max(0)
    order = np.argsort(-top, kind="stable")[:n]
    order = order[top[order] > 0]
    return pd.DataFrame(
        {
            "feature": order.astype(int),
            "max_act": top[order],
            "text": arr[:, order].argmax(0).astype(int),
            "n_active": (arr[:, order] > 0).sum(0).astype(int),
        }
    )


def frequent_features(pooled, n: int = 10, threshold: float = 0.0) -> pd.DataFrame:
    """The ``n`` features active on the most texts: feature, n_active, frequency, mean_act, text (of
    the max)."""
    arr = as_matrix(pooled)
    active = arr > threshold
    count = active.sum(0)
    mean = arr.mean(0)
    order = np.lexsort((-mean, -count))[:n]
    order = order[count[order] > 0]
    return pd.DataFrame(
        {
            "feature": order.astype(int),
            "n_active": count[order].astype(int),
            "frequency": count[order] / arr.shape[0],
            "mean_act": mean[order],
            "text": arr[:, order].argmax(0).astype(int),
        }
    )


def selective_features(
    pooled, n: int = 10, *, min_max: float | None = None, quantile: float = 0.9
) -> pd.DataFrame:
    """Strong but rare features: among those whose max is >= ``min_max`` (default: the ``quantile``
    of
    the maxima of features that fire at all), the ``n`` active on the fewest texts (ties: stronger
    first)."""
    arr = as_matrix(pooled)
    top = arr.max(0)
    if min_max is None:
        fired = top[top > 0]
        if not len(fired):
            return pd.DataFrame({"feature": [], "max_act": [], "n_active": [], "text": []})
        min_max = float(np.quantile(fired, quantile))
    count = (arr > 0).sum(0)
    candidates = np.flatnonzero((top >= min_max) & (top > 0))
    order = candidates[np.lexsort((-top[candidates], count[candidates]))][:n]
    return pd.DataFrame(
        {
            "feature": order.astype(int),
            "max_act": top[order],
            "n_active": count[order].astype(int),
            "text": arr[:, order].argmax(0).astype(int),
        }
    )


def specialist_scores(pooled, categories: Sequence[str], frac: float = STRONG_FRAC) -> pd.DataFrame:
    """[d_sae x category] specialist score: texts of the category with a strong activation minus
    texts outside it."""
    arr = as_matrix(pooled)
    cats, names = check_categories(categories, arr.shape[0])
    strong = strong_mask(arr, frac)
    total = strong.sum(0)
    inside = {c: strong[cats == c].sum(0) for c in names}
    return pd.DataFrame({c: inside[c] - (total - inside[c]) for c in names}).rename_axis("feature")


def category_specialists(
    pooled, categories: Sequence[str], *, frac: float = STRONG_FRAC, min_score: int | None = None
) -> pd.DataFrame:
    """Best specialist per category: feature, score, inside, outside, n_texts, mean_inside,
    specialist.

    ``specialist`` is True when the score reaches ``min_score`` (default: half the category's texts,
    rounded up): the feature is strong on that many more of the category's texts than of the others.
    """
    arr = as_matrix(pooled)
    cats, names = check_categories(categories, arr.shape[0])
    strong = strong_mask(arr, frac)
    total = strong.sum(0)
    rows = []
    for c in names:
        rows_c = cats == c
        inside = strong[rows_c].sum(0)
        outside = total - inside
        score = inside - outside
        mean_inside = arr[rows_c].mean(0)
        best = int(np.lexsort((-mean_inside, -score))[0])
        need = min_score if min_score is not None else int(np.ceil(rows_c.sum() / 2))
        rows.append(
            {
                "category": c,
                "feature": best,
                "score": int(score[best]),
                "inside": int(inside[best]),
                "outside": int(outside[best]),
                "n_texts": int(rows_c.sum()),
                "mean_inside": float(mean_inside[best]),
                "specialist": bool(score[best] >= need),
            }
        )
    return pd.DataFrame(rows)


def category_means(pooled, categories: Sequence[str], features: Sequence[int]) -> pd.DataFrame:
    """Mean activation of ``features`` (rows) over each category's texts (columns)."""
    arr = as_matrix(pooled)
    cats, names = check_categories(categories, arr.shape[0])
    feats = [int(f) for f in features]
    return pd.DataFrame(
        {c: arr[cats == c][:, feats].mean(0) for c in names}, index=pd.Index(feats, name="feature")
    )


def composite_scores(pooled, threshold: float = 0.0) -> np.ndarray:
    """Frequency x strength per feature: share of texts above ``threshold`` times mean activation,
    [d_sae]."""
    arr = as_matrix(pooled)
    return (arr > threshold).mean(0) * arr.mean(0)


def features_for_concept(
    concept, background=None, *, n: int = 10, threshold: float = 0.0
) -> pd.DataFrame:
    """Features that characterise a concept's example texts, ranked by composite score
    (frequency x mean activation); with ``background`` texts, by the concept's composite minus
    theirs.

    Columns: feature, frequency, mean_act, composite (and background, score when ``background`` is
    given).
    """
    arr = as_matrix(concept)
    freq = (arr > threshold).mean(0)
    mean = arr.mean(0)
    composite = freq * mean
    columns = {"frequency": freq, "mean_act": mean, "composite": composite}
    rank = composite
    if background is not None:
        bg = as_matrix(background)
        if bg.shape[1] != arr.shape[1]:
            raise InvalidArgumentError(
                f"concept has {arr.shape[1]} features, background {bg.shape[1]}"
            )
        columns["background"] = composite_scores(bg, threshold)
        columns["score"] = rank = composite - columns["background"]
    order = np.argsort(-rank, kind="stable")[:n]
    order = order[rank[order] > 0]
    return pd.DataFrame({"feature": order.astype(int), **{k: v[order] for k, v in columns.items()}})


def category_common_features(
    pooled, categories: Sequence[str], n: int = 5, threshold: float = 0.0
) -> pd.DataFrame:
    """Per category, the ``n`` features active on most of its texts: category, feature, frequency,
    mean_act."""
    arr = as_matrix(pooled)
    cats, names = check_categories(categories, arr.shape[0])
    rows = []
    for c in names:
        sub = arr[cats == c]
        freq, mean = (sub > threshold).mean(0), sub.mean(0)
        for f in np.lexsort((-mean, -freq))[:n]:
            if freq[f] > 0:
                rows.append(
                    {
                        "category": c,
                        "feature": int(f),
                        "frequency": float(freq[f]),
                        "mean_act": float(mean[f]),
                    }
                )
    return pd.DataFrame(rows)


def coactivation(acts, features: Sequence[int], threshold: float = 0.0) -> pd.DataFrame:
    """Jaccard index between ``features``: rows (tokens or texts) where both are active / where
    either is."""
    arr = as_matrix(acts)
    feats = [int(f) for f in features]
    on = arr[:, feats] > threshold
    both = on.T.astype(np.int64) @ on.astype(np.int64)
    count = on.sum(0)
    either = count[:, None] + count[None, :] - both
    jac = np.divide(both, either, out=np.zeros(both.shape), where=either > 0)
    return pd.DataFrame(jac, index=pd.Index(feats, name="feature"), columns=feats)


def _token_at(tokens: Sequence[str], position: int) -> str:
    """The token at ``position``, or for a '' piece of a split character (see
    :func:`interp_lib.model.tokens.readable_tokens`) the token that completes it."""
    for p in range(position, len(tokens)):
        if tokens[p]:
            return tokens[p]
    return tokens[position]


def top_activating(enc: Encoded, feature: int, n: int = 10) -> pd.DataFrame:
    """The ``n`` texts on which ``feature`` is strongest: text (index), max_act, position and token
    of the max."""
    col = enc.max[:, int(feature)].float().numpy()
    order = [int(i) for i in np.argsort(-col, kind="stable")[:n] if col[i] > 0]
    pos = [int(enc.acts[i][:, int(feature)].argmax()) for i in order]
    return pd.DataFrame(
        {
            "text": order,
            "max_act": col[order] if order else [],
            "position": pos,
            "token": [_token_at(enc.tokens[i], p) for i, p in zip(order, pos)],
        }
    )


def feature_peaks(enc: Encoded, features: Sequence[int], texts: Sequence[int]) -> pd.DataFrame:
    """Where each feature peaks in its text (pairwise): feature, text, position, token,
    activation."""
    if len(features) != len(texts):
        raise InvalidArgumentError(f"got {len(features)} features for {len(texts)} texts")
    rows = []
    for f, t in zip(features, texts):
        f, t = int(f), int(t)
        p = int(enc.acts[t][:, f].argmax())
        rows.append(
            {
                "feature": f,
                "text": t,
                "position": p,
                "token": _token_at(enc.tokens[t], p),
                "activation": float(enc.acts[t][p, f]),
            }
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# How specialised are the features of several SAEs?


def category_concentration(
    pooled, categories: Sequence[str], *, frac: float = STRONG_FRAC, min_strong: int = 3
) -> np.ndarray:
    """Per feature, the share of its strong texts (see :func:`strong_mask`) that
    belong to its most common category, ``[d_sae]``; NaN for features strong on fewer than
    ``min_strong`` texts (too few to tell). 1.0: every strong text is from one category; a
    feature that fires regardless of category scores about the largest category's share."""
    arr = as_matrix(pooled)
    cats, names = check_categories(categories, arr.shape[0])
    strong = strong_mask(arr, frac)
    per_cat = np.stack([strong[cats == c].sum(0) for c in names])  # [n_categories, d_sae]
    total = per_cat.sum(0)
    out = np.full(arr.shape[1], np.nan)
    ok = total >= min_strong
    out[ok] = per_cat[:, ok].max(0) / total[ok]
    return out


def specialisation_summary(
    pooled, categories: Sequence[str], *, frac: float = STRONG_FRAC, min_strong: int = 3
) -> dict:
    """How specialised one SAE's features are on a labelled text set, as plain numbers:

    ``categories_with_specialist`` (categories whose best feature scores at least half the
    category's size, as in :func:`category_specialists`), ``mean_best_score``
    (mean over categories of the best specialist score), ``specialist_features`` (features whose
    score reaches that bar for some category), ``scored_features`` (features strong on at least
    ``min_strong`` texts), ``mean_concentration`` and ``share_concentrated`` (share of scored
    features with concentration >= 0.8), from :func:`category_concentration`.
    """
    arr = as_matrix(pooled)
    best = category_specialists(arr, categories, frac=frac)
    conc = category_concentration(arr, categories, frac=frac, min_strong=min_strong)
    scored = conc[~np.isnan(conc)]
    return {
        "categories_with_specialist": int(best.specialist.sum()),
        "mean_best_score": float(best.score.mean()),
        "specialist_features": specialist_feature_count(arr, categories, frac=frac),
        "scored_features": int(scored.size),
        "mean_concentration": float(scored.mean()) if scored.size else float("nan"),
        "share_concentrated": float((scored >= 0.8).mean()) if scored.size else float("nan"),
    }


def specialist_feature_count(
    pooled, categories: Sequence[str], *, frac: float = STRONG_FRAC
) -> int:
    """Number of features that are specialists of some category: strong on at least half the
    category's texts (rounded up) more often inside it than outside it (chapter 2's rule)."""
    arr = as_matrix(pooled)
    cats, names = check_categories(categories, arr.shape[0])
    strong = strong_mask(arr, frac)
    inside = np.stack([strong[cats == c].sum(0) for c in names])  # [n_categories, d_sae]
    score = 2 * inside - strong.sum(0)[None, :]
    need = np.array([math.ceil((cats == c).sum() / 2) for c in names])[:, None]
    return int((score >= need).any(0).sum())


def paired_subsamples(
    pooled_by_name: Mapping[str, object],
    categories: Sequence[str],
    stat: Callable[[np.ndarray, Sequence[str]], float],
    *,
    n: int = 100,
    frac: float = 0.8,
    seed: int = 0,
) -> pd.DataFrame:
    """``stat(pooled, categories)`` for every SAE on ``n`` random subsets of the texts, ``[n,
    n_saes]``.

    Each subset keeps, within every category, ``frac`` of its texts (rounded, at least one), drawn
    without replacement, and every SAE is scored on the *same* subset, so that the share of subsets
    in which SAE A beats SAE B measures how robust "A > B" is to the choice of texts. (Drawing
    without replacement matters: a bootstrap's duplicated texts would inflate threshold counts
    such as specialist scores, and not equally for every SAE.)"""
    if not 0.0 < frac <= 1.0:
        raise InvalidArgumentError(f"frac must be in (0, 1], got {frac}")
    mats = {name: as_matrix(p) for name, p in pooled_by_name.items()}
    n_rows = {m.shape[0] for m in mats.values()}
    if len(n_rows) != 1:
        raise InvalidArgumentError(
            f"every SAE must be scored on the same texts, got row counts {sorted(n_rows)}"
        )
    cats, names = check_categories(categories, n_rows.pop())
    groups = [np.flatnonzero(cats == c) for c in names]
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        idx = np.concatenate(
            [
                np.sort(rng.choice(g, size=max(1, round(frac * len(g))), replace=False))
                for g in groups
            ]
        )
        sub_cats = cats[idx].tolist()
        rows.append({name: float(stat(m[idx], sub_cats)) for name, m in mats.items()})
    return pd.DataFrame(rows, columns=list(mats))


# ----------------------------------------------------------------------------------------------
# Against chance: nulls from shuffled labels, intervals over texts
#
# A conclusion such as "this SAE's features are concentrated on one category" or "this category
# has a specialist" needs the value the same statistic takes when the category labels carry no
# information: shuffle them over the texts (each feature keeps its strong texts, so the null keeps
# the SAE's feature density) and compare. Intervals come from paired_subsamples (texts left out
# within each category, never duplicated: duplicates would inflate every count of strong texts).


@functools.lru_cache(maxsize=64)
def _null_concentration_by_count(sizes: tuple[int, ...]) -> np.ndarray:
    """``[n_texts + 1]``: entry n is :func:`expected_concentration` (n, sizes); NaN at 0."""
    total = sum(sizes)
    denom = np.array([math.comb(total, n) for n in range(total + 1)], dtype=np.float64)
    expected_max = np.zeros(total + 1)
    # E[max] = sum over m >= 0 of P(max > m); P(max <= m) counts the draws of n texts that take
    # at most m from every category: the x^n coefficient of prod_c sum_{j <= m} C(s_c, j) x^j.
    for m in range(max(sizes)):
        poly = np.ones(1)
        for size in sizes:
            poly = np.convolve(poly, [math.comb(size, j) for j in range(min(m, size) + 1)])
        at_most = np.zeros(total + 1)
        at_most[: len(poly)] = poly[: total + 1]
        expected_max += 1.0 - at_most / denom
    out = np.full(total + 1, np.nan)
    out[1:] = expected_max[1:] / np.arange(1, total + 1)
    return out


def expected_concentration(n_strong: int, sizes: Sequence[int]) -> float:
    """Expected category concentration of a feature strong on ``n_strong`` texts when the labels
    are shuffled: E[largest category count] / ``n_strong`` for texts drawn without replacement
    from categories of ``sizes`` (exact, multivariate hypergeometric)."""
    sizes = tuple(int(s) for s in sizes)
    if not 1 <= n_strong <= sum(sizes):
        raise InvalidArgumentError(f"n_strong must be in [1, {sum(sizes)}], got {n_strong}")
    return float(_null_concentration_by_count(sizes)[n_strong])


def concentration_excess(
    pooled, categories: Sequence[str], *, frac: float = STRONG_FRAC, min_strong: int = 3
) -> np.ndarray:
    """Per feature, :func:`category_concentration` minus its :func:`expected_concentration` for
    as many strong texts, ``[d_sae]`` (NaN where unscored): concentration beyond chance, which
    compares SAEs whose features are strong on different numbers of texts."""
    arr = as_matrix(pooled)
    cats, names = check_categories(categories, arr.shape[0])
    conc = category_concentration(arr, cats, frac=frac, min_strong=min_strong)
    n_strong = strong_mask(arr, frac).sum(0)
    null = _null_concentration_by_count(tuple(int((cats == c).sum()) for c in names))
    return conc - null[n_strong]


def mean_concentration_excess(
    pooled, categories: Sequence[str], *, frac: float = STRONG_FRAC, min_strong: int = 3
) -> float:
    """Mean of :func:`concentration_excess` over the scored features (NaN if none)."""
    excess = concentration_excess(pooled, categories, frac=frac, min_strong=min_strong)
    return float(np.nanmean(excess)) if (~np.isnan(excess)).any() else float("nan")


def concentration_null(
    pooled,
    categories: Sequence[str],
    *,
    n: int = 200,
    seed: int = 0,
    frac: float = STRONG_FRAC,
    min_strong: int = 3,
) -> Null:
    """The mean :func:`category_concentration` of the scored features against ``n`` shuffles of
    the category labels (:func:`interp_lib.evals.evidence.permutation_null`)."""
    arr = as_matrix(pooled)
    cats, names = check_categories(categories, arr.shape[0])
    strong = strong_mask(arr, frac)
    total = strong.sum(0)
    scored = total >= min_strong
    strong, total = strong[:, scored], total[scored]

    def mean_concentration(labels: np.ndarray) -> float:
        if not scored.any():
            return float("nan")
        per_cat = np.stack([strong[labels == c].sum(0) for c in names])
        return float((per_cat.max(0) / total).mean())

    return permutation_null(mean_concentration, cats, n=n, seed=seed)


def _best_share(strong: np.ndarray, labels: np.ndarray, category: str) -> float:
    """Best specialist score for ``category`` over its number of texts (strong mask given)."""
    inside = labels == category
    score = 2 * strong[inside].sum(0) - strong.sum(0)
    return float(score.max() / inside.sum())


def best_specialist_share(
    pooled, categories: Sequence[str], category: str, *, frac: float = STRONG_FRAC
) -> float:
    """The best specialist score for ``category`` (:func:`specialist_scores`) as a share of the
    category's texts: 1 when a feature is strong on all of them and on no other text; chapter 2's
    specialist rule is a share of at least one half."""
    arr = as_matrix(pooled)
    cats, names = check_categories(categories, arr.shape[0])
    if category not in names:
        raise InvalidArgumentError(f"no text of category {category!r}; categories: {names}")
    return _best_share(strong_mask(arr, frac), cats, category)


def specialist_null(
    pooled,
    categories: Sequence[str],
    category: str,
    *,
    n: int = 200,
    seed: int = 0,
    frac: float = STRONG_FRAC,
) -> Null:
    """:func:`best_specialist_share` of ``category`` against ``n`` shuffles of the labels: how
    high the best of all features scores on a random group of as many texts."""
    arr = as_matrix(pooled)
    cats, names = check_categories(categories, arr.shape[0])
    if category not in names:
        raise InvalidArgumentError(f"no text of category {category!r}; categories: {names}")
    strong = strong_mask(arr, frac)
    return permutation_null(lambda lab: _best_share(strong, lab, category), cats, n=n, seed=seed)


def distinct_common_features(
    pooled, categories: Sequence[str], n: int = 5, threshold: float = 0.0
) -> int:
    """How many distinct features fill the per-category lists of
    :func:`category_common_features` (few: the categories share them; many: each has its own)."""
    return int(category_common_features(pooled, categories, n, threshold).feature.nunique())


def _contrast(arr: np.ndarray, inside: np.ndarray, threshold: float) -> np.ndarray:
    """Composite score of the ``inside`` rows minus that of the others, per feature."""
    return composite_scores(arr[inside], threshold) - composite_scores(arr[~inside], threshold)


def concept_null(
    concept, background, *, n: int = 200, seed: int = 0, threshold: float = 0.0
) -> Null:
    """The best contrast score of :func:`features_for_concept` (concept against background)
    against ``n`` draws of as many random texts from concept and background together in place of
    the concept's: how high the best feature scores on texts that share no concept."""
    con, bg = as_matrix(concept), as_matrix(background)
    if con.shape[1] != bg.shape[1]:
        raise InvalidArgumentError(f"concept has {con.shape[1]} features, background {bg.shape[1]}")
    arr = np.concatenate([con, bg])
    labels = np.array([True] * len(con) + [False] * len(bg))
    return permutation_null(
        lambda lab: float(_contrast(arr, lab.astype(bool), threshold).max()),
        labels,
        n=n,
        seed=seed,
    )


def subsample_interval(
    estimate: float,
    draws: Sequence[float],
    categories: Sequence[str],
    *,
    frac: float = 0.8,
    level: float = LEVEL,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> Interval:
    """A ``level`` interval for a statistic of all texts from its values on
    :func:`paired_subsamples`'s subsets of ``frac`` of each category (delete-d jackknife: their
    spread times sqrt(texts kept / texts left out) estimates the statistic's standard error;
    normal, cut to the statistic's possible ``bounds``)."""
    cats, names = check_categories(categories, len(list(categories)))
    kept = sum(max(1, round(frac * int((cats == c).sum()))) for c in names)
    left_out = len(cats) - kept
    values = np.asarray(draws, dtype=np.float64)
    values = values[~np.isnan(values)]
    if left_out < 1 or values.size < 2:
        raise InvalidArgumentError(
            "need subsets that leave texts out, and at least 2 subset values"
        )
    se = float(values.std(ddof=1)) * math.sqrt(kept / left_out)
    z = float(stats.norm.ppf(0.5 + level / 2))
    low, high = max(bounds[0], estimate - z * se), min(bounds[1], estimate + z * se)
    return Interval(float(estimate), float(low), float(high))


def pair_counts(acts: Sequence, features: Sequence[int], threshold: float = 0.0) -> np.ndarray:
    """Token co-activation of every pair (i < j) of ``features``, per text: ``[n_texts, n_pairs,
    3]`` with the tokens where both fire, where either fires, and where both would fire if each
    fired on its tokens of the text at random (independence within the text)."""
    feats = [int(f) for f in features]
    pairs = [(i, j) for i in range(len(feats)) for j in range(i + 1, len(feats))]
    if not pairs:
        raise InvalidArgumentError("need at least two features")
    rows = []
    for a in acts:
        on = as_matrix(a[:, feats] if len(a) else np.zeros((1, len(feats)))) > threshold
        n_tok = max(len(a), 1)
        count = on.sum(0)
        both = on.T.astype(np.int64) @ on.astype(np.int64)
        rows.append(
            [
                (both[i, j], count[i] + count[j] - both[i, j], count[i] * count[j] / n_tok)
                for i, j in pairs
            ]
        )
    return np.asarray(rows, dtype=np.float64)


def jaccard_of_counts(counts: np.ndarray, *, independent: bool = False) -> float:
    """Mean over pairs of the Jaccard index (both / either, summed over the texts of
    :func:`pair_counts`), or with ``independent`` the index independence within texts gives."""
    total = np.asarray(counts, dtype=np.float64).sum(0)  # [n_pairs, 3]
    both = total[:, 2] if independent else total[:, 0]
    either = total[:, 1] + total[:, 0] - both  # the union keeps the features' own counts
    keep = either > 0
    return float((both[keep] / either[keep]).mean()) if keep.any() else float("nan")
