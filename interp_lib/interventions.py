"""Causal interventions with SAE features: steer, ablate, attribute, and read a feature's logits.

Four tools, each a few lines in a chapter:

* **Steering** (:func:`steering`, :func:`generate_steered`, :func:`steer_sweep`): add
  ``strength * d_f`` to the activation at the SAE's hook, where ``d_f = W_dec[f] / |W_dec[f]|`` is the
  feature's unit decoder direction. ``strength`` is in raw residual units (the added vector's L2 norm);
  pass ``ref_norm=typical_norm(model, sae)`` to give it as a multiple of a typical activation norm
  at that hook instead (0.5 = half the size of a typical activation). A raw strength ``s`` is the same
  as raising the feature's activation by ``s / |W_dec[f]|``.
* **Ablation** (:func:`ablate_features`): change only the chosen features and keep the SAE's error term,
  ``x -> x + decode(f_ablated) - decode(f)``, so everything the SAE does not explain stays in place.
* **Attribution** (:func:`attribute_features`, :func:`verify_attribution`): activation x gradient of a
  target logit (or logit difference) with respect to each feature's activation, computed by splicing
  the SAE in with its error term (the forward pass is unchanged) and backpropagating. It is the linear
  estimate of what zero-ablating the feature would do; :func:`verify_attribution` checks it.
* **Logit lens** (:func:`feature_logit_lens`): the tokens a feature's decoder direction pushes up and
  down through the direct path to the unembedding.

Position 0 (the BOS token, an attention sink on SmolLM2) is never steered, spliced or scored, as in the
rest of the library. Token inputs are expected to start with BOS (``model.to_tokens`` does that).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
import re
from typing import Callable, Iterator, Literal, NamedTuple, Sequence

import numpy as np
import torch

from .metrics import check_widths

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


# ----------------------------------------------------------------------------------------------
# Validation helpers


def check_feature(sae, feature) -> int:
    """Return ``feature`` as an int, or raise ValueError naming the valid range ``0..d_sae-1``."""
    d_sae = int(sae.cfg.d_sae)
    if isinstance(feature, bool):
        raise ValueError(f"feature must be an int in 0..{d_sae - 1}, got {feature!r}")
    try:
        index = operator.index(feature.item() if isinstance(feature, torch.Tensor) and feature.numel() == 1 else feature)
    except TypeError:
        raise ValueError(f"feature must be an int in 0..{d_sae - 1}, got {feature!r}") from None
    if not 0 <= index < d_sae:
        raise ValueError(f"feature {index} is out of range: this SAE has {d_sae} features (valid 0..{d_sae - 1})")
    return index


def check_features(sae, features, *, allow_empty: bool = False) -> list[int]:
    """Validate a feature index or a sequence of them (duplicates removed, order kept)."""
    if isinstance(features, (int, np.integer)) or (isinstance(features, torch.Tensor) and features.ndim == 0):
        features = [features]
    features = [check_feature(sae, f) for f in features]
    if not features and not allow_empty:
        raise ValueError("features is empty: pass at least one feature index")
    return list(dict.fromkeys(features))


def token_id(model, token: int | str) -> int:
    """A single token id from an id or a string that is exactly one token (no BOS added)."""
    d_vocab = int(model.cfg.d_vocab)
    if isinstance(token, str):
        ids = model.to_tokens(token, prepend_bos=False)[0].tolist()
        if len(ids) != 1:
            pieces = model.to_str_tokens(torch.tensor(ids)) if ids else []
            raise ValueError(f"{token!r} is {len(ids)} tokens {pieces}, not one: pass a single token "
                             "(mind the leading space, e.g. ' Paris') or its id")
        return int(ids[0])
    if isinstance(token, bool):
        raise ValueError(f"token must be an id in 0..{d_vocab - 1} or a string, got {token!r}")
    try:
        index = operator.index(token.item() if isinstance(token, torch.Tensor) and token.numel() == 1 else token)
    except TypeError:
        raise ValueError(f"token must be an id in 0..{d_vocab - 1} or a string, got {token!r}") from None
    if not 0 <= index < d_vocab:
        raise ValueError(f"token id {index} is out of range: the vocabulary has {d_vocab} tokens (valid 0..{d_vocab - 1})")
    return index


def to_tokens(model, text_or_tokens: str | torch.Tensor) -> torch.Tensor:
    """One text (BOS prepended) or a token tensor [ctx] / [n, ctx] -> LongTensor [n, ctx] on the model's device."""
    if isinstance(text_or_tokens, str):
        if not text_or_tokens.strip():
            raise ValueError("the text is empty")
        tokens = model.to_tokens(text_or_tokens, prepend_bos=True)
    elif isinstance(text_or_tokens, torch.Tensor):
        tokens = text_or_tokens
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2 or tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise ValueError(f"tokens must be an integer tensor [ctx] or [n, ctx], got {tuple(text_or_tokens.shape)} {text_or_tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= model.cfg.d_vocab):
            raise ValueError(f"token ids must lie in 0..{model.cfg.d_vocab - 1}, got {int(tokens.min())}..{int(tokens.max())}")
    else:
        raise TypeError(f"pass one text (str) or a token tensor, got {type(text_or_tokens).__name__}")
    if tokens.shape[1] < 2:
        raise ValueError(f"need BOS plus at least one real token, got {tokens.shape[1]} token(s)")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"{tokens.shape[1]} tokens is more than the model's context of {model.cfg.n_ctx}")
    return tokens.long().to(model.cfg.device)


