"""Feature absorption, as SAEBench measures it (Chanin et al. 2024, "A is for Absorption";
the absorption fraction of Demian Till; SAEBench's ``evals/absorption``).

The story: a model knows the first letter of its tokens (a linear probe on the residual stream
reads "starts with S" off ``" short"``), and an SAE has a latent that looks like "starts with S".
On some S-words that latent stays silent: a more specific latent ("the token short") fires
instead and carries the S direction in its decoder row. The general latent has been
*absorbed* there, and an interpretability reader who trusts it will miss those words.

Given, for a set of words that the probe says start with the letter, the model's activation
``x`` at the word, the SAE's latents ``f`` and decoder ``W_dec``, the probe's direction ``p``
and the letter's *main* latents (:func:`split_features`), :func:`absorption` computes per word
what SAEBench's ``FeatureAbsorptionCalculator.calculate_absorption`` computes:

* ``proj = x . p_hat`` (the probe's reading) and, per latent, ``f_i cos(W_dec_i, p)``;
* **absorption fraction**: 0 if the main latents' projection already reaches ``proj`` or if the
  (at most 3) strongest other latents aligned with ``p`` (cosine >= 0.1, positive projection)
  make up less than 0.4 of ``proj``; 1 if the main latents contribute nothing; otherwise the
  absorbed share ``a / (a + main)`` with ``a = min(absorbers, proj - main)``;
* **full absorption**: every main latent is silent, the latent with the largest projection has
  cosine >= 0.025 with ``p``, ``proj >= 0``, and that latent alone carries >= 0.4 of ``proj``.

SAEBench's scores are, per letter, the sums over the probe's true positives divided by their
number (``mean_absorption_fraction``, ``full_absorption_rate``), averaged over letters
(:func:`absorption_scores`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from interp_lib.errors import InvalidArgumentError

__all__ = ["AbsorptionResult", "absorption", "absorption_scores", "split_features"]

EPS = 1e-8
FULL_ABSORPTION_PROBE_COS = 0.025
"""Full absorption: the top-projecting latent's cosine with the probe must reach this."""
ABSORPTION_FRACTION_PROBE_COS = 0.1
"""Absorption fraction: a candidate absorbing latent's cosine with the probe must reach this."""
PROBE_PROJECTION_PROPORTION = 0.4
"""Both: the absorbing latent(s) must carry at least this share of the probe's projection."""
MAX_ABSORBING_LATENTS = 3
"""Absorption fraction: at most this many latents absorb together."""


def split_features(
    f1_by_k: Sequence[tuple[float, Sequence[int]]], f1_jump_threshold: float = 0.03
) -> list[int]:
    """A letter's main latents from its k-sparse probes (SAEBench's ``add_feature_splits_to_
    metrics_df``): ``f1_by_k[k-1] = (F1 of the k-sparse probe, its k latents)`` for k = 1, 2, ...;
    take the latents of the largest k reached while each step raised F1 by more than
    ``f1_jump_threshold`` (k = 1 always counts)."""
    best, feats = -100.0, []
    for f1, ids in f1_by_k:
        if f1 > best + f1_jump_threshold:
            best, feats = f1, list(ids)
        else:
            break
    return feats


class AbsorptionResult(NamedTuple):
    """What :func:`absorption` returns, one entry per word."""

    fraction: Tensor
    """``[n]`` float64: the absorption fraction, in [0, 1]."""
    full: Tensor
    """``[n]`` bool: full absorption by a single latent."""
    probe_projection: Tensor
    """``[n]`` float64: ``x . p_hat``, the probe's reading of each word's activation."""


def absorption(
    acts: Tensor,
    latents: Tensor,
    W_dec: Tensor,
    probe_direction: Tensor,
    main_ids: Sequence[int],
    topk_feats: int = 10,
) -> AbsorptionResult:
    """Absorption fraction and full absorption per word, SAEBench's definitions (module doc).

    ``acts: [n, d_in]`` the model's activations at the words; ``latents: [n, d_sae]`` the SAE's
    (``sae.encode(acts)``); ``W_dec: [d_sae, d_in]``; ``probe_direction: [d_in]`` (any norm);
    ``main_ids``: the letter's main latents. ``topk_feats``: how many top-projecting latents
    full absorption looks at (SAEBench's 10; only the first decides).
    """
    if acts.ndim != 2 or latents.shape[0] != acts.shape[0] or probe_direction.ndim != 1:
        raise InvalidArgumentError(
            "need acts [n, d_in], latents [n, d_sae] and probe_direction [d_in], got "
            f"{tuple(acts.shape)}, {tuple(latents.shape)}, {tuple(probe_direction.shape)}"
        )
    main = torch.as_tensor(list(main_ids), dtype=torch.long)
    p = probe_direction.double() / probe_direction.double().norm()
    W = W_dec.double()
    cos = (W @ p) / W.norm(dim=-1).clamp_min(EPS)  # [d_sae] cosine with the probe
    f = latents.double()
    proj = acts.double() @ p  # [n]
    latent_proj = f * cos  # [n, d_sae]

    main_proj = latent_proj[:, main].sum(dim=-1)
    candidate = (cos >= ABSORPTION_FRACTION_PROBE_COS)[None] & (latent_proj > 0)
    candidate[:, main] = False
    k = min(MAX_ABSORBING_LATENTS, f.shape[1])
    absorbers = latent_proj.masked_fill(~candidate, 0.0).topk(k, dim=-1).values.sum(dim=-1)
    unaccounted = proj - main_proj
    absorbed = torch.minimum(absorbers, unaccounted)
    fraction = (absorbed / (absorbed + main_proj)).clamp(0.0, 1.0)
    fraction = torch.where(main_proj <= 0, torch.ones_like(fraction), fraction)
    none = (main_proj >= proj) | (absorbers / proj < PROBE_PROJECTION_PROPORTION)
    fraction = torch.where(none, torch.zeros_like(fraction), fraction)

    top = latent_proj.topk(min(topk_feats, f.shape[1]), dim=-1).indices[:, 0]
    main_silent = (f[:, main] < EPS).all(dim=-1)
    full = (
        main_silent
        & (cos[top] >= FULL_ABSORPTION_PROBE_COS)
        & (proj >= 0)
        & (latent_proj.gather(1, top[:, None])[:, 0] / proj >= PROBE_PROJECTION_PROPORTION)
    )
    return AbsorptionResult(fraction, full, proj)


def absorption_scores(per_letter: dict[str, tuple[AbsorptionResult, int]]) -> dict[str, float]:
    """SAEBench's summary: ``{letter: (result over its words, number of probe true positives)}``
    -> ``mean_absorption_fraction`` and ``full_absorption_rate``, each the per-letter sum over
    words divided by the letter's true positives, averaged over letters."""
    if not per_letter or any(n < 1 for _, n in per_letter.values()):
        raise InvalidArgumentError("need at least one letter, each with >= 1 probe true positive")
    fractions = [float(r.fraction.sum()) / n for r, n in per_letter.values()]
    full = [float(r.full.double().sum()) / n for r, n in per_letter.values()]
    return {
        "mean_absorption_fraction": sum(fractions) / len(fractions),
        "full_absorption_rate": sum(full) / len(full),
    }
