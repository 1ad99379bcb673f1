"""Steering: add a feature's decoder direction to the model's activations while it runs.

:func:`steering` (a context manager) and :func:`generate_steered` add
``strength * d_f`` to the activation at the SAE's hook, at every position after BOS, where
``d_f = W_dec[f] / |W_dec[f]|`` is the feature's unit decoder direction. ``strength`` is in raw
residual units (the added vector's L2 norm); pass ``ref_norm=typical_norm(model, sae)`` to give it
as a multiple of a typical activation norm at that hook instead (0.5 = half the size of a typical
activation). A raw strength ``s`` is the same as raising the feature's activation by
``s / |W_dec[f]|``.

To steer along any direction (a random one of the same norm, the control) and to measure many
prompts and conditions at once: :func:`add_at_positions` takes any vector (or one per batch row),
and :func:`concept_probability`, :func:`text_loss` and :func:`steered_generations` (greedy and
seeded sampled continuations) run a dict of conditions, ``name -> vector``, on every prompt or
text, several rows per forward pass.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import re
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from interp_lib.errors import InvalidArgumentError
from interp_lib.interventions.checks import check_feature, to_tokens, token_id
from interp_lib.model.hooks import check_widths, stop_layer

NEUTRAL_TEXTS: tuple[str, ...] = (
    "The meeting was moved to Thursday afternoon because two of the speakers were travelling.",
    "She opened the window, made a cup of tea and sat down to read the letter again.",
    "def mean(values):\n    return sum(values) / len(values)\n",
    "The report lists the costs of each project and the number of people who worked on it.",
    "In the morning the train was late, so we walked along the river to the old bridge.",
    "Water boils at a lower temperature at high altitude, where the air pressure is lower.",
)
"""Fixed, topic-neutral texts: the default set for the fluency cost and for :func:`typical_norm`."""

HookFn = Callable[[torch.Tensor, object], "torch.Tensor | None"]
FwdHooks = list[tuple[str, HookFn]]

_BEFORE_FIRST_ATTENTION = re.compile(
    r"^(hook_embed|hook_pos_embed|hook_tokens|blocks\.0\.(hook_resid_pre|ln1\..*|hook_[qkv]_input"
    r"|hook_attn_in|attn\.hook_(q|k|v|rot_q|rot_k)))$"
)


def feature_direction(sae, feature: int) -> torch.Tensor:
    """The feature's unit decoder direction W_dec[f] / |W_dec[f]|, float32 [d_in]."""
    f = check_feature(sae, feature)
    row = sae.W_dec[f].detach().float()
    norm = row.norm()
    if norm == 0:
        raise InvalidArgumentError(
            f"feature {f} has an all-zero decoder row: it has no direction to steer along"
        )
    return row / norm


def steering_vector(
    sae, feature: int, strength: float, *, ref_norm: float | None = None
) -> torch.Tensor:
    """``strength`` x the unit decoder direction [d_in], and x ``ref_norm`` when one is given."""
    if (
        not isinstance(strength, numbers.Real)
        or isinstance(strength, bool)
        or not math.isfinite(strength)
    ):
        raise InvalidArgumentError(f"strength must be a finite number, got {strength!r}")
    if ref_norm is not None and (
        not isinstance(ref_norm, numbers.Real) or not ref_norm > 0 or not math.isfinite(ref_norm)
    ):
        raise InvalidArgumentError(
            f"ref_norm must be a positive number (e.g. typical_norm(model, sae)), got {ref_norm!r}"
        )
    scale = float(ref_norm) if ref_norm is not None else 1.0
    return feature_direction(sae, feature) * float(strength) * scale


