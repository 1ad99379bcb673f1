"""An SAE folder in SAELens's on-disk format: what it must hold, checked before it is loaded.

A folder holds ``cfg.json`` (``architecture``, ``d_in``, ``d_sae``, ``k`` for TopK, ...) and
``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]``,
``b_enc [d_sae]``). :func:`read_sae_folder` reads and checks both, so that a truncated, malformed
or mismatched folder fails with a :class:`~interp_lib.errors.DamagedFileError` (or
:class:`~interp_lib.errors.MissingFileError`) that names the file, instead of an error from deep
inside SAELens or safetensors. :func:`weights_digest` is the checksum
:func:`interp_lib.sae.saelens_format.save_saelens` stores in the weights file's header (SAELens
ignores it), so flipped bytes in the weights of the library's own SAEs are caught as well.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Iterable

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from interp_lib.errors import DamagedFileError, MissingFileError
from interp_lib.files import read_json

__all__ = ["CFG", "WEIGHTS", "SAE_FILES", "DIGEST_KEY", "read_sae_folder", "weights_digest"]

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
SAE_FILES = frozenset({CFG, WEIGHTS, "training_log.json", "metrics.json"})
"""The files an SAE folder of the library may hold."""
DIGEST_KEY = "interp_lib_digest"
"""Header field of ``sae_weights.safetensors`` holding :func:`weights_digest`."""
REMEDY = (
    "Download the SAE again, or retrain it (python -m interp_lib train, or train-zoo for the "
    "project's own SAEs)"
)
_LAYOUTS = {  # the tensors of the architectures whose layout is SAELens's standard one
    "standard": {"W_enc", "b_enc", "W_dec", "b_dec"},
    "topk": {"W_enc", "b_enc", "W_dec", "b_dec"},
    "jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
}
_OPTIONAL = {"scaling_factor"}  # older SAELens files may carry it


def weights_digest(tensors: dict[str, Tensor]) -> str:
    """A checksum of tensors: their names, dtypes, shapes and bytes."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _positive_int(cfg: dict, key: str, path: Path) -> int:
    """``cfg[key]``, which must be a positive integer."""
    if key not in cfg:
        raise DamagedFileError(path, f"lacks the field {key!r}", REMEDY)
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DamagedFileError(path, f"{key} is {value!r}, not a positive integer", REMEDY)
    return value


def _check_cfg(cfg: dict, path: Path, architectures: Iterable[str] | None) -> None:
    """Raise :class:`DamagedFileError` unless ``cfg`` holds a usable SAE configuration."""
    arch = cfg.get("architecture", "standard")  # SAELens reads pre-6.0 files without it so
    if not isinstance(arch, str):
        raise DamagedFileError(path, f"architecture is {arch!r}, not a name", REMEDY)
    if architectures is not None and arch not in architectures:
        raise DamagedFileError(
            path,
            f"architecture {arch!r} is not one this loader reads ({', '.join(architectures)})",
            "Load it with interp_lib.load_sae (SAELens), or check the file",
        )
    _positive_int(cfg, "d_in", path)
    d_sae = _positive_int(cfg, "d_sae", path)
    if arch == "topk":
        k = _positive_int(cfg, "k", path)
        if k > d_sae:
            raise DamagedFileError(path, f"k={k} is larger than d_sae={d_sae}", REMEDY)
    metadata = cfg.get("metadata", {})
    if not isinstance(metadata, dict):
        raise DamagedFileError(path, "metadata is not a JSON object", REMEDY)
    hook = metadata.get("hook_name")
    if hook is not None and not isinstance(hook, str):
        raise DamagedFileError(path, f"metadata.hook_name is {hook!r}, not a name", REMEDY)
    scale = metadata.get("input_scale_folded", 1.0)
    if (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float))
        or not math.isfinite(scale)
        or scale <= 0
    ):
        raise DamagedFileError(
            path, f"metadata.input_scale_folded is {scale!r}, not a positive number", REMEDY
        )


def _read_weights(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors of a safetensors file and its header metadata (damage raises)."""
    if not path.is_file():
        raise MissingFileError(path, "is missing: the SAE folder has no weights", REMEDY)
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise DamagedFileError(
            path, f"is not a readable safetensors file ({exc})", REMEDY
        ) from None
    return tensors, metadata


def _check_weights(
    tensors: dict[str, Tensor], metadata: dict[str, str], cfg: dict, path: Path
) -> None:
    """Raise :class:`DamagedFileError` unless the tensors match ``cfg`` and their checksum."""
    arch = cfg.get("architecture", "standard")
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    expected = _LAYOUTS.get(arch, {"W_enc", "W_dec", "b_dec"})
    missing = sorted(expected - set(tensors))
    if missing:
        raise DamagedFileError(path, f"lacks the tensor(s) {', '.join(missing)}", REMEDY)
    if arch in _LAYOUTS:
        extra = sorted(set(tensors) - expected - _OPTIONAL)
        if extra:
            raise DamagedFileError(
                path, f"holds unexpected tensor(s) {', '.join(extra)} for a {arch} SAE", REMEDY
            )
    shapes = {
        "W_enc": (d_in, d_sae),
        "W_dec": (d_sae, d_in),
        "b_dec": (d_in,),
        "b_enc": (d_sae,),
        "threshold": (d_sae,),
    }
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise DamagedFileError(
                path, f"tensor {name} is {tensor.dtype}, not a floating-point type", REMEDY
            )
        want = shapes.get(name) if arch in _LAYOUTS else None
        if want is not None and tuple(tensor.shape) != want:
            raise DamagedFileError(
                path,
                f"tensor {name} has shape {list(tensor.shape)}, but cfg.json "
                f"(d_in={d_in}, d_sae={d_sae}) needs {list(want)}",
                REMEDY,
            )
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise DamagedFileError(path, f"tensor {name} holds {bad} NaN or inf values", REMEDY)
    digest = metadata.get(DIGEST_KEY)
    if digest is not None and digest != weights_digest(tensors):
        raise DamagedFileError(
            path, "does not match the checksum it was saved with (its bytes changed)", REMEDY
        )


def read_sae_folder(
    path: str | os.PathLike, *, architectures: Iterable[str] | None = None
) -> tuple[dict, dict[str, Tensor]]:
    """``(cfg, tensors)`` of an SAE folder, after checking both (``architectures``: the ones the
    caller can load; default any)."""
    folder = Path(path)
    if not folder.is_dir():
        raise MissingFileError(
            folder,
            f"is not a folder: expected an SAE folder in SAELens format ({CFG} + {WEIGHTS})",
            "Check the path",
        )
    architectures = tuple(architectures) if architectures is not None else None
    cfg = read_json(folder / CFG, REMEDY)
    _check_cfg(cfg, folder / CFG, architectures)
    tensors, metadata = _read_weights(folder / WEIGHTS)
    _check_weights(tensors, metadata, cfg, folder / WEIGHTS)
    return cfg, tensors