def _check_linear_decoder(sae) -> None:
    norm = getattr(sae.cfg, "normalize_activations", "none")
    if norm in ("constant_norm_rescale", "layer_norm"):
        raise ValueError(f"This SAE normalises its input at run time (normalize_activations={norm!r}); "
                         "its decoder is not a fixed linear map, so these interventions do not apply")


def _sae_dtype(sae) -> torch.dtype:
    return sae.W_dec.dtype


# ----------------------------------------------------------------------------------------------
# Steering


def feature_direction(sae, feature: int) -> torch.Tensor:
    """The feature's unit decoder direction W_dec[f] / |W_dec[f]|, float32 [d_in]."""
    f = check_feature(sae, feature)
    row = sae.W_dec[f].detach().float()
    norm = row.norm()
    if norm == 0:
        raise ValueError(f"feature {f} has an all-zero decoder row: it has no direction to steer along")
    return row / norm


def steering_vector(sae, feature: int, strength: float, *, ref_norm: float | None = None) -> torch.Tensor:
    """``strength * unit decoder direction`` [d_in]; with ``ref_norm``, strength is a multiple of it."""
    if not isinstance(strength, numbers.Real) or isinstance(strength, bool) or not math.isfinite(strength):
        raise ValueError(f"strength must be a finite number, got {strength!r}")
    if ref_norm is not None and (not isinstance(ref_norm, numbers.Real) or not ref_norm > 0 or not math.isfinite(ref_norm)):
        raise ValueError(f"ref_norm must be a positive number (e.g. typical_norm(model, sae)), got {ref_norm!r}")
    return feature_direction(sae, feature) * float(strength) * (float(ref_norm) if ref_norm is not None else 1.0)


_BEFORE_FIRST_ATTENTION = re.compile(
    r"^(hook_embed|hook_pos_embed|hook_tokens|blocks\.0\.(hook_resid_pre|ln1\..*|hook_[qkv]_input|hook_attn_in"
    r"|attn\.hook_(q|k|v|rot_q|rot_k)))$"
)


