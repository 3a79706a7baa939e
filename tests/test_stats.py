"""Bootstrap intervals and McNemar's test against hand computations, an exact (enumerated) bootstrap on tiny
cases, and the coverage of known binomial and clustered accuracies in seeded simulations."""
import itertools
from math import comb

import numpy as np
import pytest

from audiocomp.evaluate.stats import accuracy_interval, format_difference, format_interval, mcnemar_exact, \
    paired_difference


def exact_bootstrap(values, groups) -> tuple[np.ndarray, np.ndarray]:
    """Every one of the G^G equally likely resamples of the G groups: (support, probabilities) of the
    ratio sum(values of drawn items) / (items drawn)."""
    ids = sorted(set(groups))
    members = {g: [v for v, h in zip(values, groups) if h == g] for g in ids}
    stats = [sum(sum(members[g]) for g in draw) / sum(len(members[g]) for g in draw)
             for draw in itertools.product(ids, repeat=len(ids))]
    support, counts = np.unique(np.round(stats, 12), return_counts=True)
    return support, counts / counts.sum()


def bootstrap_cdf_gap(monte_carlo: np.ndarray, support: np.ndarray, probs: np.ndarray) -> float:
    exact = np.cumsum(probs)
    sampled = np.array([(np.round(monte_carlo, 12) <= x).mean() for x in support])
    return float(np.abs(sampled - exact).max())


def sampled(values, groups, n_boot: int) -> np.ndarray:
    """The bootstrap statistics the public functions take their percentiles from."""
    from audiocomp.evaluate import stats

    sums, sizes, _ = stats._units(np.asarray(values, dtype=float), groups)
    return stats._bootstrap(sums, sizes, n_boot, seed=0)


@pytest.mark.parametrize("values, groups", [
    ([1, 1, 1, 0, 0], None),                               # items: 5^5 resamples
    ([1, 1, 1, 0, 0, 0], ["a", "a", "b", "b", "b", "c"]),  # unequal groups: ratio of sums
    ([1, -1, 0, 1, 0], None),                              # a paired difference's per-item values
])
def test_bootstrap_distribution_matches_the_exact_enumeration(values, groups):
    support, probs = exact_bootstrap(values, groups if groups is not None else list(range(len(values))))
    assert bootstrap_cdf_gap(sampled(values, groups, 40_000), support, probs) < 0.01  # Monte Carlo error of a CDF at 40k: ~0.0025


def test_interval_is_the_exact_bootstraps_percentiles():
    # 3 of 5 right: P(0 right) = .4^5 = 1.0%, P(1) = 7.7% -> 2.5% quantile 0.2; P(5 right) = .6^5 = 7.8% -> 97.5% is 1.0
    ci = accuracy_interval([1, 1, 1, 0, 0], n_boot=20_000)
    assert (ci["value"], ci["low"], ci["high"], ci["n"], ci["resampled"]) == (0.6, 0.2, 1.0, 5, "items")
    assert {"n_boot": 20_000, "seed": 0, "level": 0.95}.items() <= ci.items()


def test_interval_by_hand_and_edge_cases():
    assert accuracy_interval([1, 0] * 15) == accuracy_interval(np.array([True, False] * 15))  # any 0/1 input
    ci = accuracy_interval([1] * 30)
    assert (ci["value"], ci["low"], ci["high"]) == (1.0, 1.0, 1.0)  # nothing varies when all are right
    one = accuracy_interval([1, 0, 1], groups=["clip", "clip", "clip"])
    assert one["low"] is None and one["high"] is None and "fewer than two groups" in one["note"] and one["groups"] == 1
    assert accuracy_interval([])["value"] is None
    with pytest.raises(ValueError, match="groups has 2 entries for 3 items"):
        accuracy_interval([1, 0, 1], groups=["a", "b"])


def test_seeded_and_group_aware():
    rng = np.random.default_rng(3)
    correct = rng.random(200) < 0.7
    assert accuracy_interval(correct, seed=5) == accuracy_interval(correct, seed=5)
    assert accuracy_interval(correct, seed=5)["low"] != accuracy_interval(correct, seed=6)["low"] or \
        accuracy_interval(correct, seed=5)["high"] != accuracy_interval(correct, seed=6)["high"]
    # groups of 10 identical outcomes: the information of 20 items, so a wider interval than 200 items give
    clustered = np.repeat(rng.random(20) < 0.7, 10)
    by_item, by_group = accuracy_interval(clustered), accuracy_interval(clustered, np.repeat(np.arange(20), 10))
    assert by_group["resampled"] == "groups" and by_group["groups"] == 20 and by_item["resampled"] == "items"
    assert by_group["high"] - by_group["low"] > 2.5 * (by_item["high"] - by_item["low"])


