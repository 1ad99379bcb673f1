"""interp_lib.evals.evidence on cases whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp_lib.evals import evidence
from interp_lib.features import analysis


def test_bootstrap_interval_covers_the_true_mean_at_about_the_stated_rate():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(200):
        sample = rng.normal(loc=3.0, scale=2.0, size=40)
        ci = evidence.bootstrap_ci(sample, n_boot=400, seed=trial)
        covered += ci.low <= 3.0 <= ci.high
    assert 0.88 <= covered / 200 <= 0.99  # nominal 0.95; the percentile bootstrap runs a bit low


def test_bootstrap_interval_of_a_constant_is_a_point_and_needs_two_units():
    ci = evidence.bootstrap_ci([2.0, 2.0, 2.0])
    assert (ci.estimate, ci.low, ci.high) == (2.0, 2.0, 2.0)
    # a share of yes/no outcomes is not bootstrapped: 3 of 3 is not the point [1, 1]
    share = evidence.bootstrap_ci([True, True, True])
    assert share.method == "Clopper-Pearson" and share.low < 1.0 == share.high
    assert ci.excludes(2.5) and not ci.excludes(2.0)
    with pytest.raises(ValueError, match="at least 2"):
        evidence.bootstrap_ci([1.0])


def _pooled(planted: bool, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """60 texts in 3 categories; feature 0 strong exactly on category 'a' if planted."""
    rng = np.random.default_rng(seed)
    cats = ["a"] * 20 + ["b"] * 20 + ["c"] * 20
    pooled = rng.random((60, 4))  # noise: strong on about half the texts of every category
    if planted:
        pooled[:20, 0] = 5.0 + rng.random(20)
    return pooled, cats


def _best_concentration(pooled: np.ndarray):
    return lambda labels: float(
        np.nanmax(analysis.category_concentration(pooled, list(labels), min_strong=3)[:1])
    )


def test_a_planted_specialist_beats_the_shuffled_label_null():
    pooled, cats = _pooled(planted=True)
    null = evidence.permutation_null(_best_concentration(pooled), cats, n=200)
    assert null.observed > 0.9 and null.observed > null.null_high and null.p_value < 0.01


def test_a_pure_noise_feature_does_not_beat_the_null():
    pooled, cats = _pooled(planted=False, seed=1)
    null = evidence.permutation_null(_best_concentration(pooled), cats, n=200)
    assert null.p_value > 0.05 and null.observed <= null.null_high


def test_random_directions_match_the_norm_and_differ():
    d = torch.tensor([3.0, 4.0, 0.0])
    r = evidence.random_directions(d, 5, seed=1)
    assert r.shape == (5, 3)
    torch.testing.assert_close(r.norm(dim=1), torch.full((5,), 5.0))
    assert not torch.allclose(r[0], r[1])
    torch.testing.assert_close(r, evidence.random_directions(d, 5, seed=1))  # seeded


def test_agreement_between_a_prediction_and_a_measurement():
    pred = [1.0, -2.0, 3.0, -4.0]
    assert evidence.rank_agreement(pred, [2.0, -4.0, 6.0, -8.0]) == pytest.approx(1.0)
    assert evidence.sign_agreement(pred, [1.0, 2.0, 3.0, -4.0]) == 0.75
    assert evidence.size_ratio(pred, [2.0, -4.0, 6.0, -8.0]) == 2.0
    assert np.isnan(evidence.rank_agreement([1.0, 1.0], [1.0, 2.0]))
    with pytest.raises(ValueError):
        evidence.rank_agreement([1.0], [1.0])


def test_auroc_test_separates_signal_from_chance():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(30, bool), np.zeros(30, bool)]
    assert evidence.auroc_test(np.r_[rng.normal(2, 1, 30), rng.normal(0, 1, 30)], labels) < 1e-3
    assert evidence.auroc_test(rng.normal(0, 1, 60), labels) > 0.01


def test_findings_table_writes_the_interval_and_the_verdict():
    f = evidence.finding("x beats y", "mean gain", evidence.Interval(0.3, 0.1, 0.5),
                         control="random direction", control_value=0.05, holds=True)
    table = evidence.findings_table([f])
    assert table.loc[0, "95% interval"] == "[0.1, 0.5]" and table.loc[0, "holds"] == "yes"
    assert table.loc[0, "method"] == ""  # an interval built by hand records no method
    ci = evidence.bootstrap_ci([0.2, 0.4, 0.9], n_boot=100)
    shown = evidence.findings_table([f._replace(value=ci, method=ci.method)])
    assert shown.loc[0, "method"] == "bootstrap (percentile, 100 resamples)"


def test_unit_sums_add_rows_within_each_unit():
    values = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    out = evidence.unit_sums(values, torch.tensor([7, 3, 7, 3]))
    np.testing.assert_array_equal(out, [[6.0, 60.0], [4.0, 40.0]])  # unit 3 first, then 7
    np.testing.assert_array_equal(evidence.unit_sums(np.ones(3), [0, 0, 1]), [[2.0], [1.0]])
    with pytest.raises(ValueError, match="unit ids"):
        evidence.unit_sums(np.ones(3), [0, 1])


def test_two_sample_interval_covers_the_true_difference():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(100):
        a, b = rng.normal(1.0, 1.0, 30), rng.normal(0.0, 2.0, 40)
        ci = evidence.two_sample_ci(a, b, n_boot=400, seed=trial)
        covered += ci.low <= 1.0 <= ci.high
    assert 0.85 <= covered / 100 <= 1.0
    same = evidence.two_sample_ci([3.0, 3.0, np.nan], [2.0, 2.0])
    assert (same.estimate, same.low, same.high) == (1.0, 1.0, 1.0)
    assert same.method == "bootstrap (percentile, 2000 resamples)"
    # two groups of yes/no outcomes: a difference of shares, with a score interval instead
    shares = evidence.two_sample_ci([True, True], [False, False])
    assert shares.estimate == 1.0 and shares.low < 1.0 and shares.method.startswith("Newcombe")
    with pytest.raises(ValueError, match="at least 2"):
        evidence.two_sample_ci([1.0], [0.0, 1.0])


def test_grouped_bootstrap_resamples_whole_groups():
    rows = np.array([1.0, 1.0, 5.0, 5.0, 3.0])
    ci = evidence.grouped_bootstrap_ci(np.mean, rows, ["a", "a", "b", "b", "c"], n_boot=500)
    assert ci.estimate == pytest.approx(3.0)
    assert 1.0 <= ci.low < 3.0 < ci.high <= 5.0
    # a group that repeats one value: the interval is that value
    same = evidence.grouped_bootstrap_ci(np.mean, [2.0, 2.0, 2.0], [0, 1, 1])
    assert (same.estimate, same.low, same.high) == (2.0, 2.0, 2.0)
    # one row per group: the plain bootstrap over rows
    x = np.arange(10.0)
    assert evidence.grouped_bootstrap_ci(np.mean, x, range(10), seed=3) == \
        evidence.bootstrap_ci(np.arange(10), lambda i: float(np.mean(x[i.astype(int)])), seed=3)
    with pytest.raises(ValueError, match="one group per row"):
        evidence.grouped_bootstrap_ci(np.mean, x, [0, 1])
