"""Tests for the JumpReLU, BatchTopK and Matryoshka SAEs: their forward passes against dense
references written from the papers' equations, their straight-through gradients, and their
saving and loading through SAELens."""
import json

import pytest
import torch

from interp_lib.errors import InvalidArgumentError
from interp_lib.sae.batchtopk import BatchTopKSAE, batch_topk
from interp_lib.sae.homebrew import input_scale
from interp_lib.sae.jumprelu import JumpReLUSAE
from interp_lib.sae.matryoshka import MatryoshkaSAE, nested_widths
from interp_lib.sae.saelens_format import load_saelens_as_homebrew, save_saelens

pytestmark = pytest.mark.usefixtures("one_thread")


def _perturb(sae, seed=0):
    """Non-trivial biases (and thresholds) so every term is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.b_dec.copy_(0.3 * torch.randn(sae.d_in, generator=g))
        sae.b_enc.copy_(0.1 * torch.randn(sae.d_sae, generator=g))
        if isinstance(sae, JumpReLUSAE):
            sae.threshold.copy_(torch.rand(sae.d_sae, generator=g))
    return sae


def test_jumprelu_forward_matches_the_equations():
    torch.manual_seed(0)
    sae = _perturb(JumpReLUSAE(16, 64, l0_coeff=0.7))
    x = 2 * torch.randn(40, 16)
    out = sae(x)
    z = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    f = torch.where(z > sae.threshold, z, torch.zeros_like(z))
    torch.testing.assert_close(out.latents, f)
    torch.testing.assert_close(sae.encode(x), f)
    torch.testing.assert_close(out.x_hat, f @ sae.W_dec + sae.b_dec)
    l0 = (z > sae.threshold).float().sum(-1).mean()
    assert 0 < l0 < 64 and (f[f != 0] > sae.threshold.expand_as(f)[f != 0]).all()
    torch.testing.assert_close(out.sparsity, l0)
    torch.testing.assert_close(out.loss, out.mse + 0.7 * l0)


def test_jumprelu_straight_through_gradients():
    """theta's gradient is the rectangle-kernel estimate of Rajamanoharan et al. (eqs. 11-12);
    the encoder's is the exact one away from the jump."""
    torch.manual_seed(1)
    eps = 0.5  # wide, so that many pre-activations fall inside the kernel
    sae = _perturb(JumpReLUSAE(8, 32, l0_coeff=0.3, bandwidth=eps))
    x = torch.randn(50, 8)
    out = sae(x)
    out.loss.backward()
    z = ((x - sae.b_dec) @ sae.W_enc.T + sae.b_enc).detach()
    theta = sae.threshold.detach()
    in_band = ((z - theta).abs() < eps / 2).float()
    assert in_band.sum() > 20
    g_f = 2 * (out.x_hat - x).detach() @ sae.W_dec.detach().T / len(x)  # dMSE/df
    expected = (-(theta / eps) * in_band * g_f).sum(0) + 0.3 * (-(1 / eps) * in_band).sum(0) / len(x)
    torch.testing.assert_close(sae.threshold.grad, expected, rtol=1e-4, atol=1e-5)
    expected_b_enc = ((z > theta).float() * g_f).sum(0)
    torch.testing.assert_close(sae.encoder.bias.grad, expected_b_enc, rtol=1e-4, atol=1e-5)


def test_jumprelu_tanh_penalty_and_bad_choices():
    sae = _perturb(JumpReLUSAE(8, 16, sparsity_loss="tanh", tanh_scale=2.0))
    x = torch.randn(5, 8)
    out = sae(x)
    torch.testing.assert_close(out.sparsity, torch.tanh(2.0 * out.latents).sum(-1).mean())
    with pytest.raises(InvalidArgumentError, match="step"):
        JumpReLUSAE(8, 16, sparsity_loss="l1")
    with torch.no_grad():
        sae.threshold.fill_(-1.0)
    sae.clamp_threshold_()
    assert (sae.threshold == 0).all()


def test_batch_topk_keeps_k_times_batch_over_the_batch():
    torch.manual_seed(2)
    pre = torch.randn(10, 50)
    pre[0] += 3  # one token with many strong pre-activations takes more than its share
    f = batch_topk(pre, 4)
    assert int((f > 0).sum()) == 40
    counts = (f > 0).sum(-1)
    assert counts[0] > 4 and counts.min() < 4  # per token it varies; per batch it is k
    kept = f[f > 0]
    assert kept.min() >= pre.relu().flatten().topk(40).values.min() - 1e-6
    torch.testing.assert_close(f[f > 0], pre[f > 0])  # kept values are the pre-activations


