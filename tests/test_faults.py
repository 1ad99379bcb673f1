"""Fault injection: damaged files, misuse of the command line, interrupted and concurrent
work. Every damaged input is made here, on the spot, from a good one: cut at several offsets, bytes
flipped, fields removed, wrong shapes, wrong dtypes. A reader's file must end in the library's own
error naming the file (or, for a derived cache, be rebuilt); a command-line mistake in exit
status 2 and one line; a killed writer in an output that is complete or absent."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import interp_lib.__main__ as cli
from interp_lib import files
from interp_lib.errors import DamagedFileError, InvalidArgumentError, MissingFileError
from interp_lib.evals import zoo_report
from interp_lib.features import stats as fs
from interp_lib.model import activations as A
from interp_lib.model import loading as models
from interp_lib.sae import zoo
from interp_lib.sae.folder import read_sae_folder
from interp_lib.sae.homebrew import ReluSAE, TopKSAE
from interp_lib.sae.saelens_format import load_saelens_as_homebrew, save_saelens, with_hook
from interp_lib.sae.zoo import load_sae
from interp_lib.training import zoo as train_zoo

from .conftest import make_sae

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
HOOK = "blocks.0.hook_resid_pre"
LOADERS = {"load_sae": load_sae, "load_saelens_as_homebrew": load_saelens_as_homebrew}


def cuts(n: int, seed: int = 0, extra: int = 4) -> list[int]:
    """Offsets to cut an ``n``-byte file at: the edges, the middle, and a few seeded ones."""
    rng = random.Random(seed)
    fixed = [0, 1, 4, 7, 8, 9, n // 3, n // 2, n - 2, n - 1]
    return sorted({o for o in fixed + [rng.randrange(n) for _ in range(extra)] if 0 <= o < n})


def flipped(raw: bytes, pos: int, mask: int = 0xFF) -> bytes:
    """``raw`` with the byte at ``pos`` XOR-ed with ``mask``."""
    out = bytearray(raw)
    out[pos] ^= mask
    return bytes(out)


def header_len(raw: bytes) -> int:
    """Bytes of a safetensors file before its tensor data (length prefix + JSON header)."""
    return 8 + int.from_bytes(raw[:8], "little")


def expect_error(kind, fn, path: Path):
    """``fn()`` raises ``kind`` (one of the library's errors) whose message and ``.path`` name
    ``path``."""
    with pytest.raises(kind) as err:
        fn()
    assert str(path) in str(err.value), str(err.value)
    assert Path(err.value.path) == path
    return err.value


def ours_or_fine(fn, path: Path) -> None:
    """``fn()`` either works or raises one of the library's errors naming ``path`` (a flipped
    byte inside a name or a number can leave a file valid)."""
    try:
        fn()
    except (DamagedFileError, MissingFileError) as exc:
        assert str(path) in str(exc)


# ---------------------------------------------------------------------------------------------
# SAE folders (SAELens format): cfg.json, sae_weights.safetensors, metrics.json, training_log.json


@pytest.fixture
def sae_dir(tmp_path) -> Path:
    torch.manual_seed(0)
    sae = TopKSAE(16, 32, k=4)
    return save_saelens(sae, tmp_path / "sae", hook_name=HOOK, model_name="tiny", scale=0.5)


def _edit_cfg(folder: Path, edit) -> None:
    cfg = json.loads((folder / "cfg.json").read_text())
    edit(cfg)
    (folder / "cfg.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("loader", LOADERS)
def test_cfg_json_cut_at_any_offset(sae_dir, loader):
    path = sae_dir / "cfg.json"
    raw = path.read_bytes().rstrip()
    for offset in cuts(len(raw)):
        path.write_bytes(raw[:offset])
        err = expect_error(DamagedFileError, lambda: LOADERS[loader](sae_dir), path)
        assert "empty" in str(err) or "not valid JSON" in str(err)
    path.write_bytes(raw)
    LOADERS[loader](sae_dir)  # whole again: loads


@pytest.mark.parametrize("loader", LOADERS)
def test_cfg_json_flipped_bytes(sae_dir, loader):
    path = sae_dir / "cfg.json"
    raw = path.read_bytes()
    rng = random.Random(1)
    for pos in [0, len(raw) - 2] + [rng.randrange(len(raw)) for _ in range(8)]:
        path.write_bytes(flipped(raw, pos))  # 0xFF: never UTF-8
        expect_error(DamagedFileError, lambda: LOADERS[loader](sae_dir), path)
        path.write_bytes(flipped(raw, pos, 0x01))  # one bit: may still be valid
        ours_or_fine(lambda: LOADERS[loader](sae_dir), path)


BAD_CFGS = {
    "d_in removed": (lambda c: c.pop("d_in"), "d_in"),
    "d_sae removed": (lambda c: c.pop("d_sae"), "d_sae"),
    "k removed": (lambda c: c.pop("k"), "'k'"),
    "d_in a string": (lambda c: c.update(d_in="16"), "d_in"),
    "d_sae negative": (lambda c: c.update(d_sae=-32), "d_sae"),
    "k zero": (lambda c: c.update(k=0), "k"),
    "k above d_sae": (lambda c: c.update(k=33), "k=33"),
    "architecture a number": (lambda c: c.update(architecture=5), "architecture"),
    "metadata a list": (lambda c: c.update(metadata=[]), "metadata"),
    "hook name a number": (lambda c: c["metadata"].update(hook_name=3), "hook_name"),
    "scale zero": (lambda c: c["metadata"].update(input_scale_folded=0), "input_scale_folded"),
}


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("case", BAD_CFGS)
def test_cfg_json_fields_removed_or_wrong(sae_dir, loader, case):
    edit, named = BAD_CFGS[case]
    _edit_cfg(sae_dir, edit)
    err = expect_error(DamagedFileError, lambda: LOADERS[loader](sae_dir), sae_dir / "cfg.json")
    assert named in str(err)


@pytest.mark.parametrize("loader", LOADERS)
def test_cfg_json_not_an_object_or_mismatching_the_weights(sae_dir, loader):
    cfg = sae_dir / "cfg.json"
    good = cfg.read_text()
    cfg.write_text("[1, 2, 3]")
    expect_error(DamagedFileError, lambda: LOADERS[loader](sae_dir), cfg)
    cfg.write_text(good.replace('"d_in": 16', '"d_in": 17'))  # cfg and weights disagree
    err = expect_error(
        DamagedFileError, lambda: LOADERS[loader](sae_dir), sae_dir / "sae_weights.safetensors"
    )
    assert "d_in=17" in str(err) and "cfg.json" in str(err)
    cfg.write_text(good.replace('"architecture": "topk"', '"architecture": "gated-ish"'))
    expect_error(DamagedFileError, lambda: LOADERS[loader](sae_dir), cfg)


@pytest.mark.parametrize("loader", LOADERS)
def test_weights_cut_at_any_offset(sae_dir, loader):
    path = sae_dir / "sae_weights.safetensors"
    raw = path.read_bytes()
    for offset in cuts(len(raw)) + [header_len(raw), header_len(raw) + 3]:
        path.write_bytes(raw[:offset])
        expect_error(DamagedFileError, lambda: LOADERS[loader](sae_dir), path)


@pytest.mark.parametrize("loader", LOADERS)
def test_weights_flipped_bytes(sae_dir, loader):
    """Flips in the tensor data are caught by the checksum save_saelens stores; flips in the
    header break it (or its checksum)."""
    path = sae_dir / "sae_weights.safetensors"
    raw = path.read_bytes()
    start = header_len(raw)
    rng = random.Random(2)
    for pos in [start, len(raw) - 1] + [rng.randrange(start, len(raw)) for _ in range(6)]:
        for mask in (0xFF, 0x01):
            path.write_bytes(flipped(raw, pos, mask))
            expect_error(DamagedFileError, lambda: LOADERS[loader](sae_dir), path)
    for pos in [0, 3, 8, start - 1] + [rng.randrange(8, start) for _ in range(6)]:
        path.write_bytes(flipped(raw, pos))
        ours_or_fine(lambda: LOADERS[loader](sae_dir), path)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "sae_weights.safetensors"))


BAD_WEIGHTS = {
    "W_enc transposed": (lambda w: w.update(W_enc=w["W_enc"].T.contiguous()), "W_enc"),
    "b_enc too short": (lambda w: w.update(b_enc=w["b_enc"][:-1].clone()), "b_enc"),
    "W_dec int32": (lambda w: w.update(W_dec=w["W_dec"].to(torch.int32)), "int32"),
    "b_dec removed": (lambda w: w.pop("b_dec"), "b_dec"),
    "an extra tensor": (lambda w: w.update(W_gate=torch.zeros(2)), "W_gate"),
    "a NaN": (lambda w: w["W_enc"].__setitem__((0, 0), float("nan")), "NaN"),
    "an inf": (lambda w: w["b_dec"].__setitem__(0, float("inf")), "inf"),
}


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("case", BAD_WEIGHTS)
def test_weights_wrong_shapes_dtypes_and_names(sae_dir, loader, case):
    edit, named = BAD_WEIGHTS[case]
    w = _weights(sae_dir)
    edit(w)
    save_file(w, str(sae_dir / "sae_weights.safetensors"))  # no checksum: the checks must see it
    path = sae_dir / "sae_weights.safetensors"
    err = expect_error(DamagedFileError, lambda: LOADERS[loader](sae_dir), path)
    assert named in str(err)


@pytest.mark.parametrize("loader", LOADERS)
def test_missing_files_and_folders(sae_dir, loader, tmp_path):
    (sae_dir / "sae_weights.safetensors").unlink()
    expect_error(
        MissingFileError, lambda: LOADERS[loader](sae_dir), sae_dir / "sae_weights.safetensors"
    )
    (sae_dir / "cfg.json").unlink()
    with pytest.raises(MissingFileError, match="cfg.json"):
        LOADERS[loader](sae_dir)
    with pytest.raises(FileNotFoundError, match="nowhere"):  # still a FileNotFoundError
        LOADERS[loader](tmp_path / "nowhere")


def test_a_saelens_saved_folder_is_checked_too(tmp_path):
    """A folder SAELens wrote itself (no checksum): cut or mismatched, it is refused by name."""
    folder = tmp_path / "lens"
    make_sae(16, 32, HOOK, k=4).save_model(folder)
    assert read_sae_folder(folder)[0]["d_sae"] == 32
    path = folder / "sae_weights.safetensors"
    raw = path.read_bytes()
    for offset in cuts(len(raw), seed=3):
        path.write_bytes(raw[:offset])
        expect_error(DamagedFileError, lambda: load_sae(folder), path)
    path.write_bytes(raw)
    load_sae(folder)


def test_homebrew_loader_reads_the_scale_from_a_checked_training_log(sae_dir):
    """Without ``input_scale_folded`` in cfg.json the scale comes from training_log.json, whose
    damage is reported by name."""
    _edit_cfg(sae_dir, lambda c: c["metadata"].pop("input_scale_folded"))
    assert load_saelens_as_homebrew(sae_dir)[1] == pytest.approx(0.5)
    log = sae_dir / "training_log.json"
    raw = log.read_bytes().rstrip()
    for offset in cuts(len(raw), seed=4):
        log.write_bytes(raw[:offset])
        expect_error(DamagedFileError, lambda: load_saelens_as_homebrew(sae_dir), log)
    log.write_text(json.dumps({"scale": "big"}))
    err = expect_error(DamagedFileError, lambda: load_saelens_as_homebrew(sae_dir), log)
    assert "scale" in str(err)


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch) -> Path:
    """One shipped SAE folder copied into a private SAE_ROOT."""
    release, sae_id = "smollm2-135m-res", "blocks.15.hook_resid_pre"
    src = ROOT / "interp_lib" / "saes" / release / sae_id
    dst = tmp_path / "saes" / release / sae_id
    shutil.copytree(src, dst)
    monkeypatch.setattr(zoo, "SAE_ROOT", tmp_path / "saes")
    return dst


def test_metrics_json_damage_names_the_file(shipped_copy, capsys):
    path = shipped_copy / "metrics.json"
    raw = path.read_bytes().rstrip()
    assert "| smollm2-135m-res | blocks.15.hook_resid_pre |" in zoo_report.zoo_table()
    for offset in cuts(len(raw), seed=5):
        path.write_bytes(raw[:offset])
        expect_error(
            DamagedFileError,
            lambda: zoo.recorded_metrics("smollm2-135m-res", "blocks.15.hook_resid_pre"),
            path,
        )
    for field, value in (("l0", None), ("fve", "high")):
        metrics = json.loads(raw)
        if value is None:
            metrics.pop(field)
        else:
            metrics[field] = value
        path.write_text(json.dumps(metrics))
        err = expect_error(DamagedFileError, zoo_report.zoo_table, path)
        assert field in str(err) or "not a number" in str(err)
    # the evaluation set's table: every kind read, a kind missing named as damage
    assert "| smollm2-135m-res | blocks.15.hook_resid_pre |" in zoo_report.zoo_kinds_table()
    metrics = json.loads(raw)
    metrics["by_kind"].pop("math")
    path.write_text(json.dumps(metrics))
    err = expect_error(DamagedFileError, zoo_report.zoo_kinds_table, path)
    assert "ce_recovered" in str(err)
    # the bar's table: a kind whose KL is not a number is damage, named
    assert "| blocks.15.hook_resid_pre |" in zoo_report.zoo_bar_table()
    metrics = json.loads(raw)
    metrics["by_kind"]["math"]["kl_div"] = "low"
    path.write_text(json.dumps(metrics))
    expect_error(DamagedFileError, zoo_report.zoo_bar_table, path)
    # the command line: one line, status 2
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SystemExit) as exit_:
        cli.main(["zoo"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err


def test_missing_shipped_sae_says_how_to_retrain(shipped_copy):
    shutil.rmtree(shipped_copy)
    with pytest.raises(MissingFileError, match="train-zoo --release smollm2-135m-res"):
        zoo.load_sae("smollm2-135m-res", "blocks.15.hook_resid_pre")


# ---------------------------------------------------------------------------------------------
# Model folders: the reader's own (refused by name) and the embedded model's cache (rebuilt)


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors"])
def test_damaged_model_folder_names_the_file(tiny_gpt2_dir, tmp_path, name):
    folder = tmp_path / "model"
    shutil.copytree(tiny_gpt2_dir, folder)
    path = folder / name
    raw = path.read_bytes()
    if name.endswith(".json"):
        raw = raw.rstrip()
    for offset in cuts(len(raw), seed=6, extra=2):
        path.write_bytes(raw[:offset])
        expect_error(DamagedFileError, lambda: models.load_model(str(folder)), path)
    path.unlink()
    if name == "config.json":
        expect_error(MissingFileError, lambda: models.load_model(str(folder)), path)


def test_model_snapshot_is_rebuilt_after_damage(tiny_gpt2, tmp_path):
    """The processed-weights snapshot is a derived cache: cut, changed or mismatched, it is not
    used."""
    snap = tmp_path / "snap"
    models._save_snapshot(tiny_gpt2, snap)
    assert models._load_snapshot(snap, tiny_gpt2.tokenizer) is not None
    for name in ("cfg.json", "model.safetensors"):
        raw = (snap / name).read_bytes()
        for offset in cuts(len(raw), seed=7, extra=2):
            (snap / name).write_bytes(raw[:offset])
            assert models._load_snapshot(snap, tiny_gpt2.tokenizer) is None, (name, offset)
        (snap / name).write_bytes(raw)
    raw = (snap / "model.safetensors").read_bytes()
    for pos in (header_len(raw), len(raw) // 2, len(raw) - 1):  # a byte of the weights changed
        (snap / "model.safetensors").write_bytes(flipped(raw, pos, 0x01))
        assert models._load_snapshot(snap, tiny_gpt2.tokenizer) is None, pos
    (snap / "model.safetensors").write_bytes(raw)
    assert models._load_snapshot(snap, tiny_gpt2.tokenizer) is not None
    weights = load_file(str(snap / "model.safetensors"))
    key = next(k for k in weights if k.endswith("W_Q"))
    save_file({**weights, key: weights[key][:1].contiguous()}, str(snap / "model.safetensors"))
    assert models._load_snapshot(snap, tiny_gpt2.tokenizer) is None  # wrong shape
    save_file({k: v for k, v in weights.items() if k != key}, str(snap / "model.safetensors"))
    assert models._load_snapshot(snap, tiny_gpt2.tokenizer) is None  # a weight missing


def test_embedded_model_cache_is_rebuilt(tiny_gpt2_dir, monkeypatch, tmp_path):
    """Damage to the converted embedded model or its snapshot: converted or snapshotted again, and
    the model loads with the same weights."""
    monkeypatch.setenv("INTERP_LIB_CACHE", str(tmp_path))
    conversions = []

    def fake_convert(name, target):  # the tiny GPT-2 stands in for the GGUF conversion
        conversions.append(name)
        with files.atomic_dir(target) as tmp:
            for f in tiny_gpt2_dir.iterdir():
                shutil.copy(f, tmp / f.name)
            (tmp / ".complete").write_text("test\n")
        return target

    monkeypatch.setattr(models, "_convert_gguf", fake_convert)
    first = models.load_model("smollm2-135m")
    folder = models.embedded_model_dir()
    snap = folder / f"transformer_lens-{models._tl_version()}"
    tokens = torch.tensor([[0, 3, 4, 5, 6]])
    with torch.no_grad():
        want = first(tokens)
    raw = (snap / "model.safetensors").read_bytes()
    for offset in (8, len(raw) // 2, len(raw) - 1):
        (snap / "model.safetensors").write_bytes(raw[:offset])
        again = models.load_model("smollm2-135m")
        with torch.no_grad():
            torch.testing.assert_close(again(tokens), want)
        assert (snap / "model.safetensors").stat().st_size == len(raw), "snapshot rewritten"
    config = (folder / "config.json").read_bytes()
    (folder / "config.json").write_bytes(config[: len(config) // 2])
    again = models.load_model("smollm2-135m")
    assert conversions == ["smollm2-135m", "smollm2-135m"]
    with torch.no_grad():
        torch.testing.assert_close(again(tokens), want)


# ---------------------------------------------------------------------------------------------
# Derived caches: activations and feature statistics are rebuilt, never used when damaged


def _docs():
    from interp_lib import data

    return [
        data.Document("the cat sat on the mat . " * 40, "test", "prose", f"d{i}") for i in range(6)
    ]


def test_activation_cache_is_rebuilt_after_any_damage(tiny_gpt2, monkeypatch, tmp_path):
    monkeypatch.setenv("INTERP_LIB_CACHE", str(tmp_path))
    monkeypatch.setattr(A, "corpus_split", lambda split, sources=None: _docs())
    calls = []
    real = A.harvest
    monkeypatch.setattr(A, "harvest", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(n_tokens=64, ctx_len=16, model=tiny_gpt2, progress=False)
    want = A.cached_activations("tiny", [HOOK], **kw)[HOOK]
    (path,) = (tmp_path / "activations").glob("*.safetensors")
    raw = path.read_bytes()
    rng = random.Random(8)
    damaged = [raw[:o] for o in cuts(len(raw), seed=8)]
    damaged += [flipped(raw, p) for p in [0, 8, header_len(raw)] + rng.sample(range(len(raw)), 6)]
    for i, bad in enumerate(damaged, start=2):
        path.write_bytes(bad)
        got = A.cached_activations("tiny", [HOOK], **kw)[HOOK]
        assert torch.equal(got, want)
        assert len(calls) == i, "the damaged file was used"
        assert A.load_activations(path) is not None, "the cache file is whole again"
    # a whole file made for another hook, put in this one's place: not used
    other = A.cached_activations("tiny", ["blocks.1.hook_resid_pre"], **kw)
    (other_path,) = [p for p in (tmp_path / "activations").glob("*.safetensors") if p != path]
    shutil.copy(other_path, path)
    n = len(calls)
    assert (
        torch.equal(A.cached_activations("tiny", [HOOK], **kw)[HOOK], want) and len(calls) == n + 1
    )
    assert not other["blocks.1.hook_resid_pre"].equal(want)


def test_feature_cache_is_rebuilt_after_any_damage(tiny_gpt2, tmp_path):
    from interp_lib import data

    texts = ["the cat sat on the mat . the dog sat on the cat .", "def x ( y ) : return x + 1"] * 8
    tokens = data.tokenize_corpus(tiny_gpt2.tokenizer, texts, ctx_len=16)
    src = fs.SAESource("smollm2-135m-res", "blocks.15.hook_resid_pre", make_sae(32, 48, HOOK, k=6))
    loads = []

    def model():
        loads.append(1)
        return tiny_gpt2

    first = fs.feature_data([src], tokens, model_id="tiny", model=model, cache=tmp_path)[src.slug]
    (path,) = tmp_path.glob("*.npz")
    raw = path.read_bytes()
    rng = random.Random(9)
    damaged = [raw[:o] for o in cuts(len(raw), seed=9, extra=3)]
    damaged += [flipped(raw, p) for p in rng.sample(range(len(raw)), 8)]
    for bad in damaged:
        path.write_bytes(bad)
        again = fs.feature_data([src], tokens, model_id="tiny", model=model, cache=tmp_path)[
            src.slug
        ]
        for name in (f for f in fs.FeatureData._fields if f != "hook"):
            np.testing.assert_array_equal(getattr(again, name), getattr(first, name), err_msg=name)
    assert len(loads) >= len(damaged) - 2  # a flip in a zip date field is harmless


# ---------------------------------------------------------------------------------------------
# Width and hook checks


def test_width_is_checked_against_every_hook_even_without_a_hook_name(tiny_gpt2):
    from interp_lib.model.encoding import encode_texts
    from interp_lib.model.hooks import check_widths

    nameless = make_sae(48, 64, HOOK)
    nameless.cfg.metadata.hook_name = None
    with pytest.raises(InvalidArgumentError, match=r"d_in=48 fits no hook.*d_model=32") as err:
        encode_texts(tiny_gpt2, nameless, ["the cat"])
    assert "hook_name" not in str(err.value)  # refused for its width, not for the missing name
    mlp = make_sae(128, 64, HOOK)
    mlp.cfg.metadata.hook_name = ""
    with pytest.raises(
        InvalidArgumentError, match=r"hook_name is empty.*blocks\.N\.mlp\.hook_post"
    ):
        check_widths(tiny_gpt2, mlp)
    assert (
        check_widths(tiny_gpt2, with_hook(mlp, "blocks.1.mlp.hook_post"))
        == "blocks.1.mlp.hook_post"
    )
    wrong = make_sae(32, 64, "blocks.0.mlp.hook_post")
    with pytest.raises(InvalidArgumentError, match=r"d_in=32 does not match.*128.*hook_resid_pre"):
        check_widths(tiny_gpt2, wrong)
    with pytest.raises(InvalidArgumentError, match="blocks.7.hook_resid_pre.*does not have"):
        check_widths(tiny_gpt2, make_sae(32, 64, "blocks.7.hook_resid_pre"))


@pytest.mark.slow
def test_a_hand_built_768_wide_saelens_sae_is_refused_for_its_width_on_smollm(smollm):
    from sae_lens import TopKSAE as LensTopK
    from sae_lens import TopKSAEConfig

    from interp_lib.model.encoding import encode_texts

    sae = LensTopK(TopKSAEConfig(d_in=768, d_sae=1024, k=8))  # no hook name, GPT-2's width
    with pytest.raises(InvalidArgumentError) as err:
        encode_texts(smollm, sae, ["The cat sat."])
    msg = str(err.value)
    assert "768" in msg and "576" in msg and "fits no hook" in msg and "hook_name" not in msg


# ---------------------------------------------------------------------------------------------
# The command line: a reader's mistake exits 2 with one line; a bug keeps its traceback


def _fake_activations(monkeypatch, d=16, rows=8192):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, d, generator=g) * 3 + 1

    def fake(model_name, hooks, *, n_tokens, split="train", ctx_len=128, **kw):
        return {hooks[0]: x[:n_tokens].half()}

    monkeypatch.setattr(A, "cached_activations", fake)


TRAIN = ["--hook", "blocks.1.hook_resid_pre", "--width", "64", "--k", "4", "--tokens", "4096"]
BAD_TRAIN = {
    "k above width": (["--k", "5000", "--width", "1152"], ["--k", "5000", "1152"]),
    "width zero": (["--width", "0"], ["--width", "0"]),
    "tokens below ctx": (["--tokens", "10"], ["--tokens", "10", "128"]),
    "val tokens below ctx": (["--val-tokens", "5"], ["--val-tokens", "5"]),
    "ctx len 1": (["--ctx-len", "1"], ["--ctx-len", "1"]),
    "epochs nan": (["--epochs", "nan"], ["--epochs", "nan"]),
    "lr negative": (["--lr", "-1"], ["--lr", "-1"]),
    "batch zero": (["--batch-size", "0"], ["--batch-size", "0"]),
    "l1 negative": (["--l1", "-2", "--arch", "relu"], ["--l1", "-2"]),
    "device unknown": (["--device", "tpu"], ["--device", "tpu", "cpu"]),
    "device missing": (["--device", "cuda:7"], ["--device", "cuda:7"]),
    "hook malformed": (["--hook", "resid"], ["--hook", "resid"]),
    "arch unknown": (["--arch", "gated"], ["--arch", "gated", "relu", "topk"]),
    "k not a number": (["--k", "many"], ["--k", "many"]),
}


@pytest.mark.parametrize("case", BAD_TRAIN)
def test_train_rejects_bad_arguments_in_one_line(case, tmp_path, capsys):
    extra, named = BAD_TRAIN[case]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", *TRAIN, "--out", str(tmp_path / "out"), *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("python -m interp_lib train: error: argument "), err
    assert all(word in last for word in named), last
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_train_refuses_an_output_that_is_not_an_sae_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("x")
    for out, words in ((tmp_path, ["notes.txt"]), (tmp_path / "file", ["file, not a folder"])):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["train", *TRAIN, "--out", str(out)])
        assert exit_.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert "argument --out" in last and all(w in last for w in words), last
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_train_unknown_hook_or_model_is_one_line(tmp_path, monkeypatch, capsys, tiny_gpt2_dir):
    monkeypatch.setenv("INTERP_LIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(A, "corpus_split", lambda split, sources=None: _docs())
    for extra, words in (
        (["--hook", "blocks.9.hook_resid_pre", "--model", str(tiny_gpt2_dir)], ["blocks.9"]),
        (["--model", "no-such-model"], ["no-such-model", "smollm2-135m"]),
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["train", *TRAIN, "--out", str(tmp_path / "o"), "--no-progress", *extra])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and all(w in err for w in words) and "Traceback" not in err


def test_eval_zoo_bench_and_train_zoo_reject_mistakes_in_one_line(sae_dir, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(sae_dir, damaged)
    (damaged / "cfg.json").write_text('{"d_in": 16,')
    cases = [
        (["eval", str(tmp_path / "nowhere")], ["nowhere", "does not exist"]),
        (["eval", str(damaged)], [str(damaged / "cfg.json"), "not valid JSON"]),
        (["eval", str(sae_dir), "--tokens", "5"], ["--tokens", "5", "128"]),
        (
            ["train-zoo", "--sae-id", "blocks.99.hook_resid_pre"],
            ["--sae-id", "blocks.99", "blocks.15"],
        ),
        (["train-zoo", "--release", "nope"], ["--release", "nope", "smollm2-135m-res"]),
        (["train-zoo", "--tokens", "3"], ["--tokens", "3", "128"]),
        (["train-zoo", "--device", "tpu"], ["--device", "tpu"]),
        (["bench", "--threads", "0"], ["--threads", "0"]),
        (["zoo", "--bogus"], ["--bogus"]),
    ]
    for argv, words in cases:
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2, argv
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"python -m interp_lib {argv[0]}: error: "), err
        assert all(w in last for w in words), (argv, last)
        assert "Traceback" not in err
    assert cli.main(["no-such-command"]) == 2
    assert "valid commands: train, eval, bench, train-zoo, zoo" in capsys.readouterr().err


def test_eval_with_an_sae_of_the_wrong_width_is_one_line(
    tiny_gpt2_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(A, "corpus_split", lambda split, sources=None: _docs())
    folder = save_saelens(
        ReluSAE(48, 64), tmp_path / "wide", hook_name=HOOK, model_name="x", scale=1.0
    )
    with pytest.raises(SystemExit) as exit_:
        cli.main(["eval", str(folder), "--model", str(tiny_gpt2_dir), "--tokens", "128"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "d_in=48" in err and "32" in err


def test_an_internal_error_keeps_its_traceback(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not a reader's mistake")

    monkeypatch.setattr(cli, "train_zoo", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["train-zoo", "--release", "smollm2-135m-mlp", "--out", "/nonexistent"])


def test_train_cli_error_has_no_traceback_in_a_fresh_process(tmp_path):
    """As a reader runs it: ``python -m interp_lib train --k 5000 --width 1152``."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "interp_lib",
            "train",
            "--hook",
            "blocks.5.hook_resid_pre",
            "--tokens",
            "4096",
            "--k",
            "5000",
            "--width",
            "1152",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "python -m interp_lib train: error: argument --k: invalid value 5000 "
        "(from 1 to --width 1152 for a topk SAE)"
    )


