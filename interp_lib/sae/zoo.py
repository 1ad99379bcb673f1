"""SAEs to load: the project's own shipped releases and SAELens's pretrained registry.

The project ships SAEs for the embedded model the way SAELens releases ship pretrained ones:
one folder per SAE in SAELens's on-disk format (``cfg.json`` + ``sae_weights.safetensors``,
plus our ``metrics.json``), under ``interp_lib/saes/<release>/<sae_id>/``. Every loader returns
a ``sae_lens.SAE``, so the whole SAELens ecosystem works on them. An SAE takes raw activations
and returns raw-scale reconstructions: the input normalisation used in training is folded into
the weights when the SAE is saved. A folder is checked before SAELens reads it
(:func:`interp_lib.sae.folder.read_sae_folder`), and a damaged ``metrics.json`` is reported by
name, so a truncated or mismatched file fails with the library's own error naming it.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple

from interp_lib import data
from interp_lib.errors import DamagedFileError, InvalidArgumentError, MissingFileError
from interp_lib.files import read_json
from interp_lib.model.loading import from_hub
from interp_lib.sae.folder import CFG, WEIGHTS, read_sae_folder

SAE_ROOT = Path(__file__).parent.parent / "saes"
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


def check_release(release: str, sae_id: str | None) -> None:
    """Raise :class:`~interp_lib.errors.InvalidArgumentError` (a ValueError) unless ``release`` (and
    ``sae_id``, if given) is known, naming the valid ones."""
    if release in RELEASES:
        if sae_id is not None and sae_id not in RELEASES[release].sae_ids:
            raise InvalidArgumentError(
                f"Unknown sae_id {sae_id!r} for release {release!r}. "
                f"Valid ids: {list(RELEASES[release].sae_ids)}"
            )
        return
    directory = _pretrained_directory()
    if release not in directory:
        raise InvalidArgumentError(
            f"Unknown SAE release {release!r}. The project's own releases: {sorted(RELEASES)}; "
            "SAELens's pretrained releases include gpt2-small-res-jb and "
            f"{len(directory) - 1} more "
            "(see list_saes())."
        )
    if sae_id is not None and sae_id not in directory[release].saes_map:
        valid = list(directory[release].saes_map)
        shown = valid[:8] + (["..."] if len(valid) > 8 else [])
        raise InvalidArgumentError(
            f"Unknown sae_id {sae_id!r} for release {release!r}. Valid ids: {shown}"
        )


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
        check_release(release, None)  # unknown -> ValueError naming the valid ones
        raise InvalidArgumentError(
            f"{release!r} is a SAELens pretrained release; it lives on the hub, not on disk. "
            f"Shipped releases: {sorted(RELEASES)}"
        )
    check_release(release, sae_id)
    path = SAE_ROOT / release / sae_id
    if not (path / CFG).exists():
        raise MissingFileError(
            path / CFG,
            f"is missing: the SAE {release}/{sae_id} is not in this checkout",
            f"Restore it from git, or retrain it: python -m interp_lib train-zoo --release "
            f"{release} --sae-id {sae_id}",
        )
    return path


def load_sae(
    release_or_path: str | Path,
    sae_id: str | None = None,
    *,
    device: str = "cpu",
    dtype: str = "float32",
):
    """Load an SAE as ``sae_lens.SAE``: ``load_sae(release, sae_id)`` or ``load_sae(folder)``."""
    if isinstance(release_or_path, Path) or (
        sae_id is None and ("/" in str(release_or_path) or Path(str(release_or_path)).exists())
    ):
        path = Path(release_or_path).expanduser()
        if not path.exists():
            raise MissingFileError(
                path,
                "does not exist",
                f"Check the path: an SAE folder holds {CFG} and {WEIGHTS} (SAELens format)",
            )
        if not (path / CFG).exists():
            raise MissingFileError(
                path,
                f"holds no SAE: expected {CFG} and {WEIGHTS} (SAELens format)",
                "Check the path",
            )
        return _load_disk(path, device, dtype)
    release = str(release_or_path)
    if sae_id is None:
        check_release(release, None)
        raise InvalidArgumentError(
            f"load_sae({release!r}) needs an sae_id; "
            f"valid ids: {[s for r, s in list_saes() if r == release][:8]}"
        )
    if release in RELEASES:
        return _load_disk(sae_path(release, sae_id), device, dtype)
    check_release(release, sae_id)
    return _load_from_hub(release, sae_id, device, dtype)


def _load_disk(path: Path, device: str, dtype: str):
    """A folder in SAELens format, checked first, loaded by SAELens."""
    from sae_lens import SAE
    from sae_lens.registry import SAE_CLASS_REGISTRY

    read_sae_folder(path, architectures=SAE_CLASS_REGISTRY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SAE.load_from_disk(path, device=device, dtype=dtype)


def _load_from_hub(release: str, sae_id: str, device: str, dtype: str):
    """The online path: ``SAE.from_pretrained``; offline it fails fast unless the hub cache has
    it."""
    from sae_lens import SAE  # heavy: imported where first used

    try:
        return from_hub(
            lambda: SAE.from_pretrained(release, sae_id, device=device, dtype=dtype),
            f"SAE {release}/{sae_id}",
            f"the project's own SAEs {sorted(RELEASES)} (for the embedded model smollm2-135m)",
        )
    except Exception:
        _check_hub_copy(release, sae_id)  # a damaged cached copy is named, not called missing
        raise


def _check_hub_copy(release: str, sae_id: str) -> None:
    """Raise :class:`DamagedFileError` naming the file if the hub cache holds a damaged copy of
    the SAE; return quietly if it holds none or a sound one. Run only after SAELens failed, so
    that files SAELens reads are never refused by the library's stricter checks."""
    from huggingface_hub import try_to_load_from_cache
    from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name
    from sae_lens.registry import SAE_CLASS_REGISTRY

    try:
        repo_id, folder = get_repo_id_and_folder_name(release, sae_id)
        cached = try_to_load_from_cache(repo_id, f"{folder}/{CFG}" if folder else CFG)
    except Exception:  # noqa: BLE001 - a release SAELens cannot place: nothing to check here
        return
    if not isinstance(cached, str):  # not in the cache: the loader's own error stands
        return
    try:
        read_sae_folder(Path(cached).parent, architectures=SAE_CLASS_REGISTRY)
    except MissingFileError:  # a file not downloaded yet is the hub's business, not damage
        return
    except DamagedFileError as exc:
        raise DamagedFileError(
            exc.path,
            f"{exc.problem} (the Hugging Face hub cache's copy of {release}/{sae_id})",
            "Delete that file from the hub cache and load the SAE again with the hub reachable",
        ) from None


