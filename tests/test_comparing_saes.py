"""Comparing SAEs (similarity, specialisation, tables, figures) on small hand-made tensors and the
tiny 2-layer GPT-2 of conftest."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from interp_lib.evals import metrics
from interp_lib.evals.metrics import SAEMetrics
from interp_lib.features import analysis, emoji, similarity
from interp_lib.model import encoding
from interp_lib.sae import saelens_format, zoo
from interp_lib.site import plots

from .conftest import make_sae


# ---------------------------------------------------------------------------------------------
# labels and tables
def test_sae_label():
    assert zoo.sae_label("r", "blocks.15.hook_resid_pre") == "resid 15"
    assert zoo.sae_label("r", "blocks.6.hook_mlp_out") == "mlp_out 6"
    assert zoo.sae_label("r", "something-else") == "something-else"


def _metrics(l0=3.0, fve=0.9):
    return SAEMetrics(l0=l0, fve=fve, fve_typical=fve, massive_fraction=0.0, mse=0.1, ce_clean=2.0, ce_sae=2.5, ce_zero=7.0, ce_recovered=0.9,
                      ce_increase=0.5, kl_div=0.1, dead_fraction=0.25, dense_fraction=0.0, density=np.zeros(4), n_tokens=10)


def test_metrics_table_from_metrics_and_dicts():
    table = metrics.metrics_table({"a": _metrics(), "b": {"l0": 5, "fve": 0.5}})
    assert list(table.index) == ["a", "b"]
    assert table.loc["a", "L0"] == 3.0 and table.loc["a", "loss increase (nats)"] == 0.5
    assert table.loc["b", "variance explained"] == 0.5
    assert math.isnan(table.loc["b", "CE-loss recovered"])  # missing metric -> NaN


def test_recorded_metrics_of_unshipped_release_is_empty():
    assert zoo.recorded_metrics("gpt2-small-res-jb", "blocks.6.hook_resid_pre") == {}


def test_training_recipe_of_shipped_and_unshipped_saes():
    from interp_lib.sae.zoo import recorded_metrics, sae_recipe

    assert zoo.training_recipe("gpt2-small-res-jb", "blocks.6.hook_resid_pre") == {}
    for sae_id in ("blocks.5.hook_resid_pre", "blocks.25.hook_resid_pre"):
        recorded = sae_recipe(sae_id, recorded_metrics("smollm2-135m-res", sae_id)["recipe"])
        assert zoo.training_recipe("smollm2-135m-res", sae_id) == {
            "training tokens": recorded["train_tokens"], "passes": recorded["epochs"], "batch size": recorded["batch_size"],
            "seed": recorded["seed"], "optimiser steps": 7266}  # 1,240,155 tokens (BOS left out) x 6 // 1024


# ---------------------------------------------------------------------------------------------
# decoder geometry
def test_decoder_directions_are_unit_rows():
    w = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    d = similarity.decoder_directions(w)
    assert torch.allclose(d, torch.tensor([[0.6, 0.8], [0.0, -1.0]]))
    with pytest.raises(ValueError):
        similarity.decoder_directions(torch.zeros(3))


def test_best_matches_finds_the_permutation_and_its_cosine():
    a = torch.eye(4)
    b = torch.eye(4)[[2, 0, 3, 1]] * 5  # same directions, permuted and rescaled
    m = similarity.best_matches(a, b, chunk=3)  # chunking must not change the answer
    assert m.index.tolist() == [1, 3, 0, 2]
    assert torch.allclose(m.similarity, torch.ones(4))


def test_best_matches_cosine_value_and_sign():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[-1.0, 0.0], [1.0, 1.0]])  # the anti-parallel one is NOT a match
    m = similarity.best_matches(a, b)
    assert m.index.tolist() == [1]
    assert m.similarity.item() == pytest.approx(1 / math.sqrt(2))
    with pytest.raises(ValueError, match="different spaces"):
        similarity.best_matches(torch.eye(2), torch.eye(3))


def test_best_matches_can_exclude_the_same_number():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    plain = similarity.best_matches(a, b)
    assert plain.index.tolist() == [0, 1, 2]
    assert similarity.same_number_share(plain) == 1.0
    other = similarity.best_matches(a, b, exclude_same=True, chunk=2)  # chunk boundary inside
    assert other.index.tolist() == [2, 2, 0]
    assert other.similarity[1].item() == pytest.approx(0.1 / math.sqrt(1.01))
    assert similarity.same_number_share(other) == 0.0
    # more features in A than in B: rows beyond B's size have no same-numbered partner
    wide = similarity.best_matches(torch.eye(3), torch.eye(3)[:2], exclude_same=True)
    assert wide.index.tolist() == [1, 0, 0]
    with pytest.raises(ValueError):
        similarity.best_matches(a, b[:1], exclude_same=True)


def test_best_matches_reads_sae_decoders():
    sae_a = make_sae(8, 16, "blocks.0.hook_resid_pre", seed=1)
    m = similarity.best_matches(sae_a, sae_a)
    assert m.index.tolist() == list(range(16))
    assert torch.allclose(m.similarity, torch.ones(16), atol=1e-5)


def test_activation_matches():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(50, 3, generator=g)
    a[:, 2] = 0.0  # never fires
    b = torch.stack([a[:, 1] * 3 + 1, torch.rand(50, generator=g), a[:, 0], torch.zeros(50)], dim=1)
    m = similarity.activation_matches(a, b, chunk=2)
    assert m.index.tolist() == [2, 0, -1]
    assert torch.allclose(m.similarity[:2], torch.ones(2), atol=1e-5)  # correlation ignores scale and offset
    assert math.isnan(m.similarity[2].item())
    assert similarity.match_shares(m.similarity, (0.9,)) == {0.9: 1.0}  # NaN left out
    assert similarity.same_number_share(m) == 0.0
    # exclude_same: feature 0 of A may not take feature 0 of B
    m2 = similarity.activation_matches(a, a, exclude_same=True)
    assert (m2.index[:2] != torch.arange(2)).all()
    assert similarity.same_number_share(similarity.activation_matches(a, a)) == 1.0
    with pytest.raises(ValueError):
        similarity.activation_matches(a, b[:10])
    # a feature firing on a single token is not matched, however well it "correlates"
    c = torch.zeros(50, 2)
    c[7, 0] = 1.0
    c[:, 1] = a[:, 0]
    d = torch.zeros(50, 2)
    d[7, 0] = 5.0
    d[:, 1] = a[:, 0] + 0.5 * torch.rand(50, generator=g)
    one = similarity.activation_matches(c, d, min_active=2)
    assert one.index[0].item() == -1 and one.index[1].item() == 1
    assert similarity.activation_matches(c, d, min_active=1).index[0].item() == 0


@pytest.mark.parametrize("exclude_same", [False, True])
def test_activation_matches_equal_a_dense_reference(exclude_same):
    """Sparse activations with rare and silent features on both sides: the same best partner
    and correlation as the full correlation matrix, masked by hand."""
    g = torch.Generator().manual_seed(3)
    a = torch.rand(80, 30, generator=g) * (torch.rand(80, 30, generator=g) < 0.3)
    b = torch.rand(80, 25, generator=g) * (torch.rand(80, 25, generator=g) < 0.3)
    a[:, ::4] *= torch.rand(80, 1, generator=g) < 0.05  # rare features of A
    b[:, 1::5] = 0.0  # silent features of B
    b[:, 3] = a[:, 3] * 2  # feature 3 of A has its twin at number 3 of B
    m = similarity.activation_matches(a, b, exclude_same=exclude_same, min_active=5, chunk=7)
    za, zb = a - a.mean(0), b - b.mean(0)
    corr = (za / za.norm(dim=0)).T @ (zb / zb.norm(dim=0).clamp_min(1e-12))
    corr[:, (b != 0).sum(0) < 5] = -torch.inf
    if exclude_same:
        corr[torch.arange(25), torch.arange(25)] = -torch.inf
    ok = (a != 0).sum(0) >= 5
    for i in range(30):
        if not ok[i]:
            assert m.index[i] == -1 and math.isnan(m.similarity[i])
        else:
            assert m.index[i] == int(corr[i].argmax()), i
            assert abs(float(m.similarity[i]) - float(corr[i].max())) < 1e-5
    assert (m.index[3] == 3) != exclude_same


def test_match_shares_and_random_baseline():
    shares = similarity.match_shares(torch.tensor([0.95, 0.75, 0.6, 0.1]), thresholds=(0.5, 0.7, 0.9))
    assert shares == {0.5: 0.75, 0.7: 0.5, 0.9: 0.25}
    base = similarity.random_match_baseline(200, 400, 64, seed=0)
    assert base.shape == (200,)
    assert 0.2 < float(base.mean()) < 0.6  # random directions in 64-d: well below a real match
    assert torch.equal(base, similarity.random_match_baseline(200, 400, 64, seed=0))


# ---------------------------------------------------------------------------------------------
# specialisation
CATS = ["a", "a", "a", "b", "b", "b"]


def _pooled():
    # feature 0: strong on the three "a" texts only; feature 1: on everything;
    # feature 2: strong on two "a" and one "b"; feature 3: never fires
    return np.array([
        [5.0, 1.0, 4.0, 0.0],
        [4.0, 1.0, 4.0, 0.0],
        [6.0, 1.0, 0.0, 0.0],
        [0.0, 1.0, 4.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
    ])


def test_category_concentration():
    conc = analysis.category_concentration(_pooled(), CATS, min_strong=3)
    assert conc[0] == 1.0
    assert conc[1] == 0.5
    assert conc[2] == pytest.approx(2 / 3)
    assert math.isnan(conc[3])
    # with a higher bar, features strong on only three texts are not scored
    assert np.isnan(analysis.category_concentration(_pooled(), CATS, min_strong=4)[[0, 2]]).all()
    with pytest.raises(ValueError):
        analysis.category_concentration(_pooled(), CATS[:-1])


def test_specialisation_summary():
    s = analysis.specialisation_summary(_pooled(), CATS)
    # "a": feature 0 scores 3 - 0 = 3 >= ceil(3/2); "b": best score is 0 (feature 1: 3 - 3) -> not a specialist
    assert s["categories_with_specialist"] == 1
    assert s["specialist_features"] == 1
    assert s["scored_features"] == 3
    assert s["mean_concentration"] == pytest.approx((1 + 0.5 + 2 / 3) / 3)
    assert s["share_concentrated"] == pytest.approx(1 / 3)


def test_specialist_feature_count_agrees_with_analysis():
    from interp_lib.features.analysis import specialist_scores

    rng = np.random.default_rng(0)
    pooled = rng.exponential(size=(12, 40)) * (rng.random((12, 40)) < 0.3)
    cats = ["a"] * 4 + ["b"] * 5 + ["c"] * 3
    scores = specialist_scores(pooled, cats)
    need = np.array([2, 3, 2])
    expected = int((scores[["a", "b", "c"]].to_numpy() >= need).any(1).sum())
    assert analysis.specialist_feature_count(pooled, cats) == expected
    assert analysis.specialist_feature_count(_pooled(), CATS) == 1


def test_paired_subsamples_are_stratified_paired_and_without_replacement():
    pooled = _pooled()
    seen = []

    def stat(p, cats):
        seen.append(list(cats))
        return float(p[:, 0].sum())

    cats = CATS
    out = analysis.paired_subsamples({"x": pooled, "y": pooled * 2}, cats, stat, n=30, frac=2 / 3, seed=1)
    assert out.shape == (30, 2) and list(out.columns) == ["x", "y"]
    assert all(c == ["a", "a", "b", "b"] for c in seen)  # two of three texts of each category
    np.testing.assert_allclose(out["y"], 2 * out["x"])  # the same texts for both SAEs
    # feature 0 is 5, 4, 6 on the "a" texts and 0 on "b": sums of two distinct "a" texts only
    assert set(out["x"]) <= {9.0, 11.0, 10.0} and out["x"].nunique() > 1
    again = analysis.paired_subsamples({"x": pooled, "y": pooled * 2}, cats, stat, n=30, frac=2 / 3, seed=1)
    pd.testing.assert_frame_equal(out, again)
    with pytest.raises(ValueError):
        analysis.paired_subsamples({"x": pooled, "y": pooled[:3]}, cats, stat)
    with pytest.raises(ValueError):
        analysis.paired_subsamples({"x": pooled}, cats, stat, frac=0)


def test_is_emoji_and_emoji_mask():
    assert emoji.is_emoji("😂") and emoji.is_emoji(" ☕") and emoji.is_emoji("➡️")
    assert not emoji.is_emoji("hello") and not emoji.is_emoji("…") and not emoji.is_emoji("é")
    assert not emoji.is_emoji("\u200d") and not emoji.is_emoji("\ufe0f")
    # '' pieces belong to the character that a later token completes
    mask = emoji.emoji_mask(["hi", "", "", " 😂", " there", ""])
    assert mask.tolist() == [False, True, True, True, False, False]


def test_token_precision():
    acts = torch.tensor([
        [9.0, 1.0, 0.0],
        [8.0, 0.0, 0.0],
        [1.0, 5.0, 2.0],
        [0.0, 4.0, 0.0],
    ])
    mask = np.array([True, True, False, False])
    p = emoji.token_precision(acts, mask, top=2, min_active=2)
    assert p[0] == 1.0  # its two strongest tokens are both in the mask
    assert p[1] == 0.0  # strongest on tokens 2 and 3
    assert math.isnan(p[2])  # active on one token only
    p3 = emoji.token_precision(acts, mask, top=3, min_active=1)
    assert p3[0] == pytest.approx(2 / 3) and p3[1] == pytest.approx(1 / 3) and p3[2] == 0.0
    with pytest.raises(ValueError):
        emoji.token_precision(acts, mask[:3])


def test_top_text_overlap():
    a = np.array([[3.0, 0.0], [2.0, 1.0], [1.0, 0.0], [0.0, 2.0]])
    b = np.array([[0.0, 1.0], [2.0, 1.0], [3.0, 0.0], [0.0, 0.0]])
    j = similarity.top_text_overlap(a, b, [0, 1], [0, 0], n=2)
    assert j[0] == pytest.approx(1 / 3)  # {0, 1} vs {2, 1}
    assert j[1] == pytest.approx(1 / 3)  # {3, 1} vs {2, 1}
    assert math.isnan(similarity.top_text_overlap(np.zeros((2, 1)), np.zeros((2, 1)), [0], [0])[0])


# ---------------------------------------------------------------------------------------------
# SAEs on a model: scoring several at once shares one clean pass but mixes nothing up
def _tokens(model, n=6, ctx=12):
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(2, model.cfg.d_vocab, (n, ctx), generator=g)
    toks[:, 0] = 0
    return toks


def test_evaluate_several_saes_equals_each_alone(tiny_gpt2):
    d = tiny_gpt2.cfg.d_model
    saes = {
        "res1": make_sae(d, 64, "blocks.1.hook_resid_pre", k=4, seed=0),
        "res1-relu": make_sae(d, 48, "blocks.1.hook_resid_pre", k=None, seed=1),
        "mlp0": make_sae(d, 64, "blocks.0.hook_mlp_out", k=8, seed=2),
    }
    toks = _tokens(tiny_gpt2)
    many = metrics.evaluate(tiny_gpt2, saes, toks, batch_size=4, progress=False)
    assert set(many) == set(saes)
    for name, sae in saes.items():
        one = metrics.evaluate(tiny_gpt2, sae, toks, batch_size=4, progress=False)
        for key, value in one.summary().items():
            assert many[name].summary()[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (name, key)
        np.testing.assert_allclose(many[name].density, one.density)


def test_evaluate_rejects_bad_input(tiny_gpt2):
    with pytest.raises(ValueError):
        metrics.evaluate(tiny_gpt2, {}, _tokens(tiny_gpt2))
    sae = make_sae(tiny_gpt2.cfg.d_model + 1, 8, "blocks.1.hook_resid_pre")
    with pytest.raises(ValueError, match="d_in"):
        metrics.evaluate(tiny_gpt2, {"x": sae}, _tokens(tiny_gpt2))


def test_encode_texts_of_several_saes_equals_each_alone(tiny_gpt2):
    from interp_lib.model.encoding import encode_texts, hook_activations

    d = tiny_gpt2.cfg.d_model
    saes = {"res1": make_sae(d, 32, "blocks.1.hook_resid_pre", k=4, seed=3),
            "mlp0": make_sae(d, 16, "blocks.0.hook_mlp_out", k=None, seed=4)}
    texts = ["the cat sat on the mat", "def f ( x ) : return x + 1"]
    many = encoding.encode_texts(tiny_gpt2, saes, texts)
    assert set(many.hook_acts) == {"blocks.1.hook_resid_pre", "blocks.0.hook_mlp_out"}
    for name, sae in saes.items():
        one = encode_texts(tiny_gpt2, sae, texts)
        got = many.encoded[name]
        assert got.tokens == one.tokens and got.texts == one.texts
        for a, b in zip(got.acts, one.acts):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(got.max, one.max)
        torch.testing.assert_close(got.mean, one.mean)
    for a, b in zip(many.hook_acts["blocks.1.hook_resid_pre"],
                    hook_activations(tiny_gpt2, "blocks.1.hook_resid_pre", texts)):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        encoding.encode_texts(tiny_gpt2, {}, texts)


def test_to_saelens_reproduces_the_homebrew_sae():
    from interp_lib.sae.homebrew import ReluSAE, TopKSAE

    torch.manual_seed(0)
    raw = torch.randn(32, 16) * 7
    scale = 0.3
    for sae in (TopKSAE(16, 40, k=5, generator=torch.Generator().manual_seed(1)),
                ReluSAE(16, 40, generator=torch.Generator().manual_seed(2))):
        with torch.no_grad():
            sae.b_dec.copy_(torch.randn(16))
            sae.encoder.bias.copy_(torch.randn(40) * 0.1)
        lens = saelens_format.to_saelens(sae, scale, hook_name="blocks.0.hook_resid_pre", model_name="test")
        assert lens.cfg.metadata.hook_name == "blocks.0.hook_resid_pre"
        with torch.no_grad():
            ours = sae.decode(sae.encode(raw * scale)) / scale
            theirs = lens.decode(lens.encode(raw))
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


def test_with_hook_sets_metadata():
    sae = make_sae(4, 8, "blocks.0.hook_resid_pre")
    assert saelens_format.with_hook(sae, "blocks.3.hook_mlp_out", "m") is sae
    assert sae.cfg.metadata.hook_name == "blocks.3.hook_mlp_out" and sae.cfg.metadata.model_name == "m"


# ---------------------------------------------------------------------------------------------
# figures and the live callback
def test_live_curves_collects_rows_without_drawing():
    live = plots.LiveCurves(keys=["loss", "l0"], live=False)
    for step in range(3):
        live({"tokens": step * 10, "loss": 1.0 / (step + 1), "l0": 5.0})
    assert [r["tokens"] for r in live.rows] == [0, 10, 20]
    fig = live.figure()
    assert len(fig.data) == 2 and list(fig.data[0].y) == [1.0, 0.5, 1 / 3]


def test_figures():
    fig = plots.density_figure({"a": ([1, 2], [-3.0, -2.0, -1.0])})
    assert list(fig.data[0].x) == [-2.5, -1.5]
    df = pd.DataFrame({"l0": [5, 1, 9], "fve": [0.5, 0.2, 0.9], "family": ["s", "s", "zoo"], "name": ["x", "y", "z"]})
    fig = plots.tradeoff_figure(df, x="l0", y="fve", group="family", label="name")
    assert [t.name for t in fig.data] == ["s", "zoo"]
    assert list(fig.data[0].x) == [1.0, 5.0]  # sorted along x
    fig = plots.distributions_figure({"a": [0.0, 0.1, 0.9, 1.0], "b": np.array([0.5, np.nan])}, bins=2, value_range=(0, 1))
    assert list(fig.data[0].y) == [0.5, 0.5] and list(fig.data[1].y) == [0.0, 1.0]  # shares; NaN left out
    fig = plots.curves_figure({"r1": [{"tokens": 1, "loss": 2.0}], "r2": [{"tokens": 1, "loss": 3.0}]}, ["loss"])
    assert len(fig.data) == 2 and fig.layout.yaxis.type == "log"
    fig = plots.curves_figure([{"tokens": 1, "l0": 2.0}, {"tokens": 2, "l0": 3.0, "val_fve": 0.5}], ["l0", "val_fve"])
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[1].x) == [2]  # rows without val_fve skipped
    assert fig.layout.yaxis.type != "log"


# ---------------------------------------------------------------------------------------------
# specialisation against chance: shuffled-label nulls, density control, intervals over texts
SEVEN = [c for c in "abcdefg" for _ in range(10)]


def _planted_and_noise(seed=0, n_noise=300):
    """7 x 10 texts: 20 planted specialists (strong on 4-6 texts of one category, weak on a few
    others) and ``n_noise`` features strong on 3-6 random texts."""
    rng = np.random.default_rng(seed)
    cats = np.array(SEVEN)
    planted = np.zeros((70, 20))
    for f in range(20):
        rows = rng.choice(np.flatnonzero(cats == "abcdefg"[f % 7]), size=rng.integers(4, 7), replace=False)
        planted[rows, f] = rng.uniform(5, 6, size=len(rows))
        planted[rng.choice(70, size=3, replace=False), f] += 0.5  # weak elsewhere: not strong
    noise = np.zeros((70, n_noise))
    for f in range(n_noise):
        noise[rng.choice(70, size=rng.integers(3, 7), replace=False), f] = rng.uniform(5, 6)
    return planted, noise


def test_expected_concentration_known_answers_and_monte_carlo():
    # two categories of two: two strong texts share a category with probability 2/6
    assert analysis.expected_concentration(2, (2, 2)) == pytest.approx((2 * 2 / 6 + 4 / 6) / 2)
    assert analysis.expected_concentration(1, (2, 2)) == 1.0
    assert analysis.expected_concentration(4, (2, 2)) == pytest.approx(0.5)
    assert analysis.expected_concentration(3, (3, 3)) == pytest.approx(0.7)  # P(all same) = 2/20
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(7), 10)
    for n in (3, 5, 12):
        draws = [np.bincount(rng.choice(labels, n, replace=False)).max() / n for _ in range(20000)]
        assert analysis.expected_concentration(n, (10,) * 7) == pytest.approx(np.mean(draws), abs=0.005)
    with pytest.raises(ValueError):
        analysis.expected_concentration(0, (2, 2))


def test_concentration_excess_takes_chance_off():
    excess = analysis.concentration_excess(_pooled(), CATS)
    assert excess[0] == pytest.approx(1 - 0.7)  # strong on the three "a" texts: 1 vs 0.7 by chance
    assert excess[1] == pytest.approx(0.0)  # strong on all six texts: 0.5, as by chance
    assert excess[2] == pytest.approx(2 / 3 - 0.7)
    assert math.isnan(excess[3])
    assert analysis.mean_concentration_excess(_pooled(), CATS) == pytest.approx(np.nanmean(excess))


def test_concentration_null_planted_beats_noise_does_not():
    planted, noise = _planted_and_noise()
    real = analysis.concentration_null(np.hstack([planted, noise]), SEVEN, n=200)
    assert real.p_value < 0.01 and real.observed > real.null_high
    pure = analysis.concentration_null(noise, SEVEN, n=200)
    assert pure.p_value > 0.05 and pure.observed <= pure.null_high
    # the null's mean is the exact expectation for the features' numbers of strong texts
    n_strong = analysis.strong_mask(noise).sum(0)
    exact = np.mean([analysis.expected_concentration(int(k), (10,) * 7) for k in n_strong])
    assert pure.null_mean == pytest.approx(exact, abs=0.01)
    assert abs(analysis.mean_concentration_excess(noise, SEVEN)) < 0.02
    assert analysis.mean_concentration_excess(planted, SEVEN) > 0.4


def test_sparser_noise_scores_higher_but_not_in_excess():
    """The issue's point: features strong on fewer texts have a higher concentration by chance."""
    rng = np.random.default_rng(1)
    sparse = np.zeros((70, 400))
    dense = np.zeros((70, 400))
    for f in range(400):
        sparse[rng.choice(70, size=3, replace=False), f] = 1.0
        dense[rng.choice(70, size=10, replace=False), f] = 1.0
    conc = [np.nanmean(analysis.category_concentration(m, SEVEN)) for m in (sparse, dense)]
    assert conc[0] > conc[1] + 0.1
    excess = [analysis.mean_concentration_excess(m, SEVEN) for m in (sparse, dense)]
    assert abs(excess[0]) < 0.02 and abs(excess[1]) < 0.02


