"""Judge an SAE: sparsity, reconstruction, and what splicing it into the model costs.

One evaluator, :func:`evaluate`, scores one SAE or several over the same tokens, sharing one clean
forward pass. Variance explained alone flatters SAEs (a small error in the wrong direction can
still wreck the model's predictions), so it also splices each SAE's reconstruction into the
forward pass and reports CE-loss recovered and the KL divergence to the clean model::

    CE recovered = (L_zero - L_sae) / (L_zero - L_clean)
    KL           = mean over positions of KL(p_clean || p_sae)

where L_clean is the model's next-token loss, L_sae the loss with the activation at the SAE's hook
replaced by its reconstruction, and L_zero the loss with that activation zeroed. The BOS position
(an attention sink on SmolLM2) is left out everywhere: not spliced, not scored. SAEBench's core
evaluation reports the same two (``ce_loss_score``, ``kl_div_with_sae``);
:func:`interp_lib.evals.saebench.kl_div_score` is its normalised KL.

:func:`reconstruction_metrics` is the part of the evaluator that needs no model (variance
explained, L0, dead latents on a matrix of activations): training's held-out check uses it.
"""

from __future__ import annotations

from typing import Literal, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from interp_lib.errors import InvalidArgumentError
from interp_lib.model.fast_forward import SUPPORTED_HOOK, fast_forward_for, fast_forward_supported
from interp_lib.model.hooks import check_widths, resid_pre_layer
from interp_lib.model.massive import MASSIVE_FACTOR, typical_rows

DENSE_THRESHOLD = 0.1
"""A feature firing on more than this share of tokens counts as dense."""


class SAEMetrics(NamedTuple):
    """Quality of one SAE on a token set (positions >= 1 only)."""

    l0: float
    """Mean number of active features per token."""
    fve: float
    """Fraction of variance explained: 1 - sum|x - x_hat|^2 / sum|x - mean x|^2."""
    fve_typical: float
    """The same over typical tokens only: massive ones (norm > MASSIVE_FACTOR x median) left out.
    On SmolLM2 a handful of such tokens (second attention sinks) can carry most of the variance."""
    massive_fraction: float
    """Share of scored tokens that are massive."""
    mse: float
    """Mean squared reconstruction error per activation dimension (raw scale)."""
    ce_clean: float
    """Next-token loss of the unmodified model (nats)."""
    ce_sae: float
    """Loss with the SAE's reconstruction spliced in at its hook (nats)."""
    ce_zero: float
    """Loss with the activation at the hook zeroed (nats)."""
    ce_recovered: float
    """(ce_zero - ce_sae) / (ce_zero - ce_clean): 1 is perfect, 0 is no better than zeroing."""
    ce_increase: float
    """ce_sae - ce_clean, in nats."""
    kl_div: float
    """Mean KL divergence (nats) from the clean next-token distribution to the spliced one."""
    dead_fraction: float
    """Share of features that never fired on these tokens."""
    dense_fraction: float
    """Share of features firing on more than DENSE_THRESHOLD of tokens."""
    density: np.ndarray
    """Per-feature firing frequency, shape [d_sae]."""
    n_tokens: int
    """Tokens scored."""

    def summary(self) -> dict[str, float]:
        """The scalar metrics as a dict (for tables and JSON)."""
        return {k: v for k, v in self._asdict().items() if k != "density"}


# ----------------------------------------------------------------------------------------------
# Variance explained and the massive-token mask


def fve(x: torch.Tensor, sq_err: torch.Tensor) -> float:
    """1 - sum(sq_err) / sum|x - mean x|^2 for ``x`` [n, d] and ``sq_err`` [n], in float64
    (NaN where ``x`` has no variance)."""
    x = x.double()
    var = (x - x.mean(0)).pow(2).sum().item()
    return 1.0 - sq_err.double().sum().item() / var if var > 0 else float("nan")