def recorded_metrics(release: str, sae_id: str) -> dict:
    """The ``metrics.json`` stored beside a shipped SAE (quality on held-out text, training set-up);
    ``{}`` for an SAE that is not shipped with the project (e.g. SAELens's pretrained releases).
    A damaged file raises :class:`~interp_lib.errors.DamagedFileError` naming it."""
    if release not in RELEASES:
        return {}
    try:
        path = sae_path(release, sae_id) / "metrics.json"
    except (FileNotFoundError, ValueError):
        return {}
    return read_json(path, METRICS_REMEDY) if path.exists() else {}


METRICS_REMEDY = "Restore it from git, or recompute it: python -m interp_lib zoo --reevaluate"


def training_recipe(release: str, sae_id: str) -> dict:
    """How a shipped SAE was trained (``{"training tokens": N, "passes": E, "batch size": B,
    "seed": S, "optimiser steps": T}``, from its recorded recipe and training log); ``{}`` for an
    SAE without one."""
    recipe = recorded_metrics(release, sae_id).get("recipe")
    if not recipe:
        return {}
    own = sae_recipe(sae_id, recipe)
    steps = int(own["train_tokens"] * own["epochs"]) // int(own["batch_size"])
    log = sae_path(release, sae_id) / "training_log.json"
    if log.exists():  # the steps taken: the recipe's tokens include the BOS positions left out
        history = read_json(log, METRICS_REMEDY).get("history") or [{}]
        steps = int(history[-1].get("step", steps))
    return {
        "training tokens": int(own["train_tokens"]),
        "passes": float(own["epochs"]),
        "batch size": int(own["batch_size"]),
        "seed": int(own["seed"]),
        "optimiser steps": steps,
    }


