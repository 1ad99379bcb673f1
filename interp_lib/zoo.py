"""SAEs to load: the project's own shipped releases and SAELens's pretrained registry.

The project ships SAEs for the embedded model the way SAELens releases ship pretrained ones:
one folder per SAE in SAELens's on-disk format (``cfg.json`` + ``sae_weights.safetensors``,
plus our ``metrics.json``), under ``interp_lib/saes/<release>/<sae_id>/``. Every loader returns
a ``sae_lens.SAE``, so the whole SAELens ecosystem works on them. An SAE takes raw activations
and returns raw-scale reconstructions: the input normalisation used in training is folded into
the weights when the SAE is saved.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple

SAE_ROOT = Path(__file__).parent / "saes"
BOOK_URL = "https://interp-book.github.io/sae-book"
"""Where the book is published; the project's feature pages live under ``{BOOK_URL}/features/``."""
NEURONPEDIA_URL = "https://www.neuronpedia.org"


class Release(NamedTuple):
    """One of the project's own SAE releases."""

    model: str
    """Model name for :func:`interp_lib.load_model`."""
    sae_ids: tuple[str, ...]
    """The SAEs in the release, named by their hook point."""
    description: str
    """One line for tables and the book."""


RELEASES: dict[str, Release] = {
    "smollm2-135m-res": Release(
        "smollm2-135m",
        tuple(f"blocks.{layer}.hook_resid_pre" for layer in (5, 15, 20, 25)),
        "Residual stream of SmolLM2-135M-Instruct, TopK SAEs, 4608 features (8x)",
    ),
    "smollm2-135m-mlp": Release(
        "smollm2-135m",
        ("blocks.15.hook_mlp_out",),
        "MLP output of SmolLM2-135M-Instruct layer 15, TopK SAE, 4608 features (8x)",
    ),
}
"""The project's own releases (shipped in git, work offline)."""


def _pretrained_directory() -> dict:
    """SAELens's registry of pretrained releases (read from its packaged yaml: no network)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


def _check_release(release: str, sae_id: str | None) -> None:
    if release in RELEASES:
        if sae_id is not None and sae_id not in RELEASES[release].sae_ids:
            raise ValueError(f"Unknown sae_id {sae_id!r} for release {release!r}. Valid ids: {list(RELEASES[release].sae_ids)}")
        return
    directory = _pretrained_directory()
    if release not in directory:
        raise ValueError(
            f"Unknown SAE release {release!r}. The project's own releases: {sorted(RELEASES)}; "
            f"SAELens's pretrained releases include gpt2-small-res-jb and {len(directory) - 1} more "
            "(see list_saes())."
        )
    if sae_id is not None and sae_id not in directory[release].saes_map:
        valid = list(directory[release].saes_map)
        shown = valid[:8] + (["..."] if len(valid) > 8 else [])
        raise ValueError(f"Unknown sae_id {sae_id!r} for release {release!r}. Valid ids: {shown}")


def list_saes(*, pretrained: bool = True) -> Iterator[tuple[str, str]]:
    """Yield ``(release, sae_id)``: the project's releases first, then SAELens's registry."""
    for release, info in RELEASES.items():
        for sae_id in info.sae_ids:
            yield release, sae_id
    if pretrained:
        for release, lookup in _pretrained_directory().items():
            for sae_id in lookup.saes_map:
                yield release, sae_id


def sae_path(release: str, sae_id: str) -> Path:
    """On-disk folder (SAELens format) of one of the project's shipped SAEs."""
    if release not in RELEASES:
        _check_release(release, None)  # unknown -> ValueError naming the valid ones
        raise ValueError(f"{release!r} is a SAELens pretrained release; it lives on the hub, not on disk. "
                         f"Shipped releases: {sorted(RELEASES)}")
    _check_release(release, sae_id)
    path = SAE_ROOT / release / sae_id
    if not (path / "cfg.json").exists():
        raise FileNotFoundError(f"{path} is missing: the SAE {release}/{sae_id} has not been trained into this checkout")
    return path