def test_batchtopk_forward_train_and_eval():
    torch.manual_seed(3)
    sae = _perturb(BatchTopKSAE(16, 64, k=3, k_aux=8, auxk_coeff=0.5, threshold_lr=0.5))
    x = 2 * torch.randn(32, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::4] = True
    out = sae(x, dead_mask=dead)  # training mode: the batch rule, and theta is updated
    z = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    f = batch_topk(z, 3)
    torch.testing.assert_close(out.latents, f)
    torch.testing.assert_close(out.x_hat, f @ sae.W_dec + sae.b_dec)
    assert int((out.latents > 0).sum()) == 3 * 32
    assert out.auxk > 0
    assert out.loss.item() == pytest.approx(out.mse.item() + 0.5 * out.auxk.item(), rel=1e-5)
    # the bias-corrected average of one value is that value (SAELens's, from 0, would be half)
    first = float(f[f > 0].min().detach())
    assert float(sae.theta) == pytest.approx(first, rel=1e-6)
    sae.update_threshold_(torch.tensor([[0.0, 2 * first]]))  # then a batch whose minimum is 2x
    # weights r and (1 - r) r over 1 - (1 - r)^2: with r = 0.5, (0.5 * 2 + 0.25 * 1) / 0.75
    assert float(sae.theta) == pytest.approx(first * (0.5 * 2 + 0.25 * 1) / 0.75, rel=1e-6)
    sae.eval()  # inference: one shared threshold, as the saved JumpReLU SAE computes it
    f_inf = torch.where(z > sae.theta.float(), z, torch.zeros_like(z)).detach()
    torch.testing.assert_close(sae(x).latents, f_inf)
    torch.testing.assert_close(sae.encode(x), f_inf)
    # AuxK gives dead latents' encoder rows a gradient
    sae.train()
    sae.zero_grad()
    sae(x, dead_mask=dead).auxk.backward()
    assert (sae.W_enc.grad[dead].norm(dim=-1) > 0).sum() >= 8


def test_matryoshka_prefixes_each_reconstruct():
    torch.manual_seed(4)
    sae = _perturb(MatryoshkaSAE(16, 64, widths=[8, 24], k=4))
    assert sae.widths == (8, 24, 64)
    x = 2 * torch.randn(32, 16)
    out = sae(x)
    z = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    f = batch_topk(z, 4)
    errs = []
    for m in (8, 24, 64):  # each prefix alone: the other latents zeroed
        f_m = f.clone()
        f_m[:, m:] = 0
        errs.append((f_m @ sae.W_dec + sae.b_dec - x).pow(2).sum(-1).mean())
    torch.testing.assert_close(out.prefix_mse, torch.stack(errs))
    torch.testing.assert_close(out.mse, errs[-1])
    torch.testing.assert_close(out.x_hat, f @ sae.W_dec + sae.b_dec)
    torch.testing.assert_close(out.loss, sum(errs))
    assert len({round(float(e.detach()), 3) for e in errs}) == 3  # three different prefixes, three errors
    # a latent outside the first prefix gets no gradient from the first prefix's error
    sae.zero_grad()
    out = sae(x)
    out.prefix_mse[0].backward()
    assert (sae.W_dec.grad[8:] == 0).all() and sae.W_dec.grad[:8].abs().sum() > 0


def _twins(make, seed):
    """Two copies of one SAE (same weights and state), for comparing two forward passes."""
    torch.manual_seed(seed)
    a = _perturb(make())
    b = make()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka"])