def add_at_positions(hook_name: str, vector: torch.Tensor) -> FwdHooks:
    """Forward hooks adding ``vector`` [d] (or one vector per batch row, [batch, d]) at
    ``hook_name`` to every position >= 1, even under a KV cache.

    With a KV cache (``model.generate``'s default) later forward passes see only the new token, so
    the hook learns the absolute position from the attention scores of layer 0 ([.., query, key]:
    the offset is key - query). Hooks read before layer 0's attention cannot see it: they raise
    under a cache; generate with ``use_past_kv_cache=False`` there.
    """
    state: dict[str, int] = {}  # the layer-0 hook hands the cache offset to the adding hook
    blind = bool(_BEFORE_FIRST_ATTENTION.match(hook_name))
    if vector.ndim not in (1, 2):
        raise InvalidArgumentError(f"vector must be [d] or [batch, d], got {tuple(vector.shape)}")

    def record_offset(scores: torch.Tensor, hook) -> None:
        offset = scores.shape[-1] - scores.shape[-2]
        if blind and offset > 0:
            raise RuntimeError(
                f"Steering at {hook_name!r}, before the first attention layer, "
                "cannot tell cached positions apart: call "
                "model.generate(..., use_past_kv_cache=False)"
            )
        state["offset"] = offset

    def add(act: torch.Tensor, hook) -> torch.Tensor:
        rows = act.shape[0] if vector.ndim == 1 else vector.shape[0]
        if act.ndim != 3 or act.shape[-1] != vector.shape[-1] or act.shape[0] != rows:
            raise InvalidArgumentError(
                f"expected an activation [{rows if vector.ndim == 2 else 'batch'}, pos, "
                f"{vector.shape[-1]}] at {hook_name}, got {tuple(act.shape)}"
            )
        offset = 0 if blind else int(state.pop("offset", 0))
        start = max(0, 1 - offset)  # absolute position 0 is BOS: never steered
        mask = torch.zeros(act.shape[1], 1, dtype=act.dtype, device=act.device)
        mask[start:] = 1
        vec = vector.to(act.device, act.dtype)
        return act + mask * (vec if vec.ndim == 1 else vec[:, None, :])

    return [("blocks.0.attn.hook_attn_scores", record_offset), (hook_name, add)]


def steering_hooks(
    model, sae, feature: int, strength: float, *, ref_norm: float | None = None
) -> FwdHooks:
    """fwd_hooks for ``model.hooks(fwd_hooks=...)`` that steer ``feature`` at the SAE's hook,
    positions >= 1."""
    hook = check_widths(model, sae)
    return add_at_positions(hook, steering_vector(sae, feature, strength, ref_norm=ref_norm))


@contextlib.contextmanager
def steering(
    model, sae, feature: int, strength: float, *, ref_norm: float | None = None
) -> Iterator[None]:
    """Context manager: inside it every forward pass and ``model.generate`` call is steered."""
    with model.hooks(fwd_hooks=steering_hooks(model, sae, feature, strength, ref_norm=ref_norm)):
        yield


@torch.inference_mode()
def typical_norm(model, sae, texts: Sequence[str] = NEUTRAL_TEXTS) -> float:
    """Median L2 norm of the activation at the SAE's hook over ``texts`` (positions >= 1)."""
    hook = check_widths(model, sae)
    texts = _check_texts(texts, "texts")
    stop = stop_layer([hook]) if hook.startswith("blocks.") else None
    norms: list[torch.Tensor] = []
    for text in texts:
        _, cache = model.run_with_cache(
            to_tokens(model, text), names_filter=hook, stop_at_layer=stop
        )
        norms.append(cache[hook][0, 1:].float().norm(dim=-1))
    return float(torch.cat(norms).median())