def load_sae(release_or_path: str | Path, sae_id: str | None = None, *, device: str = "cpu", dtype: str = "float32"):
    """Load an SAE as ``sae_lens.SAE``: ``load_sae(release, sae_id)`` or ``load_sae(folder)``."""
    from sae_lens import SAE

    if isinstance(release_or_path, Path) or (sae_id is None and ("/" in str(release_or_path) or Path(str(release_or_path)).exists())):
        path = Path(release_or_path).expanduser()
        if not (path / "cfg.json").exists():
            raise FileNotFoundError(f"No SAE at {path}: expected cfg.json and sae_weights.safetensors (SAELens format)")
        return _load_disk(path, device, dtype)
    release = str(release_or_path)
    if sae_id is None:
        _check_release(release, None)
        raise ValueError(f"load_sae({release!r}) needs an sae_id; valid ids: {[s for r, s in list_saes() if r == release][:8]}")
    if release in RELEASES:
        return _load_disk(sae_path(release, sae_id), device, dtype)
    _check_release(release, sae_id)
    return _load_from_hub(release, sae_id, device, dtype)


def _load_disk(path: Path, device: str, dtype: str):
    from sae_lens import SAE

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SAE.load_from_disk(path, device=device, dtype=dtype)


def _load_from_hub(release: str, sae_id: str, device: str, dtype: str):
    """The online path: ``SAE.from_pretrained``; offline it fails fast unless the hub cache has it."""
    from sae_lens import SAE

    from .models import HubUnavailableError, hub_reachable

    if not hub_reachable():
        import huggingface_hub.constants as hub_constants

        previous = hub_constants.HF_HUB_OFFLINE
        hub_constants.HF_HUB_OFFLINE = True
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return SAE.from_pretrained(release, sae_id, device=device, dtype=dtype)
        except Exception as exc:  # noqa: BLE001 - any failure here means "not cached"
            raise HubUnavailableError(
                f"Cannot load SAE {release}/{sae_id}: the Hugging Face hub cannot be reached and it is not "
                f"in the local hub cache. Offline, use the project's own SAEs: {sorted(RELEASES)} "
                "(for the embedded model smollm2-135m)."
            ) from exc
        finally:
            hub_constants.HF_HUB_OFFLINE = previous
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SAE.from_pretrained(release, sae_id, device=device, dtype=dtype)


def sae_metadata(release: str, sae_id: str) -> dict:
    """The ``metrics.json`` stored beside a shipped SAE (quality on held-out text, training set-up)."""
    path = sae_path(release, sae_id) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def feature_slug(release: str, sae_id: str) -> str:
    """Folder name of an SAE's feature pages in the book (``smollm2-135m-res--blocks.15.hook_resid_pre``)."""
    return f"{release}--{sae_id}"


def feature_url(release: str, sae_id: str, feature: int, *, base: str | None = None) -> str:
    """Page that shows what ``feature`` does: Neuronpedia for SAELens releases, the book's page for ours."""
    if not isinstance(feature, int) or isinstance(feature, bool) or feature < 0:
        raise ValueError(f"feature must be a non-negative int, got {feature!r}")
    _check_release(release, sae_id)
    if release in RELEASES:
        return f"{(base if base is not None else BOOK_URL).rstrip('/')}/features/{feature_slug(release, sae_id)}/{feature}.html"
    neuronpedia_id = _pretrained_directory()[release].neuronpedia_id.get(sae_id)
    if not neuronpedia_id:
        raise ValueError(f"{release}/{sae_id} has no Neuronpedia dashboard")
    return f"{NEURONPEDIA_URL}/{neuronpedia_id}/{feature}"


# ----------------------------------------------------------------------------------------------
# How the zoo was made: one recipe, one command (python -m interp_lib train-zoo)

