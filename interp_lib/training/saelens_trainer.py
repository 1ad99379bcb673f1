"""Train with SAELens's own trainer on the same data and settings as our loop.

:func:`train_saelens` runs ``sae_lens``'s ``SAETrainer`` from a
:class:`~interp_lib.training.trainer.TrainConfig`: the same activations, input normalisation, width,
``k`` or L1 coefficient, batch size, data order and learning-rate schedule as
:func:`interp_lib.training.trainer.train_sae`, so a chapter (and :mod:`interp_lib.bench`) can put
the two
trainers side by side. It returns the same :class:`~interp_lib.training.trainer.TrainResult`,
holding an inference ``sae_lens.SAE`` that takes raw activations.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from typing import Any, Callable, Iterator

import sae_lens.training.sae_trainer as sae_trainer  # its tqdm is swapped for ours
import torch
from sae_lens import SAE
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
from sae_lens.saes.matryoshka_batchtopk_sae import (
    MatryoshkaBatchTopKTrainingSAE,
    MatryoshkaBatchTopKTrainingSAEConfig,
)
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer
from torch import Tensor
from tqdm.auto import tqdm

from interp_lib.errors import InvalidArgumentError
from interp_lib.evals.metrics import reconstruction_metrics
from interp_lib.sae.homebrew import initial_b_dec, input_scale
from interp_lib.training.trainer import (
    Batches,
    TrainConfig,
    TrainResult,
    b_dec_sample,
    bar_postfix,
    drop_outliers,
    finished_result,
    seeded_generators,
)

__all__ = ["train_saelens"]


@contextlib.contextmanager
def _quiet_saelens(progress: bool, desc: str = "train SAE (SAELens)") -> Iterator[None]:
    """Silence SAELens while it trains: no wandb, no log lines, no warnings, our own bar."""

    def bar(*args, **kwargs):  # SAELens's own bar, in our style
        kwargs.update(
            desc=desc,
            unit="tok",
            unit_scale=True,
            leave=False,
            disable=not progress,
            dynamic_ncols=True,
        )
        return tqdm(*args, **kwargs)

    old_tqdm = sae_trainer.tqdm
    sae_trainer.tqdm = bar
    loggers = [logging.getLogger(name) for name in ("sae_lens", "wandb")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        sae_trainer.tqdm = old_tqdm
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _training_sae(cfg: TrainConfig, d_in: int):
    """SAELens's training SAE for ``cfg`` (its own initial weights, from the global generator)."""
    common = dict(d_in=d_in, d_sae=cfg.d_sae, dtype="float32", device=cfg.device)
    topk = dict(k=cfg.k, aux_loss_coefficient=cfg.auxk_coeff, **common)
    if cfg.arch == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(**topk))
    if cfg.arch == "batchtopk":
        return BatchTopKTrainingSAE(
            BatchTopKTrainingSAEConfig(topk_threshold_lr=cfg.threshold_lr, **topk)
        )
    if cfg.arch == "matryoshka":
        return MatryoshkaBatchTopKTrainingSAE(
            MatryoshkaBatchTopKTrainingSAEConfig(
                topk_threshold_lr=cfg.threshold_lr, matryoshka_widths=list(cfg.widths), **topk
            )
        )
    if cfg.arch == "jumprelu":
        return JumpReLUTrainingSAE(
            JumpReLUTrainingSAEConfig(
                l0_coefficient=cfg.l0_coeff,
                jumprelu_sparsity_loss_mode=cfg.sparsity_loss,
                jumprelu_bandwidth=cfg.jumprelu_bandwidth,
                jumprelu_init_threshold=cfg.jumprelu_init_threshold,
                **common,
            )
        )
    return StandardTrainingSAE(StandardTrainingSAEConfig(l1_coefficient=cfg.l1_coeff, **common))