def typical_fve(
    x: torch.Tensor, sq_err: torch.Tensor, factor: float = MASSIVE_FACTOR
) -> tuple[float, float]:
    """(FVE over typical tokens, share of massive tokens) from activations ``x`` [n, d] and
    per-token
    squared reconstruction errors ``sq_err`` [n]; massive: norm > ``factor`` x the median norm."""
    if x.ndim != 2 or sq_err.shape != (x.shape[0],):
        raise InvalidArgumentError(
            f"need x [n, d] and sq_err [n], got {tuple(x.shape)} and {tuple(sq_err.shape)}"
        )
    typical = typical_rows(x, factor)
    return fve(x[typical], sq_err[typical]), float((~typical).double().mean())


class _Reconstruction:
    """Running totals of one SAE's reconstruction of activation rows (L0, errors, firing counts)."""

    def __init__(self, d_sae: int):
        self.fires = torch.zeros(d_sae, dtype=torch.float64)
        self.l0 = 0.0
        self.sse = 0.0
        self.errors: list[torch.Tensor] = []
        self.n = 0

    def add(self, x: torch.Tensor, feats: torch.Tensor, x_hat: torch.Tensor) -> None:
        """Count rows ``x`` [n, d] with latents ``feats`` [n, d_sae] and reconstruction
        ``x_hat``."""
        active = feats > 0
        self.fires += active.sum(0).double().cpu()
        self.l0 += active.sum().item()
        err = (x - x_hat).pow(2).sum(-1)
        self.sse += err.sum().item()
        self.errors.append(err.double().cpu())
        self.n += x.shape[0]

    def result(
        self, x: torch.Tensor, factor: float = MASSIVE_FACTOR
    ) -> dict[str, float | np.ndarray]:
        """L0, FVE (all and typical rows), massive share, SSE, density over all rows ``x`` [n,
        d]."""
        err = torch.cat(self.errors)
        fve_typ, massive = typical_fve(x, err, factor)
        density = (self.fires / self.n).numpy()
        return {
            "l0": self.l0 / self.n,
            "fve": fve(x, err),
            "fve_typical": fve_typ,
            "massive_fraction": massive,
            "sse": self.sse,
            "density": density,
            "dead_fraction": float((density == 0).mean()),
            "dense_fraction": float((density > DENSE_THRESHOLD).mean()),
        }


def _sae_dtype(sae) -> torch.dtype:
    return next(sae.parameters()).dtype


def _encode_decode(
    sae, x: torch.Tensor, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents, reconstruction) of rows ``x`` [n, d] (float32), for a ``sae_lens.SAE`` or, with
    ``scale``, for one of the library's own SAEs (which sees ``x * scale``)."""
    if scale is not None:
        feats = sae.encode(x * scale)
        return feats, sae.decode(feats) / scale
    dtype = _sae_dtype(sae)
    feats = sae.encode(x.to(dtype)).float()
    return feats, sae.decode(feats.to(dtype)).float()


@torch.no_grad()
def reconstruction_metrics(
    sae, acts: torch.Tensor, scale: float | None = None, *, batch_size: int = 8192
) -> dict[str, float]:
    """Reconstruction of raw activations ``acts`` [n, d_in] by ``sae``, with no model involved.

    ``sae``: a ``sae_lens.SAE`` (``scale`` only converts its MSE to normalised units), or one of
    the library's own SAEs with its input ``scale``. Returns ``fve`` and ``fve_typical`` (massive
    rows left out, see :data:`MASSIVE_FACTOR`), ``mse`` (per token, normalised units), ``l0``,
    ``dead_fraction`` and ``outlier_fraction`` (the share of massive rows).
    """
    ours = not hasattr(sae, "cfg")
    if ours and scale is None:
        raise InvalidArgumentError(
            "reconstruction_metrics needs the input scale for an interp_lib SAE"
        )
    dev = next(sae.parameters()).device
    acc = _Reconstruction(sae.d_sae if ours else sae.cfg.d_sae)
    for i in range(0, acts.shape[0], batch_size):
        x = acts[i : i + batch_size].to(dev, torch.float32)
        feats, x_hat = _encode_decode(sae, x, scale if ours else None)
        acc.add(x, feats, x_hat)
    r = acc.result(acts)
    s = 1.0 if scale is None else float(scale)
    return {
        "fve": r["fve"],
        "fve_typical": r["fve_typical"],
        "mse": r["sse"] * s * s / acc.n,
        "l0": r["l0"],
        "dead_fraction": r["dead_fraction"],
        "outlier_fraction": r["massive_fraction"],
    }


