"""Train a sparse autoencoder on cached activations, two ways.

* :func:`train_sae`: our own loop around :mod:`interp_lib.sae` (ReLU or TopK), small enough to
  read in one sitting: normalise the inputs, initialise ``b_dec`` from the data, then Adam with
  a linear warm-up and a decay to zero, keeping the decoder rows at unit norm, and reviving
  dead latents (AuxK for TopK, resampling for ReLU).
* :func:`train_saelens`: SAELens's own ``SAETrainer`` on the *same* activations, width, ``k``
  or L1 coefficient, batch size and learning-rate schedule, so a chapter (and
  :mod:`interp_lib.bench`) can put the two side by side.

Both return a :class:`TrainResult`. Training is deterministic for a seed on CPU (same seed,
same data -> identical weights).

Dead latents: a latent is *dead* if it has not fired in the last ``dead_window_tokens``
training tokens (default 1M), or in the whole run so far if that is shorter. AuxK uses its own,
shorter window (``auxk_window_tokens``) because a latent should get help long before we would
call it dead in a report.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from .sae import ReluSAE, TopKSAE, initial_b_dec, input_scale, save_saelens

__all__ = ["TrainConfig", "TrainResult", "train_sae", "train_saelens", "evaluate", "main_train"]

ARCHS = ("relu", "topk")


@dataclass
class TrainConfig:
    """Everything that decides a training run (both trainers read the same fields)."""

    arch: str = "topk"
    """``"relu"`` (:class:`~interp_lib.sae.ReluSAE`) or ``"topk"`` (:class:`~interp_lib.sae.TopKSAE`)."""
    d_sae: int = 4608
    """Number of latents (8x the 576-wide residual stream of SmolLM2-135M by default)."""
    k: int = 32
    """TopK: active latents per token."""
    l1_coeff: float = 5.0
    """ReLU: weight of the L1 penalty (inputs have mean norm ``sqrt(d_in)``; MSE is summed over
    ``d_in``, as in SAELens, so the same number means the same trade-off in both trainers)."""
    tied: bool = False
    """ReLU: one matrix for encoder and decoder."""
    lr: float | None = None
    """Adam learning rate. ``None``: 2e-3 (TopK) or 1e-3 (ReLU), chosen for short CPU runs
    (tens to hundreds of steps of 4096 tokens). On SmolLM2's layer-12 residual stream, 125 steps,
    2e-3 reached a held-out FVE of 0.74 on typical tokens against 0.61 with Gao et al.'s
    ``2e-4 / sqrt(d_sae / 2**14)`` (3.8e-4 at 4608 latents); 1e-2 killed a quarter of the
    latents. For runs of many thousands of steps, Gao et al.'s value is the safer choice."""
    batch_size: int = 4096
    """Tokens per optimiser step."""
    epochs: float = 1.0
    """Passes over the data (ignored when ``n_tokens`` is set)."""
    n_tokens: int | None = None
    """Total training tokens (may exceed the data: it is then cycled)."""
    warmup_steps: int | None = None
    """Linear learning-rate warm-up from ~0. ``None``: 5% of the steps (at most 1000)."""
    decay_fraction: float = 0.2
    """The learning rate decays to 0 over this last fraction of the steps."""
    decay: str = "linear"
    """Shape of that decay: ``"linear"`` or ``"cosine"`` (SAELens is always given linear)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0
    b_dec_init: str = "geometric_median"
    """How ``b_dec`` starts: ``"geometric_median"``, ``"mean"`` or ``"zeros"``."""
    auxk_coeff: float = 1 / 32
    """TopK: weight of the AuxK loss (Gao et al. use 1/32)."""
    k_aux: int | None = None
    """TopK: latents used by AuxK (``None``: ``d_in // 2``)."""
    auxk_window_tokens: int = 200_000
    """TopK: a latent silent for this many tokens gets the AuxK gradient."""
    resample_every: int | None = None
    """ReLU: steps between dead-latent resamplings (only in the first half of training).
    ``None``: a tenth of the run (at least 25 steps); ``0``: never."""
    max_norm_factor: float | None = None
    """Leave out of training the rows whose norm exceeds this multiple of the median norm.
    ``None``: keep every row. On SmolLM2 ~0.1% of rows (attention-sink-like tokens at the start
    of a context) have ~100x the usual norm and dominate the MSE of short runs."""
    dead_window_tokens: int = 1_000_000
    """Window for the reported ``dead_fraction`` (capped at the tokens seen so far)."""
    log_every: int | None = None
    """Steps between history rows. ``None``: about 50 rows per run."""
    eval_every: int | None = None
    """Steps between held-out evaluations (when ``val_acts`` is given). ``None``: 4 per run."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.decay not in ("linear", "cosine"):
            raise ValueError(f"decay must be 'linear' or 'cosine', got {self.decay!r}")
        if self.batch_size < 1 or self.d_sae < 1:
            raise ValueError("batch_size and d_sae must be positive")
        if self.arch == "topk" and not 0 < self.k <= self.d_sae:
            raise ValueError(f"need 0 < k <= d_sae, got k={self.k}")
        self.adam_betas = tuple(self.adam_betas)  # JSON round trips give lists

    @property
    def learning_rate(self) -> float:
        """The learning rate actually used (resolves ``lr=None``)."""
        if self.lr is not None:
            return self.lr
        return 2e-3 if self.arch == "topk" else 1e-3

    def total_steps(self, n_rows: int) -> int:
        """Optimiser steps for ``n_rows`` rows of training data."""
        tokens = self.n_tokens if self.n_tokens is not None else int(self.epochs * n_rows)
        return max(1, tokens // self.batch_size)

    def warmup(self, steps: int) -> int:
        return self.warmup_steps if self.warmup_steps is not None else min(1000, max(1, steps // 20))


class TrainResult(NamedTuple):
    """What a trainer returns."""

    sae: Any
    """The trained SAE. :func:`train_sae`: an :mod:`interp_lib.sae` model that expects
    *normalised* inputs (``raw * scale``); :func:`train_saelens`: an inference ``sae_lens.SAE``
    with the scale already folded in (it takes raw activations)."""
    history: list[dict]
    """One dict per logging step: ``step, tokens, loss, mse, l1 (ReLU) / auxk (TopK), l0, fve,
    dead_fraction, lr, elapsed_s, tokens_per_s`` and, at evaluation steps, ``val_fve, val_mse,
    val_l0``. ``pandas.DataFrame(history)`` makes a table of it."""
    scale: float
    """Input normalisation: ``normalised = raw * scale`` (mean norm ``sqrt(d_in)``)."""
    metrics: dict
    """Final summary: ``train_tokens, train_seconds, tokens_per_s, dead_fraction`` and, given
    ``val_acts``, ``val_fve, val_mse, val_l0, val_dead_fraction``."""


# --------------------------------------------------------------------------------------------
# Pieces shared by both trainers
# --------------------------------------------------------------------------------------------
def lr_factor(step: int, total: int, warmup: int, decay_fraction: float, shape: str = "linear") -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up over ``warmup`` steps,
    constant, then down to 0 over the last ``decay_fraction`` of ``total`` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    decay_steps = int(total * decay_fraction)
    start = total - decay_steps
    if decay_steps <= 0 or step < start:
        return 1.0
    progress = (step - start + 1) / decay_steps  # reaches 1 (lr 0) at the last step
    if shape == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


class _Batches:
    """Random mini-batches of row indices, epoch after epoch, from a seeded generator."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        if n < batch_size:
            raise ValueError(f"need at least batch_size={batch_size} rows of activations, got {n}")
        self.n, self.bs, self.gen = n, batch_size, generator
        self.perm, self.pos = torch.randperm(n, generator=generator), 0

    def __next__(self) -> Tensor:
        if self.pos + self.bs > self.n:  # drop the ragged end, start a new epoch
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos : self.pos + self.bs]
        self.pos += self.bs
        return idx


