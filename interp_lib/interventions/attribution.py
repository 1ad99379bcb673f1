"""Ablation and attribution: which features a prediction needs, measured through the SAE.

* **Ablation** (:func:`ablate_features`): change only the chosen features and keep the SAE's error
  term, ``x -> x + decode(f_ablated) - decode(f)``, so everything the SAE does not explain stays in
  place. Zero-ablation sets the features to 0, mean-ablation to :func:`mean_feature_acts`.
* **Attribution** (:func:`attribute_features`, :func:`verify_attribution`): activation x gradient of
  a target logit (or logit difference) with respect to each feature's activation, computed by
  splicing the SAE in with its error term (the forward pass is unchanged) and backpropagating. It
  is the linear estimate of what zero-ablating the feature would do; :func:`verify_attribution`
  checks it against real ablations (all of them in one batched forward pass), and
  :func:`attribution_agreement` does so over several prompts.

Position 0 (BOS) is never spliced or scored.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch

from interp_lib.errors import InvalidArgumentError
from interp_lib.interventions.checks import check_features, to_tokens, token_id
from interp_lib.model.activations import harvest
from interp_lib.model.hooks import check_widths, stop_layer


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


def _check_linear_decoder(sae) -> None:
    norm = getattr(sae.cfg, "normalize_activations", "none")
    if norm in ("constant_norm_rescale", "layer_norm"):
        raise InvalidArgumentError(
            "This SAE normalises its input at run time "
            f"(normalize_activations={norm!r}); its decoder is not a fixed linear "
            "map, so these interventions do not apply"
        )


def _sae_dtype(sae) -> torch.dtype:
    return sae.W_dec.dtype


def _features_delta(
    sae,
    x: torch.Tensor,
    features: list[int],
    replacement: torch.Tensor | None,
    positions: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(decode(f_new) - decode(f), acts of ``features``) for activations ``x`` [..., pos, d_in]."""
    dtype = _sae_dtype(sae)
    feats = sae.encode(x.to(dtype))
    new = feats.clone()
    if replacement is None:
        value = torch.zeros(len(features), dtype=dtype, device=feats.device)
    else:
        value = replacement.to(feats)
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
    hook = check_widths(model, sae)
    x = harvest(
        model,
        [hook],
        to_tokens(model, tokens).cpu(),
        batch_size=batch_size,
        dtype=torch.float32,
        progress=False,
    )[hook]
    with torch.inference_mode():
        sums = [
            sae.encode(c.to(sae.W_dec.device, _sae_dtype(sae))).float().sum(0, keepdim=True)
            for c in x.split(4096)
        ]
        return torch.cat(sums).sum(0) / x.shape[0]


