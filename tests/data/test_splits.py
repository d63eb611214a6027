"""Meta set and stratified splits: disjoint, balanced, sorted."""

import numpy as np
import pytest

from noisytail.data.noise import CorruptionError
from noisytail.data.splits import meta_counts, split_meta, stratified_split


def labels(n=3000, k=10, seed=0):
    return np.random.default_rng(seed).integers(0, k, n)


def test_split_meta_per_class_is_disjoint_balanced_sorted():
    y = labels()
    meta, rest = split_meta(y, per_class=20, rng=np.random.default_rng(0))
    assert np.all(np.diff(meta) > 0) and np.all(np.diff(rest) > 0)
    assert np.intersect1d(meta, rest).size == 0
    assert np.array_equal(np.union1d(meta, rest), np.arange(len(y)))
    assert np.bincount(y[meta], minlength=10).tolist() == [20] * 10


def test_split_meta_total_spreads_remainder_to_low_classes():
    assert meta_counts(4, total=10).tolist() == [3, 3, 2, 2]
    y = labels()
    meta, _ = split_meta(y, total=23, rng=np.random.default_rng(0))
    assert np.bincount(y[meta], minlength=10).tolist() == [3, 3, 3] + [2] * 7


def test_split_meta_nested_and_random_mode():
    y = labels()
    big, _ = split_meta(y, per_class=20, rng=np.random.default_rng(1))
    small, _ = split_meta(y, per_class=5, rng=np.random.default_rng(1))
    assert np.isin(small, big).all()
    rand, rest = split_meta(y, total=100, rng=np.random.default_rng(1), balanced=False)
    assert len(rand) == 100 and len(rest) == len(y) - 100


def test_split_meta_small_class_raises():
    y = np.array([0] * 50 + [1] * 5)
    with pytest.raises(CorruptionError, match="class 1 has 5 samples.*smaller meta set"):
        split_meta(y, per_class=5, rng=np.random.default_rng(0))
    with pytest.raises(CorruptionError, match="exactly one"):
        split_meta(y, per_class=1, total=2, rng=np.random.default_rng(0))


def test_stratified_split_holds_out_each_class():
    y = np.array([0] * 100 + [1] * 10 + [2] * 2 + [3])
    held, rest = stratified_split(y, fraction=0.1, rng=np.random.default_rng(0))
    assert np.intersect1d(held, rest).size == 0
    assert np.array_equal(np.union1d(held, rest), np.arange(len(y)))
    assert np.bincount(y[held], minlength=4).tolist() == [10, 1, 1, 0]
    assert np.bincount(y[rest], minlength=4).tolist() == [90, 9, 1, 1]
    held0, rest0 = stratified_split(y, fraction=0.0, rng=np.random.default_rng(0))
    assert held0.size == 0 and rest0.size == len(y)
    with pytest.raises(CorruptionError, match=r"\[0, 1\)"):
        stratified_split(y, fraction=1.0, rng=np.random.default_rng(0))