def test_specialist_null_and_best_share():
    planted, noise = _planted_and_noise()
    both = np.hstack([planted, noise])
    share = analysis.best_specialist_share(both, SEVEN, "a")
    assert share == pytest.approx(analysis.category_specialists(both, SEVEN).score.iloc[0] / 10)
    assert share >= 0.4
    assert analysis.specialist_null(both, SEVEN, "a").p_value < 0.01
    assert analysis.specialist_null(noise, SEVEN, "a").p_value > 0.05
    with pytest.raises(ValueError):
        analysis.best_specialist_share(both, SEVEN, "z")


def test_subsample_interval_covers_the_mean_at_about_the_stated_rate():
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(200):
        x = rng.normal(1.0, 2.0, size=(70, 1))
        draws = analysis.paired_subsamples({"x": x}, SEVEN, lambda p, c: float(p.mean()), n=100, seed=rep)
        ci = analysis.subsample_interval(float(x.mean()), draws["x"], SEVEN)
        covered += ci.low <= 1.0 <= ci.high
        assert ci.estimate == pytest.approx(float(x.mean()))
    assert 0.9 <= covered / 200 <= 0.99
    with pytest.raises(ValueError):
        analysis.subsample_interval(0.0, [0.1, 0.2], SEVEN, frac=1.0)
    # kept: 8 of 10 texts per category, 56 of 70 -> spread x sqrt(56 / 14) = x 2
    ci = analysis.subsample_interval(0.9, [0.8, 1.0], SEVEN)
    assert ci.high - ci.estimate == pytest.approx(1.959964 * np.std([0.8, 1.0], ddof=1) * 2)
    assert analysis.subsample_interval(0.9, [0.8, 1.0], SEVEN, bounds=(0, 1)).high == 1.0


