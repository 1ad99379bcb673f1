"""Read a model's activations: harvest them in one forward pass, and cache them on disk.

:func:`harvest` runs token batches through the model once, collects any number of hook points
and stops at the last layer it needs. On Llama-architecture models (the embedded SmolLM2) it runs a
lean forward pass from TransformerLens's own weights (:mod:`interp_lib.model.fast_forward`, the same
activations within fp32 rounding, faster than plain ``transformers``); elsewhere TransformerLens's
``run_with_cache``. Position 0 (the BOS token, an attention sink on SmolLM2
with ~150x the norm of other positions) is dropped, so what comes back is one row per real token.

:func:`cached_activations` adds a disk cache in fp16 safetensors, keyed by model, hook, corpus,
split, context length and token count. Files are written atomically
(:func:`interp_lib.files.atomic_file`) and checked on read (header, shape, content digest, and the
model and hook they were made for): a truncated, corrupt or mismatched file is rebuilt, never used.
A harvest killed at any moment leaves each cache file complete or absent.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from interp_lib import data
from interp_lib.errors import InvalidArgumentError
from interp_lib.files import atomic_file
from interp_lib.model.fast_forward import fast_forward_for, fast_forward_supported
from interp_lib.model.hooks import check_hooks, hook_layer, hook_width, stop_layer
from interp_lib.model.loading import cache_dir, load_model

FORMAT_VERSION = 1


@torch.inference_mode()
def harvest(
    model,
    hooks: Sequence[str] | str,
    tokens: torch.Tensor,
    *,
    batch_size: int = 16,
    drop_bos: bool = True,
    dtype: torch.dtype = torch.float16,
    progress: bool = True,
    engine: Literal["auto", "transformer_lens"] = "auto",
) -> dict[str, torch.Tensor]:
    """Activations at ``hooks`` for ``tokens`` [n_ctx, ctx_len] -> {hook: [n_ctx * (ctx_len - 1),
    d]}.

    ``engine="auto"`` runs the lean Llama forward (:mod:`interp_lib.model.fast_forward`, same
    activations within fp32 rounding) where it applies, TransformerLens elsewhere;
    ``"transformer_lens"`` always runs TransformerLens's ``run_with_cache``.
    """
    if engine not in ("auto", "transformer_lens"):
        raise InvalidArgumentError(f"engine must be 'auto' or 'transformer_lens', got {engine!r}")
    hooks = check_hooks(model, hooks)
    if tokens.ndim != 2:
        raise InvalidArgumentError(
            f"tokens must be [n_contexts, ctx_len], got shape {tuple(tokens.shape)}"
        )
    start = 1 if drop_bos else 0
    n_ctx, ctx_len = tokens.shape
    if ctx_len > model.cfg.n_ctx:
        raise InvalidArgumentError(
            f"contexts of {ctx_len} tokens are longer than the model's {model.cfg.n_ctx}"
        )
    n_rows = n_ctx * (ctx_len - start)
    out = {h: torch.empty(n_rows, hook_width(model, h), dtype=dtype) for h in hooks}
    capture = _capture_fn(model, hooks, engine)
    row = 0
    bar = tqdm(total=n_ctx * ctx_len, unit="tok", desc="harvest", disable=not progress, leave=False)
    for i in range(0, n_ctx, batch_size):
        batch = tokens[i : i + batch_size].to(model.cfg.device)
        captured = capture(batch)
        n = batch.shape[0] * (ctx_len - start)
        for h in hooks:
            out[h][row : row + n] = captured[h][:, start:].reshape(n, -1).to(dtype)
        row += n
        bar.update(batch.numel())
    bar.close()
    return out


def _capture_fn(model, hooks: list[str], engine: str):
    """The function harvest runs on each batch [b, ctx_len] -> {hook: [b, ctx_len, d]}: the lean
    Llama forward where it applies (and ``engine`` allows), else TransformerLens's
    ``run_with_cache`` stopped at the last block the hooks need."""
    if engine == "auto" and fast_forward_supported(model, hooks):
        forward = fast_forward_for(model)
        return lambda batch: forward(batch, hooks)
    stop_at = stop_layer(hooks)
    last_resid = f"blocks.{stop_at - 1}.hook_resid_pre"
    # If the deepest hook is a resid_pre, the stream returned at stop_at - 1 *is* that hook:
    # skip a block.
    if last_resid in hooks and all(hook_layer(h) < stop_at - 1 or h == last_resid for h in hooks):
        stop_at -= 1
        returned = last_resid
    else:
        returned = None
    cached = [h for h in hooks if h != returned]

    def capture(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        resid, cache = model.run_with_cache(batch, names_filter=cached, stop_at_layer=stop_at)
        captured = {h: cache[h] for h in cached}
        if returned is not None:
            captured[returned] = resid
        return captured

    return capture


# ----------------------------------------------------------------------------------------------
# The disk cache


def activation_key(
    model_name: str, hook: str, corpus_key: str, split: str, ctx_len: int, n_tokens: int
) -> str:
    """Stable short key for one cached activation file."""
    blob = json.dumps(
        [FORMAT_VERSION, model_name, hook, corpus_key, split, ctx_len, n_tokens], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _digest(t: torch.Tensor) -> str:
    return hashlib.blake2b(
        t.contiguous().view(torch.uint8).numpy().tobytes(), digest_size=16
    ).hexdigest()


def save_activations(path: Path, acts: torch.Tensor, meta: dict[str, str]) -> None:
    """Write ``acts`` to ``path`` atomically, with a content digest in the header."""
    meta = {
        **{k: str(v) for k, v in meta.items()},
        "digest": _digest(acts),
        "shape": json.dumps(list(acts.shape)),
    }
    with atomic_file(path) as tmp:
        save_file({"acts": acts.contiguous()}, str(tmp), metadata=meta)


def load_activations(path: Path, expect: dict | None = None) -> torch.Tensor | None:
    """Read a cached activation file; ``None`` if it is missing, truncated or corrupt, or if its
    metadata differs from ``expect`` (e.g. ``{"model": ..., "hook": ...}``)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        acts = load_file(str(path))["acts"]
    except (SafetensorError, OSError, KeyError, RuntimeError, ValueError):
        return None
    if json.dumps(list(acts.shape)) != meta.get("shape") or _digest(acts) != meta.get("digest"):
        return None
    if any(meta.get(k) != str(v) for k, v in (expect or {}).items()):
        return None
    return acts


