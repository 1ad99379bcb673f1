"""The field's other TopK trainers, run on the bench's cached activations: ``bench --peers``.

Two peers beside the homebrew trainer and SAELens (:mod:`interp_lib.bench`), each trained through
its own public training code on the *same* rows, in the same batch order (the seeded
:class:`~interp_lib.training.trainer.Batches`), with the same width, ``k``, batch size, number of
tokens, input normalisation (rows times the bench's input scale, mean norm ``sqrt(d_in)``) and
learning-rate schedule (:func:`~interp_lib.training.trainer.lr_factor`: linear warm-up, constant,
linear decay to 0 over the last fifth, peak 2e-3), installed on the peer's own optimiser:

* EleutherAI's ``sparsify`` (PyPI ``eai-sparsify``): its ``Trainer.fit`` with a ``SparseCoder``
  (TopK activation, FVU loss), fed by a stand-in model whose one layer outputs the cached rows
  (``Trainer`` trains on a model's hooked outputs; this is the model it hooks). Its Adam
  (``optimizer="adam"``, ``torch.optim.Adam``: its default ``signum`` is schedule-free and takes
  no schedule); its own initialisation (``b_dec`` the first batch's mean), decoder kept at unit
  norm, and its default ``auxk_alpha=0`` (no AuxK).
* ``dictionary_learning`` (PyPI ``dictionary-learning``): its ``training.trainSAE`` with its
  ``trainers.top_k.TopKTrainer`` (``AutoEncoderTopK``): its Adam (betas 0.9, 0.999), gradient
  clipping at 1, geometric-median ``b_dec`` from the first batch, unit-norm decoder, AuxK 1/32
  with its 10M-token dead window.

Both peers' checkpoint writing is left out (not training). Each trained model is converted to an
:class:`~interp_lib.sae.homebrew.TopKSAE` (encoder, decoder, both biases; the input scale stays
outside, as for the homebrew SAE) for the bench's held-out evaluation, after checking on a few
rows that the converted SAE reconstructs as the peer's own forward does.

Neither peer is part of ``make env`` (their declared dependencies would replace this stack's
torch and pin an old ``nnsight``); ``make bench-peers`` installs them beside it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import math
import sys
import tempfile
import time
import warnings
from typing import Any, Callable, Iterator, NamedTuple

import torch
from torch import Tensor, nn

from interp_lib.errors import InvalidArgumentError
from interp_lib.evals.metrics import reconstruction_metrics
from interp_lib.sae.homebrew import TopKSAE, input_scale
from interp_lib.training.trainer import Batches, TrainConfig, lr_factor, seeded_generators

__all__ = [
    "PEERS",
    "PeerRun",
    "missing_peers",
    "require_peers",
    "topk_sae_from_weights",
    "train_sparsify",
    "train_dictionary_learning",
    "bench_peers",
]

PEERS = ("sparsify", "dictionary_learning")
"""The peers' names, as their packages are imported (and as the bench's keys end)."""
PACKAGES = {"sparsify": "eai-sparsify==1.3.3", "dictionary_learning": "dictionary-learning==0.1.0"}
"""The PyPI release of each peer the bench was written against."""
INSTALL_HINT = "`make bench-peers` installs them"
CHECK_ROWS = 64
"""Rows on which each converted SAE is checked against the peer's own forward."""


class PeerRun(NamedTuple):
    """One peer's training run, converted for the bench's evaluation."""

    sae: TopKSAE
    """The trained weights as a homebrew TopK SAE (it sees ``raw * scale``)."""
    scale: float
    """Input normalisation: ``normalised = raw * scale``."""
    metrics: dict
    """``train_tokens, train_seconds, tokens_per_s``."""
    settings: str
    """The peer's class, optimiser, schedule and the defaults it kept, in one line."""
    conversion_error: float
    """Largest absolute difference between the peer's own reconstruction and the converted
    SAE's on :data:`CHECK_ROWS` rows (normalised units)."""
    own_forward: Callable[[Tensor], Tensor]
    """The peer's own reconstruction of normalised rows ``[n, d_in]``, by its trained model."""


def missing_peers() -> list[str]:
    """The peers whose package is not installed (found without importing it)."""
    return [name for name in PEERS if importlib.util.find_spec(name) is None]


def require_peers() -> None:
    """Raise :class:`InvalidArgumentError` (one line) unless both peers' packages are installed."""
    missing = missing_peers()
    if missing:
        names = ", ".join(f"{name} ({PACKAGES[name]})" for name in missing)
        raise InvalidArgumentError(
            f"--peers: the peer trainers are not installed (missing {names}); {INSTALL_HINT}"
        )


