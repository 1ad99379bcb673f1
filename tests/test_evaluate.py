"""interp_lib.evals.metrics and interp_lib.features.analysis on a tiny GPT-2 with SAEs made on the spot."""

from __future__ import annotations

import pytest
import torch

from interp_lib.evals.metrics import evaluate
from interp_lib.model.encoding import encode_texts

from .conftest import make_sae

HOOK = "blocks.1.hook_resid_pre"


class IdentitySAE(torch.nn.Module):
    """A 'perfect' SAE: features are the activation's positive and negative parts."""

    def __init__(self, d, hook):
        super().__init__()
        from types import SimpleNamespace

        self.w = torch.nn.Parameter(torch.zeros(1))
        self.cfg = SimpleNamespace(d_in=d, d_sae=2 * d, metadata=SimpleNamespace(hook_name=hook))

    def encode(self, x):
        return torch.cat([x.clamp(min=0), (-x).clamp(min=0)], -1)

    def decode(self, f):
        d = self.cfg.d_in
        return f[..., :d] - f[..., d:]


def _tokens(model):
    torch.manual_seed(1)
    toks = torch.randint(2, model.cfg.d_vocab, (4, 12))
    toks[:, 0] = model.tokenizer.bos_token_id
    return toks


def test_perfect_sae_recovers_everything(tiny_gpt2):
    m = evaluate(tiny_gpt2, IdentitySAE(32, HOOK), _tokens(tiny_gpt2), progress=False)
    assert m.fve == pytest.approx(1.0, abs=1e-5)
    assert m.fve_typical == pytest.approx(1.0, abs=1e-5)
    assert m.ce_recovered == pytest.approx(1.0, abs=1e-4)
    assert m.ce_increase == pytest.approx(0.0, abs=1e-4)
    assert m.n_tokens == 4 * 11


def test_random_sae_is_judged_poor(tiny_gpt2):
    sae = make_sae(32, 128, HOOK, k=4)
    m = evaluate(tiny_gpt2, sae, _tokens(tiny_gpt2), progress=False)
    assert m.l0 == pytest.approx(4.0)
    assert m.fve < 0.5 and m.mse > 0
    assert 0 <= m.dead_fraction <= 1 and m.density.shape == (128,)
    assert all(map(lambda v: v == v, (m.ce_clean, m.ce_sae, m.ce_zero)))


def test_typical_fve_leaves_out_massive_tokens():
    from interp_lib.evals.metrics import typical_fve

    torch.manual_seed(0)
    x = torch.randn(1000, 8)
    x[:3] *= 1000  # three massive tokens carry almost all the variance
    sq_err = torch.full((1000,), 8.0)  # typical tokens: error as large as their variance
    sq_err[:3] = 0.0  # the massive ones reconstructed perfectly
    fve_all = 1 - sq_err.sum() / (x - x.mean(0)).pow(2).sum()
    fve_typ, massive = typical_fve(x, sq_err)
    from interp_lib.model.massive import typical_rows

    assert typical_rows(x).tolist() == [False] * 3 + [True] * 997
    assert fve_all > 0.99  # the flattering number
    assert fve_typ == pytest.approx(0.0, abs=0.15) and massive == pytest.approx(0.003)
    with pytest.raises(ValueError, match="sq_err"):
        typical_fve(x, sq_err[:10])


def test_width_mismatch_names_both_numbers(tiny_gpt2):
    with pytest.raises(ValueError, match=r"d_in=48.*32"):
        encode_texts(tiny_gpt2, make_sae(48, 64, HOOK), ["the cat"])


def test_encode_texts_shapes_and_tokens(tiny_gpt2):
    sae = make_sae(32, 64, HOOK, k=3)
    enc = encode_texts(tiny_gpt2, sae, ["the cat sat", "hello world"])
    assert enc.tokens[0] == [" the", " cat", " sat"] or len(enc.tokens[0]) == 3
    assert enc.acts[0].shape == (3, 64) and enc.max.shape == (2, 64)
    assert torch.allclose(enc.max[0], enc.acts[0].max(0).values)
    assert torch.allclose(enc.mean[1], enc.acts[1].mean(0))
    assert ((enc.acts[0] > 0).sum(-1) <= 3).all()
    assert len(enc.top_features(0, 2)) <= 2


def test_encode_texts_input_checks(tiny_gpt2):
    sae = make_sae(32, 64, HOOK)
    with pytest.raises(ValueError, match="empty"):
        encode_texts(tiny_gpt2, sae, [])
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        encode_texts(tiny_gpt2, sae, ["the cat", ""])
    with pytest.raises(TypeError):
        encode_texts(tiny_gpt2, sae, ["the cat", 3])
    with pytest.raises(TypeError):
        encode_texts(tiny_gpt2, sae, "the cat")


def test_long_text_is_truncated_with_a_warning(tiny_gpt2):
    sae = make_sae(32, 64, HOOK)
    with pytest.warns(UserWarning, match="truncated"):
        enc = encode_texts(tiny_gpt2, sae, ["the cat " * 100])
    assert len(enc.tokens[0]) == tiny_gpt2.cfg.n_ctx - 1


def test_restarting_at_a_residual_hook_equals_a_full_spliced_pass(tiny_gpt2):
    # evaluate() reruns only the layers after a resid_pre hook; splice by hand through a full pass.
    sae = make_sae(32, 128, HOOK, k=8)
    toks = _tokens(tiny_gpt2)
    m = evaluate(tiny_gpt2, sae, toks, progress=False)

    def splice(act, hook):
        act = act.clone()
        act[:, 1:] = sae.decode(sae.encode(act[:, 1:]))
        return act

    with torch.no_grad(), tiny_gpt2.hooks(fwd_hooks=[(HOOK, splice)]):
        loss = tiny_gpt2(toks, return_type="loss", loss_per_token=True)[:, 1:].mean().item()
    assert m.ce_sae == pytest.approx(loss, abs=1e-5)
    assert m.kl_div > 0


def test_kl_of_a_perfect_sae_is_zero(tiny_gpt2):
    m = evaluate(tiny_gpt2, IdentitySAE(32, HOOK), _tokens(tiny_gpt2), progress=False)
    assert m.kl_div == pytest.approx(0.0, abs=1e-5)