def add_at_positions(hook_name: str, vector: torch.Tensor) -> FwdHooks:
    """Forward hooks adding ``vector`` [d] at ``hook`` to every position >= 1, also under a KV cache.

    With a KV cache (``model.generate``'s default) later forward passes see only the new token, so the
    hook learns the absolute position from the attention scores of layer 0 ([.., query, key]: the
    offset is key - query). Hooks read before layer 0's attention cannot see it: they raise under a
    cache; generate with ``use_past_kv_cache=False`` there.
    """
    state: dict[str, object] = {}
    blind = bool(_BEFORE_FIRST_ATTENTION.match(hook_name))

    def record_offset(scores: torch.Tensor, hook) -> None:
        offset = scores.shape[-1] - scores.shape[-2]
        if blind and offset > 0:
            raise RuntimeError(f"Steering at {hook_name!r}, before the first attention layer, cannot tell cached "
                               "positions apart: call model.generate(..., use_past_kv_cache=False)")
        state["offset"] = offset

    def add(act: torch.Tensor, hook) -> torch.Tensor:
        if act.ndim != 3 or act.shape[-1] != vector.shape[0]:
            raise ValueError(f"expected an activation [batch, pos, {vector.shape[0]}] at {hook_name}, got {tuple(act.shape)}")
        offset = 0 if blind else int(state.pop("offset", 0))
        start = max(0, 1 - offset)  # absolute position 0 is BOS: never steered
        mask = torch.zeros(act.shape[1], 1, dtype=act.dtype, device=act.device)
        mask[start:] = 1
        return act + mask * vector.to(act.device, act.dtype)

    return [("blocks.0.attn.hook_attn_scores", record_offset), (hook_name, add)]


def steering_hooks(model, sae, feature: int, strength: float, *, ref_norm: float | None = None) -> FwdHooks:
    """fwd_hooks for ``model.hooks(fwd_hooks=...)`` that steer ``feature`` at the SAE's hook, positions >= 1."""
    hook = check_widths(model, sae)
    return add_at_positions(hook, steering_vector(sae, feature, strength, ref_norm=ref_norm))


@contextlib.contextmanager
def steering(model, sae, feature: int, strength: float, *, ref_norm: float | None = None) -> Iterator[None]:
    """Context manager: inside it every forward pass and ``model.generate`` call is steered."""
    with model.hooks(fwd_hooks=steering_hooks(model, sae, feature, strength, ref_norm=ref_norm)):
        yield


@torch.inference_mode()
def typical_norm(model, sae, texts: Sequence[str] = NEUTRAL_TEXTS) -> float:
    """Median L2 norm of the activation at the SAE's hook over ``texts`` (positions >= 1)."""
    from .activations import hook_layer

    hook = check_widths(model, sae)
    texts = _check_texts(texts, "texts")
    norms: list[torch.Tensor] = []

    def grab(act: torch.Tensor, hook) -> None:
        norms.append(act[0, 1:].float().norm(dim=-1))

    for text in texts:
        model.run_with_hooks(to_tokens(model, text), fwd_hooks=[(hook, grab)],
                             stop_at_layer=hook_layer(hook) + 1 if hook.startswith("blocks.") else None)
    return float(torch.cat(norms).median())


def _check_texts(texts, name: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, not a single string (wrap it: [text])")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{name} is empty")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"{name}[{i}] must be a non-empty string, got {t!r}")
    return texts


def _generate(model, prompt: str, *, max_new_tokens: int, seed: int, temperature: float,
              use_past_kv_cache: bool = True) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    tokens = to_tokens(model, prompt)
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(seed)
        out = model.generate(tokens, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                             temperature=max(temperature, 1e-8), use_past_kv_cache=use_past_kv_cache,
                             verbose=False, return_type="tokens")
    new = out[0, tokens.shape[1]:]
    eos = getattr(model.tokenizer, "eos_token_id", None)
    if eos is not None and (new == eos).any():
        new = new[: int((new == eos).nonzero()[0])]
    return model.tokenizer.decode(new)


def generate_steered(model, sae, feature: int, strength: float, prompt: str, *, max_new_tokens: int = 30,
                     seed: int = 0, temperature: float = 0.0, ref_norm: float | None = None,
                     use_past_kv_cache: bool = True) -> str:
    """The continuation of ``prompt`` (prompt not included) while steering; temperature 0 = greedy."""
    with steering(model, sae, feature, strength, ref_norm=ref_norm):
        return _generate(model, prompt, max_new_tokens=max_new_tokens, seed=seed, temperature=temperature,
                         use_past_kv_cache=use_past_kv_cache)


@torch.inference_mode()
def _next_token_probs(model, prompt: str, ids: list[int]) -> float:
    logits = model(to_tokens(model, prompt), return_type="logits")[0, -1].float()
    return float(logits.softmax(-1)[ids].sum())


