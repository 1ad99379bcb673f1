"""interp_lib.model.loading: embedded model, local folders, the online path's offline failure, bad names."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import torch

import interp_lib.model.loading as models
from interp_lib import HubUnavailableError, load_model


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        load_model("no-such-model")
    assert "smollm2-135m" in str(err.value) and "gpt2-small" in str(err.value)


def test_non_string_is_a_type_error():
    with pytest.raises(TypeError):
        load_model(42)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError):
        models._load_local(tmp_path, device="cpu")


def test_local_gpt2_folder_loads_with_standard_hooks(tiny_gpt2):
    assert tiny_gpt2.cfg.n_layers == 2
    assert "blocks.1.hook_resid_pre" in tiny_gpt2.hook_dict
    assert "blocks.0.hook_mlp_out" in tiny_gpt2.hook_dict
    logits = tiny_gpt2(tiny_gpt2.to_tokens("the cat sat on the mat"))
    assert logits.shape[-1] == tiny_gpt2.cfg.d_vocab and torch.isfinite(logits).all()


def test_local_folder_matches_huggingface(tiny_gpt2, tiny_gpt2_dir):
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir).eval()
    tokens = tiny_gpt2.to_tokens("the dog sat on a mat")
    with torch.no_grad():
        ours = tiny_gpt2(tokens)
        ref = hf(tokens).logits
    centre = lambda t: t - t.mean(-1, keepdim=True)  # TransformerLens centres the unembedding
    assert torch.allclose(centre(ours), centre(ref), atol=1e-4)


def test_linear_layout_makes_transformer_lens_copies_no_ops_and_changes_no_result():
    """A gated, grouped-query model (SmolLM2's kind): after linear_layout the weights that
    TransformerLens copies on every forward are already in the layout it asks for, the values
    are the same and so is the forward pass, bit for bit."""
    import einops
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=48, d_vocab=60, n_ctx=16,
        act_fn="silu", gated_mlp=True, normalization_type="RMS", n_key_value_heads=2,
        positional_embedding_type="rotary", rotary_dim=8, seed=0,
    )
    model = HookedTransformer(cfg).eval()
    tokens = torch.randint(0, 60, (3, 10))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        want = model(tokens)
    assert models.linear_layout(model) is model
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    mlp, attn = model.blocks[0].mlp, model.blocks[0].attn
    assert mlp.W_gate.T.is_contiguous() and mlp.W_out.T.is_contiguous()
    assert model.unembed.W_U.T.is_contiguous() and not model.unembed.W_U.is_contiguous()
    assert einops.rearrange(attn.W_O, "h d m -> m (h d)").is_contiguous()
    with torch.no_grad():
        assert torch.equal(model(tokens), want)


def test_online_name_fails_fast_offline(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=5.0: False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(HubUnavailableError) as err:
        load_model("gpt2-small")
    assert time.monotonic() - start < 30
    assert "cannot be reached" in str(err.value) and "smollm2-135m" in str(err.value)


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare")
def test_online_name_fails_fast_with_network_cut(tmp_path):
    # the time of the failing call itself, not of importing torch (slow on a loaded machine)
    code = (
        "import sys, time\nfrom interp_lib import load_model\nstart = time.monotonic()\n"
        "try:\n    load_model('gpt2-small')\n"
        "finally:\n    print(f'seconds={time.monotonic() - start:.1f}', file=sys.stderr)\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path)}
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert proc.returncode != 0 and "HubUnavailableError" in proc.stderr and "smollm2-135m" in proc.stderr
    seconds = float(re.search(r"seconds=([\d.]+)", proc.stderr).group(1))
    assert seconds < 30, proc.stderr


def test_hub_check_is_bounded():
    start = time.monotonic()
    models.hub_reachable(timeout=2.0)
    assert time.monotonic() - start < 10


@pytest.mark.slow
def test_embedded_model_says_paris(smollm):
    assert smollm.cfg.n_layers == 30 and smollm.cfg.d_model == 576
    out = smollm.generate("The capital of France is", max_new_tokens=4, do_sample=False, verbose=False)
    assert "Paris" in out


@pytest.mark.slow
def test_embedded_snapshot_matches_conversion(smollm):
    """The fast cached load gives the same logits as converting the HF folder again."""
    folder = models.embedded_model_dir()
    fresh = models._load_local(folder, device="cpu", snapshot=False)
    tokens = smollm.to_tokens("Sparse autoencoders find features.")
    with torch.no_grad():
        assert torch.allclose(smollm(tokens), fresh(tokens), atol=1e-4)


@pytest.mark.slow
def test_embedded_reload_is_fast(smollm):
    start = time.monotonic()
    load_model("smollm2-135m")
    assert time.monotonic() - start < 15