def test_coverage_of_a_known_binomial_accuracy():
    """A 95% interval should hold the true accuracy about 95% of the time (percentile bootstrap of a
    proportion with n = 200, p = 0.8: a little under, ~94%)."""
    rng = np.random.default_rng(0)
    p, n, reps = 0.8, 200, 400
    hits = 0
    for rep in range(reps):
        ci = accuracy_interval(rng.random(n) < p, n_boot=1000, seed=rep)
        hits += ci["low"] <= p <= ci["high"]
    assert 0.91 <= hits / reps <= 0.985


def test_coverage_with_clustered_items_needs_the_group_bootstrap():
    """Items of one recording succeed or fail together (per-group accuracy ~ Beta(1.4, 0.6): intra-class
    correlation 1/3). Resampling groups keeps ~95% coverage of the true accuracy 0.7; resampling items,
    as if they were independent, falls well short."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(60), 6)
    covered = {"groups": 0, "items": 0}
    reps = 300
    for rep in range(reps):
        correct = rng.random(len(groups)) < rng.beta(1.4, 0.6, size=60)[groups]
        for kind, g in (("groups", groups), ("items", None)):
            ci = accuracy_interval(correct, g, n_boot=1000, seed=rep)
            covered[kind] += ci["low"] <= 0.7 <= ci["high"]
    assert covered["groups"] / reps >= 0.9
    assert covered["items"] / reps < covered["groups"] / reps - 0.1


def test_mcnemar_exact_by_hand():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 * 0.5 ** 5)  # 0.0625
    # 2 vs 8 discordant: 2 * P(X <= 2), X ~ Binomial(10, 1/2)
    assert mcnemar_exact(2, 8) == pytest.approx(2 * sum(comb(10, k) for k in range(3)) / 2 ** 10)
    assert mcnemar_exact(8, 2) == mcnemar_exact(2, 8)
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)


def test_paired_difference_by_hand():
    a = np.array([1, 1, 1, 1, 0, 0, 1, 0, 1, 1], bool)
    b = np.array([1, 0, 1, 1, 1, 1, 1, 1, 1, 1], bool)  # a only: item 1; b only: items 4, 5, 7
    d = paired_difference(a, b)
    assert d["diff"] == pytest.approx(0.2) and (d["a_only"], d["b_only"], d["n"]) == (1, 3, 10)
    assert d["mcnemar_p"] == pytest.approx(2 * (1 + 4) / 16)  # 2 * P(X <= 1), X ~ Binomial(4, 1/2)
    assert d["low"] <= d["diff"] <= d["high"] and d["resampled"] == "items"
    same = paired_difference(a, a)
    assert (same["diff"], same["low"], same["high"], same["mcnemar_p"]) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="same items"):
        paired_difference(a, b[:5])


def test_paired_interval_is_narrower_than_unpaired_when_models_agree():
    """Two models right and wrong on mostly the same items: the paired interval of the difference is far
    narrower than the two separate accuracy intervals suggest (why the comparison must be paired)."""
    rng = np.random.default_rng(2)
    a = rng.random(300) < 0.8
    b = a.copy()
    flip = rng.choice(300, 9, replace=False)
    b[flip] = ~b[flip]
    d = paired_difference(a, b)
    ia, ib = accuracy_interval(a), accuracy_interval(b)
    assert d["high"] - d["low"] < 0.5 * ((ia["high"] - ia["low"]) + (ib["high"] - ib["low"])) / 2


def test_paired_group_bootstrap_matches_the_exact_enumeration():
    a = [1, 1, 0, 1, 0, 1]
    b = [1, 0, 1, 1, 1, 1]
    groups = ["x", "x", "y", "y", "z", "z"]
    d = paired_difference(a, b, groups, n_boot=40_000)
    support, probs = exact_bootstrap([bi - ai for ai, bi in zip(a, b)], groups)
    cdf = np.cumsum(probs)
    assert d["resampled"] == "groups" and d["groups"] == 3
    assert d["low"] == support[np.searchsorted(cdf, 0.025)] and d["high"] == support[np.searchsorted(cdf, 0.975)]


def test_formatting():
    assert format_interval({"value": 0.8123, "low": 0.77, "high": 0.851}) == "81.2% [77.0, 85.1]"
    assert format_interval(None) == "-" and format_interval({"value": 0.5, "low": None}) == "50.0%"
    assert format_difference({"diff": -0.01, "low": -0.03, "high": 0.01}) == "-1.0 pt [-3.0, +1.0]"
