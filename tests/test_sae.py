"""Tests for interp_lib.sae.homebrew, interp_lib.sae.kernels and interp_lib.sae.saelens_format: the models,
their sparse kernels, and the SAELens export."""
import json
import math

import pytest
import torch

from interp_lib.sae import kernels
from interp_lib.sae.homebrew import ReluSAE, TopKSAE, geometric_median, initial_b_dec, input_scale
from interp_lib.sae.kernels import SparsePattern, csr_mm, largest_entries, sparse_decode
from interp_lib.sae.saelens_format import folded_weights, load_saelens_as_homebrew, save_saelens

pytestmark = pytest.mark.usefixtures("one_thread")


def _perturb(sae, seed=0):
    """Non-trivial biases so the tests exercise every term."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(sae.d_in, generator=g))
        sae.b_enc.copy_(0.1 * torch.randn(sae.d_sae, generator=g))
    return sae


def _dense_topk_reference(sae, x, dead=None, k_aux=None):
    """The TopK SAE's loss written densely with plain autograd (the textbook version)."""
    pre = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    vals, idx = pre.topk(sae.k, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
    x_hat = acts @ sae.W_dec + sae.b_dec
    mse = (x_hat - x).pow(2).sum(-1).mean()
    loss = mse
    if dead is not None:
        k_aux = min(sae.k_aux, int(dead.sum()))
        e = (x - x_hat).detach()
        a_vals, a_idx = pre.masked_fill(~dead, -math.inf).topk(k_aux, dim=-1)
        e_hat = torch.zeros_like(pre).scatter(-1, a_idx, a_vals.relu()) @ sae.W_dec
        aux = (e_hat - e).pow(2).sum(-1).mean() * min(int(dead.sum()) / sae.k_aux, 1.0)
        loss = mse + sae.auxk_coeff * aux
    return x_hat, mse, loss


@pytest.mark.parametrize("every", [None, 3, 20])  # no AuxK; 22 dead > k_aux; 4 dead < k_aux
def test_topk_sparse_gradients_match_dense_autograd(every):
    torch.manual_seed(0)
    sae = _perturb(TopKSAE(16, 64, k=4, k_aux=8, auxk_coeff=0.5))
    x = 3 * torch.randn(32, 16)
    dead = None
    with_dead = every is not None
    if with_dead:
        dead = torch.zeros(64, dtype=torch.bool)
        dead[::every] = True
    out = sae(x, dead_mask=dead)
    out.loss.backward()
    sparse_grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    x_hat, mse, loss = _dense_topk_reference(sae, x, dead)
    loss.backward()
    torch.testing.assert_close(out.x_hat, x_hat, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, loss, rtol=1e-5, atol=1e-5)
    if with_dead:
        assert out.auxk > 0
    else:
        assert out.auxk == 0
    for name, p in sae.named_parameters():
        torch.testing.assert_close(sparse_grads[name], p.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("with_dead", [False, True])
def test_topk_dense_reference_equals_fast_path(with_dead):
    """TopKSAE.forward_dense (plain torch) and forward (sparse kernels): same outputs, same grads."""
    torch.manual_seed(3)
    sae = _perturb(TopKSAE(16, 64, k=4, k_aux=8, auxk_coeff=0.5))
    x = 3 * torch.randn(32, 16)
    dead = None
    if with_dead:
        dead = torch.zeros(64, dtype=torch.bool)
        dead[1::4] = True
    fast = sae(x, dead_mask=dead)
    fast.loss.backward()
    fast_grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    dense = sae.forward_dense(x, dead_mask=dead)
    dense.loss.backward()
    torch.testing.assert_close(dense.top_indices, fast.top_indices, rtol=0, atol=0)
    for field in ("x_hat", "top_acts", "mse", "auxk", "loss"):
        torch.testing.assert_close(getattr(dense, field), getattr(fast, field), rtol=1e-5,
                                   atol=1e-5, msg=field)
    assert (dense.auxk > 0) == with_dead
    for name, p in sae.named_parameters():
        torch.testing.assert_close(fast_grads[name], p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_csr_mm_ignores_its_uninitialised_output(monkeypatch):
    """csr_mm writes every entry of its fresh output: latents no token chose (empty CSR rows)
    come out 0, not whatever the memory held (here NaN)."""
    torch.manual_seed(4)
    idx = torch.randn(24, 40).topk(6, dim=-1).indices.sort(-1).values  # latents 40..99 unused
    pat, vals, x = SparsePattern(idx, 100), torch.randn(24, 6), torch.randn(24, 16)
    empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: empty(*a, **kw).fill_(float("nan")))
    got = csr_mm(pat.csr_t(vals), x)
    want = pat.csr_t(vals).to_dense() @ x
    assert torch.isfinite(got).all() and (got[40:] == 0).all()
    torch.testing.assert_close(got, want)
    w = torch.randn(100, 16)
    torch.testing.assert_close(csr_mm(pat.csr(vals), w), pat.csr(vals).to_dense() @ w)


def test_topk_training_steps_reuse_their_workspace_safely():
    """The reused pre-activation buffer: a second step on other data gives what a fresh SAE
    gives, eval() frees it, and outside training nothing is kept."""
    torch.manual_seed(5)
    sae = _perturb(TopKSAE(16, 64, k=4))
    twin = _perturb(TopKSAE(16, 64, k=4))
    twin.load_state_dict(sae.state_dict())
    x1, x2 = torch.randn(32, 16), torch.randn(32, 16)
    sae(x1)
    assert sae._pre_buffer is not None
    torch.testing.assert_close(sae(x2).x_hat, twin.forward_dense(x2).x_hat)
    sae.eval()
    assert sae._pre_buffer is None
    sae(x1)
    assert sae._pre_buffer is None


def test_sparse_decode_matches_dense_product():
    torch.manual_seed(4)
    W_dec = torch.randn(20, 6, requires_grad=True)
    idx = torch.randn(7, 20).topk(3, dim=-1).indices.sort(dim=-1).values  # [batch, k], ascending
    acts = torch.rand(7, 3, requires_grad=True)
    out = sparse_decode(acts, W_dec, SparsePattern(idx, 20))
    dense = torch.zeros(7, 20).scatter(-1, idx, acts) @ W_dec
    torch.testing.assert_close(out, dense)
    g = torch.randn(7, 6)
    grads = torch.autograd.grad(out, (acts, W_dec), g)
    torch.testing.assert_close(grads, torch.autograd.grad(dense, (acts, W_dec), g))


def test_topk_keeps_at_most_k_latents():
    torch.manual_seed(1)
    sae = _perturb(TopKSAE(24, 96, k=5))
    x = torch.randn(50, 24) * 4
    f = sae.encode(x)
    assert f.shape == (50, 96)
    assert ((f != 0).sum(-1) <= 5).all()
    assert ((f != 0).sum(-1) == 5).float().mean() > 0.5  # most tokens do use all k
    assert (f >= 0).all()
    acts, idx = sae.encode_sparse(x)
    assert acts.shape == idx.shape == (50, 5)
    assert (idx[:, 1:] > idx[:, :-1]).all()  # ascending, no repeats
    # the kept ones are the largest pre-activations
    pre = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    kth = pre.topk(5, dim=-1).values[:, -1:]
    assert (pre.gather(-1, idx) >= kth - 1e-6).all()
    # sparse decode agrees with the dense decoder
    torch.testing.assert_close(sae(x).x_hat, sae.decode(f), rtol=1e-5, atol=1e-5)


def test_relu_forward_and_loss():
    torch.manual_seed(2)
    sae = _perturb(ReluSAE(8, 32, l1_coeff=0.3))
    x = torch.randn(10, 8)
    out = sae(x)
    f = torch.relu((x - sae.b_dec) @ sae.W_enc.T + sae.b_enc)
    torch.testing.assert_close(out.latents, f)
    torch.testing.assert_close(out.x_hat, f @ sae.W_dec + sae.b_dec)
    torch.testing.assert_close(out.loss, out.mse + 0.3 * f.sum(-1).mean())


def test_tied_relu_shares_one_matrix():
    sae = ReluSAE(8, 16, tied=True)
    assert sae.W_dec is sae.W_enc
    assert len(list(sae.parameters())) == 3  # W, b_enc, b_dec
    untied = ReluSAE(8, 16)
    assert untied.W_dec is not untied.W_enc and len(list(untied.parameters())) == 4


@pytest.mark.parametrize("cls", [ReluSAE, TopKSAE])
def test_unit_norm_decoder_and_gradient_projection(cls):
    torch.manual_seed(3)
    sae = cls(8, 32)
    torch.testing.assert_close(sae.decoder_norms(), torch.ones(32))
    sae.W_dec.grad = torch.randn(32, 8)
    sae.project_decoder_grad_()
    # no gradient component along the rows is left
    torch.testing.assert_close((sae.W_dec.grad * sae.W_dec).sum(-1), torch.zeros(32), atol=1e-6, rtol=0)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(32, 1) * 3 + 0.1)
    sae.normalize_decoder_()
    torch.testing.assert_close(sae.decoder_norms(), torch.ones(32))


def test_resample_revives_dead_relu_latents():
    torch.manual_seed(4)
    sae = ReluSAE(8, 16)
    x = torch.randn(200, 8)
    dead = torch.zeros(16, dtype=torch.bool)
    dead[:5] = True
    opt = torch.optim.Adam(sae.parameters())
    sae(x).loss.backward()
    opt.step()
    sae.normalize_decoder_()
    before = sae.W_dec.detach().clone()
    n = sae.resample_dead_(dead, x, opt, generator=torch.Generator().manual_seed(0))
    assert n == 5
    assert not torch.allclose(sae.W_dec[:5], before[:5])
    torch.testing.assert_close(sae.W_dec[5:], before[5:])  # live latents untouched
    torch.testing.assert_close(sae.decoder_norms(), torch.ones(16))
    assert (sae.b_enc[:5] == 0).all()
    assert (opt.state[sae.W_dec]["exp_avg"][:5] == 0).all()


def test_input_scale_and_b_dec_init():
    torch.manual_seed(5)
    x = torch.randn(1000, 16) * 7 + 2
    s = input_scale(x)
    assert abs((x * s).norm(dim=-1).mean().item() - 4.0) < 1e-4
    assert abs(input_scale(x.half()) - s) / s < 1e-2  # fp16 caches work
    # geometric median resists outliers where the mean does not
    pts = torch.cat([torch.zeros(99, 3), torch.full((1, 3), 1000.0)])
    assert geometric_median(pts).norm() < 1.0 < pts.mean(0).norm()
    torch.testing.assert_close(initial_b_dec(x, "mean"), x.mean(0))
    with pytest.raises(ValueError):
        initial_b_dec(x, "nope")


def test_geometric_median_is_where_the_unit_vectors_cancel():
    """At the geometric median the gradient of the summed distance, the mean of the unit vectors
    from it to the points, vanishes; at the mean of skewed data it does not."""
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(4000, 8, generator=g)
    pts[:400] += 30.0  # a far cluster pulls the mean, not the median

    def pull(m):
        d = pts - m
        return (d / d.norm(dim=-1, keepdim=True)).mean(0).norm().item()
    assert pull(geometric_median(pts, n_iter=200)) < 1e-3 < 0.1 < pull(pts.mean(0))


# ------------------------------------------------------------------------------------------
# SAELens export
# ------------------------------------------------------------------------------------------
def _raw_activations(n=256, d=32, seed=0):
    """Unnormalised, shifted activations like a residual stream (large mean, norm ~100)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 15 + torch.linspace(-40, 40, d)


def _trained_like(sae, x_norm):
    """Give the SAE decoder rows pointing at data so TopK selections have clear margins."""
    with torch.no_grad():
        sae.b_dec.copy_(x_norm.mean(0))
        rows = x_norm[: sae.d_sae] - sae.b_dec
        rows = rows / rows.norm(dim=-1, keepdim=True)
        sae.W_dec.copy_(rows)
        sae.encoder.weight.copy_(rows)
    return sae


@pytest.mark.parametrize("arch", ["topk", "relu"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_save_saelens_round_trip_on_raw_activations(tmp_path, arch, dtype):
    sae_lens = pytest.importorskip("sae_lens")
    raw = _raw_activations()
    scale = input_scale(raw)
    assert scale < 0.2  # genuinely unnormalised
    sae = TopKSAE(32, 128, k=6) if arch == "topk" else ReluSAE(32, 128)
    _trained_like(sae, raw * scale)
    with torch.no_grad():
        sae.b_enc.copy_(torch.linspace(-0.5, 0.2, 128))
    path = save_saelens(sae, tmp_path / "sae", hook_name="blocks.3.hook_resid_pre", model_name="tiny",
                        scale=scale, dtype=dtype, dataset="synthetic", extra_metadata={"note": "test"},
                        history=[{"step": 1, "loss": 1.0}], metrics={"val_fve": 0.5})
    cfg = json.loads((path / "cfg.json").read_text())
    assert cfg["architecture"] == ("topk" if arch == "topk" else "standard")
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_pre" and cfg["metadata"]["note"] == "test"
    log = json.loads((path / "training_log.json").read_text())
    assert log["scale"] == pytest.approx(scale) and log["metrics"]["val_fve"] == 0.5

    from safetensors.torch import load_file

    stored = load_file(str(path / "sae_weights.safetensors"))
    assert stored["W_enc"].dtype == getattr(torch, dtype) and stored["W_enc"].shape == (32, 128)

    loaded = sae_lens.SAE.load_from_disk(str(path))
    assert loaded.W_enc.dtype == torch.float32  # cfg.json's dtype: loads cleanly as fp32 by default
    if dtype == "float16":  # ... or in half precision on request
        loaded = sae_lens.SAE.load_from_disk(str(path), dtype="float16")
        assert loaded.W_enc.dtype == torch.float16
    assert loaded.cfg.d_sae == 128 and loaded.cfg.metadata.hook_name == "blocks.3.hook_resid_pre"
    if arch == "topk":
        assert loaded.cfg.k == 6

    with torch.no_grad():
        f_ours = sae.encode(raw * scale)
        x_hat_ours = sae.decode(f_ours) / scale
        f_theirs = loaded.encode(raw.to(loaded.dtype)).float()
        x_hat_theirs = loaded.decode(loaded.encode(raw.to(loaded.dtype))).float()
    if dtype == "float32":
        torch.testing.assert_close(f_theirs, f_ours, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(x_hat_theirs, x_hat_ours, rtol=1e-4, atol=1e-3)
    else:  # half-precision weights: same latents, reconstructions to fp16 accuracy
        # (a near-tie among the top k may flip in half precision: allow a handful of entries)
        close = torch.isclose(f_theirs, f_ours, rtol=2e-2, atol=2e-2)
        assert close.float().mean() > 0.999
        rel = (x_hat_theirs - x_hat_ours).norm(dim=-1) / x_hat_ours.norm(dim=-1)
        assert (rel < 5e-3).float().mean() > 0.98 and rel.median() < 2e-3
    # and the reconstruction is in raw units: close to the raw input's scale, not the normalised one
    assert abs(x_hat_theirs.norm(dim=-1).mean() / raw.norm(dim=-1).mean() - 1) < 0.5


def test_folded_weights_math():
    torch.manual_seed(6)
    sae = _perturb(ReluSAE(4, 8))
    w = folded_weights(sae, 0.25)
    torch.testing.assert_close(w["W_enc"], sae.W_enc.detach().T * 0.25)
    torch.testing.assert_close(w["W_dec"], sae.W_dec.detach() * 4)
    torch.testing.assert_close(w["b_dec"], sae.b_dec.detach() * 4)
    torch.testing.assert_close(w["b_enc"], sae.b_enc.detach())


def test_load_saelens_as_homebrew_inverts_save(tmp_path):
    torch.manual_seed(7)
    sae = _perturb(TopKSAE(8, 32, k=3))
    save_saelens(sae, tmp_path, hook_name="h", model_name="m", scale=0.3)
    back, scale = load_saelens_as_homebrew(tmp_path)
    assert isinstance(back, TopKSAE) and back.k == 3 and scale == pytest.approx(0.3)
    for a, b in zip(sae.parameters(), back.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_save_rejects_unknown_dtype(tmp_path):
    with pytest.raises(ValueError):
        save_saelens(ReluSAE(4, 8), tmp_path, hook_name="h", model_name="m", scale=1.0, dtype="int8")


def _is_a_top_n(got, m, n):
    """``got`` is ascending, distinct, and holds values equal to the ``n`` largest of ``m``."""
    flat = m.reshape(-1)
    assert got.shape == (n,) and (got.diff() > 0).all()
    want = flat.topk(n).values
    torch.testing.assert_close(flat[got].sort(descending=True).values, want, rtol=0, atol=0)


@pytest.mark.parametrize("n", [0, 1, 40, 500, 2999, 3000])
def test_largest_entries_is_an_exact_top_n(n, monkeypatch):
    """BatchTopK's selection over a whole batch: exactly the n largest entries, in row-major
    order, whichever way it gets there (sampled threshold, ties, the topk fallback)."""
    torch.manual_seed(6)
    m = torch.randn(50, 60) + torch.randn(60)  # columns of different scales
    _is_a_top_n(largest_entries(m, n), m, n)
    ties = torch.randint(0, 5, (50, 60)).float()  # many equal values at the cut
    _is_a_top_n(largest_entries(ties, n), ties, n)
    # a proposed threshold that lets too few through, or every entry: still exact
    for proposal in (float("inf"), -float("inf")):
        monkeypatch.setattr(kernels, "_proposed_threshold", lambda *a: torch.tensor(proposal))
        _is_a_top_n(largest_entries(m, n), m, n)