# ----------------------------------------------------------------------------------------------
# The evaluator


def _restart(hook: str) -> tuple[int, str]:
    """(N, hook whose activation is the stream at blocks.N.hook_resid_pre) for a pass that
    changes ``hook`` (a hook of the lean forward): nothing before block N changes."""
    match = SUPPORTED_HOOK.match(hook)
    n, site = int(match.group(1)), match.group(2)
    return (n + 1, hook) if site == "hook_resid_post" else (n, f"blocks.{n}.hook_resid_pre")


@torch.inference_mode()
def evaluate(
    model,
    saes,
    tokens: torch.Tensor,
    *,
    batch_size: int = 8,
    progress: bool = True,
    engine: Literal["auto", "transformer_lens"] = "auto",
) -> SAEMetrics | dict[str, SAEMetrics]:
    """L0, FVE, MSE, CE-loss recovered, loss increase, KL, dead/dense fractions on ``tokens`` [n,
    ctx].

    ``saes``: one ``sae_lens.SAE`` (returns its :class:`SAEMetrics`) or a mapping {name: SAE}
    (returns {name: SAEMetrics}); SAEs may read different hooks. Per batch the clean pass runs once
    (caching every hook), the zero-ablated pass once per hook and one spliced pass per SAE; for
    ``blocks.N.hook_resid_pre`` the ablated and spliced passes restart at layer N.
    ``engine="auto"`` runs the lean Llama forward (:mod:`interp_lib.model.fast_forward`, same
    results within fp32 rounding) where it applies, and its ablated and spliced passes restart at
    the
    hook's block for every hook; ``"transformer_lens"`` always runs TransformerLens.
    """
    if engine not in ("auto", "transformer_lens"):
        raise InvalidArgumentError(f"engine must be 'auto' or 'transformer_lens', got {engine!r}")
    single = not isinstance(saes, Mapping)
    named = {"sae": saes} if single else dict(saes)
    if not named:
        raise InvalidArgumentError("saes is empty: pass at least one SAE")
    if tokens.ndim != 2 or tokens.shape[1] < 3:
        raise InvalidArgumentError(
            f"tokens must be [n_contexts, ctx_len >= 3], got shape {tuple(tokens.shape)}"
        )
    hooks = {name: check_widths(model, sae) for name, sae in named.items()}
    distinct = list(dict.fromkeys(hooks.values()))
    acc = {name: _Reconstruction(sae.cfg.d_sae) for name, sae in named.items()}
    sae_losses = {name: [] for name in named}
    kls = {name: [] for name in named}
    xs = {hook: [] for hook in distinct}  # activations per hook, for both FVEs
    clean_losses, zero_losses = [], {hook: [] for hook in distinct}

    def splicing(fn):
        """A hook function applying ``fn`` to positions >= 1 of an activation [b, ctx, d]."""

        def splice(act, hook=None):
            act = act.clone()
            act[:, 1:] = fn(act[:, 1:])
            return act

        return splice

    def transformer_lens_passes(batch: torch.Tensor):
        """The clean pass over ``batch`` [b, ctx] through TransformerLens, and its runner of the
        ablated and spliced passes; for resid_pre hooks they restart at the hook's layer."""
        (logits, clean), cache = model.run_with_cache(
            batch, names_filter=distinct, return_type="both", loss_per_token=True
        )

        def run_with(hook, fn):
            start = resid_pre_layer(hook)
            if start is not None:
                logits, loss = model(
                    splicing(fn)(cache[hook]),
                    start_at_layer=start,
                    tokens=batch,
                    return_type="both",
                    loss_per_token=True,
                )
            else:
                with model.hooks(fwd_hooks=[(hook, splicing(fn))]):
                    logits, loss = model(batch, return_type="both", loss_per_token=True)
            return logits[:, 1:].float().log_softmax(-1), loss[:, 1:]

        return logits[:, 1:].float().log_softmax(-1), clean[:, 1:], cache, run_with

    forward, restart = None, {}
    if engine == "auto" and fast_forward_supported(model, distinct, to_logits=True):
        forward = fast_forward_for(model)
        restart = {hook: _restart(hook) for hook in distinct}
    cached = list(dict.fromkeys([*distinct, *(resid for _, resid in restart.values())]))

    def lean_passes(batch: torch.Tensor):
        """The same through the lean forward; every pass restarts from the clean stream at the
        changed hook's block."""
        clean = forward.run(batch, cached)

        def run_with(hook, fn):
            layer, resid = restart[hook]
            out = forward.run(
                batch, start_at_layer=layer, resid=clean.cache[resid], splice=(hook, splicing(fn))
            )
            return out.log_probs[:, 1:], out.loss[:, 1:]

        return clean.log_probs[:, 1:], clean.loss[:, 1:], clean.cache, run_with

    def add_batch(batch: torch.Tensor) -> None:
        """Every pass over one batch [b, ctx]: clean once, ablated once per hook, spliced once
        per SAE (with the reconstruction the metrics use)."""
        passes = lean_passes if forward is not None else transformer_lens_passes
        clean_logprobs, clean, cache, run_with = passes(batch)
        clean_probs = clean_logprobs.exp()  # once per batch, not once per SAE
        clean_losses.append(clean.reshape(-1).double())
        for hook in distinct:
            full = cache[hook]
            xs[hook].append(full[:, 1:].reshape(-1, full.shape[-1]).float().cpu())
            zero_losses[hook].append(run_with(hook, torch.zeros_like)[1].reshape(-1).double())
        for name, sae in named.items():
            full = cache[hooks[name]]
            x = full[:, 1:].reshape(-1, full.shape[-1]).float()
            feats, x_hat = _encode_decode(sae, x)
            acc[name].add(x, feats, x_hat)
            logprobs, spliced = run_with(
                hooks[name], lambda act, x_hat=x_hat: x_hat.view(act.shape).to(act.dtype)
            )
            sae_losses[name].append(spliced.reshape(-1).double())
            # KL(p_clean || p) per position, in place: no [b, ctx, vocab] temporaries
            kl = -logprobs.sub_(clean_logprobs).mul_(clean_probs).sum(-1)
            kls[name].append(kl.reshape(-1).double())

    bar = tqdm(total=tokens.shape[0], unit="ctx", desc="metrics", disable=not progress, leave=False)
    for i in range(0, tokens.shape[0], batch_size):
        batch = tokens[i : i + batch_size].to(model.cfg.device)
        add_batch(batch)
        bar.update(batch.shape[0])
    bar.close()
    ce_clean = torch.cat(clean_losses).mean().item()
    xs = {hook: torch.cat(rows) for hook, rows in xs.items()}
    out = {}
    for name, sae in named.items():
        r = acc[name].result(xs[hooks[name]])
        ce_zero = torch.cat(zero_losses[hooks[name]]).mean().item()
        ce_sae = torch.cat(sae_losses[name]).mean().item()
        out[name] = SAEMetrics(
            l0=r["l0"],
            fve=r["fve"],
            fve_typical=r["fve_typical"],
            massive_fraction=r["massive_fraction"],
            mse=r["sse"] / (acc[name].n * sae.cfg.d_in),
            ce_clean=ce_clean,
            ce_sae=ce_sae,
            ce_zero=ce_zero,
            ce_recovered=(ce_zero - ce_sae) / (ce_zero - ce_clean)
            if ce_zero != ce_clean
            else float("nan"),
            ce_increase=ce_sae - ce_clean,
            kl_div=torch.cat(kls[name]).mean().item(),
            dead_fraction=r["dead_fraction"],
            dense_fraction=r["dense_fraction"],
            density=r["density"],
            n_tokens=acc[name].n,
        )
    return out["sae"] if single else out


