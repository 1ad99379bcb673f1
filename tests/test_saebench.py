"""Tests for interp_lib.evals.saebench: SAEBench's metrics on cases with a known answer."""
import pytest
import torch

from interp_lib.errors import InvalidArgumentError
from interp_lib.evals.saebench import (
    kl_div_score,
    logistic_probe,
    one_vs_rest,
    probe_set_classes,
    sparse_probing,
    top_k_mean_diff,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_logistic_probe_separates_what_is_separable_and_nothing_else():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    x[:, 2] *= 10  # one informative direction with a clear margin
    y = (x[:, 2] > 0).long()
    assert logistic_probe(x[:150], y[:150], x[150:], y[150:]) > 0.95
    noise = torch.randint(0, 2, (200,), generator=g)  # labels unrelated to x: chance
    assert abs(logistic_probe(x[:150], noise[:150], x[150:], noise[150:]) - 0.5) < 0.2


def test_top_k_mean_diff_and_one_vs_rest():
    x = torch.zeros(6, 4)
    x[:3, 1] = 5.0  # column 1 is the positives'; column 3 weaker
    x[:3, 3] = -2.0
    y = torch.tensor([1, 1, 1, 0, 0, 0])
    assert top_k_mean_diff(x, y, 2).tolist() == [1, 3]
    by_class = {"a": torch.ones(4, 2), "b": torch.zeros(10, 2), "c": 2 * torch.ones(10, 2)}
    xs, ys = one_vs_rest(by_class, "a", torch.Generator().manual_seed(0))
    assert ys.sum() == 4 and len(ys) == 8  # balanced
    assert ((xs[ys == 1] == 1).all()) and ((xs[ys == 0] != 1).all())
    assert {0.0, 2.0} == set(xs[ys == 0][:, 0].tolist())  # negatives from both other classes


def _planted(n, seed, d_sae=40, d_in=12):
    """Three classes; latent i (i = 0, 1, 2) fires exactly on class i, the rest is noise. The
    model's activation is a random mix of the latents (so the dense probe can read every class)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d_sae, d_in, generator=torch.Generator().manual_seed(99))
    acts, latents = {}, {}
    for c, name in enumerate(("code", "maths", "prose")):
        f = torch.rand(n, d_sae, generator=g) * (torch.rand(n, d_sae, generator=g) < 0.3)
        f[:, :3] = 0
        f[:, c] = 1 + torch.rand(n, generator=g)
        latents[name] = f
        acts[name] = f @ mix + 0.05 * torch.randn(n, d_in, generator=g)
    return acts, latents


def test_sparse_probing_finds_the_planted_label_latent():
    train_acts, train_lat = _planted(60, seed=0)
    test_acts, test_lat = _planted(30, seed=1)
    res = sparse_probing(train_acts, test_acts, train_lat, test_lat, k_values=(1, 2, 5))
    assert list(res.per_class.index) == ["code", "maths", "prose"]
    assert res.mean["sae_top_1"] == 1.0  # one latent per class is the whole concept
    assert res.mean["dense"] > 0.95 and res.mean["sae"] > 0.95
    # without the label latents (shuffled across classes) one latent reads nothing
    shuffled = {k: v[:, torch.randperm(v.shape[1], generator=torch.Generator().manual_seed(3))]
                for k, v in train_lat.items()}
    res2 = sparse_probing(train_acts, test_acts, shuffled, test_lat, k_values=(1,))
    assert res2.mean["sae_top_1"] < 0.8
    with pytest.raises(InvalidArgumentError, match="classes"):
        sparse_probing({"a": train_acts["code"]}, {"a": test_acts["code"]},
                       {"a": train_lat["code"]}, {"a": test_lat["code"]})


def test_probe_set_classes_split():
    train, test = probe_set_classes()
    assert len(train) == 7 and all(len(train[c]) == 7 and len(test[c]) == 3 for c in train)
    for c in train:
        assert not set(train[c]) & set(test[c])


def test_kl_div_score():
    assert kl_div_score(0.0, 2.0) == 1.0 and kl_div_score(2.0, 2.0) == 0.0
    with pytest.raises(InvalidArgumentError):
        kl_div_score(0.1, 0.0)


def test_sparse_probing_on_a_real_model_and_sae(tiny_gpt2):
    """End to end: texts through a (tiny) model and an SAE, mean-pooled, probed."""
    from interp_lib.evals.saebench import mean_pooled

    from .conftest import make_sae

    sae = make_sae(32, 64, "blocks.1.hook_resid_pre", k=8)
    classes = {"code": ["def f ( x ) : return x", "import x", "print ( x + 1 )", "def g ( y ) : return y"],
               "prose": ["the cat sat on the mat", "a dog sat", "hello world .", "the dog sat on a mat"]}
    pooled = {c: mean_pooled(tiny_gpt2, sae, t) for c, t in classes.items()}
    acts = {c: p[0] for c, p in pooled.items()}
    lat = {c: p[1] for c, p in pooled.items()}
    assert acts["code"].shape == (4, 32) and lat["code"].shape == (4, 64)
    res = sparse_probing(acts, acts, lat, lat, k_values=(1, 2))
    assert set(res.mean) == {"dense", "sae", "llm_top_1", "llm_top_2", "sae_top_1", "sae_top_2"}
    assert res.mean["dense"] == 1.0  # on its own training texts a dense probe is perfect


def test_sparse_probing_can_leave_out_the_model_probes():
    g = torch.Generator().manual_seed(0)
    acts = {c: torch.randn(12, 6, generator=g) + i for i, c in enumerate("ab")}
    lat = {c: (torch.randn(12, 20, generator=g) + i).relu() for i, c in enumerate("ab")}
    full = sparse_probing(acts, acts, lat, lat, k_values=(1, 2))
    sae_only = sparse_probing(acts, acts, lat, lat, k_values=(1, 2), model_probes=False)
    assert set(sae_only.per_class.columns) == {"sae", "sae_top_1", "sae_top_2"}
    for col in sae_only.per_class.columns:  # the same numbers as in the full run
        assert sae_only.mean[col] == full.mean[col]
    assert "dense" in full.per_class.columns and "llm_top_1" in full.per_class.columns