def topk_sae_from_weights(
    W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, k: int
) -> TopKSAE:
    """A homebrew :class:`TopKSAE` with these weights: ``W_enc, W_dec [d_sae, d_in]``,
    ``b_enc [d_sae]``, ``b_dec [d_in]`` (encoding ``TopK(ReLU((x - b_dec) W_enc^T + b_enc))``)."""
    d_sae, d_in = W_enc.shape
    if W_dec.shape != (d_sae, d_in) or b_enc.shape != (d_sae,) or b_dec.shape != (d_in,):
        raise InvalidArgumentError(
            f"need W_enc, W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in]; got "
            f"{tuple(W_enc.shape)}, {tuple(W_dec.shape)}, {tuple(b_enc.shape)}, "
            f"{tuple(b_dec.shape)}"
        )
    sae = TopKSAE(d_in, d_sae, k=k)
    with torch.no_grad():
        for name, value in (("W_enc", W_enc), ("b_enc", b_enc), ("W_dec", W_dec), ("b_dec", b_dec)):
            getattr(sae, name).copy_(value.detach().float().cpu())
    return sae.eval()


def _check_conversion(own: Callable[[Tensor], Tensor], sae: TopKSAE, x: Tensor) -> float:
    """Largest ``|own(x) - converted(x)|`` on normalised rows ``x``; raises if they disagree."""
    with torch.no_grad():
        theirs = own(x).float()
        ours = sae.decode(sae.encode(x))
    err = float((theirs - ours).abs().max())
    if not torch.allclose(theirs, ours, rtol=1e-4, atol=1e-3 * float(x.abs().max())):
        raise RuntimeError(f"converted weights do not reproduce the peer's forward (max {err:.3g})")
    return err


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """The peers print set-up lines and draw their own bars: keep them off unless ``progress``."""
    out = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(out):
        warnings.simplefilter("ignore")
        if progress:
            yield
        else:
            with contextlib.redirect_stderr(out):
                yield


def _import(name: str) -> Any:
    """Import a peer's module quietly (sparsify prints which decoder kernel it uses)."""
    with _quiet(False):
        return importlib.import_module(name)


def _undo_nnsight_patches() -> None:
    """``dictionary_learning`` imports ``nnsight`` (for its activation buffer, unused here), whose
    import patches einops, math and torch.autocast for the whole process: put them back."""
    nnsight = sys.modules.get("nnsight")
    patcher = getattr(nnsight, "DEFAULT_PATCHER", None)
    if patcher is not None:
        patcher.__exit__(None, None, None)


def _plan(acts: Tensor, cfg: TrainConfig) -> tuple[float, int, int, Tensor]:
    """(input scale, steps, warm-up steps, the row indices of every step ``[steps, batch]``): the
    homebrew trainer's, from the same seeded batch stream."""
    if acts.ndim != 2:
        raise InvalidArgumentError(f"acts must be [n_tokens, d_in], got shape {tuple(acts.shape)}")
    if cfg.arch != "topk":
        raise InvalidArgumentError(f"the peers train TopK SAEs only, got arch={cfg.arch!r}")
    n = acts.shape[0]
    steps = cfg.total_steps(n)
    batches = Batches(n, cfg.batch_size, seeded_generators(cfg.seed)[2])
    order = torch.stack([next(batches) for _ in range(steps)])
    return input_scale(acts), steps, cfg.warmup(steps), order


def _schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps: int, warmup: int):
    """The bench's learning-rate schedule on ``optimizer`` (peak ``cfg.learning_rate``)."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = cfg.learning_rate
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, warmup, cfg.decay_fraction, cfg.decay)
    )


def _schedule_text(cfg: TrainConfig, steps: int, warmup: int) -> str:
    """The schedule in words, for a peer's settings line."""
    return (
        f"lr {cfg.learning_rate:g}, the bench's schedule ({warmup} warm-up "
        f"step{'' if warmup == 1 else 's'}, "
        f"linear decay over the last {int(steps * cfg.decay_fraction)} of {steps})"
    )


# --------------------------------------------------------------------------------------------
# sparsify
# --------------------------------------------------------------------------------------------
class _CachedRows(torch.utils.data.Dataset):
    """sparsify's dataset: "sequences" of row indices into the cached activations."""

    def __init__(self, rows: Tensor):
        self.rows = rows

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input_ids": self.rows[i]}


