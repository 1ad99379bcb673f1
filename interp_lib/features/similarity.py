"""Match features across SAEs: by decoder direction and by activation on the same tokens.

:func:`best_matches` finds, for every feature of one SAE, the feature of another whose decoder
direction has the largest cosine similarity; :func:`activation_matches` the one whose activations
correlate best over the same tokens (as Bricken et al. 2023 compare features). :func:`match_shares`,
:func:`same_number_share` and :func:`random_match_baseline` (what "best match" gives for directions
that share nothing) read the result; :func:`top_text_overlap` asks whether two matched features
fire on the same texts.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from interp_lib.errors import InvalidArgumentError
from interp_lib.features.analysis import as_matrix


def decoder_directions(sae_or_matrix) -> torch.Tensor:
    """Unit-norm decoder directions ``[d_sae, d_in]`` (float32) of an SAE (``W_dec``: one row per
    feature, in SAELens and in :mod:`interp_lib.sae.homebrew`) or of a matrix given directly."""
    w = sae_or_matrix if isinstance(sae_or_matrix, torch.Tensor) else sae_or_matrix.W_dec
    w = w.detach().float().cpu()
    if w.ndim != 2:
        raise InvalidArgumentError(f"expected a [d_sae, d_in] matrix, got shape {tuple(w.shape)}")
    return w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class Matches(NamedTuple):
    """For every feature of SAE A, its best match in SAE B."""

    index: torch.Tensor
    """``[d_sae_A]`` the best-matching feature of B (-1 where a feature has no match)."""
    similarity: torch.Tensor
    """``[d_sae_A]`` how well it matches: the decoder cosine for :func:`best_matches`, the
    activation correlation for :func:`activation_matches` (NaN where there is no match)."""


def _best_columns(
    scores: Callable[[int, int], torch.Tensor],
    n_a: int,
    n_b: int,
    *,
    chunk: int,
    exclude_same: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows ``0..n_a`` of a score matrix made in chunks (``scores(i, j)``: rows ``i..j``,
    ``[j - i, n_b]``), each row's best column and its score; with ``exclude_same`` never column
    ``r`` for row ``r``."""
    idx, best = [], []
    for i in range(0, n_a, chunk):
        sims = scores(i, min(i + chunk, n_a))
        if exclude_same:
            rows = torch.arange(i, min(i + chunk, n_a))
            keep = rows < n_b
            sims[(rows - i)[keep], rows[keep]] = -torch.inf
        c, j = sims.max(dim=1)
        idx.append(j)
        best.append(c)
    return torch.cat(idx), torch.cat(best)


@torch.no_grad()
def best_matches(a, b, *, exclude_same: bool = False, chunk: int = 2048) -> Matches:
    """For each decoder direction of ``a``, the direction of ``b`` with the largest cosine
    similarity.

    ``a``, ``b``: SAEs or ``[n, d]`` matrices with the same ``d`` (rows are normalised here).
    ``exclude_same``: never match feature ``i`` of A with feature ``i`` of B. Two SAEs trained from
    the same random initialisation (same seed, same shape) start with identical dictionaries, and
    a feature that moved little keeps much of its starting direction in both; excluding the
    same-numbered feature leaves only similarity that training produced. Computed in chunks of
    ``chunk`` rows of ``a``. Note the asymmetry: A's best match in B is not B's best match in A.
    """
    da, db = decoder_directions(a), decoder_directions(b)
    if da.shape[1] != db.shape[1]:
        raise InvalidArgumentError(
            f"directions live in different spaces: d={da.shape[1]} vs d={db.shape[1]}"
        )
    if exclude_same and db.shape[0] < 2:
        raise InvalidArgumentError("exclude_same needs at least two features in b")
    return Matches(
        *_best_columns(
            lambda i, j: da[i:j] @ db.T,
            da.shape[0],
            db.shape[0],
            chunk=chunk,
            exclude_same=exclude_same,
        )
    )


