"""The model for the reader's browser (interp_lib.site.browser_model) and the live pages' files
(interp_lib.site.live_site): the graph's forward pass against TransformerLens, its cache and steering
input, the checked ONNX export, and clear errors for damaged exports and missing npm files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from interp_lib.errors import DamagedFileError, InvalidArgumentError, MissingFileError
from interp_lib.site import browser_model as bm

from .conftest import make_tiny_tokenizer

HOOKS = ["blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out", "blocks.2.hook_resid_pre"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A 3-layer Llama with grouped-query attention, saved as a Hugging Face folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    # no "llama" in the path: TransformerLens would take the config from the name
    folder = tmp_path_factory.mktemp("tiny-gqa")
    tok = make_tiny_tokenizer(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=64, tie_word_embeddings=True,
                      bos_token_id=0, eos_token_id=0, rope_theta=10000.0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llama(tiny_folder):
    """The tiny Llama's TransformerLens model and the browser graph's module built from the same
    weights."""
    from interp_lib import load_model

    model = load_model(str(tiny_folder))
    module, _ = bm.load_browser_llama(tiny_folder, HOOKS)
    return model, module


def _run(module, ids, past=None, steer=None):
    past = module.empty_cache() if past is None else past
    steer = torch.zeros(module.n_layers, module.embed.shape[1]) if steer is None else steer
    with torch.no_grad():
        out = module(torch.tensor([ids]), *past, steer)
    return dict(zip(bm.output_names(module.hooks), out))


def test_forward_matches_transformer_lens(tiny_llama):
    model, module = tiny_llama
    tokens = model.to_tokens("the cat sat on the mat . def return x")
    got = _run(module, tokens[0].tolist())
    with torch.inference_mode():
        logits, cache = model.run_with_cache(tokens, names_filter=HOOKS)
    for hook in HOOKS:  # fp16 weights, fp32 arithmetic
        err = (got[hook] - cache[hook][0]).norm(dim=-1) / cache[hook][0].norm(dim=-1)
        assert float(err.max()) < 5e-3, hook
    centred = got["logits"] - got["logits"].mean()  # TransformerLens centres the unembedding
    assert torch.allclose(centred, logits[0, -1], atol=5e-3 * float(logits.abs().max()))


def test_steer_input_adds_after_bos_like_add_at_positions(tiny_llama):
    from interp_lib.interventions.steering import add_at_positions

    model, module = tiny_llama
    tokens = model.to_tokens("the dog sat on a mat")
    vector = torch.randn(32) * 3
    steer = torch.zeros(module.n_layers, 32)
    steer[1] = vector
    got = _run(module, tokens[0].tolist(), steer=steer)
    plain = _run(module, tokens[0].tolist())
    with torch.inference_mode(), model.hooks(fwd_hooks=add_at_positions(HOOKS[0], vector)):
        _, cache = model.run_with_cache(tokens, names_filter=HOOKS)
    ref = cache["blocks.2.hook_resid_pre"][0]
    err = (got["blocks.2.hook_resid_pre"] - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert float(err.max()) < 5e-3
    # BOS is never steered; every later position is
    assert torch.equal(got[HOOKS[0]][0], plain[HOOKS[0]][0])
    assert torch.allclose(got[HOOKS[0]][1:] - plain[HOOKS[0]][1:], vector.expand(len(ref) - 1, 32),
                          atol=1e-4)


def test_cache_one_token_at_a_time_equals_the_whole_text(tiny_llama):
    model, module = tiny_llama
    ids = model.to_tokens("the cat sat on the mat . hello world")[0].tolist()
    steer = torch.zeros(module.n_layers, 32)
    steer[2] = torch.randn(32)
    whole = _run(module, ids, steer=steer)
    out = _run(module, ids[:3], steer=steer)
    acts = [out[HOOKS[1]]]
    for token in ids[3:]:
        out = _run(module, [token], (out["present_keys"], out["present_values"]), steer)
        acts.append(out[HOOKS[1]])
    assert out["present_keys"].shape[2] == len(ids) + 1  # the placeholder slot, then every token
    assert torch.allclose(torch.cat(acts), whole[HOOKS[1]], atol=1e-4)
    assert torch.allclose(out["logits"], whole["logits"], atol=1e-4)


def test_unknown_model_is_refused_naming_the_choices():
    with pytest.raises(InvalidArgumentError, match="smollm2-135m"):
        bm.browser_model_dir("gpt2-small")


def _fake_export(folder: Path) -> Path:
    folder.mkdir()
    for name in (bm.GRAPH, bm.LENS_GRAPH, "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_text("{}")
    (folder / "weights-0.bin").write_bytes(b"\0" * 100)
    (folder / "lens-weights-0.bin").write_bytes(b"\0" * 10)
    manifest = {"format": bm.FORMAT_VERSION, "graph": bm.GRAPH,
                "weights": [{"path": "weights-0.bin", "bytes": 100}],
                "lens": {"graph": bm.LENS_GRAPH, "weights": [
                    {"path": "weights-0.bin", "bytes": 100},
                    {"path": "lens-weights-0.bin", "bytes": 10}]}}
    (folder / bm.MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_damaged_export_is_named(tmp_path):
    folder = _fake_export(tmp_path / "export")
    assert bm.read_browser_manifest(folder)["weights"][0]["bytes"] == 100
    (folder / "lens-weights-0.bin").unlink()  # a file only the lens reads
    with pytest.raises(MissingFileError, match="lens-weights-0.bin"):
        bm.read_browser_manifest(folder)
    (folder / "lens-weights-0.bin").write_bytes(b"\0" * 10)
    (folder / bm.LENS_GRAPH).unlink()
    with pytest.raises(MissingFileError, match="lens.onnx"):
        bm.read_browser_manifest(folder)
    (folder / bm.LENS_GRAPH).write_text("{}")
    (folder / "weights-0.bin").write_bytes(b"\0" * 60)  # cut short
    with pytest.raises(DamagedFileError, match="weights-0.bin: has 60 bytes"):
        bm.read_browser_manifest(folder)
    (folder / "weights-0.bin").unlink()
    with pytest.raises(MissingFileError, match="weights-0.bin"):
        bm.read_browser_manifest(folder)
    (folder / bm.MANIFEST).write_text("{")
    with pytest.raises(DamagedFileError, match="manifest.json"):
        bm.read_browser_manifest(folder)


def test_live_site_without_npm_packages_says_what_to_do(tmp_path):
    from interp_lib.site.live_site import write_live_site

    with pytest.raises(MissingFileError, match="npm ci"):
        write_live_site(tmp_path / "html", tmp_path / "node_modules")
    assert not (tmp_path / "html" / "lens.html").exists()


@pytest.mark.slow
def test_export_agrees_with_transformer_lens_and_generates_as_generate_steered(smollm):
    """The cached export (made and checked on first use, about 3 min on 2 cores), run by
    onnxruntime: activations on a text it was not checked on, and a steered greedy generation."""
    from interp_lib import load_sae
    from interp_lib.interventions.steering import generate_steered, steering_vector, typical_norm

    folder = bm.browser_model_dir()
    report = json.loads((folder / bm.CHECK).read_text())
    assert max(report["max_relative_error"].values()) < bm.MAX_RELATIVE_ERROR
    assert all(p.stat().st_size <= bm.CHUNK_BYTES for p in folder.glob("weights-*.bin"))
    session = bm.BrowserSession(folder)
    text = "Quarterly revenue rose 12% to $4.1 billion, the company said on Tuesday."
    tokens = smollm.to_tokens(text)
    with torch.inference_mode():
        _, cache = smollm.run_with_cache(tokens, names_filter=bm.shipped_hooks())
    got = session.run(tokens[0].tolist())
    lens = session.lens(tokens[0].tolist())
    for hook in bm.shipped_hooks():
        ref = cache[hook][0].numpy()
        for graph in (got, lens):
            err = np.linalg.norm(graph[hook] - ref, axis=-1) / np.linalg.norm(ref, axis=-1)
            assert err.max() < bm.MAX_RELATIVE_ERROR, hook
    assert report["lens_max_relative_error"] < bm.MAX_RELATIVE_ERROR
    manifest = session.manifest
    assert manifest["lens"]["n_layers"] == 25  # blocks.25.hook_resid_pre is the deepest hook
    lens_bytes = sum(w["bytes"] for w in manifest["lens"]["weights"])
    assert lens_bytes < sum(w["bytes"] for w in manifest["weights"]) - 30e6  # 5 blocks skipped
    sae = load_sae("smollm2-135m-res", "blocks.15.hook_resid_pre")
    ref_norm = typical_norm(smollm, sae)
    prompt = "The weather today is"
    steer = np.zeros((30, 576), np.float32)
    steer[15] = steering_vector(sae, 1000, 0.8, ref_norm=ref_norm).numpy()
    ids = session.generate(tokens[0, :1].tolist() + smollm.to_tokens(prompt)[0, 1:].tolist(), 16,
                           steer)
    want = generate_steered(smollm, sae, 1000, 0.8, prompt, max_new_tokens=16, ref_norm=ref_norm)
    assert smollm.tokenizer.decode(ids) == want
    plain = session.generate(smollm.to_tokens(prompt)[0].tolist(), 16)
    assert smollm.tokenizer.decode(plain) != want  # the steering input did something


def test_book_build_without_node_leaves_the_live_pages_out(tmp_path):
    """book/_ext/interp_book.py: with no node_modules the build goes on without lens.html."""
    import importlib.util
    from types import SimpleNamespace

    ext = Path(__file__).resolve().parent.parent / "book" / "_ext" / "interp_book.py"
    spec = importlib.util.spec_from_file_location("interp_book_ext", ext)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "html").mkdir()
    app = SimpleNamespace(builder=SimpleNamespace(format="html"), srcdir=str(tmp_path),
                          outdir=str(tmp_path / "html"))
    module._live_pages(app, None)  # no exception: the rest of the site stands
    assert not (tmp_path / "html" / "lens.html").exists()


def test_lens_layers_counts_the_blocks_each_hook_needs():
    assert bm.lens_layers(["blocks.5.hook_resid_pre", "blocks.25.hook_resid_pre"]) == 25
    assert bm.lens_layers(["blocks.15.hook_mlp_out", "blocks.5.hook_resid_pre"]) == 16
    with pytest.raises(InvalidArgumentError, match="hook_attn_out"):
        bm.lens_layers(["blocks.3.hook_attn_out"])


def test_lens_graph_equals_the_full_graph_without_its_last_blocks(tiny_llama, tiny_folder):
    """BrowserLens runs 2 of the 3 blocks and gives the full graph's activations at every hook."""
    _, module = tiny_llama
    lens = bm.load_browser_lens(tiny_folder, HOOKS)
    assert lens.n_run == 2 and not hasattr(lens, "wq2")
    ids = [0, 5, 3, 7, 2, 9, 4]
    full = _run(module, ids)
    with torch.no_grad():
        got = dict(zip(HOOKS, lens(torch.tensor([ids]))))
    for hook in HOOKS:
        assert torch.allclose(got[hook], full[hook], atol=1e-5), hook