# ---------------------------------------------------------------------------------------------
# Interrupted and concurrent work


def test_ctrl_c_during_train_saves_the_partial_sae_completely(
    tmp_path, monkeypatch, capsys, request
):
    """The first Ctrl-C stops training after the current step; the SAE so far is saved whole and
    the command says so (status 130). A second Ctrl-C quits without touching the output."""
    import interp_lib.training.cli as train_module

    # Ctrl-C as in a terminal, even when the tests run as a background job (which ignores SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    _fake_activations(monkeypatch)
    real = train_module.train_sae
    ctrl_c_at: set[int] = set()

    def with_ctrl_c(*args, **kwargs):
        def callback(row):
            if row["step"] in ctrl_c_at:
                signal.raise_signal(signal.SIGINT)

        return real(*args, callback=callback, **{**kwargs, "progress": False})

    monkeypatch.setattr(train_module, "train_sae", with_ctrl_c)
    out = tmp_path / "partial"
    argv = ["train", *TRAIN, "--batch-size", "256", "--epochs", "4", "--val-tokens", "0"]
    ctrl_c_at.update({6})
    assert cli.main([*argv, "--out", str(out), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "Ctrl-C" in err and "interrupted: the SAE saved (complete)" in err
    read_sae_folder(out)
    log = json.loads((out / "training_log.json").read_text())
    assert log["metrics"]["stopped_at_step"] == 7 and log["metrics"]["planned_steps"] == 64
    assert load_sae(out).cfg.d_sae == 64
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handler restored"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    ctrl_c_at.update({7})  # twice: quit at once, nothing saved
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--out", str(out), "--no-progress", "--seed", "1"])
    assert exit_.value.code == 130
    assert "Traceback" not in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["partial"]


def test_train_sae_stop_ends_training_early():
    from interp_lib.training.trainer import TrainConfig, train_sae

    x = torch.randn(2048, 8)
    cfg = TrainConfig(arch="topk", d_sae=16, k=2, batch_size=128, epochs=2, seed=0)
    full = train_sae(x, cfg, progress=False)
    assert "stopped_at_step" not in full.metrics and full.history[-1]["step"] == 32
    part = train_sae(x, cfg, progress=False, stop=lambda: True)
    assert part.metrics["stopped_at_step"] == 1 and part.history[-1]["step"] == 1
    assert part.metrics["train_tokens"] == 128


def test_concurrent_writers_never_leave_a_mixed_or_half_written_output(tmp_path):
    """Threads saving different SAEs to one folder, and activations to one file, at once: the
    result is always one of them, whole."""
    saes = [TopKSAE(8, 16 * (i + 1), k=2) for i in range(3)]
    out, act_path = tmp_path / "sae", tmp_path / "acts.safetensors"
    tensors = [torch.full((20, 4), float(i)).half() for i in range(3)]
    errors = []

    def writer(i):
        try:
            for _ in range(15):
                save_saelens(saes[i], out, hook_name=HOOK, model_name="m", scale=1.0)
                A.save_activations(act_path, tensors[i], {"hook": "h"})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    cfg, _ = read_sae_folder(out)
    assert cfg["d_sae"] in (16, 32, 48)
    assert any(torch.equal(A.load_activations(act_path), t) for t in tensors)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts.safetensors", "sae"], "no leftovers"


# Kill-at-random: real processes, killed by SIGINT, SIGTERM or SIGKILL at seeded moments.

TRAIN_SCRIPT = """
import signal, sys, torch
# Ctrl-C as in a terminal, even when the tests run as a background job (which ignores SIGINT)
signal.signal(signal.SIGINT, signal.default_int_handler)
import interp_lib.model.activations as A
from interp_lib.training.cli import main_train  # what `python -m interp_lib train` runs (quicker import)
g = torch.Generator().manual_seed(0)
x = torch.randn(4096, 16, generator=g) * 3 + 1
A.cached_activations = lambda m, hooks, *, n_tokens, split="train", **kw: {hooks[0]: x[:n_tokens]}
argv = ["--hook", "blocks.1.hook_resid_pre", "--width", "64", "--k", "4",
        "--tokens", "4096", "--val-tokens", "0", "--batch-size", "256", "--epochs", "8",
        "--no-progress", "--out", sys.argv[1], "--seed", sys.argv[2]]
print("ready", flush=True)
while True:
    try:
        rc = main_train(argv)
    except KeyboardInterrupt:  # between two runs: as `python -m interp_lib` does
        sys.exit(130)
    if rc:
        sys.exit(rc)
"""

HARVEST_SCRIPT = """
import signal, sys, torch
# Ctrl-C as in a terminal, even when the tests run as a background job (which ignores SIGINT)
signal.signal(signal.SIGINT, signal.default_int_handler)
from types import SimpleNamespace
import interp_lib.model.activations as A
from interp_lib import data

class FakeModel:  # stands in for a HookedTransformer: the cache and harvest code are the real ones
    cfg = SimpleNamespace(d_model=64, d_mlp=256, n_heads=4, d_head=16, n_ctx=64, device="cpu")
    hook_dict = {f"blocks.{i}.hook_resid_pre": None for i in range(3)}

    def run_with_cache(self, batch, names_filter, stop_at_layer):
        g = torch.Generator().manual_seed(1)
        emb = torch.randn(50, 64, generator=g)[batch]
        for _ in range(20):  # some work, so that kills land inside harvests too
            emb = torch.tanh(emb @ torch.eye(64) * 1.01)
        return emb, {h: emb * (i + 1) for i, h in enumerate(names_filter)}

DOCS = [data.Document("x " * 50, "test", "prose", "d0")]
A.corpus_split = lambda split, sources=None: DOCS
A.corpus_tokens = lambda model, split, n_tokens, ctx_len=128, sources=None: (
    torch.arange(n_tokens).remainder(50).view(-1, ctx_len))
HOOKS = ["blocks.0.hook_resid_pre", "blocks.2.hook_resid_pre"]

def run(n_tokens):
    return A.cached_activations("fake", HOOKS, n_tokens=n_tokens, ctx_len=16, model=FakeModel(),
                                progress=False)

if __name__ == "__main__":
    A.load_activations = lambda path, expect=None: None  # write every time
    print("ready", flush=True)
    i = 0
    while True:
        run(16 * 64 * (1 + i % 3))
        i += 1
"""


def _start(script: Path, *args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _kill_later(proc: subprocess.Popen, sig: int, delay: float) -> None:
    """Wait for the process to say ``ready``, then send ``sig`` after ``delay`` seconds."""
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    time.sleep(delay)
    proc.send_signal(sig)


def _run_and_kill(procs_and_kills) -> list[tuple[int, str]]:
    threads = [threading.Thread(target=_kill_later, args=pk) for pk in procs_and_kills]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = []
    try:
        for proc, *_ in procs_and_kills:
            _, err = proc.communicate(timeout=60)
            out.append((proc.returncode, err))
    finally:  # a child that outlived its signal must not run on after the test
        for proc, *_ in procs_and_kills:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out


def _env(tmp_path: Path) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "INTERP_LIB_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }


def test_training_killed_at_random_leaves_the_output_complete_or_absent(tmp_path, monkeypatch):
    """Three trainers write one --out at once; each is killed at a seeded moment by SIGINT,
    SIGTERM or SIGKILL. The folder is whole or absent, and the next run proceeds."""
    script = tmp_path / "train_loop.py"
    script.write_text(TRAIN_SCRIPT)
    out = tmp_path / "runs" / "sae"
    rng = random.Random(10)
    kills = [
        (signal.SIGINT, rng.uniform(0.2, 2.5)),
        (signal.SIGTERM, rng.uniform(0.2, 2.5)),
        (signal.SIGKILL, rng.uniform(0.2, 2.5)),
    ]
    procs = [
        (_start(script, str(out), str(i), env=_env(tmp_path)), sig, delay)
        for i, (sig, delay) in enumerate(kills)
    ]
    results = _run_and_kill(procs)
    (rc_int, err_int), (rc_term, err_term), (rc_kill, _) = results
    assert rc_int == 130 and "Traceback" not in err_int, err_int
    assert "interrupted" in err_int
    assert rc_term in (143, -signal.SIGTERM) and "Traceback" not in err_term, err_term
    assert rc_kill == -signal.SIGKILL
    if out.exists():  # complete, or absent
        read_sae_folder(out)
        load_sae(out)
        json.loads((out / "training_log.json").read_text())
    # the next run proceeds and leaves nothing behind (a killed run's temporaries are swept)
    _fake_activations(monkeypatch)
    argv = ["train", *TRAIN, "--batch-size", "256", "--val-tokens", "0", "--no-progress"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    assert read_sae_folder(out)[0]["d_sae"] == 64
    assert [p.name for p in out.parent.iterdir()] == ["sae"]


def test_harvest_killed_at_random_leaves_every_cache_file_whole(tmp_path, monkeypatch):
    """Three harvesters write the same activation cache at once; each is killed at a seeded
    moment by SIGINT, SIGTERM or SIGKILL. Every cache file left is whole and right, and the next
    run proceeds and cleans up."""
    script = tmp_path / "harvest_loop.py"
    script.write_text(HARVEST_SCRIPT)
    rng = random.Random(11)
    signals = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
    _run_and_kill(
        [(_start(script, env=_env(tmp_path)), sig, rng.uniform(0.1, 1.5)) for sig in signals]
    )
    # in this process: the same fake model (the script sets its stand-ins on the module, so
    # monkeypatch first records the real ones to put back), the real cache
    monkeypatch.setattr(A, "corpus_split", A.corpus_split)
    monkeypatch.setattr(A, "corpus_tokens", A.corpus_tokens)
    namespace: dict = {"__name__": "harvest_loop"}
    exec(compile(HARVEST_SCRIPT, "harvest_loop.py", "exec"), namespace)
    monkeypatch.setenv("INTERP_LIB_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "activations"
    written = sorted(folder.glob("*.safetensors"))
    assert written, "the harvesters wrote nothing before they were killed"
    left = {path: A.load_activations(path) for path in written}
    assert all(acts is not None for acts in left.values()), "a cache file is damaged"
    real_load = A.load_activations
    monkeypatch.setattr(A, "load_activations", lambda path, expect=None: None)  # write again
    fresh = {n: namespace["run"](n) for n in (1024, 2048, 3072)}
    monkeypatch.setattr(A, "load_activations", real_load)
    for acts in left.values():  # whatever the killed processes left is what a harvest gives
        assert any(torch.equal(acts, f[h]) for f in fresh.values() for h in f)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "temporaries swept"


def _fake_jupyter_book(staging: Path, rc: int, stopped: type[BaseException] | None = None):
    """A stand-in for jupyter-book's process: writes a new page into the staged site, then
    fails with ``rc``, or is interrupted by ``stopped`` half-way through."""

    class Proc:
        def __init__(self, cmd, **kwargs):
            assert cmd[cmd.index("--path-output") + 1] == str(staging)
            site = staging / "_build" / "html"
            site.mkdir(parents=True, exist_ok=True)
            (site / "index.html").write_text("<html>new</html>")
            if stopped is not None:
                raise stopped()
            (site / "chapter.html").write_text("<html>new chapter</html>")
            self.stdout = iter([])

        def wait(self):
            return rc

    return Proc


@pytest.mark.parametrize("rc, stopped", [(1, None), (0, KeyboardInterrupt)])
def test_a_failed_or_interrupted_book_build_leaves_the_previous_site(
    tmp_path, monkeypatch, rc, stopped
):
    """The site in _build/html is swapped in whole after a good build: a build that fails or is
    stopped half-way leaves the previous site as it was."""
    sys.path.insert(0, str(ROOT / ".ci"))
    import book as ci_book

    html, staging = tmp_path / "html", tmp_path / ".staging"
    html.mkdir()
    (html / "index.html").write_text("<html>old</html>")
    for name, value in {
        "BUILD": tmp_path,
        "HTML": html,
        "STAGING": staging,
        "LOGS": tmp_path / "logs",
        "FINGERPRINT": tmp_path / "fp",
        "ROOT": tmp_path,
    }.items():
        monkeypatch.setattr(ci_book, name, value)
    monkeypatch.setattr(ci_book, "cache_is_stale", lambda fp: False)
    monkeypatch.setattr(ci_book.subprocess, "Popen", _fake_jupyter_book(staging, rc, stopped))
    args = SimpleNamespace(expect_cached=False)
    if stopped is None:
        assert ci_book.cmd_build(args) == rc
    else:
        with pytest.raises(stopped):
            ci_book.cmd_build(args)
    assert sorted(p.name for p in html.iterdir()) == ["index.html"]
    assert (html / "index.html").read_text() == "<html>old</html>"
    monkeypatch.setattr(ci_book.subprocess, "Popen", _fake_jupyter_book(staging, 0))
    assert ci_book.cmd_build(args) == 0
    assert (html / "chapter.html").read_text() == "<html>new chapter</html>"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".html")]


TRAIN_ZOO_SCRIPT = """
import signal, sys, torch
# Ctrl-C as in a terminal, even when the tests run as a background job (which ignores SIGINT)
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from interp_lib.training import zoo as Z

def fake_activations(model_name, hooks, *, n_tokens, **kw):  # the harvest is tested above
    g = torch.Generator().manual_seed(0)
    return {h: torch.randn(n_tokens, 16, generator=g) * 3 + 1 for h in hooks}

Z.load_model = lambda name: None
Z.cached_activations = fake_activations
Z.heldout_record = lambda sae, model, **kw: {"fve": 0.5}
RECIPE = {"d_sae": 64, "k": 4, "train_tokens": 4096, "epochs": 8.0, "batch_size": 256,
          "by_sae": {}}

if __name__ == "__main__":
    print("ready", flush=True)
    while True:
        Z.train_zoo(["smollm2-135m-res"], recipe=RECIPE, out_root=Path(sys.argv[1]),
                    progress=False)
"""


def test_train_zoo_killed_at_random_leaves_every_sae_whole(tmp_path, monkeypatch):
    """Three zoo retrains write the same release at once; each is killed at a seeded moment by
    SIGINT, SIGTERM or SIGKILL. Every SAE folder left holds weights and record together, and the
    next retrain proceeds and leaves no temporaries."""
    script = tmp_path / "zoo_loop.py"
    script.write_text(TRAIN_ZOO_SCRIPT)
    root = tmp_path / "zoo"
    rng = random.Random(12)
    signals = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
    _run_and_kill(
        [
            (_start(script, str(root), env=_env(tmp_path)), sig, rng.uniform(0.5, 3.0))
            for sig in signals
        ]
    )
    release = root / "smollm2-135m-res"
    left = sorted(release.iterdir()) if release.exists() else []
    for folder in (p for p in left if not p.name.startswith(".")):
        read_sae_folder(folder)
        assert json.loads((folder / "metrics.json").read_text())["fve"] == 0.5
    # in this process the script's stand-ins go onto the module: record the real ones first
    for name in ("load_model", "cached_activations", "heldout_record"):
        monkeypatch.setattr(train_zoo, name, getattr(train_zoo, name))
    namespace: dict = {"__name__": "zoo_loop"}
    exec(compile(TRAIN_ZOO_SCRIPT, "zoo_loop.py", "exec"), namespace)
    Z = namespace["Z"]
    rows = Z.train_zoo(
        ["smollm2-135m-res"], recipe=namespace["RECIPE"], out_root=root, progress=False
    )
    assert len(rows) == len(zoo.RELEASES["smollm2-135m-res"].sae_ids)
    assert sorted(p.name for p in release.iterdir()) == sorted(
        zoo.RELEASES["smollm2-135m-res"].sae_ids
    ), "temporaries swept"
    for sae_id in zoo.RELEASES["smollm2-135m-res"].sae_ids:
        assert read_sae_folder(release / sae_id)[0]["d_sae"] == 64
