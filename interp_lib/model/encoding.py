"""Read features out of texts: the one encoder, from text to per-token SAE activations.

:func:`encode_texts` runs the texts through the model up to the SAE's hook (in padded batches),
encodes the activations with the SAE, and keeps the token strings beside the feature activations;
given several SAEs it reads every hook they need in the same forward pass. The BOS position (an
attention sink) is dropped, so token ``i`` of a text is its ``i``-th real token. :func:`pool`
turns per-token activations into the per-text max and mean that :class:`Encoded` carries.

:func:`hook_activations` reads the activation at a hook for a list of texts (batched);
:func:`encode_activations` turns those into an :class:`Encoded` without running the model again.
:func:`mask_tokens` silences the tokens whose activation norm is far above the rest (a text's
first token can be a second attention sink; :func:`interp_lib.model.massive.massive_tokens` finds
them); :func:`with_readable_tokens` makes byte-level token strings readable.
"""

from __future__ import annotations

import warnings
from typing import Iterator, Mapping, NamedTuple, Sequence

import torch
from tqdm.auto import tqdm

from interp_lib.errors import InvalidArgumentError
from interp_lib.model.hooks import check_hooks, check_widths, hook_layer, stop_layer
from interp_lib.model.tokens import readable_tokens


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
            raise InvalidArgumentError(f"pool must be 'max' or 'mean', got {pool!r}")
        values, idx = pooled[i].topk(n)
        return [(int(f), float(v)) for f, v in zip(idx, values) if v > 0]


def pool(per_text: Sequence[torch.Tensor], d_sae: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-text max and mean over tokens of activations [n_tokens, d_sae] per text: two [n_texts,
    d_sae]
    tensors (zeros for a text with no tokens)."""
    pooled_max = torch.stack([a.max(0).values if len(a) else torch.zeros(d_sae) for a in per_text])
    pooled_mean = torch.stack([a.mean(0) if len(a) else torch.zeros(d_sae) for a in per_text])
    return pooled_max, pooled_mean


def check_texts(texts: Sequence[str]) -> list[str]:
    """Validate a list of texts: non-empty list of non-empty strings."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string (wrap it: [text])")
    texts = list(texts)
    if not texts:
        raise InvalidArgumentError("texts is empty: pass at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a str")
        if not text.strip():
            raise InvalidArgumentError(f"texts[{i}] is an empty string")
    return texts


def tokenize_text(model, text: str, index: int = 0) -> tuple[torch.Tensor, str]:
    """Tokens [1, n] of ``text`` with BOS, truncated to the model's context with a warning (and the
    kept text)."""
    toks = model.to_tokens(text, prepend_bos=True, truncate=False)
    n_ctx = model.cfg.n_ctx
    if toks.shape[1] > n_ctx:
        warnings.warn(
            f"texts[{index}] has {toks.shape[1]} tokens, more than the model's context of "
            f"{n_ctx}: truncated",
            stacklevel=3,
        )
        toks = toks[:, :n_ctx]
        text = model.tokenizer.decode(toks[0, 1:])
    return toks, text


class ManyEncoded(NamedTuple):
    """What :func:`encode_texts` returns for several SAEs."""

    encoded: dict
    """{name: :class:`Encoded`}, one per SAE."""
    hook_acts: dict
    """{hook: per text, the model's activation [n_tokens, d] (float32, BOS dropped)}."""


@torch.inference_mode()
def encode_texts(
    model, saes, texts: Sequence[str], *, progress: bool = False, batch_size: int = 16
) -> Encoded | ManyEncoded:
    """Per-token feature activations (with token strings) and per-text max/mean pooled activations.

    ``saes``: one SAE (returns its :class:`Encoded`) or a mapping {name: SAE} (returns a
    :class:`ManyEncoded`: one forward pass, stopping after the deepest hook, serves every SAE, and
    the raw activations at each hook come back too). Texts of similar length are run up to
    ``batch_size`` at a time, padded at the end (the model is causal: padding after a text changes
    nothing at its own positions; one short text at a time costs several times as much per token
    on a CPU). Texts longer than the model's context are truncated with a warning.
    """
    single = not isinstance(saes, Mapping)
    named = {"sae": saes} if single else dict(saes)
    if not named:
        raise InvalidArgumentError("saes is empty: pass at least one SAE")
    texts = check_texts(texts)
    hooks = {name: check_widths(model, sae) for name, sae in named.items()}
    distinct = list(dict.fromkeys(hooks.values()))
    stop_at = stop_layer(distinct)
    toks, kept = [], []
    for i, text in enumerate(texts):
        t, text = tokenize_text(model, text, i)
        toks.append(t[0])
        kept.append(text)
    hook_acts: dict[str, list] = {h: [None] * len(texts) for h in distinct}
    bar = tqdm(total=len(texts), desc="encode", disable=not progress, leave=False)
    for idx, batch in padded_batches(toks, batch_size):
        _, cache = model.run_with_cache(
            batch.to(model.cfg.device), names_filter=distinct, stop_at_layer=stop_at
        )
        for h in distinct:
            acts = cache[h].float().cpu()
            for row, i in enumerate(idx):
                hook_acts[h][i] = acts[row, 1 : len(toks[i])].clone()
        bar.update(len(idx))
    bar.close()
    tokens_out = [model.to_str_tokens(t[1:]) for t in toks]
    sizes = [len(t) - 1 for t in toks]
    encoded = {}
    for name, sae in named.items():
        dtype = next(sae.parameters()).dtype
        feats = sae.encode(torch.cat(hook_acts[hooks[name]]).to(dtype)).float().cpu()
        per_text = list(feats.split(sizes))
        encoded[name] = Encoded(
            list(kept),
            [list(t) for t in tokens_out],
            per_text,
            *pool(per_text, sae.cfg.d_sae),
        )
    return encoded["sae"] if single else ManyEncoded(encoded, hook_acts)


