"""Features of one kind of token (emoji): which tokens show one, and each feature's precision on
such a mask (the share of its strongest tokens that are of the kind)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from interp_lib.errors import InvalidArgumentError
from interp_lib.evals.evidence import Null, permutation_null

__all__ = ["is_emoji", "emoji_mask", "token_precision", "precision_count_null"]


_EMOJI_RANGES = (
    (0x1F000, 0x1FAFF),
    (0x2600, 0x27BF),
    (0x2300, 0x23FF),
    (0x2B00, 0x2BFF),
    (0x3030, 0x303D),
)


def is_emoji(text: str) -> bool:
    """True if ``text`` contains a pictographic character (emoji and the older dingbats/symbols
    blocks; joiners and variation selectors alone do not count)."""
    for ch in text:
        cp = ord(ch)
        if any(lo <= cp <= hi for lo, hi in _EMOJI_RANGES):
            return True
    return False


def emoji_mask(tokens: Sequence[str]) -> np.ndarray:
    """Bool per token: the token shows an emoji, or is a '' piece (see
    :func:`interp_lib.model.tokens.readable_tokens`) of a character that a later token completes
    with
    one."""
    out = np.zeros(len(tokens), dtype=bool)
    for i in range(len(tokens) - 1, -1, -1):
        tok = tokens[i]
        out[i] = is_emoji(tok) if tok != "" or i == len(tokens) - 1 else out[i + 1]
    return out


def token_precision(acts, mask, *, top: int = 10, min_active: int = 3) -> np.ndarray:
    """Per feature, the share of its ``top`` strongest tokens that are in ``mask``, ``[d_sae]``.

    ``acts``: ``[n_tokens, d_sae]`` feature activations (all texts' tokens concatenated);
    ``mask``: ``[n_tokens]`` bool (e.g. :func:`emoji_mask`). Only tokens where the feature is
    active count; a feature active on fewer than ``min_active`` tokens gets NaN.
    """
    order, active, counted, ok = _top_tokens(acts, mask, top, min_active)
    mask = np.asarray(mask, dtype=bool)
    out = np.full(order.shape[1], np.nan)
    out[ok] = (mask[order] & active)[:, ok].sum(0) / counted[ok]
    return out


def _top_tokens(
    acts, mask, top: int, min_active: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For :func:`token_precision`: each feature's ``top`` strongest tokens ``[top, d_sae]``,
    whether each is active, how many count, and which features have ``min_active`` tokens."""
    arr = (
        acts.detach().float().cpu().numpy()
        if isinstance(acts, torch.Tensor)
        else np.asarray(acts, dtype=np.float64)
    )
    mask = np.asarray(mask, dtype=bool)
    if arr.ndim != 2 or mask.shape != (arr.shape[0],):
        raise InvalidArgumentError(
            f"need acts [n_tokens, d_sae] and mask [n_tokens], got {arr.shape} and {mask.shape}"
        )
    n_active = (arr > 0).sum(0)
    top = min(top, arr.shape[0])
    # the top tokens of every feature (their order does not matter for a count)
    order = (
        np.argpartition(-arr, top - 1, axis=0)[:top]
        if top < arr.shape[0]
        else np.arange(arr.shape[0])[:, None].repeat(arr.shape[1], 1)
    )
    active = np.take_along_axis(arr, order, axis=0) > 0
    return order, active, np.minimum(n_active, top), n_active >= min_active


def precision_count_null(
    acts,
    mask,
    *,
    top: int = 10,
    min_active: int = 3,
    at_least: float = 0.9,
    n: int = 200,
    seed: int = 0,
) -> Null:
    """The number of features with :func:`token_precision` of at least ``at_least`` against
    ``n`` shuffles of ``mask`` over the tokens (the mask's tokens drawn at random)."""
    order, active, counted, ok = _top_tokens(acts, mask, top, min_active)

    def count(labels: np.ndarray) -> float:
        hit = (labels.astype(bool)[order] & active)[:, ok].sum(0)
        return float((hit / counted[ok] >= at_least).sum())

    return permutation_null(count, np.asarray(mask, dtype=bool), n=n, seed=seed)
