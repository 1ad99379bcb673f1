"""Tests for interp_lib.training.matched_l0: configs aimed at an L0, the sweep, and reading a metric at a
matched L0."""
import math

import pytest
import torch

from interp_lib.errors import InvalidArgumentError
from interp_lib.evals.saebench import pooled_latents
from interp_lib.training import matched_l0 as variants

pytestmark = pytest.mark.usefixtures("one_thread")


def test_config_at_l0_uses_k_or_the_penalty_target():
    assert variants.config_at_l0("topk", 32, d_sae=64).k == 32
    assert variants.config_at_l0("matryoshka", 16, d_sae=64).k == 16
    relu = variants.config_at_l0("relu", 24, seed=3, d_sae=64)
    assert relu.target_l0 == 24.0 and relu.seed == 3
    assert variants.config_at_l0("jumprelu", 8, d_sae=64).target_l0 == 8.0
    with pytest.raises(InvalidArgumentError, match="arch must be one of"):
        variants.config_at_l0("gated", 8)
    with pytest.raises(InvalidArgumentError, match="l0 must be positive"):
        variants.config_at_l0("topk", 0)


def test_at_l0_interpolates_on_a_log_scale_and_refuses_to_guess_far_out():
    l0s, values = [16, 64, 32], [0.5, 0.7, 0.6]  # unsorted on purpose
    assert variants.at_l0(l0s, values, 32) == pytest.approx(0.6)
    # halfway between 16 and 32 on a log scale
    assert variants.at_l0(l0s, values, math.sqrt(16 * 32)) == pytest.approx(0.55)
    # a little beyond the measured range: along the end segment
    assert variants.at_l0(l0s, values, 70) == pytest.approx(0.7 + 0.1 * math.log2(70 / 64))
    assert math.isnan(variants.at_l0(l0s, values, 100))
    assert math.isnan(variants.at_l0(l0s, values, 10))
    with pytest.raises(InvalidArgumentError, match=">= 2"):
        variants.at_l0([16], [0.5], 16)


def test_train_sweep_trains_the_grid_on_the_same_data(tmp_path):
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(2048, 16, generator=g) * 4 + 1
    runs = variants.train_sweep(acts, ["topk", "relu"], [4], [0, 1], hook_name=
                                "blocks.0.hook_resid_pre", model_name="tiny", val_acts=acts[:256],
                                progress=False, d_sae=32, batch_size=256, epochs=1)
    assert [(r.arch, r.seed) for r in runs] == [("topk", 0), ("topk", 1), ("relu", 0), ("relu", 1)]
    assert all(r.target_l0 == 4.0 for r in runs)
    topk0, topk1 = runs[0], runs[1]
    assert not torch.equal(topk0.sae.W_dec, topk1.sae.W_dec)  # seeds differ
    # the sae_lens SAE takes raw activations: same reconstruction as the homebrew one
    x = acts[:64]
    homebrew = topk0.result.sae
    raw = homebrew.decode(homebrew.encode(x * topk0.result.scale)) / topk0.result.scale
    torch.testing.assert_close(topk0.sae.decode(topk0.sae.encode(x)), raw, atol=1e-4, rtol=1e-4)
    assert (topk0.sae.encode(x) > 0).sum(-1).max() <= 4
    assert "final_coeff" in runs[2].result.metrics


def test_pooled_latents_average_each_texts_latents():
    class Doubler(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def encode(self, x):
            return torch.relu(2 * x)

    per_text = [torch.tensor([[1.0, -1.0], [3.0, 1.0]]), torch.tensor([[2.0, 2.0]])]
    out = pooled_latents(Doubler(), per_text)
    torch.testing.assert_close(out, torch.tensor([[4.0, 1.0], [4.0, 4.0]]))