def _check_texts(texts, name: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, not a single string (wrap it: [text])")
    texts = list(texts)
    if not texts:
        raise InvalidArgumentError(f"{name} is empty")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise InvalidArgumentError(f"{name}[{i}] must be a non-empty string, got {t!r}")
    return texts


def generate(
    model,
    prompt: str,
    *,
    max_new_tokens: int,
    seed: int = 0,
    temperature: float = 0.0,
    use_past_kv_cache: bool = True,
) -> str:
    """The continuation of ``prompt`` (prompt not included, cut at EOS); temperature 0 = greedy."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidArgumentError(f"prompt must be a non-empty string, got {prompt!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InvalidArgumentError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise InvalidArgumentError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    tokens = to_tokens(model, prompt)
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(seed)
        out = model.generate(
            tokens,
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=max(temperature, 1e-8),
            use_past_kv_cache=use_past_kv_cache,
            verbose=False,
            return_type="tokens",
        )
    new = out[0, tokens.shape[1] :]
    eos = getattr(model.tokenizer, "eos_token_id", None)
    if eos is not None and (new == eos).any():
        new = new[: int((new == eos).nonzero()[0])]
    return model.tokenizer.decode(new)


def generate_steered(
    model,
    sae,
    feature: int,
    strength: float,
    prompt: str,
    *,
    max_new_tokens: int = 30,
    seed: int = 0,
    temperature: float = 0.0,
    ref_norm: float | None = None,
    use_past_kv_cache: bool = True,
) -> str:
    """The continuation of ``prompt`` (prompt not included) while steering ``feature``."""
    with steering(model, sae, feature, strength, ref_norm=ref_norm):
        return generate(
            model,
            prompt,
            max_new_tokens=max_new_tokens,
            seed=seed,
            temperature=temperature,
            use_past_kv_cache=use_past_kv_cache,
        )


def _per_unit(vectors: dict[str, torch.Tensor], n: int, d: int) -> dict[str, torch.Tensor]:
    """Each condition's vector as float32 [n, d] (a [d] vector is repeated)."""
    if not vectors:
        raise InvalidArgumentError(
            "vectors is empty: pass at least one condition, e.g. {'none': zeros}"
        )
    out = {}
    for name, v in vectors.items():
        v = torch.as_tensor(v).detach().float().cpu()
        if v.ndim == 1:
            v = v.expand(n, -1)
        if tuple(v.shape) != (n, d):
            raise InvalidArgumentError(
                f"condition {name!r}: vector must be [{d}] or [{n}, {d}], got {tuple(v.shape)}"
            )
        out[name] = v
    return out


def _length_groups(tokens: list[torch.Tensor]) -> list[list[int]]:
    """Indices of the token rows grouped by length (equal lengths batch without padding)."""
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(tokens):
        groups.setdefault(int(t.shape[0]), []).append(i)
    return list(groups.values())


def _length_batches(
    per: dict[str, torch.Tensor],
    tokens: list[torch.Tensor],
    batch_size: int,
    samples: Sequence[int | None] = (None,),
) -> Iterator[tuple[list[tuple[int, int, int | None]], torch.Tensor, torch.Tensor]]:
    """(rows, vecs [b, d], toks [b, pos]): every (condition, unit, sample) row of ``per``'s
    conditions, ``tokens``' units and ``samples``, ``batch_size`` rows per batch; units of equal
    token length share batches (no padding)."""
    conds = list(per.values())
    for idx in _length_groups(tokens):
        rows = [(c, i, j) for c in range(len(conds)) for i in idx for j in samples]
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            vecs = torch.stack([conds[c][i] for c, i, _ in chunk])
            yield chunk, vecs, torch.stack([tokens[i] for _, i, _ in chunk])


def _next_token_batches(
    model, hook: str, vectors: dict[str, torch.Tensor], prompts: list[str], batch_size: int
) -> Iterator[tuple[list[tuple[int, int]], torch.Tensor]]:
    """(rows, probs): the (condition, prompt) index pairs of one forward pass and their
    next-token distributions ``[rows, d_vocab]``; prompts of equal length share passes."""
    per = _per_unit(vectors, len(prompts), model.cfg.d_model)
    tokens = [to_tokens(model, p)[0] for p in prompts]
    for chunk, vecs, toks in _length_batches(per, tokens, batch_size):
        with model.hooks(fwd_hooks=add_at_positions(hook, vecs)):
            logits = model(toks, return_type="logits")[:, -1].float()
        yield [(c, i) for c, i, _ in chunk], logits.softmax(-1).cpu()


@torch.inference_mode()
def next_token_probs(
    model,
    hook: str,
    vectors: dict[str, torch.Tensor],
    prompts: Sequence[str],
    *,
    batch_size: int = 64,
) -> torch.Tensor:
    """Next-token distribution after each prompt under each condition: float32
    ``[n_conditions, n_prompts, d_vocab]``, conditions in the order of ``vectors`` (each added at
    ``hook`` at every position >= 1, see :func:`add_at_positions`; a zero vector leaves the model
    unsteered). ``batch_size`` (condition, prompt) rows run per forward pass."""
    prompts = _check_texts(prompts, "prompts")
    out = torch.empty(len(vectors), len(prompts), model.cfg.d_vocab)
    for rows, probs in _next_token_batches(model, hook, vectors, prompts, batch_size):
        for (c, i), p in zip(rows, probs):
            out[c, i] = p
    return out


@torch.inference_mode()
def concept_probability(
    model,
    hook: str,
    vectors: dict[str, torch.Tensor],
    prompts: Sequence[str],
    concept_tokens: Sequence[int | str],
    *,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Next-token probability mass on ``concept_tokens`` after each prompt, under each condition.

    One row per prompt (index: the prompt), one column per condition of ``vectors`` (added at
    ``hook`` at every position >= 1, see :func:`add_at_positions`).
    """
    prompts = _check_texts(prompts, "prompts")
    ids = list(dict.fromkeys(token_id(model, t) for t in concept_tokens))
    if not ids:
        raise InvalidArgumentError("concept_tokens is empty")
    out = np.zeros((len(prompts), len(vectors)))
    for rows, probs in _next_token_batches(model, hook, vectors, prompts, batch_size):
        for (c, i), value in zip(rows, probs[:, ids].sum(-1).numpy()):
            out[i, c] = value
    return pd.DataFrame(out, index=pd.Index(prompts, name="prompt"), columns=list(vectors))


@torch.inference_mode()
def text_loss(
    model,
    hook: str,
    vectors: dict[str, torch.Tensor],
    texts: Sequence[str] = NEUTRAL_TEXTS,
    *,
    batch_size: int = 32,
) -> pd.DataFrame:
    """Mean next-token loss (nats) of each text under each condition: the fluency cost.

    Predictions from positions >= 1. One row per text, one column per
    condition. Texts of different lengths share a forward pass, padded at the end (a causal model
    never sees the padding from the positions that are scored).
    """
    texts = _check_texts(texts, "texts")
    per = _per_unit(vectors, len(texts), model.cfg.d_model)
    tokens = [to_tokens(model, t)[0] for t in texts]
    conds = list(per.values())
    # rows sorted by length, so that each forward pass pads little
    rows = sorted(
        ((c, i) for c in range(len(per)) for i in range(len(texts))),
        key=lambda r: len(tokens[r[1]]),
    )
    out = np.zeros((len(texts), len(per)))
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        width = max(len(tokens[i]) for _, i in chunk)
        toks = torch.stack(
            [
                torch.cat([tokens[i], tokens[i][-1:].expand(width - len(tokens[i]))])
                for _, i in chunk
            ]
        )
        vecs = torch.stack([conds[c][i] for c, i in chunk])
        with model.hooks(fwd_hooks=add_at_positions(hook, vecs)):
            logits = model(toks, return_type="logits")
        logp = logits[:, :-1].float().log_softmax(-1)
        loss = -logp.gather(-1, toks[:, 1:, None])[..., 0].cpu()  # [b, width-1]
        for row, (c, i) in enumerate(chunk):
            n = len(tokens[i])
            out[i, c] = float(loss[row, 1 : n - 1].double().mean())
    return pd.DataFrame(out, index=pd.RangeIndex(len(texts), name="text"), columns=list(per))


def _sample_seed(seed: int, unit: int, sample: int) -> int:
    """The seed of sample ``sample`` of prompt ``unit``: the same under every condition."""
    return int(seed) + 1_000_003 * int(sample) + 7919 * int(unit)


@torch.inference_mode()
def _continue(
    model,
    tokens: torch.Tensor,
    generators: list[torch.Generator | None],
    *,
    max_new_tokens: int,
    temperature: float,
) -> torch.Tensor:
    """[b, max_new_tokens] new tokens for the rows of ``tokens`` [b, pos] under a KV cache; a row
    with a generator samples at ``temperature`` (Gumbel-max), a row with None is greedy."""
    # imported here: transformer_lens is a heavy import that `import interp_lib` avoids
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, tokens.shape[0])
    logits = model(tokens, return_type="logits", past_kv_cache=cache)[:, -1].float()
    new = []
    for step in range(max_new_tokens):
        scores = logits.cpu()
        for row, g in enumerate(generators):
            if g is not None:
                u = torch.rand(scores.shape[-1], generator=g).clamp_(1e-20, 1.0)
                scores[row] = scores[row] / temperature - torch.log(-torch.log(u))
        nxt = scores.argmax(-1).to(tokens.device)
        new.append(nxt)
        if step + 1 < max_new_tokens:
            logits = model(nxt[:, None], return_type="logits", past_kv_cache=cache)[:, -1].float()
    return torch.stack(new, dim=1)


def steered_generations(
    model,
    hook: str,
    vectors: dict[str, torch.Tensor],
    prompts: Sequence[str],
    *,
    n_samples: int = 16,
    max_new_tokens: int = 12,
    temperature: float = 1.0,
    seed: int = 0,
    concept_strings: Sequence[str] = (),
    batch_size: int = 64,
) -> pd.DataFrame:
    """Greedy and sampled continuations of every prompt under every condition, batched.

    One row per (condition, prompt, sample): ``sample`` -1 is the greedy continuation, 0..
    ``n_samples``-1 are sampled at ``temperature`` with a fixed seed per (prompt, sample), the
    same under every condition, so conditions differ only by what is added. Columns:
    ``condition``, ``prompt``, ``sample``, ``text`` (cut at EOS) and ``mentions`` (the text
    contains one of ``concept_strings``, case-insensitive).
    """
    prompts = _check_texts(prompts, "prompts")
    if not isinstance(n_samples, int) or n_samples < 0:
        raise InvalidArgumentError(f"n_samples must be an int >= 0, got {n_samples!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InvalidArgumentError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if not temperature > 0:
        raise InvalidArgumentError(
            f"temperature must be > 0 (sample -1 is greedy), got {temperature!r}"
        )
    per = _per_unit(vectors, len(prompts), model.cfg.d_model)
    names = list(per)
    needles = [s.lower() for s in concept_strings if s]
    eos = getattr(model.tokenizer, "eos_token_id", None)
    tokens = [to_tokens(model, p)[0] for p in prompts]
    records = []
    for chunk, vecs, toks in _length_batches(per, tokens, batch_size, range(-1, n_samples)):
        gens = [
            None if j < 0 else torch.Generator().manual_seed(_sample_seed(seed, i, j))
            for _, i, j in chunk
        ]
        with model.hooks(fwd_hooks=add_at_positions(hook, vecs)):
            new = _continue(
                model, toks, gens, max_new_tokens=max_new_tokens, temperature=temperature
            )
        for (c, i, j), row in zip(chunk, new.cpu()):
            if eos is not None and (row == eos).any():
                row = row[: int((row == eos).nonzero()[0])]
            text = model.tokenizer.decode(row)
            records.append(
                {
                    "condition": names[c],
                    "prompt": prompts[i],
                    "sample": j,
                    "text": text,
                    "mentions": any(n in text.lower() for n in needles),
                }
            )
    order = {n: k for k, n in enumerate(names)}
    df = pd.DataFrame(records)
    df["_c"], df["_p"] = df.condition.map(order), df.prompt.map(prompts.index)
    return df.sort_values(["_c", "_p", "sample"]).drop(columns=["_c", "_p"]).reset_index(drop=True)