def train_saelens(
    acts: Tensor,
    cfg: TrainConfig,
    *,
    val_acts: Tensor | None = None,
    progress: bool = True,
    callback: Callable[[dict], Any] | None = None,
    init_b_dec: bool = True,
) -> TrainResult:
    """Train with SAELens's own ``SAETrainer`` on the same data and settings as
    :func:`~interp_lib.training.trainer.train_sae`.

    Same: input normalisation (we normalise, SAELens sees mean norm ``sqrt(d_in)``), width,
    ``k`` / ``l1_coeff``, batch size, Adam betas, learning rate, warm-up, linear decay to 0,
    AuxK coefficient and window, data order (same seeded batches) and, with ``init_b_dec``
    (default), the same data-derived ``b_dec`` (SAELens 6 itself starts it at zero). SAELens's
    own choices stay: its weight initialisation (decoder rows of norm 0.1), gradient clipping at
    1, TopK with ``rescale_acts_by_decoder_norm`` and the un-normalised AuxK, the decoder-norm
    weighted L1 without a unit-norm constraint, no resampling. JumpReLU, BatchTopK and
    Matryoshka get SAELens's ``JumpReLUTrainingSAE`` (same L0 coefficient, penalty, bandwidth,
    initial threshold), ``BatchTopKTrainingSAE`` and ``MatryoshkaBatchTopKTrainingSAE`` (same
    ``k``, threshold rate and prefix widths; its threshold average starts at 0 where ours is
    bias-corrected, so on runs of a few hundred steps its saved SAE fires more). Returns an
    inference ``sae_lens.SAE`` that takes raw activations: ``TopKSAE``, ``StandardSAE``, or
    ``JumpReLUSAE`` (the last three: SAELens ships BatchTopK and Matryoshka SAEs as JumpReLU SAEs
    with their one threshold).
    """
    if acts.ndim != 2:
        raise InvalidArgumentError(f"acts must be [n_tokens, d_in], got shape {tuple(acts.shape)}")
    acts, n_dropped = drop_outliers(acts, cfg.max_norm_factor)
    n, d_in = acts.shape
    scale = input_scale(acts)
    torch.manual_seed(cfg.seed)  # SAELens draws its initial weights from the global generator
    _, gen_sample, gen_data = seeded_generators(cfg.seed)
    steps = cfg.total_steps(n)
    bs = cfg.batch_size
    log_every = cfg.log_every or max(1, steps // 50)
    eval_every = cfg.eval_interval(steps)
    aux_window_steps = max(1, cfg.auxk_window_tokens // bs)

    training_sae = _training_sae(cfg, d_in)
    if init_b_dec:
        # SAELens 6 starts b_dec at zero; give it the same data-derived start as ours so the
        # comparison is about the trainers, not about one initial vector.
        b_dec = initial_b_dec(b_dec_sample(acts, gen_sample, cfg.device) * scale, cfg.b_dec_init)
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
        batches = Batches(n, bs, gen_data)
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
            if "losses/l0_loss" in log:
                row["sparsity"] = log["losses/l0_loss"] / max(cfg.l0_coeff, 1e-12)
            if "losses/auxiliary_reconstruction_loss" in log:
                row["auxk"] = log["losses/auxiliary_reconstruction_loss"] / max(
                    cfg.auxk_coeff, 1e-12
                )
            row.update(
                {
                    "l0": log["metrics/l0"],
                    "fve": log["metrics/explained_variance"],
                    # SAELens counts steps since each latent fired; same rule as ours, in tokens
                    "dead_fraction": float(
                        (
                            self.n_forward_passes_since_fired * bs
                            >= min(cfg.dead_window_tokens, tokens)
                        )
                        .float()
                        .mean()
                    ),
                    "lr": log["details/current_learning_rate"],
                    "elapsed_s": elapsed,
                    "tokens_per_s": tokens / elapsed,
                }
            )
            if val_acts is not None and (step % eval_every == 0 or step == steps):
                t_eval = time.perf_counter()
                val = reconstruction_metrics(_inference(self.sae), val_acts, scale)
                row.update({f"val_{k}": v for k, v in val.items() if k != "dead_fraction"})
                clock["eval"] += time.perf_counter() - t_eval
            history.append(row)
            pbar.set_postfix(bar_postfix(row), refresh=False)
            if callback is not None:
                callback(row)

    def _inference(tsae) -> SAE:
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
    return finished_result(
        sae, history, scale, "sae_lens", cfg.arch, steps * bs, elapsed, n_dropped, val_acts
    )
