"""Train a sparse autoencoder on cached activations with our own loop.

:func:`train_sae` is a loop around :mod:`interp_lib.sae.homebrew` (ReLU or TopK), small enough to
read in one sitting: normalise the inputs, initialise ``b_dec`` from the data, then Adam with a
linear warm-up and a decay to zero, keeping the decoder rows at unit norm, and reviving dead
latents (AuxK for TopK, resampling for ReLU). :class:`TrainConfig` holds every setting; the
same config drives :func:`interp_lib.training.saelens_trainer.train_saelens`, SAELens's own trainer
on the
same data, so a chapter (and :mod:`interp_lib.bench`) can put the two side by side. Both return
a :class:`TrainResult`. Training is deterministic for a seed on CPU (same seed, same data ->
identical weights). Its command line, ``python -m interp_lib train``, is
:mod:`interp_lib.training.cli`.

Dead latents: a latent is *dead* if it has not fired in the last ``dead_window_tokens``
training tokens (default 1M), or in the whole run so far if that is shorter. AuxK uses its own,
shorter window (``auxk_window_tokens``) because a latent should get help long before we would
call it dead in a report.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from interp_lib.errors import InvalidArgumentError
from interp_lib.evals.metrics import fve, reconstruction_metrics
from interp_lib.model.massive import typical_rows
from interp_lib.sae.batchtopk import BatchTopKSAE
from interp_lib.sae.homebrew import ReluSAE, TopKOutput, TopKSAE, input_scale
from interp_lib.sae.jumprelu import SPARSITY_LOSSES, JumpReLUSAE
from interp_lib.sae.matryoshka import MatryoshkaSAE, nested_widths

__all__ = ["TrainConfig", "TrainResult", "lr_factor", "make_sae", "train_sae"]

ARCHS = ("relu", "topk", "jumprelu", "batchtopk", "matryoshka")
"""The architectures both trainers know (SAELens's trainer names: standard, topk, jumprelu,
batchtopk, matryoshka_batchtopk)."""
K_ARCHS = ("topk", "batchtopk", "matryoshka")
"""The architectures whose sparsity is set by ``k`` (and whose dead latents get AuxK)."""
COEFF_ARCHS = {"relu": "l1_coeff", "jumprelu": "l0_coeff"}
"""The architectures whose sparsity is set by a penalty coefficient (and that coefficient's
attribute on the SAE)."""
ENGINES = ("interp_lib", "saelens")


@dataclass
class TrainConfig:
    """Everything that decides a training run (both trainers read the same fields)."""

    arch: Literal["relu", "topk", "jumprelu", "batchtopk", "matryoshka"] = "topk"
    """``"relu"`` (:class:`~interp_lib.sae.homebrew.ReluSAE`), ``"topk"``
    (:class:`~interp_lib.sae.homebrew.TopKSAE`),
    ``"jumprelu"`` (:class:`~interp_lib.sae.jumprelu.JumpReLUSAE`), ``"batchtopk"``
    (:class:`~interp_lib.sae.batchtopk.BatchTopKSAE`) or ``"matryoshka"``
    (:class:`~interp_lib.sae.matryoshka.MatryoshkaSAE`)."""
    d_sae: int = 4608
    """Number of latents (8x the 576-wide residual stream of SmolLM2-135M by default)."""
    k: int = 32
    """TopK: active latents per token; BatchTopK and Matryoshka: per token on average over a
    batch."""
    l1_coeff: float = 5.0
    """ReLU: weight of the L1 penalty (inputs have mean norm ``sqrt(d_in)``; MSE is summed over
    ``d_in``, as in SAELens, so the same number means the same trade-off in both trainers)."""
    tied: bool = False
    """ReLU: one matrix for encoder and decoder."""
    l0_coeff: float = 1.0
    """JumpReLU: weight of the L0 penalty (SAELens's ``l0_coefficient``)."""
    sparsity_loss: Literal["step", "tanh"] = "step"
    """JumpReLU: the L0 penalty, ``"step"`` (DeepMind) or ``"tanh"`` (Anthropic), as SAELens."""
    jumprelu_bandwidth: float = 0.05
    """JumpReLU: width of the straight-through estimator's rectangle kernel (SAELens's default)."""
    jumprelu_init_threshold: float = 0.01
    """JumpReLU: every threshold's starting value (SAELens's default)."""
    target_l0: float | None = None
    """ReLU, JumpReLU: steer the sparsity coefficient (``l1_coeff`` / ``l0_coeff``, which is then
    only the starting value) during training so that the L0 lands at this value, for comparisons
    at matched L0 (TopK-like SAEs set L0 by ``k``). After each step the coefficient is multiplied
    by ``(L0 / target_l0) ** l0_gain`` (a proportional controller on its logarithm, the ratio
    clamped to [1/e, e]) once the warm-up is over; the final value is ``metrics["final_coeff"]``.
    A JumpReLU SAE's thresholds then start where the untrained SAE fires ``target_l0`` latents
    per token (one value for all, from the data), since thresholds trained from 0.01 at these
    learning rates move too slowly to reach a low L0 in a short run. ``None``: fixed."""
    l0_gain: float = 0.03
    """ReLU, JumpReLU with ``target_l0``: the controller's gain (per step, on log L0)."""
    threshold_lr: float = 0.01
    """BatchTopK, Matryoshka: rate of the moving average that estimates the inference threshold
    (SAELens's ``topk_threshold_lr``)."""
    matryoshka_widths: tuple[int, ...] | None = None
    """Matryoshka: the nested prefix widths, ending at ``d_sae``. ``None``: four levels, each 4x
    the last (``d_sae / 64, d_sae / 16, d_sae / 4, d_sae``), as the ratios of Bussmann et al."""
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
    eval_every: int | Literal["end"] | None = None
    """Steps between held-out evaluations (when ``val_acts`` is given). ``None``: 4 per run;
    ``"end"``: one, after the last step (where only the final numbers are shown)."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise InvalidArgumentError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.decay not in ("linear", "cosine"):
            raise InvalidArgumentError(f"decay must be 'linear' or 'cosine', got {self.decay!r}")
        if self.batch_size < 1 or self.d_sae < 1:
            raise InvalidArgumentError(
                f"batch_size and d_sae must be positive, got {self.batch_size} and {self.d_sae}"
            )
        if self.arch in K_ARCHS and not 0 < self.k <= self.d_sae:
            raise InvalidArgumentError(
                f"need 0 < k <= d_sae, got k={self.k} with d_sae={self.d_sae}"
            )
        if self.sparsity_loss not in SPARSITY_LOSSES:
            raise InvalidArgumentError(
                f"sparsity_loss must be one of {SPARSITY_LOSSES}, got {self.sparsity_loss!r}"
            )
        if not (self.jumprelu_bandwidth > 0 and self.jumprelu_init_threshold >= 0):
            raise InvalidArgumentError(
                "need jumprelu_bandwidth > 0 and jumprelu_init_threshold >= 0, got "
                f"{self.jumprelu_bandwidth} and {self.jumprelu_init_threshold}"
            )
        if self.target_l0 is not None and not (
            self.arch in COEFF_ARCHS and 0 < self.target_l0 < self.d_sae and self.l0_gain > 0
        ):
            raise InvalidArgumentError(
                f"target_l0 needs arch in {tuple(COEFF_ARCHS)}, 0 < target_l0 < d_sae and "
                f"l0_gain > 0, got arch={self.arch!r}, target_l0={self.target_l0}, "
                f"l0_gain={self.l0_gain}"
            )
        if not (
            self.eval_every in (None, "end")
            or (isinstance(self.eval_every, int) and self.eval_every >= 1)
        ):
            raise InvalidArgumentError(
                f"eval_every must be a positive number of steps, 'end' or None, "
                f"got {self.eval_every!r}"
            )
        if self.arch == "matryoshka":
            self.matryoshka_widths = nested_widths(self.widths, self.d_sae)
        self.adam_betas = tuple(self.adam_betas)  # JSON round trips give lists

    @property
    def widths(self) -> tuple[int, ...]:
        """Matryoshka: the prefix widths actually used (resolves ``matryoshka_widths=None``)."""
        if self.matryoshka_widths is not None:
            return tuple(self.matryoshka_widths)
        return tuple(dict.fromkeys(max(1, self.d_sae // r) for r in (64, 16, 4, 1)))

    @property
    def learning_rate(self) -> float:
        """The learning rate actually used (resolves ``lr=None``)."""
        if self.lr is not None:
            return self.lr
        return 1e-3 if self.arch == "relu" else 2e-3

    def total_steps(self, n_rows: int) -> int:
        """Optimiser steps for ``n_rows`` rows of training data."""
        tokens = self.n_tokens if self.n_tokens is not None else int(self.epochs * n_rows)
        return max(1, tokens // self.batch_size)

    def eval_interval(self, steps: int) -> int:
        """Steps between held-out evaluations in a run of ``steps`` (resolves ``eval_every``)."""
        if self.eval_every == "end":
            return steps
        return self.eval_every or max(1, steps // 4)

    def warmup(self, steps: int) -> int:
        """Warm-up steps for a run of ``steps`` (resolves ``warmup_steps=None``)."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(1000, max(1, steps // 20))


class TrainResult(NamedTuple):
    """What a trainer returns."""

    sae: Any
    """The trained SAE. :func:`train_sae`: an :mod:`interp_lib.sae.homebrew` model that expects
    *normalised* inputs (``raw * scale``);
    :func:`~interp_lib.training.saelens_trainer.train_saelens`: an
    inference ``sae_lens.SAE`` with the scale already folded in (it takes raw activations)."""
    history: list[dict]
    """One dict per logging step: ``step, tokens, loss, mse, l1 (ReLU) / auxk (TopK, BatchTopK,
    Matryoshka) / sparsity (JumpReLU's L0 penalty), l0, fve,
    dead_fraction, lr, elapsed_s, tokens_per_s`` and, at evaluation steps, ``val_fve, val_mse,
    val_l0``. ``pandas.DataFrame(history)`` makes a table of it."""
    scale: float
    """Input normalisation: ``normalised = raw * scale`` (mean norm ``sqrt(d_in)``)."""
    metrics: dict
    """Final summary: ``train_tokens, train_seconds, tokens_per_s, dead_fraction`` and, given
    ``val_acts``, ``val_fve, val_mse, val_l0, val_dead_fraction``."""


# --------------------------------------------------------------------------------------------
# Pieces shared by both trainers (train_saelens imports them)
# --------------------------------------------------------------------------------------------
def lr_factor(
    step: int, total: int, warmup: int, decay_fraction: float, shape: str = "linear"
) -> float:
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


class Batches:
    """Random mini-batches of row indices, epoch after epoch, from a seeded generator."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        if n < batch_size:
            raise InvalidArgumentError(
                f"need at least batch_size={batch_size} rows of activations, got {n}"
            )
        self.n, self.bs, self.gen = n, batch_size, generator
        self.perm, self.pos = torch.randperm(n, generator=generator), 0

    def __next__(self) -> Tensor:
        """The next ``[batch_size]`` row indices."""
        if self.pos + self.bs > self.n:  # drop the ragged end, start a new epoch
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos : self.pos + self.bs]
        self.pos += self.bs
        return idx


def seeded_generators(seed: int) -> tuple[torch.Generator, torch.Generator, torch.Generator]:
    """Three independent seeded streams: initial weights, data samples (b_dec, resampling),
    batch order. Separate streams let SAELens's run see exactly our batches."""
    return tuple(  # type: ignore[return-value]
        torch.Generator().manual_seed(seed * 3 + i) for i in range(3)
    )


def drop_outliers(acts: Tensor, factor: float | None) -> tuple[Tensor, int]:
    """``acts`` without the rows whose norm is above ``factor`` x the median (and how many)."""
    if factor is None:
        return acts, 0
    keep = typical_rows(acts, factor)
    n_drop = int((~keep).sum())
    return (acts[keep] if n_drop else acts), n_drop


def b_dec_sample(
    acts: Tensor, gen: torch.Generator, device: torch.device | str, rows: int = 32_768
) -> Tensor:
    """Random rows (float32) to initialise ``b_dec`` from."""
    return acts[torch.randperm(acts.shape[0], generator=gen)[:rows]].to(device, torch.float32)


def _progress_bar(total_tokens: int, desc: str, enabled: bool) -> tqdm:
    """A token-counting progress bar (``enabled=False``: silent)."""
    return tqdm(
        total=total_tokens,
        unit="tok",
        unit_scale=True,
        desc=desc,
        leave=False,
        disable=not enabled,
        dynamic_ncols=True,
    )


def finished_result(
    sae: Any,
    history: list[dict],
    scale: float,
    trainer: str,
    arch: str,
    train_tokens: int,
    seconds: float,
    rows_dropped: int,
    val_acts: Tensor | None,
    val_metrics: dict[str, float] | None = None,
) -> TrainResult:
    """The :class:`TrainResult` both trainers return: speed, final dead share, and the held-out
    reconstruction (``val_*``, :func:`interp_lib.evals.metrics.reconstruction_metrics`) if
    ``val_acts``; ``val_metrics``: that evaluation of the final SAE, when already made."""
    metrics = {
        "trainer": trainer,
        "arch": arch,
        "train_tokens": train_tokens,
        "train_seconds": seconds,
        "tokens_per_s": train_tokens / seconds,
        "dead_fraction": history[-1]["dead_fraction"] if history else float("nan"),
        "scale": scale,
        "rows_dropped": rows_dropped,
    }
    if val_acts is not None:
        if val_metrics is None:
            val_metrics = reconstruction_metrics(sae, val_acts, scale)
        metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
    return TrainResult(sae, history, scale, metrics)


def bar_postfix(row: dict) -> dict:
    """The few numbers of a history ``row`` a progress bar shows (loss, FVE, L0)."""
    return {k: f"{row[k]:.3g}" for k in ("loss", "fve", "l0") if k in row}


# --------------------------------------------------------------------------------------------
# Our trainer
# --------------------------------------------------------------------------------------------
def make_sae(
    cfg: TrainConfig, d_in: int, generator: torch.Generator | None = None
) -> ReluSAE | TopKSAE | JumpReLUSAE | BatchTopKSAE | MatryoshkaSAE:
    """A freshly initialised SAE for ``cfg`` (weights drawn from ``generator``)."""
    auxk = dict(k=cfg.k, auxk_coeff=cfg.auxk_coeff, k_aux=cfg.k_aux, generator=generator)
    if cfg.arch == "topk":
        return TopKSAE(d_in, cfg.d_sae, **auxk)
    if cfg.arch == "batchtopk":
        return BatchTopKSAE(d_in, cfg.d_sae, threshold_lr=cfg.threshold_lr, **auxk)
    if cfg.arch == "matryoshka":
        return MatryoshkaSAE(d_in, cfg.d_sae, cfg.widths, threshold_lr=cfg.threshold_lr, **auxk)
    if cfg.arch == "jumprelu":
        return JumpReLUSAE(
            d_in,
            cfg.d_sae,
            l0_coeff=cfg.l0_coeff,
            bandwidth=cfg.jumprelu_bandwidth,
            init_threshold=cfg.jumprelu_init_threshold,
            sparsity_loss=cfg.sparsity_loss,
            generator=generator,
        )
    return ReluSAE(d_in, cfg.d_sae, l1_coeff=cfg.l1_coeff, tied=cfg.tied, generator=generator)


def _firing(out: NamedTuple, d_sae: int) -> tuple[Tensor, float]:
    """(which of the ``d_sae`` latents fired in the batch ``[d_sae]`` bool, mean L0) of an SAE's
    forward output (TopK's sparse ``top_acts`` / ``top_indices``, or dense ``latents``)."""
    if isinstance(out, TopKOutput):
        active = out.top_acts > 0
        fired = torch.zeros(d_sae, dtype=torch.bool, device=active.device)
        fired[out.top_indices[active]] = True
    else:
        active = out.latents > 0
        fired = active.any(dim=0)
    return fired, float(active.sum(dim=-1).float().mean())


def train_sae(
    acts: Tensor,
    cfg: TrainConfig,
    *,
    val_acts: Tensor | None = None,
    progress: bool = True,
    callback: Callable[[dict], Any] | None = None,
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train an SAE on ``acts: [n, d_in]`` raw activations (any float dtype, position 0 already
    left out). ``val_acts``: held-out rows for evaluation. ``callback(row)`` is called with each
    history row as it is logged (for live plots). ``stop()`` is asked after each step; when it
    returns True, training ends there (``metrics["stopped_at_step"]`` records where). Returns a
    :class:`TrainResult`."""
    if acts.ndim != 2:
        raise InvalidArgumentError(f"acts must be [n_tokens, d_in], got shape {tuple(acts.shape)}")
    device = torch.device(cfg.device)
    gen_weights, gen_sample, gen_data = seeded_generators(cfg.seed)
    acts, n_dropped = drop_outliers(acts, cfg.max_norm_factor)
    n, d_in = acts.shape
    scale = input_scale(acts)

    sae = make_sae(cfg, d_in, gen_weights).to(device)
    sample = b_dec_sample(acts, gen_sample, device) * scale
    sae.init_b_dec_(sample, method=cfg.b_dec_init)
    if isinstance(sae, JumpReLUSAE) and cfg.target_l0 is not None:
        sae.init_threshold_for_l0_(sample, cfg.target_l0)

    lr = cfg.learning_rate
    opt_kwargs: dict[str, Any] = {"lr": lr, "betas": cfg.adam_betas}
    if device.type in ("cpu", "cuda"):
        opt_kwargs["fused"] = True  # one kernel for all parameters: ~4x faster than the loop on CPU
    optimizer = torch.optim.Adam(sae.parameters(), **opt_kwargs)

    steps = cfg.total_steps(n)
    warmup = cfg.warmup(steps)
    log_every = cfg.log_every or max(1, steps // 50)
    eval_every = cfg.eval_interval(steps)
    resample_every = cfg.resample_every if cfg.resample_every is not None else max(25, steps // 10)
    bs = cfg.batch_size
    batches = Batches(n, bs, gen_data)

    # tokens since each latent last fired (drives AuxK, resampling and the dead fraction)
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)
    history: list[dict] = []
    bar = _progress_bar(steps * bs, f"train {cfg.arch} SAE", progress)
    t0 = time.perf_counter()
    eval_seconds = 0.0  # held-out evaluation is not training time
    final_val: dict[str, float] | None = None  # the last step's evaluation, reused at the end
    done = steps
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step, steps, warmup, cfg.decay_fraction, cfg.decay)
        x = acts[next(batches)].to(device, torch.float32, non_blocking=True) * scale

        if cfg.arch in K_ARCHS:
            out = sae(x, dead_mask=since_fired >= cfg.auxk_window_tokens)
        else:
            out = sae(x)
        fired, l0 = _firing(out, cfg.d_sae)
        if cfg.target_l0 is not None and step >= warmup:
            steer_coefficient(sae, COEFF_ARCHS[cfg.arch], l0, cfg.target_l0, cfg.l0_gain)

        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.project_decoder_grad_()
        optimizer.step()
        sae.normalize_decoder_()
        if isinstance(sae, JumpReLUSAE):
            sae.clamp_threshold_()

        since_fired += bs
        since_fired[fired] = 0
        tokens = (step + 1) * bs

        if (
            isinstance(sae, ReluSAE)
            and resample_every
            and (step + 1) % resample_every == 0
            and step + 1 <= steps // 2
        ):
            dead = since_fired >= resample_every * bs
            picked = torch.randperm(n, generator=gen_sample)[: 8 * bs]
            sample = acts[picked].to(device, torch.float32) * scale
            sae.resample_dead_(dead, sample, optimizer, generator=gen_sample)
            since_fired[dead] = 0  # give the new latents a fresh window

        stopping = stop is not None and step < steps - 1 and stop()
        last = step == steps - 1 or stopping
        if (step + 1) % log_every == 0 or last:
            with torch.no_grad():
                extra = {
                    k: float(getattr(out, k))
                    for k in ("l1", "auxk", "sparsity")
                    if k in out._fields
                }
                elapsed = time.perf_counter() - t0 - eval_seconds
                row = {
                    "step": step + 1,
                    "tokens": tokens,
                    "loss": float(out.loss),
                    "mse": float(out.mse),
                    **extra,
                    "l0": l0,
                    **coeff_entry(sae, cfg),
                    "fve": fve(x, (x - out.x_hat).pow(2).sum(-1)),
                    "dead_fraction": float(
                        (since_fired >= min(cfg.dead_window_tokens, tokens)).float().mean()
                    ),
                    "lr": optimizer.param_groups[0]["lr"],
                    "elapsed_s": elapsed,
                    "tokens_per_s": tokens / elapsed,
                }
            if val_acts is not None and ((step + 1) % eval_every == 0 or last):
                t_eval = time.perf_counter()
                val_now = reconstruction_metrics(sae, val_acts, scale)
                row.update({f"val_{k}": v for k, v in val_now.items() if k != "dead_fraction"})
                final_val = val_now if last else None
                eval_seconds += time.perf_counter() - t_eval
            history.append(row)
            bar.set_postfix(bar_postfix(row), refresh=False)
            if callback is not None:
                callback(row)
        bar.update(bs)
        if stopping:
            done = step + 1
            break
    bar.close()
    elapsed = time.perf_counter() - t0 - eval_seconds
    sae.eval()

    result = finished_result(
        sae,
        history,
        scale,
        "homebrew",
        cfg.arch,
        done * bs,
        elapsed,
        n_dropped,
        val_acts,
        final_val,
    )
    if done < steps:
        result.metrics.update(stopped_at_step=done, planned_steps=steps)
    if cfg.arch in COEFF_ARCHS:
        result.metrics["final_coeff"] = getattr(sae, COEFF_ARCHS[cfg.arch])
    return result


def steer_coefficient(sae: Any, attr: str, l0: float, target: float, gain: float) -> None:
    """Multiply the SAE's sparsity coefficient ``attr`` by ``(l0 / target) ** gain``, the ratio
    clamped to [1/e, e]: more latents firing than wanted raises the penalty, fewer lowers it."""
    step = gain * max(-1.0, min(1.0, math.log(max(l0, 1e-3) / target)))
    setattr(sae, attr, getattr(sae, attr) * math.exp(step))


def coeff_entry(sae: Any, cfg: TrainConfig) -> dict:
    """``{"coeff": value}`` for a history row when the coefficient is being steered, else ``{}``."""
    return {"coeff": getattr(sae, COEFF_ARCHS[cfg.arch])} if cfg.target_l0 is not None else {}