def test_export_shares_weight_files_and_the_lens_skips_the_blocks_it_does_not_run(
    tiny_llama, tiny_folder, tmp_path
):
    """Both graphs read one set of weight files; the last block's weights sit in a file of
    their own that the lens does not name; onnxruntime runs both as PyTorch does."""
    import onnxruntime as ort

    model, module = tiny_llama
    bm.export_onnx(tiny_folder, tmp_path, HOOKS)
    manifest = json.loads((tmp_path / bm.MANIFEST).read_text())
    full_files = [w["path"] for w in manifest["weights"]]
    lens_files = [w["path"] for w in manifest["lens"]["weights"]]
    assert set(lens_files) < set(full_files)  # shared, and fewer
    # the files the lens skips hold at least the last block's seven weight matrices
    skipped = sum(w["bytes"] for w in manifest["weights"] if w["path"] not in lens_files)
    last_block = sum(getattr(module, f"{w}2").numel() * 2 for w in ("wq", "wk", "wv", "wo", "wg",
                                                                  "wu", "wd"))
    assert skipped >= last_block
    assert manifest["lens"]["n_layers"] == 2
    ids = model.to_tokens("the cat sat on the mat")[0].tolist()
    lens = ort.InferenceSession(str(tmp_path / bm.LENS_GRAPH), providers=["CPUExecutionProvider"])
    got = dict(zip(HOOKS, lens.run(None, {"input_ids": np.asarray([ids], np.int64)})))
    full = _run(module, ids)
    for hook in HOOKS:
        assert np.allclose(got[hook], full[hook].numpy(), atol=1e-4), hook