@torch.no_grad()
def activation_matches(
    acts_a, acts_b, *, exclude_same: bool = False, min_active: int = 5, chunk: int = 1024
) -> Matches:
    """For each feature of A, the feature of B whose activations correlate best with its own over
    the same tokens (Pearson correlation; Bricken et al. 2023 compare features across SAEs this
    way).

    ``acts_a``: ``[n_tokens, d_a]``, ``acts_b``: ``[n_tokens, d_b]``, the two SAEs' activations on
    the same tokens. A feature active (non-zero) on fewer than ``min_active`` tokens is not matched:
    as a feature of A its result is NaN (index -1); as a feature of B it is never chosen (two
    features that both fire on one token only would correlate perfectly and mean nothing).
    ``exclude_same`` as in :func:`best_matches`.
    """
    a = torch.as_tensor(acts_a).detach().float().cpu()
    b = torch.as_tensor(acts_b).detach().float().cpu()
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise InvalidArgumentError(
            "need [n_tokens, d] activations of the same tokens, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )

    def standardise(x):
        active = (x != 0).sum(0) >= max(min_active, 1)
        x = x - x.mean(0)
        norm = x.norm(dim=0)
        return x / norm.clamp_min(1e-12), (norm > 1e-8) & active

    za, ok_a = standardise(a)
    zb, ok_b = standardise(b)
    # only features that can be matched (rows) or chosen (columns) enter the product: features
    # too rare in the sample drop out, and the product shrinks with both
    rows, cols = ok_a.nonzero()[:, 0], ok_b.nonzero()[:, 0]
    za, zb = za[:, rows], zb[:, cols]

    def correlations(i: int, j: int) -> torch.Tensor:
        sims = za[:, i:j].T @ zb  # [j - i, n_cols]
        if exclude_same:  # never feature r of A with feature r of B
            sims[rows[i:j, None] == cols[None, :]] = -torch.inf
        return sims

    index = torch.full((a.shape[1],), -1, dtype=torch.long)
    corr = torch.full((a.shape[1],), torch.nan)
    if len(rows) and len(cols):
        best, value = _best_columns(
            correlations, len(rows), len(cols), chunk=chunk, exclude_same=False
        )
        found = ~torch.isinf(value)  # inf: every column was excluded
        index[rows[found]] = cols[best[found]]
        corr[rows[found]] = value[found]
    return Matches(index, corr)


def same_number_share(matches: Matches) -> float:
    """Share of features whose best match is the feature with the same number (a sign of a shared
    initialisation when it is far above ``1 / d_sae``); features without a match (index -1) are left
    out."""
    ok = matches.index >= 0
    if not ok.any():
        return float("nan")
    return float((matches.index == torch.arange(len(matches.index)))[ok].float().mean())


def match_shares(cosine, thresholds: Sequence[float] = (0.5, 0.7, 0.9)) -> dict[float, float]:
    """Share of features whose best-match similarity is at least each threshold (NaN left out)."""
    c = torch.as_tensor(cosine).float()
    c = c[~torch.isnan(c)]
    if c.numel() == 0:
        raise InvalidArgumentError("no similarities given (all NaN or empty)")
    return {float(t): float((c >= t).float().mean()) for t in thresholds}


def random_match_baseline(n_a: int, n_b: int, d: int, *, seed: int = 0) -> torch.Tensor:
    """Best-match cosines between two sets of random unit directions (``n_a`` against ``n_b`` in
    ``d`` dimensions): what :func:`best_matches` gives when the two dictionaries share nothing."""
    g = torch.Generator().manual_seed(seed)
    return best_matches(
        torch.randn(n_a, d, generator=g), torch.randn(n_b, d, generator=g)
    ).similarity


def top_text_overlap(
    pooled_a, pooled_b, features_a: Sequence[int], features_b: Sequence[int], *, n: int = 5
) -> np.ndarray:
    """For feature pairs (``features_a[i]`` of A, ``features_b[i]`` of B) over the same texts, the
    Jaccard index of their ``n`` top-activating texts (only texts where the feature is active
    count)."""
    a, b = as_matrix(pooled_a), as_matrix(pooled_b)
    if a.shape[0] != b.shape[0]:
        raise InvalidArgumentError(
            f"A has {a.shape[0]} texts, B {b.shape[0]}: they must be the same texts"
        )
    if len(features_a) != len(features_b):
        raise InvalidArgumentError(
            f"got {len(features_a)} features of A for {len(features_b)} of B"
        )

    def top(col):
        order = np.argsort(-col, kind="stable")[:n]
        return {int(t) for t in order if col[t] > 0}

    out = []
    for fa, fb in zip(features_a, features_b):
        sa, sb = top(a[:, int(fa)]), top(b[:, int(fb)])
        union = sa | sb
        out.append(len(sa & sb) / len(union) if union else float("nan"))
    return np.array(out, dtype=np.float64)
