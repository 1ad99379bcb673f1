"""Read features out of texts: per-token SAE activations and per-text summaries.

:func:`encode_texts` is the bridge from text to features that every chapter uses: it runs each
text through the model up to the SAE's hook, encodes the activation with the SAE, and keeps the
token strings beside the feature activations. The BOS position (an attention sink) is dropped,
so token ``i`` of a text is its ``i``-th real token.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple, Sequence

import torch

from .metrics import check_widths


class Encoded(NamedTuple):
    """Feature activations of a list of texts under one SAE."""

    texts: list[str]
    """The input texts (possibly truncated to the model's context)."""
    tokens: list[list[str]]
    """Per text, its token strings (BOS dropped)."""
    acts: list[torch.Tensor]
    """Per text, feature activations [n_tokens, d_sae] (float32, BOS dropped)."""
    max: torch.Tensor
    """Per-text max over tokens, [n_texts, d_sae]."""
    mean: torch.Tensor
    """Per-text mean over tokens, [n_texts, d_sae]."""

    def top_features(self, i: int, n: int = 5, pool: str = "max") -> list[tuple[int, float]]:
        """The ``n`` strongest features of text ``i`` as (feature, activation)."""
        pooled = {"max": self.max, "mean": self.mean}.get(pool)
        if pooled is None:
            raise ValueError(f"pool must be 'max' or 'mean', got {pool!r}")
        values, idx = pooled[i].topk(n)
        return [(int(f), float(v)) for f, v in zip(idx, values) if v > 0]


def check_texts(texts: Sequence[str]) -> list[str]:
    """Validate a list of texts: non-empty list of non-empty strings."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string (wrap it: [text])")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: pass at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a str")
        if not text.strip():
            raise ValueError(f"texts[{i}] is an empty string")
    return texts


@torch.inference_mode()
def encode_texts(model, sae, texts: Sequence[str], *, progress: bool = False) -> Encoded:
    """Per-token feature activations (with token strings) and per-text max/mean pooled activations."""
    from tqdm.auto import tqdm

    texts = check_texts(texts)
    hook = check_widths(model, sae)
    from .activations import hook_layer

    stop_at = hook_layer(hook) + 1
    dtype = next(sae.parameters()).dtype
    n_ctx = model.cfg.n_ctx
    tokens_out, acts_out, kept_texts = [], [], []
    for i, text in enumerate(tqdm(texts, desc="encode", disable=not progress, leave=False)):
        toks = model.to_tokens(text, prepend_bos=True, truncate=False)
        if toks.shape[1] > n_ctx:
            warnings.warn(f"texts[{i}] has {toks.shape[1]} tokens, more than the model's context of {n_ctx}: truncated", stacklevel=2)
            toks = toks[:, :n_ctx]
            text = model.tokenizer.decode(toks[0, 1:])
        captured = {}

        def grab(act, hook):
            captured["x"] = act[0, 1:]

        model.run_with_hooks(toks.to(model.cfg.device), fwd_hooks=[(hook, grab)], stop_at_layer=stop_at)
        feats = sae.encode(captured["x"].to(dtype)).float().cpu()
        acts_out.append(feats)
        tokens_out.append(model.to_str_tokens(toks[0, 1:]))
        kept_texts.append(text)
    d_sae = sae.cfg.d_sae
    pooled_max = torch.stack([a.max(0).values if len(a) else torch.zeros(d_sae) for a in acts_out])
    pooled_mean = torch.stack([a.mean(0) if len(a) else torch.zeros(d_sae) for a in acts_out])
    return Encoded(kept_texts, tokens_out, acts_out, pooled_max, pooled_mean)