@torch.inference_mode()
def _mean_loss(model, texts: Sequence[str]) -> float:
    total, count = 0.0, 0
    for text in texts:
        loss = model(to_tokens(model, text), return_type="loss", loss_per_token=True)[0, 1:]  # predictions from positions >= 1
        total += float(loss.double().sum())
        count += loss.numel()
    return total / max(count, 1)


def steer_sweep(model, sae, feature: int, strengths: Sequence[float], prompts: Sequence[str],
                concept_tokens: Sequence[int | str], *, concept_strings: Sequence[str] | None = None,
                neutral_texts: Sequence[str] = NEUTRAL_TEXTS, ref_norm: float | Literal["auto"] | None = "auto",
                max_new_tokens: int = 30, seed: int = 0, temperature: float = 0.0):
    """One row per strength: generations, concept-token probability, mention rate, fluency cost.

    Columns: ``strength`` (as given), ``raw_strength`` (norm of the added vector), ``relative_strength``
    (raw / ``ref_norm``), ``act_equivalent`` (raw / |W_dec[f]|: the feature activation it amounts to),
    ``concept_prob`` (mean over ``prompts`` of the next-token probability mass on ``concept_tokens``),
    ``concept_logprob`` (mean log of it), ``mention_rate`` (share of generations containing any of
    ``concept_strings``, case-insensitive; default: the concept tokens' text, stripped),
    ``fluency_loss`` (mean next-token loss on ``neutral_texts`` under steering, nats), ``loss_increase``
    (that minus the unsteered loss) and ``generations`` (list of str, one per prompt).
    ``ref_norm="auto"`` measures :func:`typical_norm` on ``neutral_texts``, so strengths are multiples of
    a typical activation norm; ``None`` means strengths are raw. Greedy by default, so deterministic.
    """
    import pandas as pd

    hook = check_widths(model, sae)
    f = check_feature(sae, feature)
    prompts = _check_texts(prompts, "prompts")
    neutral_texts = _check_texts(neutral_texts, "neutral_texts")
    strengths = list(strengths)
    if not strengths:
        raise ValueError("strengths is empty")
    if isinstance(concept_tokens, (str, int)):
        concept_tokens = [concept_tokens]
    ids = list(dict.fromkeys(token_id(model, t) for t in concept_tokens))
    if not ids:
        raise ValueError("concept_tokens is empty")
    if concept_strings is None:
        concept_strings = [s.strip() for s in model.to_str_tokens(torch.tensor(ids)) if s.strip()]
    needles = [s.lower() for s in concept_strings if s]
    if ref_norm == "auto":
        ref_norm = typical_norm(model, sae, neutral_texts)
    base_loss = _mean_loss(model, neutral_texts)
    dec_norm = float(sae.W_dec[f].detach().float().norm())
    rows = []
    for strength in strengths:
        vector = steering_vector(sae, f, strength, ref_norm=ref_norm)
        with model.hooks(fwd_hooks=add_at_positions(hook, vector)):
            probs = [_next_token_probs(model, p, ids) for p in prompts]
            gens = [_generate(model, p, max_new_tokens=max_new_tokens, seed=seed, temperature=temperature) for p in prompts]
            loss = _mean_loss(model, neutral_texts)
        raw = float(strength) * (float(ref_norm) if ref_norm else 1.0)
        rows.append({
            "strength": float(strength), "raw_strength": raw,
            "relative_strength": raw / float(ref_norm) if ref_norm else float("nan"),
            "act_equivalent": raw / dec_norm,
            "concept_prob": float(np.mean(probs)),
            "concept_logprob": float(np.mean(np.log(np.maximum(probs, 1e-30)))),
            "mention_rate": float(np.mean([any(n in g.lower() for n in needles) for g in gens])) if needles else float("nan"),
            "fluency_loss": loss, "loss_increase": loss - base_loss, "generations": gens,
        })
    df = pd.DataFrame(rows)
    df.attrs.update(feature=f, hook=hook, ref_norm=ref_norm, concept_token_ids=ids, concept_strings=list(concept_strings),
                    base_loss=base_loss)
    return df


# ----------------------------------------------------------------------------------------------
# Ablation through the SAE, error term kept


