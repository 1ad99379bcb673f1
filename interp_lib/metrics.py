"""Judge an SAE: sparsity, reconstruction, and what splicing it into the model costs.

Variance explained alone flatters SAEs (a small error in the wrong direction can still wreck the
model's predictions), so :func:`sae_metrics` also splices the SAE's reconstruction into the forward
pass and reports CE-loss recovered::

    CE recovered = (L_zero - L_sae) / (L_zero - L_clean)

where L_clean is the model's next-token loss, L_sae the loss with the activation at the SAE's hook
replaced by its reconstruction, and L_zero the loss with that activation zeroed. The BOS position
(an attention sink on SmolLM2) is left out everywhere: not spliced, not scored.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
import torch

DENSE_THRESHOLD = 0.1
"""A feature firing on more than this share of tokens counts as dense."""

MASSIVE_FACTOR = 10.0
"""A token whose activation norm exceeds this many times the median norm counts as massive."""


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


def typical_rows(x: torch.Tensor, factor: float = MASSIVE_FACTOR) -> torch.Tensor:
    """[n] True where a row of ``x`` [n, d] has a norm of at most ``factor`` x the median norm (not massive)."""
    norms = torch.cat([x[i : i + 65536].float().norm(dim=-1) for i in range(0, x.shape[0], 65536)])  # no fp32 copy of x
    return norms <= factor * norms.median()


def typical_fve(x: torch.Tensor, sq_err: torch.Tensor, factor: float = MASSIVE_FACTOR) -> tuple[float, float]:
    """(FVE over typical tokens, share of massive tokens) from activations ``x`` [n, d] and per-token
    squared reconstruction errors ``sq_err`` [n]; massive: norm > ``factor`` x the median norm."""
    if x.ndim != 2 or sq_err.shape != (x.shape[0],):
        raise ValueError(f"need x [n, d] and sq_err [n], got {tuple(x.shape)} and {tuple(sq_err.shape)}")
    typical = typical_rows(x, factor)
    return _fve(x[typical], sq_err[typical]), float((~typical).double().mean())


def _fve(x: torch.Tensor, sq_err: torch.Tensor) -> float:
    """1 - sum(sq_err) / sum|x - mean x|^2, in float64 (NaN where ``x`` has no variance)."""
    x = x.double()
    var = (x - x.mean(0)).pow(2).sum().item()
    return 1.0 - sq_err.double().sum().item() / var if var > 0 else float("nan")


def sae_hook(sae) -> str:
    """Hook name an SAE was trained on (from its SAELens metadata)."""
    name = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
    if not name:
        raise ValueError("This SAE's cfg.metadata.hook_name is empty: cannot tell where it reads the model")
    return name


def check_widths(model, sae) -> str:
    """Raise ValueError unless the SAE's input width matches the model's width at the SAE's hook."""
    from .activations import _width

    hook = sae_hook(sae)
    if hook not in model.hook_dict:
        raise ValueError(f"The SAE reads hook {hook!r}, which this model does not have")
    width = _width(model, hook)
    if sae.cfg.d_in != width:
        raise ValueError(f"SAE input width d_in={sae.cfg.d_in} does not match the model's width {width} at {hook}")
    return hook


