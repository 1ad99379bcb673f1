"""What every intervention checks first: a feature index, a token, a text turned into tokens.

The interventions themselves live in one module each, and all take their inputs through these
checks, so a bad feature index or a two-token "token" fails the same way everywhere:

* :mod:`interp_lib.interventions.steering`: add a feature's decoder direction while the model runs
  or generates;
* :mod:`interp_lib.interventions.attribution`: ablate features through the SAE (error term kept),
  and rank features by activation x gradient of a logit;
* :mod:`interp_lib.interventions.logit_lens`: the tokens a feature's decoder direction pushes up and
  down.

Position 0 (the BOS token, an attention sink on SmolLM2) is never steered, spliced or scored, as in
the rest of the library. Token inputs are expected to start with BOS (:func:`to_tokens` and
``model.to_tokens`` do that).
"""

from __future__ import annotations

import operator

import numpy as np
import torch

from interp_lib.errors import InvalidArgumentError


def check_feature(sae, feature) -> int:
    """``feature`` as an int, or InvalidArgumentError naming the valid range ``0..d_sae-1``."""
    d_sae = int(sae.cfg.d_sae)
    if isinstance(feature, bool):
        raise InvalidArgumentError(f"feature must be an int in 0..{d_sae - 1}, got {feature!r}")
    scalar = isinstance(feature, torch.Tensor) and feature.numel() == 1
    try:
        index = operator.index(feature.item() if scalar else feature)
    except TypeError:
        raise InvalidArgumentError(
            f"feature must be an int in 0..{d_sae - 1}, got {feature!r}"
        ) from None
    if not 0 <= index < d_sae:
        raise InvalidArgumentError(
            f"feature {index} is out of range: this SAE has {d_sae} features (valid 0..{d_sae - 1})"
        )
    return index


def check_features(sae, features, *, allow_empty: bool = False) -> list[int]:
    """Validate a feature index or a sequence of them (duplicates removed, order kept)."""
    if isinstance(features, (int, np.integer)) or (
        isinstance(features, torch.Tensor) and features.ndim == 0
    ):
        features = [features]
    features = [check_feature(sae, f) for f in features]
    if not features and not allow_empty:
        raise InvalidArgumentError("features is empty: pass at least one feature index")
    return list(dict.fromkeys(features))


def token_id(model, token: int | str) -> int:
    """A single token id from an id or a string that is exactly one token (no BOS added)."""
    d_vocab = int(model.cfg.d_vocab)
    if isinstance(token, str):
        ids = model.to_tokens(token, prepend_bos=False)[0].tolist()
        if len(ids) != 1:
            pieces = model.to_str_tokens(torch.tensor(ids)) if ids else []
            raise InvalidArgumentError(
                f"{token!r} is {len(ids)} tokens {pieces}, not one: pass a single "
                "token (mind the leading space, e.g. ' Paris') or its id"
            )
        return int(ids[0])
    if isinstance(token, bool):
        raise InvalidArgumentError(
            f"token must be an id in 0..{d_vocab - 1} or a string, got {token!r}"
        )
    scalar = isinstance(token, torch.Tensor) and token.numel() == 1
    try:
        index = operator.index(token.item() if scalar else token)
    except TypeError:
        raise InvalidArgumentError(
            f"token must be an id in 0..{d_vocab - 1} or a string, got {token!r}"
        ) from None
    if not 0 <= index < d_vocab:
        raise InvalidArgumentError(
            f"token id {index} is out of range: the vocabulary has {d_vocab} tokens "
            f"(valid 0..{d_vocab - 1})"
        )
    return index


def to_tokens(model, text_or_tokens: str | torch.Tensor) -> torch.Tensor:
    """One text (BOS prepended) or a token tensor [ctx] / [n, ctx] -> LongTensor [n, ctx] on the
    model's device."""
    if isinstance(text_or_tokens, str):
        if not text_or_tokens.strip():
            raise InvalidArgumentError("the text is empty")
        tokens = model.to_tokens(text_or_tokens, prepend_bos=True)
    elif isinstance(text_or_tokens, torch.Tensor):
        tokens = text_or_tokens
        if tokens.ndim == 1:
            tokens = tokens[None]
        if (
            tokens.ndim != 2
            or tokens.is_floating_point()
            or tokens.is_complex()
            or tokens.dtype == torch.bool
        ):
            raise InvalidArgumentError(
                "tokens must be an integer tensor [ctx] or [n, ctx], got "
                f"{tuple(text_or_tokens.shape)} {text_or_tokens.dtype}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= model.cfg.d_vocab):
            raise InvalidArgumentError(
                f"token ids must lie in 0..{model.cfg.d_vocab - 1}, "
                f"got {int(tokens.min())}..{int(tokens.max())}"
            )
    else:
        raise TypeError(
            f"pass one text (str) or a token tensor, got {type(text_or_tokens).__name__}"
        )
    if tokens.shape[1] < 2:
        raise InvalidArgumentError(
            f"need BOS plus at least one real token, got {tokens.shape[1]} token(s)"
        )
    if tokens.shape[1] > model.cfg.n_ctx:
        raise InvalidArgumentError(
            f"{tokens.shape[1]} tokens is more than the model's context of {model.cfg.n_ctx}"
        )
    return tokens.long().to(model.cfg.device)
