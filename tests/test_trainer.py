"""Tests for interp_lib.training.trainer on a small synthetic sparse-dictionary problem (no language model)."""
import json

import pytest
import torch

from interp_lib.errors import InvalidArgumentError
from interp_lib.evals.metrics import reconstruction_metrics
from interp_lib.sae.batchtopk import BatchTopKSAE
from interp_lib.sae.homebrew import ReluSAE, TopKSAE
from interp_lib.sae.jumprelu import JumpReLUSAE
from interp_lib.sae.matryoshka import MatryoshkaSAE
from interp_lib.training.cli import main_train
from interp_lib.training.saelens_trainer import train_saelens
from interp_lib.training.trainer import (
    TrainConfig,
    TrainResult,
    lr_factor,
    steer_coefficient,
    train_sae,
)


def planted_dictionary(d=32, m=96, dictionary_seed=0):
    """The ``[m, d]`` unit directions :func:`sparse_dictionary_data` builds its rows from."""
    g = torch.Generator().manual_seed(dictionary_seed)
    D = torch.randn(m, d, generator=g)
    return D / D.norm(dim=-1, keepdim=True)


def sparse_dictionary_data(n, d=32, m=96, k=3, seed=0, dictionary_seed=0):
    """Activations built from ``k`` of ``m`` unit directions per row, then scaled and shifted
    (so the trainer's normalisation and b_dec have work to do)."""
    D = planted_dictionary(d, m, dictionary_seed)
    g = torch.Generator().manual_seed(seed + 1000)
    idx = torch.rand(n, m, generator=g).argsort(dim=-1)[:, :k]
    coef = torch.zeros(n, m).scatter_(1, idx, torch.rand(n, k, generator=g) * 2 + 0.5)
    return (coef @ D) * 10 + 3.0


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return sparse_dictionary_data(12_000), sparse_dictionary_data(2_000, seed=1)