@torch.inference_mode()
def ablate_features(
    model,
    sae,
    features: int | Sequence[int],
    tokens: str | torch.Tensor,
    *,
    mode: Literal["zero", "mean"] = "zero",
    mean_acts: torch.Tensor | None = None,
    target_tokens: Sequence[int | str] = (),
    positions: Sequence[int] | None = None,
    batch_size: int = 8,
) -> AblationResult:
    """Ablate ``features`` at the SAE's hook, keeping the error term:
    x -> x + decode(f_ablated) - decode(f).

    ``mode='zero'`` sets them to 0; ``mode='mean'`` to their mean activation, taken from
    ``mean_acts`` (feature activations [n, d_sae] or their mean [d_sae], e.g.
    :func:`mean_feature_acts`). Ablation happens at every position >= 1, or only at ``positions``
    (each >= 1). Features not chosen, the SAE's reconstruction error and position 0 are left
    untouched.
    """
    hook = check_widths(model, sae)
    _check_linear_decoder(sae)
    feats = check_features(sae, features, allow_empty=True)  # [] = splice only: the identity
    tokens = to_tokens(model, tokens)
    ctx = tokens.shape[1]
    if mode not in ("zero", "mean"):
        raise InvalidArgumentError(f"mode must be 'zero' or 'mean', got {mode!r}")
    replacement = None
    if mode == "mean":
        if mean_acts is None:
            raise InvalidArgumentError(
                "mode='mean' needs mean_acts: feature activations [n, d_sae] or their mean [d_sae]"
            )
        mean_acts = torch.as_tensor(mean_acts)
        if mean_acts.shape[-1] != sae.cfg.d_sae or mean_acts.ndim not in (1, 2):
            raise InvalidArgumentError(
                f"mean_acts must be [n, d_sae] or [d_sae] with d_sae={sae.cfg.d_sae}, "
                f"got shape {tuple(mean_acts.shape)}"
            )
        means = mean_acts.float() if mean_acts.ndim == 1 else mean_acts.float().mean(0)
        replacement = means[feats]
    elif mean_acts is not None:
        raise InvalidArgumentError("mean_acts is only used with mode='mean'")
    if positions is not None:
        positions = [int(p) for p in positions]
        bad = [p for p in positions if not 1 <= p < ctx]
        if bad or not positions:
            raise InvalidArgumentError(
                f"positions must be a non-empty list in 1..{ctx - 1} "
                f"(position 0 is BOS), got {positions}"
            )
    if isinstance(target_tokens, (str, int)):
        target_tokens = [target_tokens]
    targets = [token_id(model, t) for t in target_tokens]
    shifted = None if positions is None else [p - 1 for p in positions]  # rows of act[:, 1:]

    def ablate(act: torch.Tensor, hook) -> torch.Tensor:
        delta, _ = _features_delta(sae, act[:, 1:], feats, replacement, shifted)
        return torch.cat([act[:, :1], act[:, 1:] + delta], dim=1)

    out = {k: [] for k in ("lb", "la", "tb", "ta", "acts")}
    for i in range(0, tokens.shape[0], batch_size):
        batch = tokens[i : i + batch_size]
        before, cache = model.run_with_cache(batch, return_type="logits", names_filter=hook)
        after = model.run_with_hooks(batch, return_type="logits", fwd_hooks=[(hook, ablate)])
        for key, logits in (("lb", before), ("la", after)):
            out[key].append(_loss_per_token(logits, batch).cpu())
        if targets:
            out["tb"].append(before[..., targets].float().cpu())
            out["ta"].append(after[..., targets].float().cpu())
        acts = sae.encode(cache[hook][:, 1:].to(_sae_dtype(sae)))[..., feats].float().cpu()
        out["acts"].append(torch.cat([torch.zeros(acts.shape[0], 1, acts.shape[-1]), acts], dim=1))
    cat = lambda key: torch.cat(out[key]) if out[key] else None  # noqa: E731
    return AblationResult(
        feats, mode, cat("lb"), cat("la"), targets, cat("tb"), cat("ta"), cat("acts")
    )


