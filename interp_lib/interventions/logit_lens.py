"""The logit lens on SAE features: which tokens a feature's decoder direction pushes up and down.

:func:`direct_logits` maps residual directions through the final norm and the unembedding (the
direct path only: no later layer sees the direction); :func:`feature_logit_lens` reads one
feature's top promoted and suppressed tokens, and :func:`features_for_tokens` goes the other way,
shortlisting the features whose direction most raises given tokens (candidates for steering).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import pandas as pd
import torch

from interp_lib.errors import InvalidArgumentError
from interp_lib.interventions.checks import check_feature, token_id
from interp_lib.model.hooks import check_widths


class LogitLens(NamedTuple):
    """Tokens a feature's decoder direction promotes and suppresses via the direct path."""

    promoted: list[tuple[str, float]]
    """Top-k (token string, value), largest first."""
    suppressed: list[tuple[str, float]]
    """Bottom-k (token string, value), most negative first."""


def direct_logits(model, direction: torch.Tensor) -> torch.Tensor:
    """[..., d_vocab] logit effect of adding ``direction`` [..., d_model] to the final residual
    (direct path).

    The final norm divides by the residual's scale (not known here: values are relative) and, for
    LayerNorm, centres it first; its learned weight is folded into W_U when the model was loaded
    with ``fold_ln`` (normalization_type 'LNPre'/'RMSPre'), and multiplied in here otherwise.
    """
    return _through_final_norm(model, direction) @ model.W_U.detach().float()


def _through_final_norm(model, directions: torch.Tensor) -> torch.Tensor:
    """What the final norm does to residual directions [..., d_model], up to the (unknown) scale."""
    d = directions.detach().float().to(model.W_U.device)
    kind = model.cfg.normalization_type
    if kind in ("LN", "LNPre"):
        d = d - d.mean(-1, keepdim=True)
    if kind in ("LN", "RMS") and hasattr(model.ln_final, "w"):
        d = d * model.ln_final.w.detach().float()
    return d


def _check_residual_width(model, sae, hook: str) -> None:
    if sae.cfg.d_in != model.cfg.d_model:
        raise InvalidArgumentError(
            f"The logit lens needs a residual-width SAE: d_in={sae.cfg.d_in} but "
            f"d_model={model.cfg.d_model} (hook {hook})"
        )


def feature_logit_lens(model, sae, feature: int, k: int = 10) -> LogitLens:
    """Top-``k`` promoted and suppressed tokens of W_dec[feature] @ W_U (:func:`direct_logits`)."""
    hook = check_widths(model, sae)
    f = check_feature(sae, feature)
    _check_residual_width(model, sae, hook)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= model.cfg.d_vocab:
        raise InvalidArgumentError(f"k must be an int in 1..{model.cfg.d_vocab}, got {k!r}")
    values = direct_logits(model, sae.W_dec[f])
    top, bottom = values.topk(k), (-values).topk(k)
    strs = lambda idx: model.to_str_tokens(idx.cpu())  # noqa: E731
    return LogitLens(
        [(s, float(v)) for s, v in zip(strs(top.indices), top.values)],
        [(s, float(-v)) for s, v in zip(strs(bottom.indices), bottom.values)],
    )


def features_for_tokens(model, sae, tokens: Sequence[int | str], *, top: int = 10) -> pd.DataFrame:
    """Features whose unit decoder direction most raises ``tokens`` via the direct path (a steering
    shortlist).

    Columns: ``feature``, ``score`` (mean over ``tokens`` of their z-score in the feature's logit
    lens: (logit - mean over the vocabulary) / std, so features that lift every token do not win),
    ``rank`` (best rank of any of the tokens in that feature's logit lens, 0 = top).
    """
    _check_residual_width(model, sae, check_widths(model, sae))
    if isinstance(tokens, (str, int)):
        tokens = [tokens]
    ids = list(dict.fromkeys(token_id(model, t) for t in tokens))
    if not ids:
        raise InvalidArgumentError("tokens is empty")
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= sae.cfg.d_sae:
        raise InvalidArgumentError(f"top must be an int in 1..{sae.cfg.d_sae}, got {top!r}")
    W = sae.W_dec.detach().float()
    W = _through_final_norm(model, W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    W_U = model.W_U.detach().float()
    with torch.inference_mode():
        # mean and covariance of the unembedding columns give each lens's mean and std cheaply
        mu = W_U.mean(1)
        cov = torch.cov(W_U)
        std = ((W @ cov) * W).sum(-1).clamp_min(1e-12).sqrt()
        scores = ((W @ W_U[:, ids]) - (W @ mu)[:, None]).mean(-1) / std
        best = scores.topk(top)
        logits = W[best.indices] @ W_U  # [top, d_vocab]
        ranks = (logits[:, None, :] > logits[:, ids][:, :, None]).sum(-1).min(-1).values
    return pd.DataFrame(
        {"feature": best.indices.numpy(), "score": best.values.numpy(), "rank": ranks.numpy()}
    )