@torch.inference_mode()
def sae_metrics(model, sae, tokens: torch.Tensor, *, batch_size: int = 8, progress: bool = True, fast: bool = True) -> SAEMetrics:
    """L0, FVE, MSE, CE-loss recovered, loss increase, dead/dense fractions for ``sae`` on ``tokens`` [n, ctx]."""
    from tqdm.auto import tqdm

    hook = check_widths(model, sae)
    if tokens.ndim != 2 or tokens.shape[1] < 3:
        raise ValueError(f"tokens must be [n_contexts, ctx_len >= 3], got shape {tuple(tokens.shape)}")
    dtype = next(sae.parameters()).dtype
    n_feat = sae.cfg.d_sae
    fires = torch.zeros(n_feat, dtype=torch.float64)
    sums = dict(l0=0.0, sse=0.0, n=0)
    rows = {"x": [], "err": []}  # per token: activations and squared errors, for both FVEs
    losses = {"clean": [], "sae": [], "zero": []}

    def splice(fn):
        def hook_fn(act, hook):
            act = act.clone()
            act[:, 1:] = fn(act[:, 1:])
            return act

        return hook_fn

    def reconstruct(x):
        return sae.decode(sae.encode(x.to(dtype))).to(x.dtype)

    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_pre", hook)
    start_layer = int(match.group(1)) if match and fast and int(match.group(1)) > 0 else None
    bar = tqdm(total=tokens.shape[0], unit="ctx", desc="metrics", disable=not progress, leave=False)
    for i in range(0, tokens.shape[0], batch_size):
        batch = tokens[i : i + batch_size].to(model.cfg.device)
        captured = {}

        def grab(act, hook):
            captured["full"] = act
            captured["x"] = act[:, 1:].reshape(-1, act.shape[-1]).float()

        clean = model.run_with_hooks(batch, return_type="loss", loss_per_token=True, fwd_hooks=[(hook, grab)])
        x = captured["x"]
        feats = sae.encode(x.to(dtype)).float()
        x_hat = sae.decode(feats.to(dtype)).float()
        active = feats > 0
        fires += active.sum(0).double()
        sums["l0"] += active.sum().item()
        err = (x - x_hat).pow(2).sum(-1)
        sums["sse"] += err.sum().item()
        rows["x"].append(x.cpu())
        rows["err"].append(err.double().cpu())
        sums["n"] += x.shape[0]
        if start_layer is not None:
            # Fast path for residual-stream hooks: rerun only the layers after the hook.
            def rerun(fn):
                resid = captured["full"].clone()
                resid[:, 1:] = fn(resid[:, 1:])
                return model(resid, start_at_layer=start_layer, tokens=batch, return_type="loss", loss_per_token=True)

            with_sae, zeroed = rerun(reconstruct), rerun(torch.zeros_like)
        else:
            with_sae = model.run_with_hooks(batch, return_type="loss", loss_per_token=True, fwd_hooks=[(hook, splice(reconstruct))])
            zeroed = model.run_with_hooks(batch, return_type="loss", loss_per_token=True, fwd_hooks=[(hook, splice(torch.zeros_like))])
        # loss_per_token[:, j] is the loss predicting token j+1 from position j; position 0 is not scored.
        for key, loss in (("clean", clean), ("sae", with_sae), ("zero", zeroed)):
            losses[key].append(loss[:, 1:].reshape(-1).double())
        bar.update(batch.shape[0])
    bar.close()
    n = sums["n"]
    ce = {k: torch.cat(v).mean().item() for k, v in losses.items()}
    density = (fires / n).numpy()
    x_all, err_all = torch.cat(rows["x"]), torch.cat(rows["err"])
    fve_typ, massive = typical_fve(x_all, err_all)
    recovered = (ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"]) if ce["zero"] != ce["clean"] else float("nan")
    return SAEMetrics(
        l0=sums["l0"] / n,
        fve=_fve(x_all, err_all),
        fve_typical=fve_typ,
        massive_fraction=massive,
        mse=sums["sse"] / (n * sae.cfg.d_in),
        ce_clean=ce["clean"],
        ce_sae=ce["sae"],
        ce_zero=ce["zero"],
        ce_recovered=recovered,
        ce_increase=ce["sae"] - ce["clean"],
        dead_fraction=float((density == 0).mean()),
        dense_fraction=float((density > DENSE_THRESHOLD).mean()),
        density=density,
        n_tokens=n,
    )


def log_density_histogram(density: np.ndarray, bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of log10 feature density (dead features left out): (counts, bin_edges)."""
    alive = density[density > 0]
    if alive.size == 0:
        return np.zeros(bins, dtype=int), np.linspace(-8, 0, bins + 1)
    return np.histogram(np.log10(alive), bins=bins, range=(min(-8.0, np.log10(alive).min()), 0.0))