class _RowsModel(nn.Module):
    """The model sparsify's ``Trainer`` hooks: its one layer outputs the cached rows (scaled)
    whose indices it is given as ``input_ids [batch, seq]``."""

    def __init__(self, acts: Tensor, scale: float):
        super().__init__()
        self.acts, self.scale = acts, scale
        self.config = type("Config", (), {"num_hidden_layers": 1})()
        self.layers = nn.ModuleList([nn.Identity()])
        self.dummy_inputs = {"input_ids": torch.zeros(1, 1, dtype=torch.long)}

    @property
    def base_model(self) -> nn.Module:
        return self

    @property
    def device(self) -> torch.device:
        return self.acts.device

    def forward(self, input_ids: Tensor, **kwargs: Any) -> Tensor:
        return self.layers[0](self.acts[input_ids].to(torch.float32) * self.scale)


def train_sparsify(acts: Tensor, cfg: TrainConfig, *, progress: bool = False) -> PeerRun:
    """Train sparsify's TopK ``SparseCoder`` with its ``Trainer`` on ``acts`` (see the module's
    docstring for what is shared and what stays the peer's own)."""
    sparsify = _import("sparsify")
    scale, steps, warmup, order = _plan(acts, cfg)
    bs = cfg.batch_size
    seq = math.gcd(bs, 128)  # rows per "sequence"; sparsify's batch size counts sequences
    dataset = _CachedRows(order.reshape(-1, seq))
    model = _RowsModel(acts, scale)

    class _Trainer(sparsify.Trainer):
        """sparsify's Trainer without its checkpoint writing."""

        def save(self) -> None:
            pass

    precision = torch.get_float32_matmul_precision()  # fit() sets "high" for the whole process
    with tempfile.TemporaryDirectory() as tmp, _quiet(progress):
        train_cfg = sparsify.TrainConfig(
            sparsify.SparseCoderConfig(activation="topk", num_latents=cfg.d_sae, k=cfg.k),
            batch_size=bs // seq,
            optimizer="adam",
            lr=cfg.learning_rate,
            lr_warmup_steps=warmup,
            layers=[0],
            init_seeds=[cfg.seed],
            log_to_wandb=False,
            save_every=10**9,
            save_dir=tmp,
        )
        t0 = time.perf_counter()
        try:
            trainer = _Trainer(train_cfg, dataset, model)
            (adam,) = trainer.optimizers
            trainer.lr_schedulers = [_schedule(adam, cfg, steps, warmup)]
            trainer.fit()
        finally:
            torch.set_float32_matmul_precision(precision)
        elapsed = time.perf_counter() - t0
    (coder,) = trainer.saes.values()
    coder.eval()
    sae = topk_sae_from_weights(
        coder.encoder.weight, coder.encoder.bias, coder.W_dec, coder.b_dec, cfg.k
    )
    rows = acts[order[0, :CHECK_ROWS]].float() * scale

    def own(x: Tensor) -> Tensor:
        return coder(x).sae_out

    error = _check_conversion(own, sae, rows)
    settings = (
        f"sparsify {sparsify.__version__}: Trainer.fit, SparseCoder (topk, FVU loss); "
        f"{type(adam).__module__}.{type(adam).__name__} (optimizer='adam'), "
        f"{_schedule_text(cfg, steps, warmup)}; its defaults kept: b_dec from the first batch's "
        "mean, unit-norm decoder, auxk_alpha=0"
    )
    return PeerRun(sae, scale, _speed(steps * bs, elapsed), settings, error, own)