def test_precision_count_null():
    rng = np.random.default_rng(0)
    acts = rng.exponential(size=(500, 30)) * (rng.random((500, 30)) < 0.2)
    mask = np.zeros(500, dtype=bool)
    mask[:25] = True
    acts[:25, :5] = 50.0  # five features whose ten strongest tokens are all in the mask
    null = emoji.precision_count_null(acts, mask, top=10, min_active=5, n=100)
    assert null.observed == 5.0
    assert null.observed == float((emoji.token_precision(acts, mask, top=10, min_active=5) >= 0.9).sum())
    assert null.null_high < 1 and null.p_value < 0.05


def test_reconstruction_sums_agree_with_metrics():
    sae = make_sae(16, 32, "blocks.0.hook_resid_pre", k=4)
    g = torch.Generator().manual_seed(0)
    acts = [torch.randn(n, 16, generator=g) for n in (5, 9, 7)]
    acts[1][3] *= 100  # one massive token
    sums = metrics.reconstruction_sums(sae, acts)
    assert sums.shape == (3, 4)
    x = torch.cat(acts)
    with torch.no_grad():
        err = (x - sae.decode(sae.encode(x))).pow(2).sum(-1)
    assert metrics.fve_of_sums(sums, typical=False) == pytest.approx(metrics.fve(x, err))
    assert metrics.fve_of_sums(sums) == pytest.approx(metrics.typical_fve(x, err)[0])
    assert sums[1, 2] < sums[1, 0]  # the massive token's error counts only over all tokens