def _loss_per_token(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[n, ctx-1] cross-entropy of predicting token j+1 from position j."""
    logprobs = logits[:, :-1].float().log_softmax(-1)
    return -logprobs.gather(-1, tokens[:, 1:, None])[..., 0]


def _resolve_position(position: int, ctx: int) -> int:
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
        raise InvalidArgumentError(f"position must be an int, got {position!r}")
    pos = int(position) + ctx if position < 0 else int(position)
    if not 1 <= pos < ctx:
        raise InvalidArgumentError(
            f"position {position} is out of range for {ctx} tokens: "
            f"valid 1..{ctx - 1} or -1..-{ctx - 1} (position 0 is BOS)"
        )
    return pos


def _metric(logits: torch.Tensor, pos: int, target: int, baseline: int | None) -> torch.Tensor:
    row = logits[0, pos].float()
    return row[target] - (row[baseline] if baseline is not None else 0.0)


def attribute_features(
    model,
    sae,
    text_or_tokens: str | torch.Tensor,
    target_token: int | str,
    *,
    baseline_token: int | str | None = None,
    position: int = -1,
    top: int | None = None,
) -> pd.DataFrame:
    """Rank features by activation x gradient of the target logit (minus the baseline's) at
    ``position``.

    The SAE is spliced in at positions >= 1 as ``decode(f) + (x - decode(f)).detach()``: the forward
    pass is unchanged, and the gradient reaches each feature activation through the decoder. One
    row per feature active at some position <= ``position``, sorted by |attribution|. Columns:
    ``feature``, ``attribution`` (sum over positions 1..position: the linear estimate of how much
    the metric would drop if the feature were zero-ablated everywhere), ``attribution_at_position``,
    ``activation`` (at ``position``), ``max_activation`` (over positions 1..position).
    ``df.attrs`` holds the metric value.
    """
    hook = check_widths(model, sae)
    _check_linear_decoder(sae)
    tokens = to_tokens(model, text_or_tokens)
    if tokens.shape[0] != 1:
        raise InvalidArgumentError(
            f"attribute_features takes one text, got {tokens.shape[0]} rows of tokens"
        )
    pos = _resolve_position(position, tokens.shape[1])
    target = token_id(model, target_token)
    baseline = None if baseline_token is None else token_id(model, baseline_token)
    if top is not None and (not isinstance(top, int) or top < 1):
        raise InvalidArgumentError(f"top must be a positive int or None, got {top!r}")
    dtype = _sae_dtype(sae)
    stop = stop_layer([hook]) if hook.startswith("blocks.") else None
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hook, stop_at_layer=stop)
        all_feats = sae.encode(cache[hook][:, 1:].to(dtype))  # [1, ctx-1, d_sae]
    all_feats.requires_grad_(True)  # the leaf the gradient is taken for

    def splice(act: torch.Tensor, hook) -> torch.Tensor:
        x = act[:, 1:].detach()
        recon = sae.decode(all_feats)
        spliced = recon + (x.to(dtype) - recon).detach()  # value x, gradient through decode
        return torch.cat([act[:, :1], spliced.to(act.dtype)], dim=1)

    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(hook, splice)])
        metric = _metric(logits, pos, target, baseline)
        (grad,) = torch.autograd.grad(metric, all_feats)
    feats = all_feats.detach()[0, :pos].float()  # positions 1..pos
    attr = feats * grad[0, :pos].float()
    total = attr.sum(0)
    active = (feats != 0).any(0).nonzero()[:, 0]
    df = pd.DataFrame(
        {
            "feature": active.numpy(),
            "attribution": total[active].numpy(),
            "attribution_at_position": attr[-1, active].numpy(),
            "activation": feats[-1, active].numpy(),
            "max_activation": feats[:, active].max(0).values.numpy(),
        }
    )
    order = np.argsort(-np.abs(df["attribution"].to_numpy()), kind="stable")
    df = df.iloc[order].reset_index(drop=True)
    if top is not None:
        df = df.head(top)
    df.attrs.update(
        metric=float(metric.detach()),
        target=target,
        baseline=baseline,
        position=pos,
        token_at_position=model.to_str_tokens(tokens[0, pos : pos + 1])[0],
        hook=hook,
    )
    return df


@torch.inference_mode()
def _ablated_metrics(
    model,
    sae,
    hook: str,
    tokens: torch.Tensor,
    feature_sets: list[list[int]],
    pos: int,
    target: int,
    baseline: int | None,
) -> list[float]:
    """The metric with each set of features zero-ablated (positions >= 1, error term kept): one
    batch row per set, one forward pass."""
    rows = tokens.expand(len(feature_sets), -1)
    mask = torch.zeros(len(feature_sets), int(sae.cfg.d_sae), dtype=torch.bool)
    for r, feats in enumerate(feature_sets):
        mask[r, feats] = True

    def ablate(act: torch.Tensor, hook) -> torch.Tensor:
        feats = sae.encode(act[:, 1:].to(_sae_dtype(sae)))
        keep = (~mask).to(feats.device)[:, None, :]
        delta = (sae.decode(feats * keep) - sae.decode(feats)).to(act.dtype)
        return torch.cat([act[:, :1], act[:, 1:] + delta], dim=1)

    logits = model.run_with_hooks(rows, return_type="logits", fwd_hooks=[(hook, ablate)])
    return [float(_metric(logits[r : r + 1], pos, target, baseline)) for r in range(len(rows))]


def verify_attribution(
    model,
    sae,
    text_or_tokens: str | torch.Tensor,
    target_token: int | str,
    *,
    baseline_token: int | str | None = None,
    position: int = -1,
    n: int = 5,
) -> pd.DataFrame:
    """Zero-ablate each of the top-``n`` attributed features for real: predicted vs actual change.

    Columns: ``feature``, ``activation``, ``attribution``, ``predicted_change`` (= -attribution, the
    linear estimate), ``actual_change`` (metric with the feature zero-ablated at all positions
    >= 1, error term kept, minus the clean metric). ``df.attrs['together']`` has the same two
    numbers for ablating all ``n`` features at once.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InvalidArgumentError(f"n must be a positive int, got {n!r}")
    hook = check_widths(model, sae)
    tokens = to_tokens(model, text_or_tokens)
    df = attribute_features(
        model, sae, tokens, target_token, baseline_token=baseline_token, position=position, top=n
    )
    pos, target, baseline = df.attrs["position"], df.attrs["target"], df.attrs["baseline"]
    with torch.inference_mode():
        clean = float(_metric(model(tokens, return_type="logits"), pos, target, baseline))
    feats = [int(f) for f in df["feature"]]
    sets = [[f] for f in feats] + ([feats] if feats else [])  # one by one, then all together
    ablated = (
        _ablated_metrics(model, sae, hook, tokens, sets, pos, target, baseline) if sets else []
    )
    out = df[["feature", "activation", "attribution"]].copy()
    out["predicted_change"] = -out["attribution"]
    out["actual_change"] = [a - clean for a in ablated[: len(feats)]]
    out.attrs.update(df.attrs)
    out.attrs["metric"] = clean
    if feats:
        together = ablated[-1] - clean
        out.attrs["together"] = {
            "features": feats,
            "predicted_change": float(out["predicted_change"].sum()),
            "actual_change": together,
        }
    return out


def attribution_agreement(
    model,
    sae,
    prompts: Sequence[str],
    *,
    n: int = 5,
    targets: Sequence[int | str] | None = None,
) -> pd.DataFrame:
    """:func:`verify_attribution` on each prompt: predicted vs actual change, one row per
    (prompt, feature).

    The metric is the logit of ``targets[i]`` at the last position, by default the model's own top
    next token. Columns: ``prompt``, ``target`` (the token as text), then those of
    :func:`verify_attribution`. ``df.attrs['together']``: one row per prompt with the predicted
    and actual change of ablating its ``n`` features at once; ``df.attrs['metric']``: the clean
    metric per prompt.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not a single string")
    prompts = list(prompts)
    if not prompts:
        raise InvalidArgumentError("prompts is empty")
    if targets is not None and len(targets) != len(prompts):
        raise InvalidArgumentError(f"got {len(targets)} targets for {len(prompts)} prompts")
    frames, together, metric = [], [], {}
    for i, prompt in enumerate(prompts):
        tokens = to_tokens(model, prompt)
        if targets is None:
            with torch.inference_mode():
                target = int(model(tokens, return_type="logits")[0, -1].argmax())
        else:
            target = token_id(model, targets[i])
        df = verify_attribution(model, sae, tokens, target, n=n)
        text = model.to_str_tokens(torch.tensor([target]))[0]
        frames.append(df.assign(prompt=prompt, target=text))
        metric[prompt] = df.attrs["metric"]
        if "together" in df.attrs:
            t = df.attrs["together"]
            together.append(
                {
                    "prompt": prompt,
                    "target": text,
                    "predicted_change": t["predicted_change"],
                    "actual_change": t["actual_change"],
                }
            )
    out = pd.concat(frames, ignore_index=True)
    out = out[["prompt", "target"] + [c for c in out.columns if c not in ("prompt", "target")]]
    out.attrs = {"together": pd.DataFrame(together), "metric": metric}
    return out