class AblationResult(NamedTuple):
    """Per-token loss and target logits before and after ablating features (error term kept)."""

    features: list[int]
    """The ablated features."""
    mode: str
    """'zero' or 'mean'."""
    loss_before: torch.Tensor
    """[n, ctx-1]: entry j is the loss of predicting token j+1 from position j (clean model)."""
    loss_after: torch.Tensor
    """[n, ctx-1]: the same with the features ablated at positions >= 1."""
    target_tokens: list[int]
    """Token ids whose logits were recorded."""
    logits_before: torch.Tensor | None
    """[n, ctx, n_targets] logits of ``target_tokens`` at every position (clean), or None."""
    logits_after: torch.Tensor | None
    """[n, ctx, n_targets] the same after ablation, or None."""
    acts: torch.Tensor
    """[n, ctx, n_features] the ablated features' original activations (0 at position 0)."""

    @property
    def loss_change(self) -> torch.Tensor:
        """[n, ctx-1] loss after minus before."""
        return self.loss_after - self.loss_before

    @property
    def mean_loss_change(self) -> float:
        """Mean loss change over predictions from positions >= 1 (nats)."""
        return float(self.loss_change[:, 1:].double().mean())

    @property
    def logit_change(self) -> torch.Tensor | None:
        """[n, ctx, n_targets] target logits after minus before, or None."""
        return None if self.logits_after is None else self.logits_after - self.logits_before