def _generators(seed: int) -> tuple[torch.Generator, torch.Generator, torch.Generator]:
    """Three independent seeded streams: initial weights, data samples (b_dec, resampling),
    batch order. Separate streams let SAELens's run see exactly our batches."""
    return tuple(torch.Generator().manual_seed(seed * 3 + i) for i in range(3))  # type: ignore[return-value]


def _drop_outliers(acts: Tensor, factor: float | None) -> tuple[Tensor, int]:
    """``acts`` without the rows whose norm is above ``factor`` x the median (and how many)."""
    from .metrics import typical_rows

    if factor is None:
        return acts, 0
    keep = typical_rows(acts, factor)
    n_drop = int((~keep).sum())
    return (acts[keep] if n_drop else acts), n_drop


def _b_dec_sample(acts: Tensor, gen: torch.Generator, device, rows: int = 32_768) -> Tensor:
    """Random rows (float32) to initialise ``b_dec`` from."""
    return acts[torch.randperm(acts.shape[0], generator=gen)[:rows]].to(device, torch.float32)


def _fve(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance explained: ``1 - sum||x - x_hat||^2 / sum||x - mean(x)||^2``."""
    return float(1 - (x - x_hat).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum().clamp_min(1e-12))


@torch.no_grad()
def evaluate(sae, acts: Tensor, scale: float | None = None, batch_size: int = 8192,
             outlier_factor: float = 10.0) -> dict[str, float]:
    """Reconstruction metrics of ``sae`` on raw activations ``acts: [n, d_in]``.

    ``sae``: one of ours (give ``scale``; it sees ``acts * scale``) or a ``sae_lens.SAE`` (scale
    folded in; ``scale`` only converts its MSE to the normalised units for comparison).
    Returns ``fve`` (fraction of variance explained over the whole set), ``mse`` (per token,
    normalised units), ``l0`` (mean active latents per token), ``dead_fraction`` (latents that
    never fire on ``acts``) and ``fve_typical``: the FVE over rows whose norm is at most
    ``outlier_factor`` times the median. On SmolLM2 about 0.1% of rows (attention-sink-like
    tokens near the start of a context) have ~100x the usual norm and carry most of the
    variance, so ``fve`` mostly measures those few rows; ``fve_typical`` measures the rest.
    """
    ours = isinstance(sae, (ReluSAE, TopKSAE))
    if ours and scale is None:
        raise ValueError("evaluate needs the input scale for an interp_lib SAE")
    s = 1.0 if scale is None else float(scale)
    dev = next(sae.parameters()).device
    d_sae = sae.d_sae if ours else sae.cfg.d_sae
    n = acts.shape[0]
    norms = torch.cat([acts[i : i + batch_size].float().norm(dim=-1) for i in range(0, n, batch_size)])
    typical = norms <= outlier_factor * norms.median()
    mean = torch.zeros(acts.shape[1], dtype=torch.float64)
    mean_typ = torch.zeros_like(mean)
    for i in range(0, n, batch_size):
        raw = acts[i : i + batch_size].double()
        mean += raw.sum(dim=0)
        mean_typ += raw[typical[i : i + batch_size]].sum(dim=0)
    mean, mean_typ = (mean / n).float().to(dev), (mean_typ / max(int(typical.sum()), 1)).float().to(dev)
    sq_err = total = sq_err_typ = total_typ = l0 = 0.0
    fired = torch.zeros(d_sae, dtype=torch.bool, device=dev)
    for i in range(0, n, batch_size):
        raw = acts[i : i + batch_size].to(dev, torch.float32)
        typ = typical[i : i + batch_size].to(dev)
        if ours:
            f = sae.encode(raw * s)
            x_hat = sae.decode(f) / s
        else:
            f = sae.encode(raw.to(sae.dtype))
            x_hat = sae.decode(f).float()
            f = f.float()
        err = (raw - x_hat).pow(2).sum(dim=-1)
        sq_err += float(err.sum())
        sq_err_typ += float(err[typ].sum())
        total += float((raw - mean).pow(2).sum())
        total_typ += float((raw[typ] - mean_typ).pow(2).sum())
        active = f != 0
        l0 += float(active.sum())
        fired |= active.any(dim=0)
    return {
        "fve": 1 - sq_err / max(total, 1e-12),
        "fve_typical": 1 - sq_err_typ / max(total_typ, 1e-12),
        "mse": sq_err * s * s / n,
        "l0": l0 / n,
        "dead_fraction": float((~fired).float().mean()),
        "outlier_fraction": float((~typical).float().mean()),
    }


def _progress_bar(total_tokens: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total_tokens, unit="tok", unit_scale=True, desc=desc, leave=False,
                disable=not enabled, dynamic_ncols=True)


def _row_for_bar(row: dict) -> dict:
    return {k: f"{row[k]:.3g}" for k in ("loss", "fve", "l0") if k in row}


# --------------------------------------------------------------------------------------------
# Our trainer
# --------------------------------------------------------------------------------------------
def make_sae(cfg: TrainConfig, d_in: int, generator: torch.Generator | None = None) -> ReluSAE | TopKSAE:
    """A freshly initialised SAE for ``cfg`` (weights drawn from ``generator``)."""
    if cfg.arch == "topk":
        return TopKSAE(d_in, cfg.d_sae, k=cfg.k, auxk_coeff=cfg.auxk_coeff, k_aux=cfg.k_aux, generator=generator)
    return ReluSAE(d_in, cfg.d_sae, l1_coeff=cfg.l1_coeff, tied=cfg.tied, generator=generator)


def train_sae(acts: Tensor, cfg: TrainConfig, *, val_acts: Tensor | None = None, progress: bool = True,
              callback: Callable[[dict], Any] | None = None) -> TrainResult:
    """Train an SAE on ``acts: [n, d_in]`` raw activations (any float dtype, position 0 already
    left out). ``val_acts``: held-out rows for evaluation. ``callback(row)`` is called with each
    history row as it is logged (for live plots). Returns a :class:`TrainResult`."""
    if acts.ndim != 2:
        raise ValueError(f"acts must be [n_tokens, d_in], got shape {tuple(acts.shape)}")
    device = torch.device(cfg.device)
    gen_weights, gen_sample, gen_data = _generators(cfg.seed)
    acts, n_dropped = _drop_outliers(acts, cfg.max_norm_factor)
    n, d_in = acts.shape
    scale = input_scale(acts)

    sae = make_sae(cfg, d_in, gen_weights).to(device)
    sae.init_b_dec_(_b_dec_sample(acts, gen_sample, device) * scale, method=cfg.b_dec_init)

    lr = cfg.learning_rate
    opt_kwargs: dict[str, Any] = {"lr": lr, "betas": cfg.adam_betas}
    if device.type in ("cpu", "cuda"):
        opt_kwargs["fused"] = True  # one kernel for all parameters: ~4x faster than the loop on CPU
    optimizer = torch.optim.Adam(sae.parameters(), **opt_kwargs)

    steps = cfg.total_steps(n)
    warmup = cfg.warmup(steps)
    log_every = cfg.log_every or max(1, steps // 50)
    eval_every = cfg.eval_every or max(1, steps // 4)
    resample_every = cfg.resample_every if cfg.resample_every is not None else max(25, steps // 10)
    bs = cfg.batch_size
    batches = _Batches(n, bs, gen_data)

    # tokens since each latent last fired (drives AuxK, resampling and the dead fraction)
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)
    history: list[dict] = []
    bar = _progress_bar(steps * bs, f"train {cfg.arch} SAE", progress)
    t0 = time.perf_counter()
    eval_seconds = 0.0  # held-out evaluation is not training time
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step, steps, warmup, cfg.decay_fraction, cfg.decay)
        x = acts[next(batches)].to(device, torch.float32, non_blocking=True) * scale

        if isinstance(sae, TopKSAE):
            dead_mask = since_fired >= cfg.auxk_window_tokens
            out = sae(x, dead_mask=dead_mask)
            fired = torch.zeros(cfg.d_sae, dtype=torch.bool, device=device)
            fired[out.top_indices[out.top_acts > 0]] = True
        else:
            out = sae(x)
            fired = (out.latents > 0).any(dim=0)

        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.project_decoder_grad_()
        optimizer.step()
        sae.normalize_decoder_()

        since_fired += bs
        since_fired[fired] = 0
        tokens = (step + 1) * bs

        if (isinstance(sae, ReluSAE) and resample_every and (step + 1) % resample_every == 0
                and step + 1 <= steps // 2):
            dead = since_fired >= resample_every * bs
            sample = acts[torch.randperm(n, generator=gen_sample)[: 8 * bs]].to(device, torch.float32) * scale
            sae.resample_dead_(dead, sample, optimizer, generator=gen_sample)
            since_fired[dead] = 0  # give the new latents a fresh window

        last = step == steps - 1
        if (step + 1) % log_every == 0 or last:
            with torch.no_grad():
                if isinstance(sae, TopKSAE):
                    l0 = float((out.top_acts > 0).sum(dim=-1).float().mean())
                    extra = {"auxk": float(out.auxk)}
                else:
                    l0 = float((out.latents > 0).sum(dim=-1).float().mean())
                    extra = {"l1": float(out.l1)}
                elapsed = time.perf_counter() - t0 - eval_seconds
                row = {
                    "step": step + 1,
                    "tokens": tokens,
                    "loss": float(out.loss),
                    "mse": float(out.mse),
                    **extra,
                    "l0": l0,
                    "fve": _fve(x, out.x_hat),
                    "dead_fraction": float((since_fired >= min(cfg.dead_window_tokens, tokens)).float().mean()),
                    "lr": optimizer.param_groups[0]["lr"],
                    "elapsed_s": elapsed,
                    "tokens_per_s": tokens / elapsed,
                }
            if val_acts is not None and ((step + 1) % eval_every == 0 or last):
                t_eval = time.perf_counter()
                row.update({f"val_{k}": v for k, v in evaluate(sae, val_acts, scale).items()
                            if k != "dead_fraction"})
                eval_seconds += time.perf_counter() - t_eval
            history.append(row)
            bar.set_postfix(_row_for_bar(row), refresh=False)
            if callback is not None:
                callback(row)
        bar.update(bs)
    bar.close()
    elapsed = time.perf_counter() - t0 - eval_seconds
    sae.eval()

    metrics = {
        "trainer": "interp_lib",
        "arch": cfg.arch,
        "train_tokens": steps * bs,
        "train_seconds": elapsed,
        "tokens_per_s": steps * bs / elapsed,
        "dead_fraction": history[-1]["dead_fraction"],
        "scale": scale,
        "rows_dropped": n_dropped,
    }
    if val_acts is not None:
        metrics.update({f"val_{k}": v for k, v in evaluate(sae, val_acts, scale).items()})
    return TrainResult(sae, history, scale, metrics)


# --------------------------------------------------------------------------------------------
# SAELens's trainer on the same data
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_saelens(progress: bool, desc: str = "train SAE (SAELens)"):
    """Silence SAELens while it trains: no wandb, no log lines, no warnings, our own bar."""
    from tqdm.auto import tqdm

    import sae_lens.training.sae_trainer as st

    def bar(*args, **kwargs):  # SAELens's own bar, in our style
        kwargs.update(desc=desc, unit="tok", unit_scale=True, leave=False, disable=not progress, dynamic_ncols=True)
        return tqdm(*args, **kwargs)

    old_tqdm = st.tqdm
    st.tqdm = bar
    loggers = [logging.getLogger(name) for name in ("sae_lens", "wandb")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        st.tqdm = old_tqdm
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def train_saelens(acts: Tensor, cfg: TrainConfig, *, val_acts: Tensor | None = None, progress: bool = True,
                  callback: Callable[[dict], Any] | None = None, init_b_dec: bool = True) -> TrainResult:
    """Train with SAELens's own ``SAETrainer`` on the same data and settings as :func:`train_sae`.

    Same: input normalisation (we normalise, SAELens sees mean norm ``sqrt(d_in)``), width,
    ``k`` / ``l1_coeff``, batch size, Adam betas, learning rate, warm-up, linear decay to 0,
    AuxK coefficient and window, data order (same seeded batches) and, with ``init_b_dec``
    (default), the same data-derived ``b_dec`` (SAELens 6 itself starts it at zero). SAELens's
    own choices stay: its weight initialisation (decoder rows of norm 0.1), gradient clipping at 1,
    TopK with ``rescale_acts_by_decoder_norm`` and the un-normalised AuxK, the decoder-norm
    weighted L1 without a unit-norm constraint, no resampling. Returns an inference
    ``sae_lens.SAE`` (TopKSAE / StandardSAE) that takes raw activations.
    """
    with _quiet_saelens(progress):
        from sae_lens import SAE
        from sae_lens.config import LoggingConfig, SAETrainerConfig
        from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
        from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
        from sae_lens.training.sae_trainer import SAETrainer

    if acts.ndim != 2:
        raise ValueError(f"acts must be [n_tokens, d_in], got shape {tuple(acts.shape)}")
    acts, n_dropped = _drop_outliers(acts, cfg.max_norm_factor)
    n, d_in = acts.shape
    scale = input_scale(acts)
    torch.manual_seed(cfg.seed)  # SAELens draws its initial weights from the global generator
    _, gen_sample, gen_data = _generators(cfg.seed)
    steps = cfg.total_steps(n)
    bs = cfg.batch_size
    log_every = cfg.log_every or max(1, steps // 50)
    eval_every = cfg.eval_every or max(1, steps // 4)
    aux_window_steps = max(1, cfg.auxk_window_tokens // bs)

    common = dict(d_in=d_in, d_sae=cfg.d_sae, dtype="float32", device=cfg.device)
    if cfg.arch == "topk":
        sae_cfg = TopKTrainingSAEConfig(k=cfg.k, aux_loss_coefficient=cfg.auxk_coeff, **common)
        training_sae = TopKTrainingSAE(sae_cfg)
    else:
        sae_cfg = StandardTrainingSAEConfig(l1_coefficient=cfg.l1_coeff, **common)
        training_sae = StandardTrainingSAE(sae_cfg)
    if init_b_dec:
        # SAELens 6 starts b_dec at zero; give it the same data-derived start as ours so the
        # comparison is about the trainers, not about one initial vector.
        b_dec = initial_b_dec(_b_dec_sample(acts, gen_sample, cfg.device) * scale, cfg.b_dec_init)
        with torch.no_grad():
            training_sae.b_dec.copy_(b_dec)

    warmup = cfg.warmup(steps)
    decay_steps = int(steps * cfg.decay_fraction)
    lr = cfg.learning_rate
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * bs,
        train_batch_size_samples=bs,
        lr=lr,
        lr_end=lr,
        lr_scheduler_name="constant",
        lr_warm_up_steps=warmup,
        lr_decay_steps=decay_steps,
        adam_beta1=cfg.adam_betas[0],
        adam_beta2=cfg.adam_betas[1],
        device=cfg.device,
        dead_feature_window=aux_window_steps,
        feature_sampling_window=10**9,  # its sparsity log needs wandb; we log our own
        logger=LoggingConfig(log_to_wandb=False),
    )

    def data_provider():
        batches = _Batches(n, bs, gen_data)
        while True:
            yield acts[next(batches)].to(cfg.device, torch.float32) * scale

    history: list[dict] = []
    clock = {"eval": 0.0}  # held-out evaluation is not training time

    class _Trainer(SAETrainer):
        """SAETrainer that records our history rows (its own logging needs wandb)."""

        def _update_pbar(self, step_output, pbar, update_interval: int = 100):  # noqa: ARG002
            step = self.n_training_steps  # steps completed (fit() counts before calling us)
            pbar.update(bs)
            if step % log_every and step != steps:
                return
            log = self.build_train_step_log_dict(step_output, self.n_training_samples)
            elapsed = time.perf_counter() - t0 - clock["eval"]
            tokens = step * bs
            row = {
                "step": step,
                "tokens": tokens,
                "loss": log["losses/overall_loss"],
                "mse": log["losses/mse_loss"],
            }
            if "losses/l1_loss" in log:
                row["l1"] = log["losses/l1_loss"] / max(cfg.l1_coeff, 1e-12)
            if "losses/auxiliary_reconstruction_loss" in log:
                row["auxk"] = log["losses/auxiliary_reconstruction_loss"] / max(cfg.auxk_coeff, 1e-12)
            row.update({
                "l0": log["metrics/l0"],
                "fve": log["metrics/explained_variance"],
                # SAELens counts steps since each latent fired; same rule as ours, in tokens
                "dead_fraction": float((self.n_forward_passes_since_fired * bs
                                        >= min(cfg.dead_window_tokens, tokens)).float().mean()),
                "lr": log["details/current_learning_rate"],
                "elapsed_s": elapsed,
                "tokens_per_s": tokens / elapsed,
            })
            if val_acts is not None and (step % eval_every == 0 or step == steps):
                t_eval = time.perf_counter()
                row.update({f"val_{k}": v for k, v in evaluate(_inference(self.sae), val_acts, scale).items()
                            if k != "dead_fraction"})
                clock["eval"] += time.perf_counter() - t_eval
            history.append(row)
            pbar.set_postfix(_row_for_bar(row), refresh=False)
            if callback is not None:
                callback(row)

    def _inference(tsae) -> "SAE":
        """The inference SAE of a training SAE, with the input scale folded in."""
        state = {k: v.detach().clone() for k, v in tsae.state_dict().items()}
        tsae.process_state_dict_for_saving_inference(state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sae = SAE.from_dict(tsae.cfg.get_inference_sae_cfg_dict())
        sae.load_state_dict(state)
        sae.fold_activation_norm_scaling_factor(scale)
        return sae.eval()

    with _quiet_saelens(progress, f"train {cfg.arch} SAE (SAELens)"):
        t0 = time.perf_counter()
        trainer = _Trainer(trainer_cfg, training_sae, data_provider())
        trainer.fit()
        elapsed = time.perf_counter() - t0 - clock["eval"]
    sae = _inference(training_sae)
    metrics = {
        "trainer": "sae_lens",
        "arch": cfg.arch,
        "train_tokens": steps * bs,
        "train_seconds": elapsed,
        "tokens_per_s": steps * bs / elapsed,
        "dead_fraction": history[-1]["dead_fraction"] if history else float("nan"),
        "scale": scale,
        "rows_dropped": n_dropped,
    }
    if val_acts is not None:
        metrics.update({f"val_{k}": v for k, v in evaluate(sae, val_acts, scale).items()})
    return TrainResult(sae, history, scale, metrics)


# --------------------------------------------------------------------------------------------
# CLI: python -m interp_lib train ...
# --------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m interp_lib train",
                                description="Train an SAE on cached activations and save it in SAELens format.")
    p.add_argument("--model", default="smollm2-135m", help="model name (see interp_lib.models)")
    p.add_argument("--hook", required=True, help="hook point, e.g. blocks.12.hook_resid_pre")
    p.add_argument("--arch", choices=ARCHS, default="topk")
    p.add_argument("--k", type=int, default=32, help="TopK: active latents per token")
    p.add_argument("--l1", type=float, default=5.0, help="ReLU: L1 coefficient")
    p.add_argument("--width", type=int, required=True, help="number of latents (d_sae)")
    p.add_argument("--tokens", type=int, required=True, help="tokens of activations to harvest (train split)")
    p.add_argument("--val-tokens", type=int, default=None,
                   help="held-out tokens to evaluate on (default: a tenth of --tokens, at least 8192; 0: none)")
    p.add_argument("--ctx-len", type=int, default=128)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="storage dtype of the weights")
    p.add_argument("--out", required=True, help="output folder (cfg.json, sae_weights.safetensors, training_log.json)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    return p


def main_train(argv: list[str] | None = None) -> int:
    """``python -m interp_lib train --model M --hook H --arch {relu,topk} [--k K] [--l1 C] --width W
    --tokens N --out DIR [--seed S] [--epochs E] [--lr LR]``."""
    args = _parser().parse_args(argv)
    try:
        from .activations import cached_activations
    except ImportError as err:  # pragma: no cover - the lead's module is part of the package
        raise SystemExit(f"interp_lib.activations is not available ({err}); cannot harvest activations") from err

    progress = not args.no_progress
    acts = cached_activations(args.model, [args.hook], n_tokens=args.tokens, ctx_len=args.ctx_len,
                              progress=progress)[args.hook]
    val_tokens = args.val_tokens if args.val_tokens is not None else max(8192, args.tokens // 10)
    val = None
    if val_tokens:
        val = cached_activations(args.model, [args.hook], n_tokens=val_tokens, split="heldout",
                                 ctx_len=args.ctx_len, progress=progress)[args.hook]
    cfg = TrainConfig(arch=args.arch, d_sae=args.width, k=args.k, l1_coeff=args.l1, lr=args.lr,
                      batch_size=min(args.batch_size, acts.shape[0]), epochs=args.epochs, seed=args.seed,
                      device=args.device)
    result = train_sae(acts, cfg, val_acts=val, progress=progress)
    path = save_saelens(
        result.sae, args.out, hook_name=args.hook, model_name=args.model, scale=result.scale,
        dataset=f"interp_lib offline corpus (train split, {acts.shape[0]} tokens, ctx_len {args.ctx_len})",
        dtype=args.dtype, context_size=args.ctx_len,
        extra_metadata={"train_config": asdict(cfg)}, history=result.history, metrics=result.metrics,
    )
    m = result.metrics
    summary = f"saved {cfg.arch} SAE ({acts.shape[1]} -> {cfg.d_sae}) to {path}: " \
              f"{m['train_tokens']:,} tokens in {m['train_seconds']:.0f} s ({m['tokens_per_s']:,.0f} tok/s)"
    if "val_fve" in m:
        summary += f", held-out FVE {m['val_fve']:.3f}, L0 {m['val_l0']:.1f}, dead {m['val_dead_fraction']:.1%}"
    print(summary)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_train())