# ----------------------------------------------------------------------------------------------
# Tables and histograms of the results

METRIC_COLUMNS = {
    "l0": "L0",
    "fve": "variance explained",
    "fve_typical": "variance explained (typical tokens)",
    "ce_recovered": "CE-loss recovered",
    "ce_increase": "loss increase (nats)",
    "dead_fraction": "dead",
    "dense_fraction": "dense",
}
"""The metrics the book tabulates, and their column titles."""


def metrics_table(
    results: Mapping[str, SAEMetrics | Mapping], columns: Mapping[str, str] = METRIC_COLUMNS
) -> pd.DataFrame:
    """One row per SAE (index: its name) with the ``columns`` metrics, from SAEMetrics or dicts
    (e.g. :func:`interp_lib.sae.zoo.recorded_metrics`; a missing metric is NaN)."""
    rows = {}
    for name, m in results.items():
        d = m.summary() if isinstance(m, SAEMetrics) else dict(m)
        rows[name] = {
            title: float(d[key]) if d.get(key) is not None else float("nan")
            for key, title in columns.items()
        }
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(columns.values()))


def log_density_histogram(density: np.ndarray, bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of log10 feature density (dead features left out): (counts, bin_edges)."""
    alive = density[density > 0]
    if alive.size == 0:
        return np.zeros(bins, dtype=int), np.linspace(-8, 0, bins + 1)
    return np.histogram(np.log10(alive), bins=bins, range=(min(-8.0, np.log10(alive).min()), 0.0))


@torch.no_grad()
def reconstruction_sums(sae, acts: Sequence[torch.Tensor], *, factor: float = MASSIVE_FACTOR):
    """Per unit (a text's or a window's activation rows ``[n_tokens, d_in]``), ``sae``'s squared
    reconstruction error and the squared deviation from the mean, over all tokens and over typical
    ones (massive tokens, :func:`interp_lib.evals.metrics.typical_rows`, left out): ``[n_units,
    4]``."""
    units = [torch.as_tensor(a).reshape(-1, torch.as_tensor(a).shape[-1]) for a in acts]
    if not units:
        raise InvalidArgumentError("need at least one unit of activations")
    x = torch.cat(units).float()
    unit = torch.repeat_interleave(torch.arange(len(units)), torch.tensor([len(u) for u in units]))
    dtype = next(sae.parameters()).dtype
    err = torch.cat(
        [(xb - sae.decode(sae.encode(xb.to(dtype))).float()).pow(2).sum(-1) for xb in x.split(8192)]
    ).double()
    typical = typical_rows(x, factor)
    dev_all = (x.double() - x.double().mean(0)).pow(2).sum(-1)
    dev_typ = (x.double() - x[typical].double().mean(0)).pow(2).sum(-1) * typical
    cols = [err, dev_all, err * typical, dev_typ]
    out = torch.zeros(len(units), 4, dtype=torch.float64)
    for c, values in enumerate(cols):
        out[:, c].index_add_(0, unit, values)
    return out.numpy()


def fve_of_sums(sums: np.ndarray, *, typical: bool = True) -> float:
    """Variance explained from :func:`reconstruction_sums` rows (summed over the units given):
    over typical tokens by default, over all with ``typical=False``."""
    total = np.asarray(sums, dtype=np.float64).sum(0)
    err, dev = (total[2], total[3]) if typical else (total[0], total[1])
    return float(1.0 - err / dev) if dev > 0 else float("nan")
