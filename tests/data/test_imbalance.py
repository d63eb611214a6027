"""Long-tail profiles: the CIFAR-LT numbers, step profile, class order, errors."""

import numpy as np
import pytest

from noisytail.data.imbalance import long_tail_counts, subsample_to_counts
from noisytail.data.noise import CorruptionError


def test_exponential_matches_cifar10_lt():
    counts = long_tail_counts(np.full(10, 5000), ratio=100)
    assert counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert counts.sum() == 12406


def test_exponential_cifar100_lt_total():
    assert long_tail_counts(np.full(100, 500), ratio=100).sum() == 10847


def test_n_max_defaults_to_smallest_class_and_caps():
    avail = np.array([4900, 5000, 4950])
    assert long_tail_counts(avail, ratio=1.0).tolist() == [4900] * 3
    capped = long_tail_counts(avail, ratio=10, n_max=6000)
    assert capped[0] == 4900 and capped[2] == 600


def test_step_profile():
    counts = long_tail_counts(np.full(10, 1000), ratio=10, profile="step")
    assert counts.tolist() == [1000] * 5 + [100] * 5
    counts = long_tail_counts(np.full(10, 1000), ratio=10, profile="step", step_fraction=0.2)
    assert counts.tolist() == [1000] * 8 + [100] * 2


def test_class_order_is_respected():
    order = np.array([3, 0, 2, 1])
    counts = long_tail_counts(np.full(4, 1000), ratio=8, class_order=order)
    assert counts[3] == 1000 and counts[1] == 125
    assert counts.tolist() == [500, 125, 250, 1000]
    with pytest.raises(CorruptionError, match="permutation"):
        long_tail_counts(np.full(4, 10), ratio=2, class_order=np.array([0, 0, 1, 2]))


def test_emptying_a_class_raises_with_advice():
    with pytest.raises(
        CorruptionError, match="classes 8, 9 would keep 0 samples.*smaller imbalance"
    ):
        long_tail_counts(np.full(10, 50), ratio=100)
    with pytest.raises(CorruptionError, match="class 1 has no samples"):
        long_tail_counts(np.array([5, 0, 5]), ratio=2)
    with pytest.raises(CorruptionError, match=">= 1"):
        long_tail_counts(np.full(3, 5), ratio=0.5)


def test_subsample_to_counts_keeps_exact_counts_and_nests():
    g = np.random.default_rng(0)
    y = g.integers(0, 4, 2000)
    counts = np.array([300, 200, 100, 10])
    idx = subsample_to_counts(y, counts, np.random.default_rng(5))
    assert np.all(np.diff(idx) > 0)
    assert np.bincount(y[idx], minlength=4).tolist() == counts.tolist()
    smaller = subsample_to_counts(y, counts // 2, np.random.default_rng(5))
    assert np.isin(smaller, idx).all()
    with pytest.raises(CorruptionError, match="class 3"):
        subsample_to_counts(y, np.array([1, 1, 1, 10_000]), np.random.default_rng(0))


def test_subsample_draws_a_random_subset_of_each_class():
    # Not the first samples of a class: two rngs keep different subsets, and over many draws every
    # sample of a class is kept about equally often (here 100 of 400, so 1/4 each).
    y = np.repeat(np.arange(2), 400)
    counts = np.array([100, 100])
    a = subsample_to_counts(y, counts, np.random.default_rng(1))
    b = subsample_to_counts(y, counts, np.random.default_rng(2))
    assert not np.array_equal(a, b)
    kept = np.zeros(len(y))
    for seed in range(200):
        kept[subsample_to_counts(y, counts, np.random.default_rng(seed))] += 1
    frequency = kept / 200  # binomial(200, 1/4) / 200 per sample: std 0.031
    assert np.abs(frequency - 0.25).max() < 0.15
    assert abs(frequency[:400].mean() - 0.25) < 1e-12


def test_a_step_fraction_that_leaves_no_head_class_is_refused():
    # two classes, 60 % of them minority: floor(0.4 * 2) = 0 head classes, a balanced "long tail"
    with pytest.raises(CorruptionError, match="leaves no head class.*at most 0.5"):
        long_tail_counts(np.full(2, 100), ratio=10, profile="step", step_fraction=0.6)
    assert long_tail_counts(
        np.full(2, 100), ratio=10, profile="step", step_fraction=0.5
    ).tolist() == [100, 10]