def padded_batches(
    toks: Sequence[torch.Tensor], batch_size: int
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Token sequences ``[T_i]`` grouped by length, ``batch_size`` at a time, each group as (its
    indices into ``toks``, ``[len(group), max T_i]`` padded at the end with 0). The model is
    causal, so padding after a text changes nothing at its own positions."""
    order = sorted(range(len(toks)), key=lambda i: len(toks[i]))
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        batch = torch.zeros(len(idx), max(len(toks[i]) for i in idx), dtype=toks[idx[0]].dtype)
        for row, i in enumerate(idx):
            batch[row, : len(toks[i])] = toks[i]
        yield idx, batch


@torch.inference_mode()
def hook_activations(
    model, hook: str, texts: Sequence[str], *, drop_bos: bool = True, batch_size: int = 16
) -> list[torch.Tensor]:
    """Per text, the model's activation at ``hook``, [n_tokens, d] (float32; position 0 kept if not
    ``drop_bos``).

    Texts of similar length are run together, padded at the end: the model is causal, so padding
    after a text changes nothing at its own positions.
    """
    texts = check_texts(texts)
    hook = check_hooks(model, [hook])[0]
    stop_at = hook_layer(hook) + 1
    toks = [model.to_tokens(text, prepend_bos=True)[0, : model.cfg.n_ctx] for text in texts]
    out: list[torch.Tensor | None] = [None] * len(texts)
    for idx, batch in padded_batches(toks, batch_size):
        _, cache = model.run_with_cache(
            batch.to(model.cfg.device), names_filter=hook, stop_at_layer=stop_at
        )
        acts = cache[hook].float().cpu()
        for row, i in enumerate(idx):
            x = acts[row, : len(toks[i])]
            out[i] = (x[1:] if drop_bos else x).clone()
    return out


def text_tokens(model, texts: Sequence[str]) -> list[list[str]]:
    """Per text, its token strings with BOS left out, made readable where possible (see
    readable_tokens)."""
    out = []
    for text in check_texts(texts):
        raw = model.to_str_tokens(model.to_tokens(text, prepend_bos=True)[0, 1 : model.cfg.n_ctx])
        readable = readable_tokens(model.tokenizer, text)
        out.append(readable if readable is not None and len(readable) == len(raw) else list(raw))
    return out


@torch.inference_mode()
def encode_activations(
    sae, acts: Sequence[torch.Tensor], tokens: Sequence[Sequence[str]], texts: Sequence[str]
) -> Encoded:
    """The :class:`Encoded` of activations already read from the model (e.g. by hook_activations),
    without another pass."""
    if not (len(acts) == len(tokens) == len(texts)):
        raise InvalidArgumentError(
            f"got {len(acts)} activation tensors, {len(tokens)} token lists and {len(texts)} texts"
        )
    for i, (a, t) in enumerate(zip(acts, tokens)):
        if a.shape[0] != len(t):
            raise InvalidArgumentError(f"text {i}: {a.shape[0]} activations but {len(t)} tokens")
    dtype = next(sae.parameters()).dtype
    sizes = [a.shape[0] for a in acts]
    feats = (
        sae.encode(torch.cat(list(acts)).to(dtype)).float().cpu()
        if sum(sizes)
        else torch.zeros(0, sae.cfg.d_sae)
    )
    per_text = list(feats.split(sizes))
    return Encoded(list(texts), [list(t) for t in tokens], per_text, *pool(per_text, sae.cfg.d_sae))


def mask_tokens(enc: Encoded, mask: Sequence[torch.Tensor]) -> Encoded:
    """``enc`` with the tokens marked in ``mask`` (one bool mask per text) silenced: their feature
    activations
    set to zero and left out of the pooled max and mean. Tokens and positions stay as they were."""
    if len(mask) != len(enc.acts):
        raise InvalidArgumentError(f"got {len(mask)} masks for {len(enc.acts)} texts")
    acts, kept = [], []
    for i, (toks, a, m) in enumerate(zip(enc.tokens, enc.acts, mask)):
        m = torch.as_tensor(m, dtype=torch.bool)
        if m.shape != (len(toks),):
            raise InvalidArgumentError(
                f"mask {i} has shape {tuple(m.shape)}, text {i} has {len(toks)} tokens"
            )
        a = a.clone()
        a[m] = 0
        acts.append(a)
        kept.append(a[~m])
    return Encoded(
        list(enc.texts), [list(t) for t in enc.tokens], acts, *pool(kept, enc.max.shape[1])
    )


def with_readable_tokens(enc: Encoded, tokenizer) -> Encoded:
    """``enc`` with each text's token strings from :func:`readable_tokens` (kept as they are where
    those do not line up)."""
    tokens = []
    for text, toks in zip(enc.texts, enc.tokens):
        readable = readable_tokens(tokenizer, text)
        tokens.append(
            readable if readable is not None and len(readable) == len(toks) else list(toks)
        )
    return enc._replace(tokens=tokens)
