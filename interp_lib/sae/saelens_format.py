"""SAELens's on-disk format: save one of our SAEs so ``sae_lens.SAE.load_from_disk`` reads it.

* :func:`folded_weights`: our weights in SAELens's layout, with the input-normalisation
  ``scale`` folded in (the saved SAE takes *raw* activations).
* :func:`save_saelens`: ``cfg.json`` + ``sae_weights.safetensors`` + ``training_log.json``,
  written as one folder atomically (:func:`interp_lib.files.atomic_dir`: a killed save leaves the
  old folder or none, never half of one); :func:`check_sae_output` tells beforehand whether a
  folder may be written.
* :func:`load_saelens_as_homebrew`: the inverse, back to a :mod:`interp_lib.sae.homebrew` model and
  its scale (the folder checked by :func:`interp_lib.sae.folder.read_sae_folder`).
* :func:`to_saelens`: one of our SAEs as a ``sae_lens.SAE`` that takes raw activations;
  :func:`with_hook` labels a ``sae_lens.SAE`` that lacks its hook name.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from interp_lib.errors import DamagedFileError, InvalidArgumentError
from interp_lib.files import atomic_dir, read_json
from interp_lib.sae.folder import (
    CFG,
    DIGEST_KEY,
    REMEDY,
    SAE_FILES,
    WEIGHTS,
    read_sae_folder,
    weights_digest,
)
from interp_lib.sae.homebrew import ReluSAE, TopKSAE
from interp_lib.sae.jumprelu import JumpReLUSAE
from interp_lib.sae.zoo import load_sae

__all__ = [
    "folded_weights",
    "check_sae_output",
    "save_saelens",
    "save_saelens_model",
    "load_saelens_as_homebrew",
    "to_saelens",
    "with_hook",
]


def folded_weights(sae, scale: float) -> dict[str, Tensor]:
    """The SAE's weights in SAELens's layout, rewritten to take *raw* activations.

    Our SAE sees ``x_n = s * x`` (``s = scale``). With ``W_enc`` as SAELens stores it
    (``[d_in, d_sae]``):

    * pre-activations: ``(s x - b_dec) W_enc + b_enc = (x - b_dec / s) (s W_enc) + b_enc``
    * reconstruction in raw units: ``x_hat_n / s = f (W_dec / s) + b_dec / s``

    So ``W_enc' = s W_enc``, ``W_dec' = W_dec / s``, ``b_dec' = b_dec / s`` (the same vector
    in both places, as SAELens requires) and ``b_enc`` unchanged: the latents are identical,
    the reconstruction comes out in raw units. (Decoder rows then have norm ``1/s``.) A JumpReLU
    threshold (JumpReLU, BatchTopK and Matryoshka SAEs: ``threshold [d_sae]``) compares
    pre-activations, which do not change, so it is stored as it is.
    """
    s = float(scale)
    weights = {
        "W_enc": (sae.W_enc.detach().T * s).contiguous(),
        "b_enc": sae.b_enc.detach().clone(),
        "W_dec": (sae.W_dec.detach() / s).contiguous(),
        "b_dec": (sae.b_dec.detach() / s).contiguous(),
    }
    if sae.architecture == "jumprelu":
        weights["threshold"] = sae.threshold.detach().float().clone().contiguous()
    return weights


def _to_jsonable(obj: Any) -> Any:
    """``obj`` with tensors as lists, non-finite floats as ``None`` and unknown objects as text."""
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, Tensor):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _saelens_version() -> str:
    """The installed SAELens version, written into ``cfg.json``."""
    try:
        return version("sae-lens")
    except PackageNotFoundError:  # sae-lens not installed: the format is SAELens 6's
        return "6.0.0"


def check_sae_output(path: str | os.PathLike) -> Path:
    """``path`` if an SAE may be saved there (absent, empty, or an SAE folder, which is replaced);
    otherwise :class:`~interp_lib.errors.InvalidArgumentError`."""
    out = Path(path)
    if out.is_file():  # one stat: another writer may swap the folder between two
        raise InvalidArgumentError(f"{out} is a file, not a folder: choose another output folder")
    try:
        entries = list(out.iterdir()) if out.is_dir() else []
    except FileNotFoundError:  # replaced by another writer at this moment
        entries = []
    foreign = sorted(p.name for p in entries if p.name not in SAE_FILES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise InvalidArgumentError(
            f"{out} holds files that are not an SAE's ({shown}); an SAE is saved as a whole "
            "folder, replacing what is there: choose a new or empty folder"
        )
    return out


def save_saelens(
    sae,
    path: str | os.PathLike,
    *,
    hook_name: str,
    model_name: str,
    scale: float,
    dataset: str = "",
    dtype: str = "float32",
    load_dtype: str = "float32",
    context_size: int | None = None,
    extra_metadata: dict | None = None,
    history: list[dict] | None = None,
    metrics: dict | None = None,
) -> Path:
    """Write ``sae`` (any :mod:`interp_lib` SAE) in SAELens 6's on-disk format so
    ``sae_lens.SAE.load_from_disk(path)`` works on *raw* activations.

    The architecture written is SAELens's inference one (``sae.architecture``): ``"standard"``,
    ``"topk"`` or ``"jumprelu"``. BatchTopK and Matryoshka SAEs are saved as SAELens saves them,
    as JumpReLU SAEs with their one threshold for every latent; the architecture they were
    trained as is kept in ``metadata.training_architecture``.

    Files: ``cfg.json``, ``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``, ``b_enc``,
    ``W_dec [d_sae, d_in]``, ``b_dec``; ``scale`` folded in by :func:`folded_weights`) and
    ``training_log.json`` (scale, metrics, history, metadata).

    ``dtype``: how the weights are *stored*: ``"float32"``, or ``"float16"`` / ``"bfloat16"`` to
    ship half the bytes. ``load_dtype``: the ``dtype`` written into ``cfg.json``, i.e. what
    ``load_from_disk`` gives by default (SAELens casts the stored tensors to it). The default
    ``"float32"`` loads cleanly on any machine and takes fp32 activations; pass
    ``load_from_disk(path, dtype="float16")`` to run in half precision. Returns the folder.

    The folder is written whole and atomically: an existing SAE folder at ``path`` is replaced,
    any other existing content is refused (:func:`check_sae_output`).
    """
    for name, value in (("dtype", dtype), ("load_dtype", load_dtype)):
        if value not in ("float32", "float16", "bfloat16"):
            raise InvalidArgumentError(
                f"{name} must be float32, float16 or bfloat16, got {value!r}"
            )
    out = check_sae_output(path)
    tdtype = getattr(torch, dtype)
    weights = {k: v.to("cpu", tdtype).contiguous() for k, v in folded_weights(sae, scale).items()}

    metadata = {
        # SAELens treats a config without a 6.x version as pre-6.0 and rewrites it on load.
        "sae_lens_version": _saelens_version(),
        "sae_lens_training_version": None,
        "model_name": model_name,
        "hook_name": hook_name,
        "hook_head_index": None,
        "prepend_bos": True,
        "dataset_path": dataset,
        "context_size": context_size,
        "input_scale_folded": float(scale),
        "weights_dtype": dtype,
        "trained_with": "interp_lib",
        "training_architecture": getattr(sae, "training_architecture", sae.architecture),
        **(extra_metadata or {}),
    }
    cfg: dict[str, Any] = {
        "architecture": sae.architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": load_dtype,
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
    }
    if isinstance(sae, TopKSAE):
        cfg["k"] = sae.k
        cfg["rescale_acts_by_decoder_norm"] = False
    log = {
        "architecture": sae.architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "scale": float(scale),
        "hook_name": hook_name,
        "model_name": model_name,
        "metrics": metrics or {},
        "history": history or [],
        "metadata": metadata,
    }
    for field in ("k", "l1_coeff", "l0_coeff", "widths"):
        if hasattr(sae, field):
            log[field] = getattr(sae, field)
    return _write_sae_folder(out, weights, cfg, log)


def _write_sae_folder(out: Path, weights: dict[str, Tensor], cfg: dict, log: dict) -> Path:
    """``out`` written whole and atomically: the weights (with their digest), ``cfg.json`` and
    ``training_log.json``."""
    with atomic_dir(out) as tmp:
        save_file(weights, str(tmp / WEIGHTS), metadata={DIGEST_KEY: weights_digest(weights)})
        (tmp / CFG).write_text(json.dumps(_to_jsonable(cfg), indent=2) + "\n")
        (tmp / "training_log.json").write_text(json.dumps(_to_jsonable(log), indent=1) + "\n")
    return out


def save_saelens_model(
    sae,
    path: str | os.PathLike,
    *,
    hook_name: str,
    model_name: str,
    dtype: str = "float32",
    extra_metadata: dict | None = None,
    history: list[dict] | None = None,
    metrics: dict | None = None,
) -> Path:
    """Write a ``sae_lens.SAE`` (what SAELens's trainer returns, taking raw activations) as
    SAELens's own ``save_model`` does (``cfg.json`` from ``sae.cfg.to_dict()``, the weights as it
    processes them for saving), plus ``training_log.json``; stored in ``dtype``, the folder
    written whole and atomically, as :func:`save_saelens`."""
    if dtype not in ("float32", "float16", "bfloat16"):
        raise InvalidArgumentError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    out = check_sae_output(path)
    with_hook(sae, hook_name, model_name)
    for key, value in (extra_metadata or {}).items():
        setattr(sae.cfg.metadata, key, value)
    state = sae.state_dict()
    sae.process_state_dict_for_saving(state)
    weights = {
        k: v.detach().to("cpu", getattr(torch, dtype)).contiguous() for k, v in state.items()
    }
    cfg = sae.cfg.to_dict()
    log = {
        "architecture": cfg.get("architecture"),
        "d_in": cfg.get("d_in"),
        "d_sae": cfg.get("d_sae"),
        "scale": 1.0,
        "hook_name": hook_name,
        "model_name": model_name,
        "metrics": metrics or {},
        "history": history or [],
        "metadata": {"trained_with": "sae_lens", "weights_dtype": dtype, **(extra_metadata or {})},
    }
    return _write_sae_folder(out, weights, cfg, log)


def load_saelens_as_homebrew(
    path: str | os.PathLike,
) -> tuple[ReluSAE | TopKSAE | JumpReLUSAE, float]:
    """Inverse of :func:`save_saelens`: ``(sae, scale)`` with the scale unfolded again
    (from ``metadata.input_scale_folded``, else ``training_log.json``'s ``scale``, else 1.0).
    A ``"jumprelu"`` folder (also a saved BatchTopK or Matryoshka SAE: what SAELens loads too)
    comes back as a :class:`~interp_lib.sae.jumprelu.JumpReLUSAE` with the saved thresholds."""
    p = Path(path)
    cfg, tensors = read_sae_folder(p, architectures=("topk", "standard", "jumprelu"))
    scale = _folded_scale(p, cfg)
    w = {k: v.float() for k, v in tensors.items()}
    arch = cfg.get("architecture", "standard")
    if arch == "topk":
        sae: ReluSAE | TopKSAE | JumpReLUSAE = TopKSAE(cfg["d_in"], cfg["d_sae"], k=cfg["k"])
    elif arch == "jumprelu":
        sae = JumpReLUSAE(cfg["d_in"], cfg["d_sae"])
        with torch.no_grad():
            sae.threshold.copy_(w["threshold"])
    else:
        sae = ReluSAE(cfg["d_in"], cfg["d_sae"])
    with torch.no_grad():
        sae.encoder.weight.copy_(w["W_enc"].T / scale)
        sae.encoder.bias.copy_(w["b_enc"])
        sae.W_dec.copy_(w["W_dec"] * scale)
        sae.b_dec.copy_(w["b_dec"] * scale)
    return sae, scale


def _folded_scale(folder: Path, cfg: dict) -> float:
    """The input scale folded into a saved SAE: from its cfg.json, else its training log, else 1."""
    if "input_scale_folded" in cfg.get("metadata", {}):
        return float(cfg["metadata"]["input_scale_folded"])
    log_path = folder / "training_log.json"
    if not log_path.exists():
        return 1.0
    scale = read_json(log_path, REMEDY).get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
        raise DamagedFileError(log_path, f"scale is {scale!r}, not a positive number", REMEDY)
    return float(scale)


def with_hook(sae, hook_name: str, model_name: str | None = None):
    """Write ``hook_name`` (and ``model_name``) into a ``sae_lens.SAE``'s metadata, in place;
    returns it."""
    sae.cfg.metadata.hook_name = hook_name
    if model_name is not None:
        sae.cfg.metadata.model_name = model_name
    return sae


def to_saelens(sae, scale: float, *, hook_name: str, model_name: str, dtype: str = "float32"):
    """An :mod:`interp_lib.sae.homebrew` model (trained on ``raw * scale``) as a ``sae_lens.SAE``
    that takes
    raw activations: saved with :func:`save_saelens` (scale folded in) to a
    temporary folder and loaded back with :func:`interp_lib.sae.zoo.load_sae`."""
    with tempfile.TemporaryDirectory(prefix="interp-sae-") as tmp:
        save_saelens(sae, tmp, hook_name=hook_name, model_name=model_name, scale=scale, dtype=dtype)
        return load_sae(tmp)