# --------------------------------------------------------------------------------------------
# dictionary_learning
# --------------------------------------------------------------------------------------------
def train_dictionary_learning(acts: Tensor, cfg: TrainConfig, *, progress: bool = False) -> PeerRun:
    """Train dictionary_learning's ``AutoEncoderTopK`` with ``trainSAE`` and its ``TopKTrainer``
    on ``acts`` (see the module's docstring for what is shared and what stays its own)."""
    with _quiet(False):
        try:
            training = importlib.import_module("dictionary_learning.training")
            top_k = importlib.import_module("dictionary_learning.trainers.top_k")
        finally:
            _undo_nnsight_patches()
    version = importlib.import_module("dictionary_learning").__version__
    scale, steps, warmup, order = _plan(acts, cfg)
    made: list[Any] = []

    class _TopKTrainer(top_k.TopKTrainer):
        """TopKTrainer on the bench's learning-rate schedule (and kept, to read its SAE)."""

        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            self.scheduler = _schedule(self.optimizer, cfg, steps, warmup)
            made.append(self)

    def data() -> Iterator[Tensor]:
        for idx in order:
            yield acts[idx].to(torch.float32) * scale

    trainer_cfg = {
        "trainer": _TopKTrainer,
        "steps": steps,
        "activation_dim": acts.shape[1],
        "dict_size": cfg.d_sae,
        "k": cfg.k,
        "layer": 0,
        "lm_name": "cached activations",
        "lr": cfg.learning_rate,
        "warmup_steps": min(warmup, steps - 1),
        "seed": cfg.seed,
        "device": cfg.device,
    }
    with _quiet(progress):
        t0 = time.perf_counter()
        training.trainSAE(
            data(),
            [trainer_cfg],
            steps,
            device=cfg.device,
            autocast_dtype=torch.float32,
        )
        elapsed = time.perf_counter() - t0
    (trainer,) = made
    ae = trainer.ae.eval()
    sae = topk_sae_from_weights(
        ae.encoder.weight, ae.encoder.bias, ae.decoder.weight.T, ae.b_dec, cfg.k
    )
    rows = acts[order[0, :CHECK_ROWS]].float() * scale
    error = _check_conversion(ae, sae, rows)
    settings = (
        f"dictionary_learning {version}: training.trainSAE, trainers.top_k.TopKTrainer "
        f"(AutoEncoderTopK); torch.optim.Adam betas (0.9, 0.999), "
        f"{_schedule_text(cfg, steps, warmup)}; its defaults kept: geometric-median b_dec from "
        f"the first batch, grad clipping 1, unit-norm decoder, auxk_alpha={trainer.auxk_alpha:.4g} "
        f"(dead after {trainer.dead_feature_threshold:,} tokens)"
    )
    return PeerRun(sae, scale, _speed(steps * cfg.batch_size, elapsed), settings, error, ae)


def _speed(tokens: int, seconds: float) -> dict:
    """A run's speed entries (as the trainers' ``TrainResult.metrics`` name them)."""
    return {"train_tokens": tokens, "train_seconds": seconds, "tokens_per_s": tokens / seconds}


TRAINERS: dict[str, Callable[..., PeerRun]] = {
    "sparsify": train_sparsify,
    "dictionary_learning": train_dictionary_learning,
}


def trainer_keys(name: str, sae: TopKSAE, scale: float, metrics: dict, val: Tensor) -> dict:
    """One trainer's bench keys: its speed (``train_tokens_per_s_<name>``, seconds, tokens) and
    its held-out quality (``val_<metric>_<name>``, :func:`reconstruction_metrics`)."""
    out = {
        f"train_tokens_per_s_{name}": metrics["tokens_per_s"],
        f"train_seconds_{name}": metrics["train_seconds"],
        f"train_tokens_{name}": metrics["train_tokens"],
    }
    out.update({f"val_{k}_{name}": v for k, v in reconstruction_metrics(sae, val, scale).items()})
    return out


def bench_peers(
    acts: Tensor,
    val: Tensor,
    cfg: TrainConfig,
    *,
    progress: bool = False,
    peers: tuple[str, ...] = PEERS,
) -> dict:
    """Train each peer on ``acts`` with ``cfg`` and evaluate it on ``val``, as the bench does its
    own two trainers: ``train_tokens_per_s_<peer>``, ``train_seconds_<peer>``,
    ``train_tokens_<peer>``, ``val_<metric>_<peer>``, ``peer_settings_<peer>`` and
    ``conversion_max_abs_diff_<peer>``; a peer that cannot run here gets
    ``peer_not_run_<peer>`` (the reason, one line) instead."""
    unknown = [name for name in peers if name not in TRAINERS]
    if unknown:
        raise InvalidArgumentError(f"unknown peers {unknown}; known: {list(TRAINERS)}")
    out: dict[str, Any] = {"peers": list(peers)}
    for name in peers:
        if importlib.util.find_spec(name) is None:
            out[f"peer_not_run_{name}"] = f"not installed ({PACKAGES[name]}; {INSTALL_HINT})"
            continue
        try:
            run = TRAINERS[name](acts, cfg, progress=progress)
        except Exception as exc:  # a peer that cannot run here is reported, not raised
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            out[f"peer_not_run_{name}"] = reason[:300]
            continue
        out.update(trainer_keys(name, run.sae, run.scale, run.metrics, val))
        out[f"peer_settings_{name}"] = run.settings
        out[f"conversion_max_abs_diff_{name}"] = run.conversion_error
    return out