def _features_delta(sae, x: torch.Tensor, features: list[int], replacement: torch.Tensor | None,
                    positions: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(decode(f_new) - decode(f), acts of ``features``) for activations ``x`` [..., pos, d_in]."""
    dtype = _sae_dtype(sae)
    feats = sae.encode(x.to(dtype))
    new = feats.clone()
    value = torch.zeros(len(features), dtype=dtype, device=feats.device) if replacement is None else replacement.to(feats)
    if positions is None:
        new[..., features] = value
    else:
        sel = new[..., positions, :]
        sel[..., features] = value
        new[..., positions, :] = sel
    delta = sae.decode(new) - sae.decode(feats)
    return delta.to(x.dtype), feats[..., features]


def mean_feature_acts(model, sae, tokens: torch.Tensor, *, batch_size: int = 8) -> torch.Tensor:
    """Mean activation of every feature over ``tokens`` [n, ctx] (positions >= 1) -> [d_sae]."""
    from .activations import harvest

    hook = check_widths(model, sae)
    x = harvest(model, [hook], to_tokens(model, tokens).cpu(), batch_size=batch_size, dtype=torch.float32, progress=False)[hook]
    with torch.inference_mode():
        return torch.cat([sae.encode(c.to(sae.W_dec.device, _sae_dtype(sae))).float().sum(0, keepdim=True)
                          for c in x.split(4096)]).sum(0) / x.shape[0]


@torch.inference_mode()
def ablate_features(model, sae, features: int | Sequence[int], tokens: str | torch.Tensor, *,
                    mode: Literal["zero", "mean"] = "zero", mean_acts: torch.Tensor | None = None,
                    target_tokens: Sequence[int | str] = (), positions: Sequence[int] | None = None,
                    batch_size: int = 8) -> AblationResult:
    """Ablate ``features`` at the SAE's hook, keeping the error term: x -> x + decode(f_ablated) - decode(f).

    ``mode='zero'`` sets them to 0; ``mode='mean'`` to their mean activation, taken from ``mean_acts``
    (feature activations [n, d_sae] or their mean [d_sae], e.g. :func:`mean_feature_acts`). Ablation
    happens at every position >= 1, or only at ``positions`` (each >= 1). Features not chosen, the
    SAE's reconstruction error and position 0 are left untouched.
    """
    hook = check_widths(model, sae)
    _check_linear_decoder(sae)
    feats = check_features(sae, features, allow_empty=True)  # [] = splice only: the identity
    tokens = to_tokens(model, tokens)
    ctx = tokens.shape[1]
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    replacement = None
    if mode == "mean":
        if mean_acts is None:
            raise ValueError("mode='mean' needs mean_acts: feature activations [n, d_sae] or their mean [d_sae]")
        mean_acts = torch.as_tensor(mean_acts)
        if mean_acts.shape[-1] != sae.cfg.d_sae or mean_acts.ndim not in (1, 2):
            raise ValueError(f"mean_acts must be [n, d_sae] or [d_sae] with d_sae={sae.cfg.d_sae}, got shape {tuple(mean_acts.shape)}")
        means = mean_acts.float() if mean_acts.ndim == 1 else mean_acts.float().mean(0)
        replacement = means[feats]
    elif mean_acts is not None:
        raise ValueError("mean_acts is only used with mode='mean'")
    if positions is not None:
        positions = [int(p) for p in positions]
        bad = [p for p in positions if not 1 <= p < ctx]
        if bad or not positions:
            raise ValueError(f"positions must be a non-empty list in 1..{ctx - 1} (position 0 is BOS), got {positions}")
    targets = [token_id(model, t) for t in ([target_tokens] if isinstance(target_tokens, (str, int)) else target_tokens)]

    def ablate(act: torch.Tensor, hook) -> torch.Tensor:
        delta, _ = _features_delta(sae, act[:, 1:], feats, replacement, None if positions is None else [p - 1 for p in positions])
        return torch.cat([act[:, :1], act[:, 1:] + delta], dim=1)

    def grab(act: torch.Tensor, hook) -> None:
        captured["acts"] = sae.encode(act[:, 1:].to(_sae_dtype(sae)))[..., feats].float()

    out = {k: [] for k in ("lb", "la", "tb", "ta", "acts")}
    for i in range(0, tokens.shape[0], batch_size):
        batch = tokens[i : i + batch_size]
        captured: dict[str, torch.Tensor] = {}
        before = model.run_with_hooks(batch, return_type="logits", fwd_hooks=[(hook, grab)])
        after = model.run_with_hooks(batch, return_type="logits", fwd_hooks=[(hook, ablate)])
        for key, logits in (("lb", before), ("la", after)):
            out[key].append(_loss_per_token(logits, batch).cpu())
        if targets:
            out["tb"].append(before[..., targets].float().cpu())
            out["ta"].append(after[..., targets].float().cpu())
        acts = captured["acts"].cpu()
        out["acts"].append(torch.cat([torch.zeros(acts.shape[0], 1, acts.shape[-1]), acts], dim=1))
    cat = lambda key: torch.cat(out[key]) if out[key] else None  # noqa: E731
    return AblationResult(feats, mode, cat("lb"), cat("la"), targets, cat("tb"), cat("ta"), cat("acts"))


def _loss_per_token(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[n, ctx-1] cross-entropy of predicting token j+1 from position j."""
    logprobs = logits[:, :-1].float().log_softmax(-1)
    return -logprobs.gather(-1, tokens[:, 1:, None])[..., 0]


# ----------------------------------------------------------------------------------------------
# Attribution: activation x gradient, through the SAE spliced in with its error term


def _resolve_position(position: int, ctx: int) -> int:
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
        raise ValueError(f"position must be an int, got {position!r}")
    pos = int(position) + ctx if position < 0 else int(position)
    if not 1 <= pos < ctx:
        raise ValueError(f"position {position} is out of range for {ctx} tokens: valid 1..{ctx - 1} or -1..-{ctx - 1} "
                         "(position 0 is BOS)")
    return pos


def _metric(logits: torch.Tensor, pos: int, target: int, baseline: int | None) -> torch.Tensor:
    row = logits[0, pos].float()
    return row[target] - (row[baseline] if baseline is not None else 0.0)


def attribute_features(model, sae, text_or_tokens: str | torch.Tensor, target_token: int | str, *,
                       baseline_token: int | str | None = None, position: int = -1, top: int | None = None):
    """Rank features by activation x gradient of the target logit (minus the baseline's) at ``position``.

    The SAE is spliced in at positions >= 1 as ``decode(f) + (x - decode(f)).detach()``: the forward pass
    is unchanged, and the gradient reaches each feature activation through the decoder. One row per
    feature active at some position <= ``position``, sorted by |attribution|. Columns: ``feature``,
    ``attribution`` (sum over positions 1..position: the linear estimate of how much the metric would
    drop if the feature were zero-ablated everywhere), ``attribution_at_position``, ``activation`` (at
    ``position``), ``max_activation`` (over positions 1..position). ``df.attrs`` holds the metric value.
    """
    import pandas as pd

    hook = check_widths(model, sae)
    _check_linear_decoder(sae)
    tokens = to_tokens(model, text_or_tokens)
    if tokens.shape[0] != 1:
        raise ValueError(f"attribute_features takes one text, got {tokens.shape[0]} rows of tokens")
    pos = _resolve_position(position, tokens.shape[1])
    target = token_id(model, target_token)
    baseline = None if baseline_token is None else token_id(model, baseline_token)
    if top is not None and (not isinstance(top, int) or top < 1):
        raise ValueError(f"top must be a positive int or None, got {top!r}")
    dtype = _sae_dtype(sae)
    held: dict[str, torch.Tensor] = {}

    def splice(act: torch.Tensor, hook) -> torch.Tensor:
        x = act[:, 1:].detach()
        feats = sae.encode(x.to(dtype)).detach().requires_grad_(True)  # [1, ctx-1, d_sae]
        recon = sae.decode(feats)
        held["feats"] = feats
        return torch.cat([act[:, :1], (recon + (x.to(dtype) - recon).detach()).to(act.dtype)], dim=1)

    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(hook, splice)])
        metric = _metric(logits, pos, target, baseline)
        (grad,) = torch.autograd.grad(metric, held["feats"])
    feats = held["feats"].detach()[0, :pos].float()  # positions 1..pos
    attr = feats * grad[0, :pos].float()
    total = attr.sum(0)
    active = (feats != 0).any(0).nonzero()[:, 0]
    df = pd.DataFrame({
        "feature": active.numpy(),
        "attribution": total[active].numpy(),
        "attribution_at_position": attr[-1, active].numpy(),
        "activation": feats[-1, active].numpy(),
        "max_activation": feats[:, active].max(0).values.numpy(),
    })
    df = df.iloc[np.argsort(-np.abs(df["attribution"].to_numpy()), kind="stable")].reset_index(drop=True)
    if top is not None:
        df = df.head(top)
    df.attrs.update(metric=float(metric.detach()), target=target, baseline=baseline, position=pos,
                    token_at_position=model.to_str_tokens(tokens[0, pos : pos + 1])[0], hook=hook)
    return df


