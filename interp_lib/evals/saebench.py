"""SAEBench's metrics, offline (Karvonen et al. 2025, "SAEBench: A Comprehensive Benchmark for
Sparse Autoencoders in Language Model Interpretability"; code: github.com/adamkarvonen/SAEBench,
PyPI ``sae-bench`` 0.6.0, whose data sets come from the Hugging Face hub).

* **KL divergence** with the SAE spliced in lives in the one evaluator,
  :func:`interp_lib.evals.metrics.evaluate` (``SAEMetrics.kl_div``): SAEBench's core eval reports
  the same ``kl_div_with_sae``, the mean over positions of ``KL(p_clean || p_sae)`` of the
  next-token
  distributions. :func:`kl_div_score` is its normalised form.
* **Sparse probing** (:func:`sparse_probing`): can a concept be read off ``k`` latents? Per
  class, a one-vs-rest logistic-regression probe on the ``k`` latents whose mean activation
  differs most between the class and the rest, against a dense probe on the model's own
  activation, on texts mean-pooled over their tokens. SAEBench's
  ``evals/sparse_probing``: the same balanced one-vs-rest data (``prepare_probe_data``), the
  same selection (``get_top_k_mean_diff_mask``), the same probe (scikit-learn's
  ``LogisticRegression``, L2, ``C = 1``, which :func:`logistic_probe` solves in torch: the
  library does not depend on scikit-learn), ``k`` in (1, 2, 5) by default.

The labels are the ones that ship with the project: :func:`probe_set_classes` (the seven
categories of :mod:`interp_lib.data.probes`, 10 texts each).
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Sequence

import pandas as pd
import torch
from torch import Tensor

from interp_lib.errors import InvalidArgumentError

__all__ = [
    "kl_div_score",
    "mean_pooled",
    "pooled_latents",
    "logistic_probe",
    "top_k_mean_diff",
    "one_vs_rest",
    "SparseProbing",
    "sparse_probing",
    "probe_set_classes",
]


def kl_div_score(kl_with_sae: float, kl_with_ablation: float) -> float:
    """SAEBench's ``kl_div_score``: ``(KL_ablation - KL_sae) / KL_ablation``, 1 for a perfect SAE,
    0 for one no better than zeroing the activation (``kl_with_ablation`` > 0, nats)."""
    if not kl_with_ablation > 0:
        raise InvalidArgumentError(f"kl_with_ablation must be > 0, got {kl_with_ablation}")
    return (kl_with_ablation - kl_with_sae) / kl_with_ablation


# --------------------------------------------------------------------------------------------
# Sparse probing
# --------------------------------------------------------------------------------------------
@torch.inference_mode()
def mean_pooled(model, sae, texts: Sequence[str], hook: str | None = None) -> tuple[Tensor, Tensor]:
    """Per text, the model's activation and the SAE's latents, each averaged over the text's
    tokens (position 0, the BOS, left out as SAEBench masks it): ``([n, d_in], [n, d_sae])``.

    As SAEBench's ``get_sae_meaned_activations``, the SAE encodes every token and the latents
    are averaged afterwards (not the activation first). ``hook``: default the SAE's own.
    """
    from interp_lib.model.encoding import hook_activations
    from interp_lib.model.hooks import check_widths

    per_text = list(hook_activations(model, hook or check_widths(model, sae), texts))
    return torch.stack([x.mean(dim=0) for x in per_text]), pooled_latents(sae, per_text)


@torch.inference_mode()
def pooled_latents(sae, per_text: Sequence[Tensor]) -> Tensor:
    """``[n, d_sae]``: the SAE's latents of each text's activations ``[T_i, d_in]`` (one tensor
    per text, as :func:`interp_lib.model.encoding.hook_activations` yields them), averaged over its
    tokens; for many SAEs on one model pass."""
    dtype = next(sae.parameters()).dtype
    return torch.stack([sae.encode(x.to(dtype)).float().mean(dim=0) for x in per_text])


def logistic_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    C: float = 1.0,
    max_iter: int = 1000,
) -> float:
    """Test accuracy of an L2 logistic-regression probe: scikit-learn's ``LogisticRegression(
    penalty="l2", C=C)`` objective, ``0.5 ||w||^2 + C sum_i log(1 + exp(-s_i (x_i w + b)))``
    (``s_i = +-1``, intercept not penalised), minimised with L-BFGS in float64.

    ``train_x: [n, d]``, ``train_y: [n]`` in {0, 1}; the same for ``test_*``. The problem is
    convex, so the optimum (and the accuracy) is scikit-learn's up to its tolerance.
    """
    x = train_x.double()
    s = train_y.double() * 2 - 1
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def objective() -> Tensor:
        opt.zero_grad()
        loss = 0.5 * w.pow(2).sum() + C * torch.nn.functional.softplus(-s * (x @ w + b)).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(objective)
    with torch.no_grad():
        pred = (test_x.double() @ w + b) > 0
    return float((pred == test_y.bool()).double().mean())


def top_k_mean_diff(x: Tensor, y: Tensor, k: int) -> Tensor:
    """``[k]`` indices of the columns of ``x: [n, d]`` whose mean differs most (absolute value)
    between the rows with ``y == 1`` and ``y == 0`` (SAEBench's ``get_top_k_mean_diff_mask``)."""
    diff = (x[y == 1].mean(dim=0) - x[y == 0].mean(dim=0)).abs()
    return torch.argsort(diff, descending=True)[:k]


def one_vs_rest(
    by_class: Mapping[str, Tensor], positive: str, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """A balanced binary data set (SAEBench's ``prepare_probe_data``): every row of
    ``by_class[positive]`` labelled 1, and as many rows labelled 0 drawn at random from the other
    classes (``ceil(n / n_other)`` from each, then cut to ``n``); shuffled. ``([2n, d], [2n])``."""
    pos = by_class[positive]
    others = [name for name in by_class if name != positive]
    if not others:
        raise InvalidArgumentError("sparse probing needs at least two classes")
    per_class = math.ceil(len(pos) / len(others))
    neg = torch.cat(
        [
            by_class[o][torch.randperm(len(by_class[o]), generator=generator)[:per_class]]
            for o in others
        ]
    )
    neg = neg[torch.randperm(len(neg), generator=generator)[: len(pos)]]
    x = torch.cat([pos, neg])
    y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long()
    order = torch.randperm(len(x), generator=generator)
    return x[order], y[order]


class SparseProbing(NamedTuple):
    """What :func:`sparse_probing` returns."""

    per_class: pd.DataFrame
    """One row per class; columns ``dense`` (the probe on the model's activation), ``sae`` (on
    all latents), ``llm_top_k`` and ``sae_top_k`` for each ``k``: test accuracies."""
    mean: dict[str, float]
    """The columns averaged over classes (SAEBench's ``llm_test_accuracy``,
    ``sae_top_{k}_test_accuracy`` ... are these)."""


def sparse_probing(
    train_acts: Mapping[str, Tensor],
    test_acts: Mapping[str, Tensor],
    train_latents: Mapping[str, Tensor],
    test_latents: Mapping[str, Tensor],
    k_values: Sequence[int] = (1, 2, 5),
    seed: int = 42,
    model_probes: bool = True,
) -> SparseProbing:
    """SAEBench's sparse probing on mean-pooled texts, class by class (one-vs-rest).

    ``*_acts``: ``{class: [n_c, d_in]}`` the model's activations; ``*_latents``: ``{class:
    [n_c, d_sae]}`` the SAE's, same rows. For each class: a dense probe on the activation, a probe
    on all latents, and for each ``k`` a probe on the ``k`` latents (and, as SAEBench also
    reports, the ``k`` activation dimensions) chosen by :func:`top_k_mean_diff` on the training
    rows. The balanced one-vs-rest sets are drawn with ``seed`` (SAEBench's default 42).
    ``model_probes=False`` leaves out the probes on the model's activation (``dense``,
    ``llm_top_k``), which are the same for every SAE: for many SAEs, compute them once.
    """
    classes = list(train_acts)
    if len(classes) < 2 or not all(
        set(m) == set(classes) for m in (test_acts, train_latents, test_latents)
    ):
        raise InvalidArgumentError(
            f"need the same >= 2 classes in all four mappings, got {classes}, "
            f"{list(test_acts)}, {list(train_latents)}, {list(test_latents)}"
        )
    if any(not 0 < k for k in k_values):
        raise InvalidArgumentError(f"k_values must be positive, got {list(k_values)}")
    rows = {}
    for name in classes:
        row = {}
        kinds = [("llm", train_acts, test_acts)] if model_probes else []
        kinds.append(("sae", train_latents, test_latents))
        for kind, train, test in kinds:
            # the same seed for both: acts and latents get the same rows, as in SAEBench
            gen_train = torch.Generator().manual_seed(seed)
            gen_test = torch.Generator().manual_seed(seed + 1)
            x, y = one_vs_rest(train, name, gen_train)
            tx, ty = one_vs_rest(test, name, gen_test)
            row["dense" if kind == "llm" else "sae"] = logistic_probe(x, y, tx, ty)
            for k in k_values:
                idx = top_k_mean_diff(x, y, k)
                row[f"{kind}_top_{k}"] = logistic_probe(x[:, idx], y, tx[:, idx], ty)
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    return SparseProbing(table, {c: float(table[c].mean()) for c in table.columns})


def probe_set_classes(test_fraction: float = 0.3, seed: int = 0) -> tuple[dict, dict]:
    """The probe set's seven categories as ``({category: train texts}, {category: test texts})``,
    each category split at random (``seed``) with ``test_fraction`` of its 10 texts held out."""
    from interp_lib.data import CATEGORIES, probe_texts

    if not 0 < test_fraction < 1:
        raise InvalidArgumentError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    train, test = {}, {}
    gen = torch.Generator().manual_seed(seed)
    for cat in CATEGORIES:
        texts = [p.text for p in probe_texts(cat)]
        order = torch.randperm(len(texts), generator=gen).tolist()
        n_test = max(1, round(test_fraction * len(texts)))
        test[cat] = [texts[i] for i in order[:n_test]]
        train[cat] = [texts[i] for i in order[n_test:]]
    return train, test