def test_topk_trainer_learns(data):
    x, val = data
    cfg = TrainConfig(arch="topk", d_sae=128, k=3, batch_size=256, epochs=4, seed=0)
    rows = []
    res = train_sae(x, cfg, val_acts=val, progress=False, callback=rows.append)
    assert isinstance(res, TrainResult) and isinstance(res.sae, TopKSAE)
    h = res.history
    assert rows == h and len(h) >= 20
    assert {"step", "tokens", "loss", "mse", "auxk", "l0", "fve", "dead_fraction", "lr"} <= set(h[0])
    assert h[-1]["loss"] < 0.5 * h[0]["loss"]
    assert h[-1]["fve"] > h[0]["fve"] + 0.2
    assert res.metrics["val_fve"] > 0.75
    assert res.metrics["val_l0"] <= 3.0
    assert res.metrics["val_dead_fraction"] < 0.2
    assert all(r["l0"] <= 3 for r in h)
    # decoder rows stayed at unit norm throughout
    torch.testing.assert_close(res.sae.decoder_norms(), torch.ones(128))
    # learning rate: warm-up, then decayed to ~0 at the end
    assert h[0]["lr"] < h[len(h) // 2]["lr"] and h[-1]["lr"] < 1e-3 * cfg.learning_rate + 1e-12
    # reconstruction_metrics() on raw data agrees with the final metrics
    assert reconstruction_metrics(res.sae, val, res.scale)["fve"] == pytest.approx(res.metrics["val_fve"])
    assert "val_fve" in h[-1]


def test_relu_trainer_learns(data):
    x, val = data
    cfg = TrainConfig(arch="relu", d_sae=128, l1_coeff=1.0, batch_size=256, epochs=4, seed=0)
    res = train_sae(x, cfg, val_acts=val, progress=False)
    assert isinstance(res.sae, ReluSAE)
    h = res.history
    assert h[-1]["loss"] < 0.9 * h[0]["loss"]
    assert h[-1]["fve"] > h[0]["fve"] + 0.1
    assert res.metrics["val_fve"] > 0.6
    assert res.metrics["val_l0"] < 64  # sparser than half the latents
    assert "l1" in h[0]
    torch.testing.assert_close(res.sae.decoder_norms(), torch.ones(128))
    # a stronger L1 penalty buys sparsity with reconstruction
    sparser = train_sae(x, TrainConfig(**{**cfg.__dict__, "l1_coeff": 3.0}), val_acts=val, progress=False)
    assert sparser.metrics["val_l0"] < res.metrics["val_l0"]
    assert sparser.metrics["val_fve"] < res.metrics["val_fve"]


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_training_is_deterministic_for_a_seed(data, arch):
    x, _ = data
    x = x[:3000]
    cfg = TrainConfig(arch=arch, d_sae=64, k=3, l1_coeff=0.3, batch_size=128, epochs=1, seed=7)
    a = train_sae(x, cfg, progress=False)
    b = train_sae(x, cfg, progress=False)
    for (name, pa), pb in zip(a.sae.state_dict().items(), b.sae.state_dict().values()):
        assert torch.equal(pa, pb), name
    c = train_sae(x, TrainConfig(**{**cfg.__dict__, "seed": 8}), progress=False)
    assert not torch.equal(a.sae.W_dec, c.sae.W_dec)


def test_auxk_trains_only_dead_latents():
    """AuxK: dead latents (and only they, besides the shared biases) get its gradient."""
    torch.manual_seed(0)
    sae = TopKSAE(16, 64, k=2, k_aux=8, auxk_coeff=1.0)
    x = 3 * torch.randn(128, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[40:] = True
    out = sae(x, dead_mask=dead)
    assert out.auxk > 0
    (out.auxk * sae.auxk_coeff).backward()
    g = sae.W_dec.grad.norm(dim=-1)
    assert (g[40:] > 0).sum() >= 8 and (g[:40] == 0).all()
    assert (sae.W_enc.grad.norm(dim=-1)[:40] == 0).all()
    # no dead latents -> no AuxK
    assert sae(x, dead_mask=torch.zeros(64, dtype=torch.bool)).auxk == 0


def test_few_dead_latents_after_training(data):
    x, val = data
    cfg = TrainConfig(arch="topk", d_sae=64, k=3, batch_size=256, epochs=3, seed=1, auxk_window_tokens=256 * 10)
    res = train_sae(x, cfg, val_acts=val, progress=False)
    assert res.metrics["val_dead_fraction"] < 0.1
    assert res.metrics["dead_fraction"] < 0.1


def test_lr_schedule():
    f = [lr_factor(s, 100, 10, 0.2) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[50] == 1.0
    assert f[79] == 1.0 and 0 < f[80] < 1 and f[99] == 0.0
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    c = [lr_factor(s, 100, 0, 0.5, "cosine") for s in range(100)]
    assert c[0] == 1.0 and c[99] == pytest.approx(0.0, abs=1e-9) and c[75] == pytest.approx(0.5, abs=0.05)


def test_config_validation():
    with pytest.raises(ValueError):
        TrainConfig(arch="gated")
    with pytest.raises(ValueError):
        TrainConfig(arch="topk", d_sae=8, k=9)
    assert TrainConfig(arch="topk").learning_rate == pytest.approx(2e-3)
    assert TrainConfig(arch="relu").learning_rate == pytest.approx(1e-3)
    assert TrainConfig(lr=1e-3).learning_rate == 1e-3
    assert TrainConfig(n_tokens=10_000, batch_size=1000).total_steps(123) == 10
    assert TrainConfig(epochs=2, batch_size=1000).total_steps(5_000) == 10


@pytest.mark.parametrize("engine", [train_sae, train_saelens])
def test_eval_every_end_evaluates_once_after_the_last_step(data, engine):
    if engine is train_saelens:
        pytest.importorskip("sae_lens")
    x, val = data
    cfg = TrainConfig(d_sae=96, k=3, batch_size=256, epochs=1, log_every=1, eval_every="end")
    res = engine(x[:4096], cfg, val_acts=val, progress=False)
    evaluated = [row["step"] for row in res.history if "val_fve" in row]
    assert evaluated == [res.history[-1]["step"]] and len(res.history) == 16
    assert cfg.eval_interval(16) == 16 and TrainConfig().eval_interval(16) == 4
    assert TrainConfig(eval_every=3).eval_interval(16) == 3
    for bad in (0, -2, "start", 2.5):
        with pytest.raises(InvalidArgumentError, match="eval_every"):
            TrainConfig(eval_every=bad)


def test_too_little_data_is_a_clear_error():
    with pytest.raises(ValueError, match="batch_size"):
        train_sae(torch.randn(100, 8), TrainConfig(d_sae=16, k=2, batch_size=256), progress=False)


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_train_saelens_runs_on_a_tiny_problem(data, arch, capsys):
    sae_lens = pytest.importorskip("sae_lens")
    x, val = data
    cfg = TrainConfig(arch=arch, d_sae=96, k=3, l1_coeff=0.3, batch_size=256, epochs=2, seed=0)
    rows = []
    res = train_saelens(x, cfg, val_acts=val, progress=False, callback=rows.append)
    assert isinstance(res.sae, sae_lens.SAE)
    assert res.sae.cfg.d_sae == 96 and res.sae.cfg.architecture() == ("topk" if arch == "topk" else "standard")
    assert rows == res.history and len(res.history) >= 10
    assert {"step", "tokens", "loss", "mse", "l0", "fve", "dead_fraction", "lr"} <= set(res.history[0])
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.history[-1]["tokens"] == cfg.total_steps(len(x)) * 256
    # the returned SAE takes raw activations (scale folded in) and reconstructs them as well
    # on held-out data as it did on its last training batch
    assert res.metrics["val_fve"] > 0.1
    assert abs(res.metrics["val_fve"] - res.history[-1]["fve"]) < 0.05
    if arch == "topk":
        assert res.metrics["val_l0"] <= 3
    assert capsys.readouterr().out == ""  # nothing printed


def test_main_train_saves_a_loadable_sae(tmp_path, monkeypatch, data):
    """The CLI path, with the activation cache replaced by synthetic data."""
    sae_lens = pytest.importorskip("sae_lens")
    import interp_lib.model.activations as activations

    x, val = data
    calls = []

    def fake_cached(model_name, hooks, *, n_tokens, split="train", ctx_len=128, **kw):
        calls.append((model_name, tuple(hooks), n_tokens, split))
        return {hooks[0]: (x if split == "train" else val)[:n_tokens].half()}

    monkeypatch.setattr(activations, "cached_activations", fake_cached)
    out = tmp_path / "sae"
    rc = main_train(["--model", "tiny", "--hook", "blocks.1.hook_resid_pre", "--arch", "topk", "--k", "3",
                     "--width", "64", "--tokens", "4096", "--val-tokens", "1000", "--batch-size", "512",
                     "--epochs", "1", "--out", str(out), "--no-progress", "--dtype", "float16"])
    assert rc == 0
    assert calls == [("tiny", ("blocks.1.hook_resid_pre",), 4096, "train"),
                     ("tiny", ("blocks.1.hook_resid_pre",), 1000, "heldout")]
    loaded = sae_lens.SAE.load_from_disk(str(out))
    assert loaded.cfg.k == 3 and loaded.cfg.d_sae == 64
    log = json.loads((out / "training_log.json").read_text())
    assert log["history"] and "val_fve" in log["metrics"]
    assert log["metadata"]["train_config"]["k"] == 3


def _fake_cache(monkeypatch, x, val):
    """The activation cache replaced by the synthetic train / held-out rows."""
    import interp_lib.model.activations as activations

    monkeypatch.setattr(activations, "cached_activations",
                        lambda model_name, hooks, *, n_tokens, split="train", **kw:
                        {hooks[0]: (x if split == "train" else val)[:n_tokens]})


def test_main_train_engine_saelens_saves_what_saelens_trained(tmp_path, monkeypatch, data):
    """--engine saelens: SAELens's trainer on the same cached activations; the folder loads with
    SAE.load_from_disk and reconstructs the held-out rows exactly as the logged metrics say."""
    sae_lens = pytest.importorskip("sae_lens")
    from interp_lib.evals.metrics import reconstruction_metrics

    x, val = data
    _fake_cache(monkeypatch, x, val)
    out = tmp_path / "sae"
    rc = main_train(["--model", "tiny", "--hook", "blocks.1.hook_resid_pre", "--arch", "topk", "--k", "3",
                     "--width", "64", "--tokens", "4096", "--val-tokens", "1000", "--batch-size", "512",
                     "--epochs", "10", "--out", str(out), "--no-progress", "--engine", "saelens"])
    assert rc == 0
    loaded = sae_lens.SAE.load_from_disk(str(out))
    assert loaded.cfg.k == 3 and loaded.cfg.d_sae == 64
    assert loaded.cfg.metadata.hook_name == "blocks.1.hook_resid_pre"
    log = json.loads((out / "training_log.json").read_text())
    assert log["metadata"]["trained_with"] == "sae_lens" and log["history"]
    again = reconstruction_metrics(loaded, val[:1000])
    assert again["fve"] == pytest.approx(log["metrics"]["val_fve"], abs=1e-4)
    assert again["fve"] > 0.3  # it learned: after 8 steps (one epoch) it explains 0.03
    with pytest.raises(SystemExit):
        main_train(["--hook", "h", "--width", "8", "--tokens", "256", "--out", str(out),
                    "--engine", "sparsify"])


def test_max_norm_factor_leaves_massive_rows_out(data):
    x, _ = data
    x = x.clone()
    x[:5] *= 200  # five attention-sink-like rows
    cfg = TrainConfig(arch="topk", d_sae=64, k=3, batch_size=256, epochs=0.5, seed=0, max_norm_factor=10)
    kept = train_sae(x, cfg, progress=False)
    everything = train_sae(x, TrainConfig(**{**cfg.__dict__, "max_norm_factor": None}), progress=False)
    assert kept.metrics["rows_dropped"] == 5 and everything.metrics["rows_dropped"] == 0
    # the normalisation (mean norm) is set by typical rows only: 5 rows at 200x lift the mean norm by ~8%
    assert kept.scale / everything.scale == pytest.approx(1 + 5 * 199 / len(x), abs=0.02)


# ------------------------------------------------------------------------------------------
# JumpReLU, BatchTopK, Matryoshka
# ------------------------------------------------------------------------------------------
VARIANTS = {  # arch: (class, settings that reach L0 ~3 on the planted problem in 4 epochs)
    "jumprelu": (JumpReLUSAE, {"lr": 1e-2}),  # the threshold moves ~lr a step: see the docs
    "batchtopk": (BatchTopKSAE, {}),
    "matryoshka": (MatryoshkaSAE, {"matryoshka_widths": (16, 48)}),
}


@pytest.mark.parametrize("arch", list(VARIANTS))
def test_variant_trainers_recover_the_planted_dictionary(data, arch):
    """Each of the 96 planted directions is found by some decoder row (cosine > 0.9), at an L0
    near the planted 3, with the inference rule the saved SAE uses."""
    x, val = data
    cls, extra = VARIANTS[arch]
    cfg = TrainConfig(arch=arch, d_sae=128, k=3, batch_size=256, epochs=4, seed=0, **extra)
    res = train_sae(x, cfg, val_acts=val, progress=False)
    assert isinstance(res.sae, cls)
    W = res.sae.W_dec.detach()
    best_cos = (planted_dictionary() @ W.T).max(dim=1).values
    assert (best_cos > 0.9).float().mean() > 0.95, best_cos.sort().values[:10]
    assert best_cos.mean() > 0.95
    assert res.metrics["val_fve"] > 0.8
    assert 2 <= res.metrics["val_l0"] <= 6
    assert res.metrics["val_dead_fraction"] < 0.1
    torch.testing.assert_close(res.sae.decoder_norms(), torch.ones(128))
    h = res.history
    assert h[-1]["mse"] < 0.5 * h[0]["mse"]
    assert ("sparsity" if arch == "jumprelu" else "auxk") in h[0]
    if arch == "jumprelu":
        assert (res.sae.threshold >= 0).all() and res.sae.threshold.mean() > 0.3  # it learned
    else:
        assert all(r["l0"] == pytest.approx(3.0) for r in h)  # the batch rule: 3 a token on average
        assert float(res.sae.theta) > 0


def test_jumprelu_l0_coefficient_buys_sparsity(data):
    x, val = data
    cfg = TrainConfig(arch="jumprelu", d_sae=128, batch_size=256, epochs=2, seed=0, lr=1e-2,
                      l0_coeff=0.01)
    loose = train_sae(x, cfg, val_acts=val, progress=False)
    tight = train_sae(x, TrainConfig(**{**cfg.__dict__, "l0_coeff": 1.0}), val_acts=val,
                      progress=False)
    assert tight.metrics["val_l0"] < 0.8 * loose.metrics["val_l0"]


def test_variant_config_validation():
    with pytest.raises(ValueError, match="widths"):
        TrainConfig(arch="matryoshka", d_sae=64, matryoshka_widths=(32, 16))
    assert TrainConfig(arch="matryoshka", d_sae=4608).widths == (72, 288, 1152, 4608)
    assert TrainConfig(arch="matryoshka", d_sae=64, matryoshka_widths=[8]).widths == (8, 64)
    with pytest.raises(ValueError, match="sparsity_loss"):
        TrainConfig(arch="jumprelu", sparsity_loss="l1")
    with pytest.raises(ValueError, match="k"):
        TrainConfig(arch="batchtopk", d_sae=8, k=9)


@pytest.mark.parametrize("arch", list(VARIANTS))
def test_train_saelens_variants_side_by_side(data, arch):
    """SAELens's own trainers for the three, on the same data: an inference JumpReLU SAE that
    takes raw activations and learned something."""
    sae_lens = pytest.importorskip("sae_lens")
    x, val = data
    cfg = TrainConfig(arch=arch, d_sae=96, k=3, batch_size=256, epochs=2, seed=0,
                      **VARIANTS[arch][1])
    res = train_saelens(x, cfg, val_acts=val, progress=False)
    assert isinstance(res.sae, sae_lens.JumpReLUSAE)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.metrics["val_fve"] > 0.3
    assert ("sparsity" if arch == "jumprelu" else "auxk") in res.history[0]


def test_main_train_matryoshka_widths(tmp_path, monkeypatch, data):
    """--arch matryoshka --widths: trained with those prefixes, saved as SAELens saves it."""
    sae_lens = pytest.importorskip("sae_lens")
    x, val = data
    _fake_cache(monkeypatch, x, val)
    out = tmp_path / "sae"
    args = ["--model", "tiny", "--hook", "blocks.1.hook_resid_pre", "--width", "64", "--k", "3",
            "--tokens", "4096", "--val-tokens", "1000", "--batch-size", "512", "--out", str(out),
            "--no-progress"]
    assert main_train([*args, "--arch", "matryoshka", "--widths", "8,32"]) == 0
    log = json.loads((out / "training_log.json").read_text())
    assert log["metadata"]["train_config"]["matryoshka_widths"] == [8, 32, 64]
    assert log["metadata"]["training_architecture"] == "matryoshka_batchtopk"
    assert sae_lens.SAE.load_from_disk(str(out)).cfg.architecture() == "jumprelu"
    for bad in ("32,8", "8,x", "8,100"):
        with pytest.raises(SystemExit):
            main_train([*args, "--arch", "matryoshka", "--widths", bad])


# ------------------------------------------------------------------------------------------
# target_l0: the penalty's coefficient steered to a sparsity
# ------------------------------------------------------------------------------------------
def test_steer_coefficient_moves_the_penalty_toward_the_target_l0():
    sae = ReluSAE(8, 32, l1_coeff=2.0)
    steer_coefficient(sae, "l1_coeff", l0=20.0, target=10.0, gain=0.1)  # too many fire: raise
    assert sae.l1_coeff == pytest.approx(2.0 * 2.0**0.1)
    steer_coefficient(sae, "l1_coeff", l0=10.0, target=10.0, gain=0.1)  # on target: keep
    assert sae.l1_coeff == pytest.approx(2.0 * 2.0**0.1)
    sae.l1_coeff = 2.0
    steer_coefficient(sae, "l1_coeff", l0=0.0, target=10.0, gain=0.1)  # none fire: lower, clamped
    assert sae.l1_coeff == pytest.approx(2.0 * torch.e**-0.1)


def test_target_l0_steers_training(data):
    """JumpReLU lands near the asked L0 (the planted data's own is 3); a ReLU SAE asked for far
    fewer latents than it starts with gets a growing coefficient, logged in the history."""
    x, val = data
    jump = train_sae(x, TrainConfig(arch="jumprelu", d_sae=128, batch_size=256, epochs=4, lr=1e-2,
                                    target_l0=2.0), val_acts=val, progress=False)
    assert abs(jump.metrics["val_l0"] / 2.0 - 1) < 0.25, jump.metrics["val_l0"]
    assert jump.metrics["val_fve"] > 0.7
    relu = train_sae(x, TrainConfig(arch="relu", d_sae=128, batch_size=256, epochs=1,
                                    l1_coeff=0.05, target_l0=2.0), progress=False)
    coeffs = [row["coeff"] for row in relu.history]
    assert coeffs[-1] > 3 * 0.05 and relu.metrics["final_coeff"] == coeffs[-1]


def test_target_l0_is_refused_where_it_means_nothing():
    with pytest.raises(InvalidArgumentError, match="target_l0 needs arch in"):
        TrainConfig(arch="topk", target_l0=8)
    with pytest.raises(InvalidArgumentError, match="target_l0"):
        TrainConfig(arch="relu", d_sae=16, target_l0=16)


def test_jumprelu_thresholds_can_start_at_an_l0():
    torch.manual_seed(0)
    sae = JumpReLUSAE(16, 64)
    x = torch.randn(2000, 16) * 3
    sae.init_threshold_for_l0_(x, 8)
    assert (sae.encode(x) > 0).float().sum(-1).mean().item() == pytest.approx(8, rel=0.05)
    with pytest.raises(InvalidArgumentError, match="0 < l0 < d_sae"):
        sae.init_threshold_for_l0_(x, 64)
