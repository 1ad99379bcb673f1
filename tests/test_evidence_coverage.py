"""Intervals and tests for shares of yes/no outcomes: coverage at small n, and known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from interp_lib.errors import InvalidArgumentError
from interp_lib.evals import evidence

SIZES = (5, 10, 20, 50)
SHARES = (0.02, 0.3, 0.5, 0.98)
TRIALS = 4000
SLACK = 3.5 * np.sqrt(0.95 * 0.05 / TRIALS)  # Monte Carlo error of a coverage near 0.95


def _coverage(interval_of_k, n: int, p: float, seed: int) -> float:
    """Share of ``TRIALS`` simulated samples of ``n`` outcomes with true share ``p`` whose
    interval (``interval_of_k(outcomes)``, computed once per count) covers ``p``."""
    rng = np.random.default_rng(seed)
    by_count = [interval_of_k(np.r_[np.ones(k), np.zeros(n - k)].astype(bool)) for k in range(n + 1)]
    counts = rng.binomial(n, p, size=TRIALS)
    return float(np.mean([not by_count[k].excludes(p) for k in counts]))


def _coverage_grid(interval_of_k) -> dict[tuple[int, float], float]:
    return {
        (n, p): _coverage(interval_of_k, n, p, seed=i)
        for i, (n, p) in enumerate((n, p) for n in SIZES for p in SHARES)
    }


def test_clopper_pearson_covers_at_least_the_stated_level_at_small_n():
    grid = _coverage_grid(evidence.share_ci)
    low = {k: v for k, v in grid.items() if v < evidence.LEVEL - SLACK}
    assert not low, f"Clopper-Pearson under-covers at (n, share): {low}"


def test_bootstrap_ci_of_yes_no_outcomes_is_clopper_pearson_and_covers():
    grid = _coverage_grid(evidence.bootstrap_ci)
    assert min(grid.values()) >= evidence.LEVEL - SLACK


def test_wilson_covers_close_to_the_stated_level():
    grid = _coverage_grid(lambda o: evidence.share_ci(o, method="wilson"))
    # Wilson is not exact: near 0 or 1 at small n it dips to about 0.90, but on average it
    # sits at the nominal level
    assert min(grid.values()) >= 0.90 - SLACK
    assert abs(np.mean(list(grid.values())) - evidence.LEVEL) < 0.02


@pytest.mark.parametrize("p", [0.02, 0.98])
def test_the_percentile_bootstrap_would_fail_the_coverage_test_near_0_or_1(p):
    def boot(o):
        return evidence.bootstrap_ci(o, n_boot=200, method="bootstrap")

    assert _coverage(boot, 5, p, seed=0) < evidence.LEVEL - SLACK  # the check can fail
    assert boot(np.ones(7)).low == boot(np.ones(7)).high == 1.0  # and is degenerate


@pytest.mark.parametrize("method", ["clopper-pearson", "wilson"])
def test_no_zero_width_interval_from_a_share(method):
    for n in range(1, 51):
        for k in range(n + 1):
            ci = evidence.proportion_ci(k, n, method=method)
            assert 0.0 <= ci.low <= ci.estimate <= ci.high <= 1.0
            assert ci.high - ci.low > 0, (k, n)
    assert evidence.proportion_ci(7, 7, method=method).low < 1
    assert evidence.proportion_ci(0, 10, method=method).high > 0


def test_the_reviewers_examples():
    # 3 of 10 peaks on the first token, against a chance level of 0.019
    assert evidence.binomial_test(3, 10, 0.019) == pytest.approx(7.4e-4, rel=0.02)
    three = evidence.bootstrap_ci([True] * 3 + [False] * 7)
    assert three.method == "Clopper-Pearson" and three.low > 0.019
    assert evidence.bootstrap_ci([1.0] * 3 + [0.0] * 7, method="bootstrap").low < 0.019
    assert evidence.proportion_ci(40, 40).low == pytest.approx(0.912, abs=0.002)
    assert evidence.proportion_ci(7, 7).low == pytest.approx(0.590, abs=0.002)
    assert evidence.bootstrap_ci(np.ones(40, bool)).low == pytest.approx(0.912, abs=0.002)
    assert evidence.share_ci([True] * 7).high == 1.0


def test_clopper_pearson_and_wilson_match_their_formulas():
    ci = evidence.proportion_ci(3, 10)
    assert (ci.low, ci.high) == pytest.approx(
        (stats.beta.ppf(0.025, 3, 8), stats.beta.ppf(0.975, 4, 7))
    )
    w = evidence.proportion_ci(3, 10, method="wilson")
    assert w.method == "Wilson"
    assert (w.low, w.high) == pytest.approx((0.1078, 0.6032), abs=1e-4)
    assert evidence.proportion_ci(3, 10, level=0.5).high < ci.high


def test_the_exact_binomial_test_keeps_its_level_under_the_null():
    rng = np.random.default_rng(0)
    for n, p0 in [(10, 0.019), (20, 0.3), (50, 0.5)]:
        counts = rng.binomial(n, p0, size=2000)
        p = np.array([evidence.binomial_test(int(k), n, p0) for k in counts])
        assert (p <= 0.05).mean() <= 0.05 + 3.5 * np.sqrt(0.05 * 0.95 / 2000)
    assert evidence.binomial_test(9, 10, 0.5, alternative="less") > 0.99
    assert evidence.binomial_test(9, 10, 0.5, alternative="two-sided") == pytest.approx(
        2 * evidence.binomial_test(9, 10, 0.5)
    )


def test_fisher_exact_test_on_the_tea_tasting_table():
    assert evidence.fisher_test([[3, 1], [1, 3]]) == pytest.approx(0.4857, abs=1e-4)
    assert evidence.fisher_test([[3, 1], [1, 3]], alternative="greater") == pytest.approx(
        0.2429, abs=1e-4
    )
    assert evidence.fisher_test(np.array([[8, 2], [1, 5]])) < 0.05


def test_difference_of_shares_is_newcombe_for_yes_no_groups_and_covers():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(1000):
        a, b = rng.random(10) < 0.3, rng.random(15) < 0.1
        covered += not evidence.two_sample_ci(a, b).excludes(0.2)
    assert covered / 1000 >= evidence.LEVEL - 3.5 * np.sqrt(0.05 * 0.95 / 1000)
    d = evidence.two_sample_ci([True, True], [False, False])
    assert d.method == "Newcombe (Wilson score)" and d.estimate == 1.0 and d.low < 1.0
    assert d == evidence.difference_ci(2, 2, 0, 2)
    boot = evidence.two_sample_ci([1.0, 1.0], [0.0, 0.0], method="bootstrap")
    assert (boot.low, boot.high) == (1.0, 1.0) and boot.method.startswith("bootstrap")


def test_the_chooser_keeps_the_bootstrap_for_continuous_statistics():
    x = np.random.default_rng(0).normal(size=30)
    assert evidence.interval_method(x) == "bootstrap (percentile, 2000 resamples)"
    assert evidence.bootstrap_ci(x) == evidence.bootstrap_ci(x, method="bootstrap")
    assert evidence.bootstrap_ci(x).method == "bootstrap (percentile, 2000 resamples)"
    b = np.r_[np.ones(4), np.zeros(6)].astype(bool)
    assert evidence.interval_method(b) == "Clopper-Pearson"
    assert evidence.interval_method(b, np.median).startswith("bootstrap")  # not a share
    assert evidence.bootstrap_ci(b, np.median).method.startswith("bootstrap")
    assert evidence.bootstrap_ci(b, method="wilson").method == "Wilson"
    assert not evidence.is_binary(np.c_[b, b]) and not evidence.is_binary([])
    assert not evidence.is_binary([0.0, 0.5]) and evidence.is_binary([True, False])


def test_the_findings_table_records_the_method_of_each_row():
    rows = [
        evidence.finding(
            "a", "share", evidence.bootstrap_ci([True, False, True]), control="c", holds=True
        ),
        evidence.finding(
            "b",
            "mean",
            evidence.bootstrap_ci([0.5, 2.0, 1.5], n_boot=100),
            control="c",
            holds=False,
        ),
        evidence.finding(
            "c",
            "count",
            evidence.proportion_ci(3, 10),
            control="chance",
            control_value=0.019,
            holds=evidence.binomial_test(3, 10, 0.019) < 0.05,
            method="exact binomial",
        ),
        evidence.finding("d", "x", evidence.Interval(1.0, 0.0, 2.0), control="c", holds=True),
    ]
    table = evidence.findings_table(rows)
    assert table["method"].tolist() == [
        "Clopper-Pearson",
        "bootstrap (percentile, 100 resamples)",
        "exact binomial",
        "",
    ]
    assert list(table.columns).index("method") == list(table.columns).index("95% interval") + 1
    assert rows[2].holds and rows[0].method == "Clopper-Pearson"


@pytest.mark.parametrize(
    "call, names",
    [
        (lambda: evidence.proportion_ci(11, 10), "successes"),
        (lambda: evidence.proportion_ci(-1, 10), "successes"),
        (lambda: evidence.proportion_ci(1.5, 10), "successes"),
        (lambda: evidence.proportion_ci(0, 0), "n must"),
        (lambda: evidence.proportion_ci(1, 10, level=1.0), r"level must be in \(0, 1\)"),
        (lambda: evidence.proportion_ci(1, 10, method="exact"), "method"),
        (lambda: evidence.share_ci([0.0, 0.5]), "outcomes"),
        (lambda: evidence.binomial_test(3, 10, 1.2), r"p0 must be in \[0, 1\]"),
        (lambda: evidence.binomial_test(3, 10, 0.1, alternative="more"), "alternative"),
        (lambda: evidence.fisher_test([[1, 2, 3], [4, 5, 6]]), "2x2"),
        (lambda: evidence.fisher_test([[1, -2], [4, 5]]), "non-negative"),
        (lambda: evidence.difference_ci(1, 2, 3, 2), "successes_b"),
        (lambda: evidence.bootstrap_ci([0.5, 2.0], method="wilson"), "0 or 1"),
        (lambda: evidence.bootstrap_ci([0.0, 1.0], method="bca"), "method"),
        (lambda: evidence.two_sample_ci([0.5, 2.0], [1.0, 0.0], method="newcombe"), "0/1"),
    ],
)
def test_bad_arguments_name_the_argument_and_its_range(call, names):
    with pytest.raises(InvalidArgumentError, match=names):
        call()


def test_values_that_happen_to_be_0_or_1_are_not_taken_for_yes_no_outcomes():
    """Only booleans are yes/no outcomes: a share measured per unit that is 1.0 on every unit (all
    of a text's coordinates non-zero) or a paired difference of outcomes that happens to be 0 or 1
    keeps the bootstrap; as outcomes they would give a wide exact interval and a wrong verdict."""
    all_dense = [1.0] * 7  # per text: the share of coordinates that are non-zero
    assert evidence.bootstrap_ci(all_dense).method.startswith("bootstrap")
    assert (evidence.bootstrap_ci(all_dense).low, evidence.bootstrap_ci(all_dense).high) == (1, 1)
    paired = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0]) - np.zeros(10, int)  # named - named_other
    assert evidence.bootstrap_ci(paired).method.startswith("bootstrap")
    assert evidence.two_sample_ci([1.0, 0.0, 1.0], [0.0, 0.0]).method.startswith("bootstrap")
    assert evidence.bootstrap_ci(np.array(all_dense) == 1).method == "Clopper-Pearson"