def cached_activations(
    model_name: str,
    hooks: Sequence[str] | str,
    *,
    n_tokens: int,
    split: str = "train",
    ctx_len: int = 128,
    model=None,
    batch_size: int = 16,
    progress: bool = True,
    sources: Sequence[str] = data.SOURCES,
) -> dict[str, torch.Tensor]:
    """Activations of the offline corpus (``split`` 'train' or 'heldout', built from ``sources``)
    at ``hooks``, from cache or harvested.

    Returns {hook: fp16 [rows, d]} with rows = n_contexts * (ctx_len - 1) (position 0 dropped),
    n_contexts = n_tokens // ctx_len. Hooks missing from the cache are harvested together in one
    pass.
    """
    hooks = [hooks] if isinstance(hooks, str) else list(dict.fromkeys(hooks))
    if split not in ("train", "heldout"):
        raise InvalidArgumentError(f"split must be 'train' or 'heldout', got {split!r}")
    if n_tokens < ctx_len:
        raise InvalidArgumentError(f"n_tokens ({n_tokens}) must be at least ctx_len ({ctx_len})")
    docs = corpus_split(split, sources)
    ckey = data.corpus_key(docs)
    root = cache_dir() / "activations"
    paths = {
        h: root
        / f"{model_name}--{h}--{activation_key(model_name, h, ckey, split, ctx_len, n_tokens)}"
        f".safetensors"
        for h in hooks
    }
    result: dict[str, torch.Tensor] = {}
    metas = {
        h: {
            "model": model_name,
            "hook": h,
            "corpus": ckey,
            "split": split,
            "ctx_len": ctx_len,
            "n_tokens": n_tokens,
        }
        for h in hooks
    }
    for h, p in paths.items():
        acts = load_activations(p, metas[h])
        if acts is not None:
            result[h] = acts
    missing = [h for h in hooks if h not in result]
    if missing:
        if model is None:
            model = load_model(model_name)
        tokens = corpus_tokens(model, split, n_tokens, ctx_len, sources=sources)
        fresh = harvest(model, missing, tokens, batch_size=batch_size, progress=progress)
        for h in missing:
            save_activations(paths[h], fresh[h], metas[h])
            result[h] = fresh[h]
    return {h: result[h] for h in hooks}


def corpus_tokens(
    model_or_tokenizer,
    split: str,
    n_tokens: int,
    ctx_len: int = 128,
    *,
    sources: Sequence[str] = data.SOURCES,
) -> torch.Tensor:
    """Token ids [n_tokens // ctx_len, ctx_len] of the offline corpus's ``split`` ('train' or
    'heldout'), BOS first: the text behind :func:`cached_activations` with the same arguments."""
    if split not in ("train", "heldout"):
        raise InvalidArgumentError(f"split must be 'train' or 'heldout', got {split!r}")
    return data.tokenize_corpus(
        model_or_tokenizer, corpus_split(split, sources), ctx_len=ctx_len, max_tokens=n_tokens
    )


_SPLITS: dict[tuple[str, ...], dict[str, list]] = {}


def corpus_split(split: str, sources: Sequence[str] = data.SOURCES) -> list:
    """The offline corpus's 'train' or 'heldout' documents, built from ``sources`` (default: the
    corpus the shipped SAEs were trained on; :data:`interp_lib.data.ALL_SOURCES` for the wider
    one), once per process."""
    if isinstance(sources, str):
        raise InvalidArgumentError(f"sources must be a sequence of source names, got {sources!r}")
    key = tuple(sources)
    if key not in _SPLITS:
        try:
            train, heldout = data.split_corpus(data.build_corpus(sources=key))
        except ValueError as e:  # an unknown source name
            raise InvalidArgumentError(str(e)) from None
        _SPLITS[key] = {"train": train, "heldout": heldout}
    return _SPLITS[key][split]