@pytest.mark.parametrize("shift", [0.0, -4.0])  # -4: fewer positive entries than k * batch
def test_sparse_training_step_equals_the_dense_reference(arch, shift):
    """forward (sparse kernels, rows keeping different numbers of latents) and forward_dense
    (plain torch): same outputs, same threshold update, same gradient for every parameter."""

    def make():
        if arch == "batchtopk":
            return BatchTopKSAE(16, 64, k=3, k_aux=8, auxk_coeff=0.5)
        return MatryoshkaSAE(16, 64, widths=[8, 24], k=3, k_aux=8, auxk_coeff=0.5)

    sparse, dense = _twins(make, seed=5)
    with torch.no_grad():
        for sae in (sparse, dense):
            sae.b_enc.add_(shift)
    x = 2 * torch.randn(32, 16)
    x[0] *= 6  # one token takes many latents, so others take few or none
    dead = torch.zeros(64, dtype=torch.bool)
    dead[1::3] = True
    got, want = sparse(x, dead_mask=dead), dense.forward_dense(x, dead_mask=dead)
    counts = (want.latents > 0).sum(-1)
    assert counts.max() > 3 and counts.min() < 3
    if shift:
        assert int((want.latents > 0).sum()) < 3 * 32  # kept entries ReLU made 0
    for field in got._fields:
        torch.testing.assert_close(getattr(got, field), getattr(want, field), msg=field)
    assert float(sparse.theta) == float(dense.theta) and int(sparse.theta_updates) == 1
    got.loss.backward()
    want.loss.backward()
    for (name, p), q in zip(sparse.named_parameters(), dense.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    assert sparse.W_enc.grad[dead].abs().sum() > 0  # AuxK reaches the dead latents


def test_matryoshka_widths_are_checked():
    assert nested_widths([4, 16], 64) == (4, 16, 64)
    assert nested_widths([4, 64], 64) == (4, 64)
    for bad in ([], [16, 8], [0, 8], [8, 100]):
        with pytest.raises(InvalidArgumentError, match="widths"):
            nested_widths(bad, 64)


def _raw_activations(n=256, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 15 + torch.linspace(-40, 40, d)


def _variant(arch):
    if arch == "jumprelu":
        return JumpReLUSAE(32, 128)
    if arch == "batchtopk":
        return BatchTopKSAE(32, 128, k=6)
    return MatryoshkaSAE(32, 128, widths=[16, 64], k=6)


@pytest.mark.parametrize("arch", ["jumprelu", "batchtopk", "matryoshka"])
def test_variants_load_in_saelens_with_the_same_encode_and_decode(tmp_path, arch):
    sae_lens = pytest.importorskip("sae_lens")
    raw = _raw_activations()
    scale = input_scale(raw)
    sae = _perturb(_variant(arch))
    if arch == "jumprelu":
        with torch.no_grad():
            sae.threshold.copy_(torch.linspace(0.0, 1.0, 128))
    else:
        sae(raw[:128] * scale)  # one training forward sets a non-zero threshold ...
        assert float(sae.theta) > 0
        sae.eval()
        raw = raw[128:]  # ... equal to one of those rows' activations: compare on the others
    path = save_saelens(sae, tmp_path / arch, hook_name="blocks.3.hook_resid_pre", model_name="tiny",
                        scale=scale)
    cfg = json.loads((path / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu"  # what SAELens's own trainers save for all three
    expected_train = {"jumprelu": "jumprelu", "batchtopk": "batchtopk",
                      "matryoshka": "matryoshka_batchtopk"}[arch]
    assert cfg["metadata"]["training_architecture"] == expected_train
    loaded = sae_lens.SAE.load_from_disk(str(path))
    assert type(loaded).__name__ == "JumpReLUSAE"
    with torch.no_grad():
        f_ours = sae.encode(raw * scale)
        x_hat_ours = sae.decode(f_ours) / scale
        f_theirs = loaded.encode(raw)
        x_hat_theirs = loaded.decode(f_theirs)
    n_active = (f_ours > 0).sum(-1).float().mean()
    assert 0 < n_active < 100  # the thresholds matter: neither everything nor nothing fires
    torch.testing.assert_close(f_theirs, f_ours, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x_hat_theirs, x_hat_ours, rtol=1e-4, atol=1e-3)
    # and back into the library: a JumpReLUSAE with the same latents
    back, s = load_saelens_as_homebrew(path)
    assert isinstance(back, JumpReLUSAE) and s == pytest.approx(scale)
    torch.testing.assert_close(back.encode(raw * s), f_ours, rtol=1e-4, atol=1e-4)


def test_a_jumprelu_folder_without_its_thresholds_is_refused(tmp_path):
    """The folder check knows the JumpReLU layout: a missing or misshapen threshold names itself."""
    from safetensors.torch import load_file, save_file

    from interp_lib.errors import DamagedFileError

    path = save_saelens(JumpReLUSAE(8, 16), tmp_path / "sae", hook_name="h", model_name="m", scale=1.0)
    weights = load_file(str(path / "sae_weights.safetensors"))
    save_file({k: v for k, v in weights.items() if k != "threshold"}, str(path / "sae_weights.safetensors"))
    with pytest.raises(DamagedFileError, match="threshold"):
        load_saelens_as_homebrew(path)
    save_file({**weights, "threshold": torch.zeros(15)}, str(path / "sae_weights.safetensors"))
    with pytest.raises(DamagedFileError, match="threshold"):
        load_saelens_as_homebrew(path)