ZOO_RECIPE: dict = {
    "arch": "topk",
    "d_sae": 4608,
    "k": 64,
    "train_tokens": 384_000,
    "epochs": 3.0,
    "batch_size": 4096,
    "ctx_len": 128,
    "seed": 0,
    "eval_tokens": 16_384,
    "lr": None,  # None: the trainer's default for the architecture (2e-3 for TopK)
    # Deeper layers and the MLP output are harder to reconstruct: they get more passes, and the two
    # hardest more text and smaller batches (with 384k tokens x 6 passes in batches of 4096 they
    # reached held-out FVE 0.853 and 0.775; interp_lib/saes/README.md has the measurements).
    "by_sae": {
        "blocks.20.hook_resid_pre": {"epochs": 6.0},
        "blocks.25.hook_resid_pre": {"train_tokens": 2_000_000, "epochs": 6.0, "batch_size": 1024, "lr": 1e-3},
        "blocks.15.hook_mlp_out": {"train_tokens": 2_000_000, "epochs": 6.0, "batch_size": 1024, "lr": 1e-3},
    },
}
"""The settings every SAE of the project's releases is trained with (offline corpus, train split):
the top-level values, overridden per SAE by ``by_sae``; :func:`sae_recipe` resolves them."""


def sae_recipe(sae_id: str, recipe: dict | None = None) -> dict:
    """The settings one SAE is trained with: ``recipe`` (default :data:`ZOO_RECIPE`) with its
    ``by_sae`` overrides for ``sae_id`` applied (and the older ``epochs_by_sae`` /
    ``train_tokens_by_sae`` keys that recorded recipes may carry)."""
    recipe = ZOO_RECIPE if recipe is None else recipe
    legacy = {key: recipe[f"{key}_by_sae"][sae_id] for key in ("epochs", "train_tokens")
              if sae_id in recipe.get(f"{key}_by_sae", {})}
    own = {k: v for k, v in recipe.items() if k not in ("by_sae", "epochs_by_sae", "train_tokens_by_sae")}
    return {"batch_size": 4096, "lr": None, **own, **legacy, **recipe.get("by_sae", {}).get(sae_id, {})}


def heldout_tokens(model, n_tokens: int, ctx_len: int = 128):
    """Held-out corpus tokens [n_tokens // ctx_len, ctx_len] (files never used in training)."""
    from .activations import corpus_tokens

    return corpus_tokens(model, "heldout", n_tokens, ctx_len)


def evaluate_sae(sae, model, *, n_tokens: int = ZOO_RECIPE["eval_tokens"], ctx_len: int = 128, progress: bool = True) -> dict:
    """The foundation metrics (interp_lib.metrics.sae_metrics) on held-out text, as a flat dict."""
    from .metrics import log_density_histogram, sae_metrics

    tokens = heldout_tokens(model, n_tokens, ctx_len)
    result = sae_metrics(model, sae, tokens, progress=progress)
    counts, edges = log_density_histogram(result.density)
    return {**result.summary(), "log10_density_hist": {"counts": counts.tolist(), "edges": edges.tolist()},
            "eval": f"held-out split of the offline corpus, {result.n_tokens} tokens (BOS excluded)"}


def train_zoo(releases: list[str] | None = None, *, sae_ids: list[str] | None = None, recipe: dict | None = None,
              device: str = "cpu", out_root: Path | None = None, progress: bool = True) -> list[dict]:
    """Retrain the project's releases from the recipe (same seed, same corpus), save and evaluate each."""
    from .activations import cached_activations
    from .models import load_model

    recipe = {**ZOO_RECIPE, **(recipe or {})}
    releases = releases or list(RELEASES)
    for r in releases:
        _check_release(r, None)
    known = [s for r in releases for s in RELEASES[r].sae_ids]
    unknown = [s for s in (sae_ids or []) if s not in known]
    if unknown:
        raise ValueError(f"Unknown sae_id(s) {unknown} for releases {releases}. Valid ids: {known}")
    out_root = Path(out_root) if out_root else SAE_ROOT
    rows = []
    by_model: dict[str, list[tuple[str, str]]] = {}
    for r in releases:
        by_model.setdefault(RELEASES[r].model, []).extend(
            (r, s) for s in RELEASES[r].sae_ids if sae_ids is None or s in sae_ids)
    for model_name, pairs in by_model.items():
        if not pairs:
            continue
        model = load_model(model_name)
        by_tokens: dict[int, list[tuple[str, str]]] = {}  # one harvest per token budget
        for pair in pairs:
            by_tokens.setdefault(sae_recipe(pair[1], recipe)["train_tokens"], []).append(pair)
        for n_tokens, group in by_tokens.items():
            acts = cached_activations(model_name, [s for _, s in group], n_tokens=n_tokens, ctx_len=recipe["ctx_len"],
                                      model=model, progress=progress)
            for release, sae_id in group:
                rows.append(_train_one(release, sae_id, acts.pop(sae_id), model, model_name, recipe, device,
                                       out_root, progress))
    return rows


