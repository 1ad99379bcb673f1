"""The live pages of the site: the model in the reader's browser (``lens.html``, ``steer.html``).

:func:`write_live_site` puts into a built site (``_build/html``):

* ``lens.html`` and ``steer.html`` at its root, their scripts and style under ``live/``
  (from ``interp_lib/site/live/``);
* ``live/vendor/``: onnxruntime-web (its WebAssembly build) and ``@huggingface/tokenizers``, from
  the project's ``node_modules`` (``npm ci``, ``make env``);
* ``live/model/``: the checked ONNX export of the embedded model
  (:func:`interp_lib.site.browser_model.browser_model_dir`, cached) and its tokenizer files;
* ``live/saes/``: each shipped SAE's encoder (``W_enc``, ``b_enc``, ``b_dec``, fp16), the layer-15
  SAE's decoder for the steering bench, and ``saes.json``, their index (with the typical norm
  that steering strengths are measured in, :func:`interp_lib.interventions.steering.typical_norm`).

The pages need no server-side code: any static web server (GitHub Pages, ``make serve``) works.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from interp_lib.errors import MissingFileError
from interp_lib.files import atomic_dir, write_text_atomic
from interp_lib.sae.zoo import RELEASES, load_sae

PAGES_SRC = Path(__file__).parent / "live"
PAGES = ("lens.html", "steer.html")
SCRIPTS = ("live.js", "lens.js", "steer.js", "live.css")
VENDOR: dict[str, str] = {
    "onnxruntime-web/dist/ort.wasm.min.mjs": "ort.wasm.min.mjs",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs": "ort-wasm-simd-threaded.mjs",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm": "ort-wasm-simd-threaded.wasm",
    "@huggingface/tokenizers/dist/tokenizers.min.mjs": "tokenizers.min.mjs",
    "@huggingface/tokenizers/LICENSE": "tokenizers-LICENSE",
}
"""Files the pages load from npm packages (node_modules path -> name under live/vendor/)."""
STEER_SAE = ("smollm2-135m-res", "blocks.15.hook_resid_pre")
"""The SAE whose features the steering bench steers (chapter 5's)."""
NPM_REMEDY = "Install the pages' npm packages: npm ci --ignore-scripts (make env does)"


def sae_key(release: str, sae_id: str) -> str:
    """How the pages name an SAE (``lens.html?sae=<release>/<sae_id>``)."""
    return f"{release}/{sae_id}"


def missing_vendor_files(node_modules: Path) -> list[Path]:
    """The npm files the pages need that ``node_modules`` lacks (empty: all there)."""
    return [node_modules / src for src in VENDOR if not (node_modules / src).is_file()]


def _link_or_copy(src: Path, dest: Path) -> None:
    """Hard-link ``src`` to ``dest`` (a 270 MB model is not copied on every build), else copy."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _fp16_bytes(*tensors) -> bytes:
    """The tensors, row-major, as little-endian fp16 bytes, one after the other."""
    return b"".join(t.detach().float().numpy().astype("<f2").tobytes() for t in tensors)


def write_sae_files(dest: Path, model) -> dict:
    """Every shipped SAE's encoder (and the steering SAE's decoder) into ``dest``; their index."""
    from interp_lib.interventions.steering import typical_norm

    index: dict = {"saes": [], "default_lens": sae_key(*STEER_SAE)}
    for release, info in RELEASES.items():
        for sae_id in info.sae_ids:
            sae = load_sae(release, sae_id)
            name = f"{release}--{sae_id}"
            (dest / f"{name}.enc.bin").write_bytes(_fp16_bytes(sae.W_enc, sae.b_enc, sae.b_dec))
            entry = {
                "key": sae_key(release, sae_id),
                "release": release,
                "sae_id": sae_id,
                "hook": sae.cfg.metadata.hook_name,
                "d_in": int(sae.cfg.d_in),
                "d_sae": int(sae.cfg.d_sae),
                "encoder": f"{name}.enc.bin",
            }
            index["saes"].append(entry)
            if (release, sae_id) == STEER_SAE:
                (dest / f"{name}.dec.bin").write_bytes(_fp16_bytes(sae.W_dec))
                index["steer"] = {
                    **entry,
                    "decoder": f"{name}.dec.bin",
                    "layer": int(sae_id.split(".")[1]),
                    "typical_norm": typical_norm(model, sae),
                }
    (dest / "saes.json").write_text(json.dumps(index, indent=1))
    return index


def write_live_site(html: Path, node_modules: Path) -> list[Path]:
    """Add the live pages to the built site in ``html``; returns the pages written."""
    from interp_lib.model.loading import load_model
    from interp_lib.site.browser_model import browser_model_dir, read_browser_manifest

    html = Path(html)
    missing = missing_vendor_files(Path(node_modules))
    if missing:
        raise MissingFileError(missing[0], "is missing (the live pages need it)", NPM_REMEDY)
    export = browser_model_dir()
    manifest = read_browser_manifest(export)
    model = load_model()
    with atomic_dir(html / "live") as tmp:
        for name in SCRIPTS:
            shutil.copyfile(PAGES_SRC / name, tmp / name)
        (tmp / "vendor").mkdir()
        for src, name in VENDOR.items():
            shutil.copyfile(Path(node_modules) / src, tmp / "vendor" / name)
        (tmp / "model").mkdir()
        lens = manifest["lens"]
        files = [
            manifest["graph"],
            lens["graph"],
            "manifest.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
        weights = [w["path"] for w in manifest["weights"] + lens["weights"]]
        for name in dict.fromkeys(files + weights):
            _link_or_copy(export / name, tmp / "model" / name)
        (tmp / "saes").mkdir()
        write_sae_files(tmp / "saes", model)
    pages = []
    for name in PAGES:
        pages.append(write_text_atomic(html / name, (PAGES_SRC / name).read_text(encoding="utf-8")))
    return pages


def download_bytes(html: Path) -> dict[str, int]:
    """What each live page downloads from the site, in bytes: its graph and the weight files
    that graph reads, the tokenizer, the SAE files it reads, the scripts and WebAssembly."""
    live = Path(html) / "live"
    model = live / "model"
    manifest = json.loads((model / "manifest.json").read_text())
    common = sum(
        (model / n).stat().st_size
        for n in ("manifest.json", "tokenizer.json", "tokenizer_config.json")
    )
    common += sum(p.stat().st_size for p in (live / "vendor").iterdir() if "LICENSE" not in p.name)
    common += sum((live / s).stat().st_size for s in SCRIPTS)

    def graph_bytes(spec: dict) -> int:
        return (model / spec["graph"]).stat().st_size + sum(
            (model / w["path"]).stat().st_size for w in spec["weights"]
        )

    index = json.loads((live / "saes" / "saes.json").read_text())
    saes = common + (live / "saes" / "saes.json").stat().st_size
    encoders = sum((live / "saes" / s["encoder"]).stat().st_size for s in index["saes"])
    decoder = (live / "saes" / index["steer"]["decoder"]).stat().st_size
    return {
        "lens.html (all five SAEs picked)": saes + graph_bytes(manifest["lens"]) + encoders,
        "steer.html": saes + graph_bytes(manifest) + decoder,
        "largest file": max(p.stat().st_size for p in live.rglob("*") if p.is_file()),
    }