@torch.inference_mode()
def _ablated_metric(model, sae, hook: str, tokens: torch.Tensor, features: list[int], pos: int, target: int,
                    baseline: int | None) -> float:
    def ablate(act: torch.Tensor, hook) -> torch.Tensor:
        delta, _ = _features_delta(sae, act[:, 1:], features, None)
        return torch.cat([act[:, :1], act[:, 1:] + delta], dim=1)

    logits = model.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(hook, ablate)])
    return float(_metric(logits, pos, target, baseline))


def verify_attribution(model, sae, text_or_tokens: str | torch.Tensor, target_token: int | str, *,
                       baseline_token: int | str | None = None, position: int = -1, n: int = 5):
    """Zero-ablate each of the top-``n`` attributed features for real: predicted vs actual metric change.

    Columns: ``feature``, ``activation``, ``attribution``, ``predicted_change`` (= -attribution, the
    linear estimate), ``actual_change`` (metric with the feature zero-ablated at all positions >= 1,
    error term kept, minus the clean metric). ``df.attrs['together']`` has the same two numbers for
    ablating all ``n`` features at once.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    hook = check_widths(model, sae)
    tokens = to_tokens(model, text_or_tokens)
    df = attribute_features(model, sae, tokens, target_token, baseline_token=baseline_token, position=position, top=n)
    pos, target, baseline = df.attrs["position"], df.attrs["target"], df.attrs["baseline"]
    with torch.inference_mode():
        clean = float(_metric(model(tokens, return_type="logits"), pos, target, baseline))
    feats = [int(f) for f in df["feature"]]
    actual = [_ablated_metric(model, sae, hook, tokens, [f], pos, target, baseline) - clean for f in feats]
    out = df[["feature", "activation", "attribution"]].copy()
    out["predicted_change"] = -out["attribution"]
    out["actual_change"] = actual
    out.attrs.update(df.attrs)
    out.attrs["metric"] = clean
    if feats:
        out.attrs["together"] = {"features": feats, "predicted_change": float(out["predicted_change"].sum()),
                                 "actual_change": _ablated_metric(model, sae, hook, tokens, feats, pos, target, baseline) - clean}
    return out


# ----------------------------------------------------------------------------------------------
# Logit lens on a feature's decoder direction


class LogitLens(NamedTuple):
    """Tokens a feature's decoder direction promotes and suppresses via the direct path."""

    promoted: list[tuple[str, float]]
    """Top-k (token string, value), largest first."""
    suppressed: list[tuple[str, float]]
    """Bottom-k (token string, value), most negative first."""