def _train_one(release: str, sae_id: str, acts, model, model_name: str, recipe: dict, device: str,
               out_root: Path, progress: bool) -> dict:
    """Train, save (SAELens format, fp16) and evaluate one SAE of a release."""
    from sae_lens import SAE

    from .sae import save_saelens
    from .train import TrainConfig, train_sae

    own = sae_recipe(sae_id, recipe)
    cfg = TrainConfig(arch=own["arch"], d_sae=own["d_sae"], k=own["k"], epochs=own["epochs"], seed=own["seed"],
                      batch_size=own["batch_size"], lr=own["lr"], device=device)
    result = train_sae(acts.float(), cfg, progress=progress)
    path = save_saelens(
        result.sae, out_root / release / sae_id, hook_name=sae_id, model_name=model_name, scale=result.scale,
        dataset=f"interp_lib offline corpus, train split, {acts.shape[0]} tokens (BOS excluded)",
        dtype="float16", context_size=own["ctx_len"], history=result.history, metrics=result.metrics,
        extra_metadata={"release": release, "recipe": recipe},
    )
    sae = SAE.load_from_disk(path, dtype="float32")
    metrics = {"release": release, "sae_id": sae_id, **evaluate_sae(sae, model, n_tokens=own["eval_tokens"], ctx_len=own["ctx_len"],
                                                                        progress=progress),
               "train_tokens_per_s": result.metrics.get("tokens_per_s"), "recipe": recipe}
    (path / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


def reevaluate_zoo(*, progress: bool = True) -> list[dict]:
    """Recompute the held-out metrics of every shipped SAE and rewrite their ``metrics.json``
    (training fields kept): for when the metrics gain a field, without retraining."""
    from .models import load_model

    rows, models = [], {}
    for release, sae_id in list_saes(pretrained=False):
        meta = sae_metadata(release, sae_id)
        model_name = RELEASES[release].model
        if model_name not in models:
            models[model_name] = load_model(model_name)
        model = models[model_name]
        ctx_len = meta.get("recipe", ZOO_RECIPE)["ctx_len"]
        fresh = evaluate_sae(load_sae(release, sae_id), model, ctx_len=ctx_len, progress=progress)
        meta = {"release": release, "sae_id": sae_id, **{k: v for k, v in meta.items() if k not in fresh}, **fresh}
        (sae_path(release, sae_id) / "metrics.json").write_text(json.dumps(meta, indent=1) + "\n")
        rows.append(meta)
    return rows


def zoo_table(markdown: bool = True) -> str:
    """The zoo's held-out quality table (from each SAE's metrics.json)."""
    head = ["release", "sae_id", "L0", "FVE", "FVE typical", "CE recovered", "loss increase (nats)", "dead", "dense"]
    lines = []
    for release, sae_id in list_saes(pretrained=False):
        try:
            m = sae_metadata(release, sae_id)
        except FileNotFoundError:
            continue
        if not m:
            continue
        lines.append([release, sae_id, f"{m['l0']:.1f}", f"{m['fve']:.3f}",
                      f"{m['fve_typical']:.3f}" if "fve_typical" in m else "-", f"{m['ce_recovered']:.3f}",
                      f"{m['ce_increase']:.3f}", f"{m['dead_fraction']:.1%}", f"{m['dense_fraction']:.1%}"])
    if not markdown:
        return "\n".join("\t".join(row) for row in [head, *lines])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(row) + " |" for row in lines]
    return "\n".join(out)
