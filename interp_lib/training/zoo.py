"""Make the zoo: retrain the project's shipped SAEs from their recipe, and record their quality.

``python -m interp_lib train-zoo`` calls :func:`train_zoo`: one harvest of the offline corpus per
token budget, one training run per SAE with the settings :func:`interp_lib.sae.zoo.sae_recipe`
resolves, the SAE saved in SAELens's format (fp16) and its held-out quality
(:func:`heldout_record`) written beside it as ``metrics.json``. :func:`reevaluate_zoo` rewrites
those records without retraining. Each SAE's folder (weights and record together) is replaced
atomically, so a retrain killed at any moment leaves every SAE as it was or fully retrained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from interp_lib.data import EVAL_KINDS, SOURCES
from interp_lib.errors import InvalidArgumentError
from interp_lib.evals.heldout import evalset_tokens, heldout_tokens
from interp_lib.evals.metrics import evaluate, log_density_histogram
from interp_lib.files import atomic_dir, write_text_atomic
from interp_lib.model.activations import cached_activations
from interp_lib.model.loading import load_model
from interp_lib.sae.saelens_format import save_saelens
from interp_lib.sae.zoo import (
    RELEASES,
    SAE_ROOT,
    ZOO_RECIPE,
    check_release,
    list_saes,
    load_sae,
    recorded_metrics,
    sae_path,
    sae_recipe,
)
from interp_lib.training.trainer import TrainConfig, train_sae


def heldout_record(
    sae,
    model,
    *,
    n_tokens: int = ZOO_RECIPE["eval_tokens"],
    ctx_len: int = 128,
    progress: bool = True,
    sources: tuple[str, ...] | list[str] = SOURCES,
) -> dict:
    """:func:`interp_lib.evals.metrics.evaluate` on held-out text (of the corpus built from
    ``sources``) and on the evaluation set, as the flat dict a ``metrics.json`` stores."""
    return heldout_records(
        {"sae": sae},
        model,
        n_tokens=n_tokens,
        ctx_len=ctx_len,
        progress=progress,
        sources=sources,
    )["sae"]


def heldout_records(
    saes: Mapping[str, Any],
    model,
    *,
    n_tokens: int = ZOO_RECIPE["eval_tokens"],
    ctx_len: int = 128,
    progress: bool = True,
    sources: tuple[str, ...] | list[str] = SOURCES,
) -> dict[str, dict]:
    """:func:`heldout_record` of each of ``saes`` ({name: SAE} of one model), with each clean
    pass (held-out text, each kind) run once for all of them: the same records to within fp32
    rounding (about 1e-7; a clean pass that caches several hooks adds in another order)."""
    tokens = heldout_tokens(model, n_tokens, ctx_len, sources=sources)
    results = evaluate(model, dict(saes), tokens, progress=progress)
    by_kind = kinds_records(saes, model, ctx_len=ctx_len)
    corpus = _corpus_note(sources)
    out = {}
    for name, result in results.items():
        counts, edges = log_density_histogram(result.density)
        out[name] = {
            **result.summary(),
            "log10_density_hist": {"counts": counts.tolist(), "edges": edges.tolist()},
            "eval": f"held-out split of the offline corpus{corpus}, {result.n_tokens} tokens "
            "(BOS excluded)",
            "by_kind": by_kind[name],
            "eval_by_kind": "interp_lib.data.evalset: texts of seven kinds written for evaluation",
        }
    return out


def _corpus_note(sources) -> str:
    """What a record adds after "offline corpus": nothing for the default sources."""
    return "" if tuple(sources) == SOURCES else f" (sources: {', '.join(sources)})"


KIND_FIELDS = ("l0", "fve", "fve_typical", "ce_recovered", "ce_increase", "kl_div", "n_tokens")
"""What :func:`kinds_records` keeps of each kind's :class:`~interp_lib.evals.metrics.SAEMetrics`."""


def kinds_records(saes: Mapping[str, Any], model, *, ctx_len: int = 128) -> dict[str, dict]:
    """:func:`interp_lib.evals.metrics.evaluate` of each of ``saes`` ({name: SAE}) on each kind of
    the evaluation set (:mod:`interp_lib.data.evalset`), each kind's clean pass shared:
    {name: {kind: {field: value}}} for :data:`KIND_FIELDS`."""
    out: dict[str, dict] = {name: {} for name in saes}
    for kind in EVAL_KINDS:
        tokens = evalset_tokens(model, kind, ctx_len)
        results = evaluate(model, dict(saes), tokens, progress=False)
        for name, summary in results.items():
            out[name][kind] = {k: summary._asdict()[k] for k in KIND_FIELDS}
    return out