def direct_logits(model, direction: torch.Tensor) -> torch.Tensor:
    """[..., d_vocab] logit effect of adding ``direction`` [..., d_model] to the final residual (direct path).

    The final norm divides by the residual's scale (not known here: values are relative) and, for
    LayerNorm, centres it first; its learned weight is folded into W_U when the model was loaded with
    ``fold_ln`` (normalization_type 'LNPre'/'RMSPre'), and multiplied in here otherwise.
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


def feature_logit_lens(model, sae, feature: int, k: int = 10) -> LogitLens:
    """Top-``k`` promoted and suppressed tokens of W_dec[feature] @ W_U (see :func:`direct_logits`)."""
    hook = check_widths(model, sae)
    f = check_feature(sae, feature)
    if sae.cfg.d_in != model.cfg.d_model:
        raise ValueError(f"The logit lens needs a residual-width SAE: d_in={sae.cfg.d_in} but d_model={model.cfg.d_model} (hook {hook})")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= model.cfg.d_vocab:
        raise ValueError(f"k must be an int in 1..{model.cfg.d_vocab}, got {k!r}")
    values = direct_logits(model, sae.W_dec[f])
    top, bottom = values.topk(k), (-values).topk(k)
    strs = lambda idx: model.to_str_tokens(idx.cpu())  # noqa: E731
    return LogitLens([(s, float(v)) for s, v in zip(strs(top.indices), top.values)],
                     [(s, float(-v)) for s, v in zip(strs(bottom.indices), bottom.values)])


def features_for_tokens(model, sae, tokens: Sequence[int | str], *, top: int = 10):
    """Features whose unit decoder direction most raises ``tokens`` via the direct path (a steering shortlist).

    Columns: ``feature``, ``score`` (mean over ``tokens`` of their z-score in the feature's logit lens:
    (logit - mean over the vocabulary) / std, so features that lift every token do not win), ``rank``
    (best rank of any of the tokens in that feature's logit lens, 0 = top).
    """
    import pandas as pd

    hook = check_widths(model, sae)
    if sae.cfg.d_in != model.cfg.d_model:
        raise ValueError(f"The logit lens needs a residual-width SAE: d_in={sae.cfg.d_in} but d_model={model.cfg.d_model} (hook {hook})")
    if isinstance(tokens, (str, int)):
        tokens = [tokens]
    ids = list(dict.fromkeys(token_id(model, t) for t in tokens))
    if not ids:
        raise ValueError("tokens is empty")
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= sae.cfg.d_sae:
        raise ValueError(f"top must be an int in 1..{sae.cfg.d_sae}, got {top!r}")
    W = sae.W_dec.detach().float()
    W = _through_final_norm(model, W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    W_U = model.W_U.detach().float()
    with torch.inference_mode():
        mu = W_U.mean(1)  # mean and covariance of the unembedding columns give each lens's mean and std cheaply
        cov = torch.cov(W_U)
        std = ((W @ cov) * W).sum(-1).clamp_min(1e-12).sqrt()
        scores = ((W @ W_U[:, ids]) - (W @ mu)[:, None]).mean(-1) / std
        best = scores.topk(top)
        logits = W[best.indices] @ W_U  # [top, d_vocab]
        ranks = (logits[:, None, :] > logits[:, ids][:, :, None]).sum(-1).min(-1).values
    return pd.DataFrame({"feature": best.indices.numpy(), "score": best.values.numpy(), "rank": ranks.numpy()})
