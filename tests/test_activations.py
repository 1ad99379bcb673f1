"""interp_lib.model.activations: one-pass harvest, BOS dropped, an atomic and validated disk cache."""

from __future__ import annotations

import pytest
import torch

from interp_lib.model import activations as A


def _tokens(model, n=3, ctx=8):
    torch.manual_seed(0)
    toks = torch.randint(2, model.cfg.d_vocab, (n, ctx))
    toks[:, 0] = model.tokenizer.bos_token_id
    return toks


def test_harvest_matches_run_with_cache(tiny_gpt2):
    toks = _tokens(tiny_gpt2)
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.0.hook_mlp_out"]
    got = A.harvest(tiny_gpt2, hooks, toks, batch_size=2, dtype=torch.float32, progress=False)
    _, cache = tiny_gpt2.run_with_cache(toks)
    for h in hooks:
        want = cache[h][:, 1:].reshape(-1, cache[h].shape[-1])
        assert got[h].shape == want.shape == (3 * 7, 32)
        assert torch.allclose(got[h], want, atol=1e-5), h


def test_harvest_stops_early(tiny_gpt2):
    assert A.stop_layer(["blocks.0.hook_resid_pre"]) == 1
    assert A.stop_layer(["blocks.0.hook_mlp_out", "blocks.1.hook_resid_pre"]) == 2


def test_harvest_rejects_bad_hooks(tiny_gpt2):
    with pytest.raises(ValueError, match="Unknown hook"):
        A.harvest(tiny_gpt2, ["blocks.9.hook_resid_pre"], _tokens(tiny_gpt2), progress=False)
    with pytest.raises(ValueError):
        A.harvest(tiny_gpt2, [], _tokens(tiny_gpt2), progress=False)
    with pytest.raises(ValueError, match="shape"):
        A.harvest(tiny_gpt2, ["blocks.0.hook_resid_pre"], torch.zeros(5, dtype=torch.long), progress=False)


def test_cache_round_trip_and_corruption(tmp_path):
    acts = torch.randn(50, 16).half()
    path = tmp_path / "a.safetensors"
    A.save_activations(path, acts, {"hook": "h"})
    assert torch.equal(A.load_activations(path), acts)
    assert not list(tmp_path.glob(".*")), "no temp file left behind"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    assert A.load_activations(path) is None
    corrupt = bytearray(data)
    corrupt[-10] ^= 0xFF  # a flipped byte in the tensor data
    path.write_bytes(bytes(corrupt))
    assert A.load_activations(path) is None
    assert A.load_activations(tmp_path / "missing.safetensors") is None


def test_cached_activations_harvests_once_then_reuses(tiny_gpt2, monkeypatch, tmp_path):
    from interp_lib import data

    monkeypatch.setenv("INTERP_LIB_CACHE", str(tmp_path))
    docs = [data.Document("the cat sat on the mat . " * 40, "test", "prose", f"d{i}") for i in range(6)]
    monkeypatch.setattr(A, "corpus_split", lambda split, sources=None: docs)
    calls = []
    real = A.harvest
    monkeypatch.setattr(A, "harvest", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(n_tokens=64, ctx_len=16, model=tiny_gpt2, progress=False)
    first = A.cached_activations("tiny", ["blocks.1.hook_resid_pre"], **kw)
    second = A.cached_activations("tiny", ["blocks.1.hook_resid_pre"], **kw)
    assert len(calls) == 1
    assert first["blocks.1.hook_resid_pre"].shape == (4 * 15, 32)
    assert torch.equal(first["blocks.1.hook_resid_pre"], second["blocks.1.hook_resid_pre"])
    # a corrupted cache file is rebuilt, not used
    (path,) = (tmp_path / "activations").glob("*.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    third = A.cached_activations("tiny", ["blocks.1.hook_resid_pre"], **kw)
    assert len(calls) == 2 and torch.equal(third["blocks.1.hook_resid_pre"], first["blocks.1.hook_resid_pre"])
    with pytest.raises(ValueError):
        A.cached_activations("tiny", ["blocks.1.hook_resid_pre"], split="test", **kw)
    # the tokens behind those activations: same rows, and the activations are those of these tokens
    tokens = A.corpus_tokens(tiny_gpt2, "train", 64, 16)
    assert tokens.shape == (4, 16)
    again = A.harvest(tiny_gpt2, ["blocks.1.hook_resid_pre"], tokens, progress=False)["blocks.1.hook_resid_pre"]
    torch.testing.assert_close(again.float(), first["blocks.1.hook_resid_pre"].float(), atol=1e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="'train' or 'heldout'"):
        A.corpus_tokens(tiny_gpt2, "test", 64, 16)