def train_zoo(
    releases: list[str] | None = None,
    *,
    sae_ids: list[str] | None = None,
    recipe: dict | None = None,
    device: str = "cpu",
    out_root: Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Retrain the project's releases from the recipe (same seed, same corpus), save and evaluate
    each."""
    recipe = {**ZOO_RECIPE, **(recipe or {})}
    releases = releases or list(RELEASES)
    for r in releases:
        check_release(r, None)
    known = [s for r in releases for s in RELEASES[r].sae_ids]
    unknown = [s for s in (sae_ids or []) if s not in known]
    if unknown:
        raise InvalidArgumentError(
            f"Unknown sae_id(s) {unknown} for releases {releases}. Valid ids: {known}"
        )
    out_root = Path(out_root) if out_root else SAE_ROOT
    rows = []
    by_model: dict[str, list[tuple[str, str]]] = {}
    for r in releases:
        by_model.setdefault(RELEASES[r].model, []).extend(
            (r, s) for s in RELEASES[r].sae_ids if sae_ids is None or s in sae_ids
        )
    for model_name, pairs in by_model.items():
        if not pairs:
            continue
        model = load_model(model_name)
        # one harvest per token budget and corpus
        by_tokens: dict[tuple[int, tuple[str, ...]], list[tuple[str, str]]] = {}
        for pair in pairs:
            own = sae_recipe(pair[1], recipe)
            key = (own["train_tokens"], tuple(own.get("sources", SOURCES)))
            by_tokens.setdefault(key, []).append(pair)
        for (n_tokens, sources), group in by_tokens.items():
            acts = cached_activations(
                model_name,
                [s for _, s in group],
                n_tokens=n_tokens,
                ctx_len=recipe["ctx_len"],
                model=model,
                progress=progress,
                sources=sources,
            )
            for release, sae_id in group:
                rows.append(
                    _train_one(
                        release,
                        sae_id,
                        acts.pop(sae_id),
                        model,
                        model_name,
                        recipe,
                        device,
                        out_root,
                        progress,
                    )
                )
    return rows


def _train_one(
    release: str,
    sae_id: str,
    acts,
    model,
    model_name: str,
    recipe: dict,
    device: str,
    out_root: Path,
    progress: bool,
) -> dict:
    """Train, save (SAELens format, fp16) and evaluate one SAE of a release."""
    own = sae_recipe(sae_id, recipe)
    cfg = TrainConfig(
        arch=own["arch"],
        d_sae=own["d_sae"],
        k=own["k"],
        epochs=own["epochs"],
        seed=own["seed"],
        batch_size=own["batch_size"],
        lr=own["lr"],
        device=device,
    )
    result = train_sae(acts.float(), cfg, progress=progress)
    sources = tuple(own.get("sources", SOURCES))
    corpus = _corpus_note(sources)
    with atomic_dir(out_root / release / sae_id) as path:  # weights and record, or neither
        save_saelens(
            result.sae,
            path,
            hook_name=sae_id,
            model_name=model_name,
            scale=result.scale,
            dataset=(
                f"interp_lib offline corpus{corpus}, train split, {acts.shape[0]} tokens "
                "(BOS excluded)"
            ),
            dtype="float16",
            context_size=own["ctx_len"],
            history=result.history,
            metrics=result.metrics,
            extra_metadata={"release": release, "recipe": recipe},
        )
        sae = load_sae(path)
        metrics = {
            "release": release,
            "sae_id": sae_id,
            **heldout_record(
                sae,
                model,
                n_tokens=own["eval_tokens"],
                ctx_len=own["ctx_len"],
                progress=progress,
                sources=sources,
            ),
            "train_tokens_per_s": result.metrics.get("tokens_per_s"),
            "recipe": recipe,
        }
        (path / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


def reevaluate_zoo(*, progress: bool = True) -> list[dict]:
    """Recompute the held-out metrics of every shipped SAE and rewrite their ``metrics.json``
    (training fields kept): for when the metrics gain a field, without retraining. SAEs of one
    model, context length and corpus are evaluated together (:func:`heldout_records`)."""
    groups: dict[tuple, list[tuple[str, str, dict]]] = {}
    for release, sae_id in list_saes(pretrained=False):
        meta = recorded_metrics(release, sae_id)
        own = sae_recipe(sae_id, meta.get("recipe", ZOO_RECIPE))
        key = (RELEASES[release].model, own["ctx_len"], tuple(own.get("sources", SOURCES)))
        groups.setdefault(key, []).append((release, sae_id, meta))
    rows, models = [], {}
    for (model_name, ctx_len, sources), pairs in groups.items():
        if model_name not in models:
            models[model_name] = load_model(model_name)
        saes = {f"{release}/{sae_id}": load_sae(release, sae_id) for release, sae_id, _ in pairs}
        records = heldout_records(
            saes, models[model_name], ctx_len=ctx_len, progress=progress, sources=sources
        )
        for release, sae_id, meta in pairs:
            fresh = records[f"{release}/{sae_id}"]
            meta = {
                "release": release,
                "sae_id": sae_id,
                **{k: v for k, v in meta.items() if k not in fresh},
                **fresh,
            }
            write_text_atomic(
                sae_path(release, sae_id) / "metrics.json", json.dumps(meta, indent=1) + "\n"
            )
            rows.append(meta)
    return rows
