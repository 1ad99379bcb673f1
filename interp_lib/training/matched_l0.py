"""Five SAE architectures trained side by side at matched sparsity (chapter 7).

An SAE's quality only means something at a given sparsity: every architecture buys
reconstruction with active latents. TopK, BatchTopK and Matryoshka set their L0 with ``k``;
ReLU and JumpReLU set it through a penalty coefficient, which :class:`~interp_lib.training.trainer.
TrainConfig`'s ``target_l0`` steers during training. :func:`config_at_l0` makes the config of
any of them aimed at an L0, :func:`train_sweep` trains the grid architectures x L0s x seeds on
the same activations with the same budget, and :func:`at_l0` reads a metric off one
architecture's points at an L0 it was not trained at exactly (interpolated on a log scale of
L0, as SAEBench's and Gao et al.'s comparisons at matched sparsity do).
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple, Sequence

import numpy as np
from torch import Tensor
from tqdm.auto import tqdm

from interp_lib.errors import InvalidArgumentError
from interp_lib.sae.saelens_format import to_saelens
from interp_lib.training.trainer import ARCHS, K_ARCHS, TrainConfig, TrainResult, train_sae

__all__ = ["ARCH_NAMES", "SweepRun", "config_at_l0", "train_sweep", "at_l0"]

ARCH_NAMES = {
    "relu": "ReLU",
    "topk": "TopK",
    "batchtopk": "BatchTopK",
    "jumprelu": "JumpReLU",
    "matryoshka": "Matryoshka",
}
"""Each architecture's name in tables and figures."""

EXTRAPOLATE = 0.25
""":func:`at_l0` reads a value up to this fraction beyond an architecture's measured L0s."""


class SweepRun(NamedTuple):
    """One SAE of a sweep."""

    arch: str
    """Architecture (one of :data:`interp_lib.training.trainer.ARCHS`)."""
    target_l0: float
    """The L0 it was trained for (``k``, or the penalty's ``target_l0``)."""
    seed: int
    """Its training seed (initial weights, batch order)."""
    result: TrainResult
    """What the trainer returned (history, held-out metrics)."""
    sae: Any
    """The trained SAE as a ``sae_lens.SAE`` on raw activations, ready to splice into the model."""


def config_at_l0(arch: str, l0: float, *, seed: int = 0, **settings: Any) -> TrainConfig:
    """A :class:`TrainConfig` for ``arch`` aimed at ``l0`` active latents per token: ``k = l0``
    for TopK, BatchTopK and Matryoshka, ``target_l0 = l0`` for ReLU and JumpReLU; ``settings``:
    the other fields, the same for every architecture."""
    if arch not in ARCHS:
        raise InvalidArgumentError(f"arch must be one of {ARCHS}, got {arch!r}")
    if not l0 > 0:
        raise InvalidArgumentError(f"l0 must be positive, got {l0}")
    aim = {"k": int(round(l0))} if arch in K_ARCHS else {"target_l0": float(l0)}
    return TrainConfig(arch=arch, seed=seed, **aim, **settings)


def train_sweep(
    acts: Tensor,
    archs: Sequence[str],
    l0s: Sequence[float],
    seeds: Sequence[int],
    *,
    hook_name: str,
    model_name: str,
    val_acts: Tensor | None = None,
    progress: bool = True,
    **settings: Any,
) -> list[SweepRun]:
    """Train every architecture at every L0 with every seed on ``acts: [n, d_in]`` (the same
    rows, budget and ``settings`` for all), one progress bar over the grid."""
    grid = list(itertools.product(archs, l0s, seeds))
    settings.setdefault("eval_every", "end")  # held-out metrics once, after the last step
    configs = [config_at_l0(a, l0, seed=s, **settings) for a, l0, s in grid]  # checked first
    runs = []
    for (arch, l0, seed), cfg in zip(grid, tqdm(configs, desc="SAEs", disable=not progress)):
        result = train_sae(acts, cfg, val_acts=val_acts, progress=False)
        sae = to_saelens(result.sae, result.scale, hook_name=hook_name, model_name=model_name)
        runs.append(SweepRun(arch, float(l0), seed, result, sae))
    return runs


def at_l0(l0s: Sequence[float], values: Sequence[float], target: float) -> float:
    """``values`` (one per SAE of an architecture, measured at ``l0s``) read at ``target``:
    linear in log L0 between the two nearest points, or along the end segment up to
    :data:`EXTRAPOLATE` beyond the measured range; NaN further out."""
    x = np.log(np.asarray(l0s, dtype=np.float64))
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.size < 2:
        raise InvalidArgumentError(
            f"need >= 2 (l0, value) pairs of equal length, got {x.size} and {y.size}"
        )
    order = np.argsort(x)
    x, y = x[order], y[order]
    t = np.log(target)
    if t < x[0] + np.log1p(-EXTRAPOLATE) or t > x[-1] + np.log1p(EXTRAPOLATE):
        return float("nan")
    i = int(np.clip(np.searchsorted(x, t) - 1, 0, x.size - 2))
    if x[i + 1] == x[i]:
        return float(y[i : i + 2].mean())
    return float(y[i] + (y[i + 1] - y[i]) * (t - x[i]) / (x[i + 1] - x[i]))