_HOOK = re.compile(r"^blocks\.(\d+)\.hook_(.+)$")
_SITE_NAMES = {
    "resid_pre": "resid",
    "mlp_out": "mlp_out",
    "attn_out": "attn_out",
    "resid_post": "resid_post",
}


def sae_label(release: str, sae_id: str) -> str:
    """A short name for tables and legends: ``"resid 15"``, ``"mlp_out 15"`` (the sae_id if not a
    hook)."""
    match = _HOOK.match(sae_id)
    if not match:
        return sae_id
    layer, site = match.groups()
    return f"{_SITE_NAMES.get(site, site)} {layer}"


def feature_slug(release: str, sae_id: str) -> str:
    """Folder name of an SAE's feature pages in the book
    (``smollm2-135m-res--blocks.15.hook_resid_pre``)."""
    return f"{release}--{sae_id}"


def feature_url(release: str, sae_id: str, feature: int, *, base: str | None = None) -> str:
    """Page that shows what ``feature`` does: Neuronpedia for SAELens releases, the book's page for
    ours."""
    if not isinstance(feature, int) or isinstance(feature, bool) or feature < 0:
        raise InvalidArgumentError(f"feature must be a non-negative int, got {feature!r}")
    check_release(release, sae_id)
    if release in RELEASES:
        root = (base if base is not None else BOOK_URL).rstrip("/")
        return f"{root}/features/{feature_slug(release, sae_id)}/{feature}.html"
    neuronpedia_id = _pretrained_directory()[release].neuronpedia_id.get(sae_id)
    if not neuronpedia_id:
        raise InvalidArgumentError(f"{release}/{sae_id} has no Neuronpedia dashboard")
    return f"{NEURONPEDIA_URL}/{neuronpedia_id}/{feature}"


# ----------------------------------------------------------------------------------------------
# How the zoo was made: one recipe, one command (python -m interp_lib train-zoo)

ZOO_RECIPE: dict = {
    "arch": "topk",
    "d_sae": 4608,
    "k": 64,
    # one budget for every SAE: the same tokens, passes and batch, so the same number of optimiser
    # steps (7,266: 1.24M tokens once the BOS positions are left out, x 6 // 1024); each SAE its
    # own seed (by_sae)
    "train_tokens": 1_250_000,
    "epochs": 6.0,
    "batch_size": 1024,
    "lr": 1e-3,
    "ctx_len": 128,
    "seed": 0,
    "eval_tokens": 16_384,
    # every source of the offline corpus (data.ALL_SOURCES): the default corpus (data.SOURCES,
    # which the chapters read) plus licences, code files, maths and the text written for the
    # project (conversation, social posts, other languages); a recipe without "sources" (SAEs
    # shipped before 2026-12-03) was trained on data.SOURCES
    "sources": list(data.ALL_SOURCES),
    "by_sae": {
        "blocks.5.hook_resid_pre": {"seed": 1},
        "blocks.15.hook_resid_pre": {"seed": 2},
        "blocks.20.hook_resid_pre": {"seed": 3},
        "blocks.25.hook_resid_pre": {"seed": 4},
        "blocks.15.hook_mlp_out": {"seed": 5},
    },
}
"""The settings every SAE of the project's releases is trained with (offline corpus, train split):
the top-level values, overridden per SAE by ``by_sae``; :func:`sae_recipe` resolves them."""


def sae_recipe(sae_id: str, recipe: dict | None = None) -> dict:
    """The settings one SAE is trained with: ``recipe`` (default :data:`ZOO_RECIPE`) with its
    ``by_sae`` overrides for ``sae_id`` applied (and the older ``epochs_by_sae`` /
    ``train_tokens_by_sae`` keys that recorded recipes may carry)."""
    recipe = ZOO_RECIPE if recipe is None else recipe
    legacy = {
        key: recipe[f"{key}_by_sae"][sae_id]
        for key in ("epochs", "train_tokens")
        if sae_id in recipe.get(f"{key}_by_sae", {})
    }
    own = {
        k: v
        for k, v in recipe.items()
        if k not in ("by_sae", "epochs_by_sae", "train_tokens_by_sae")
    }
    return {
        "batch_size": 4096,
        "lr": None,
        **own,
        **legacy,
        **recipe.get("by_sae", {}).get(sae_id, {}),
    }
