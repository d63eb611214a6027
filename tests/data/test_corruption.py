"""`corrupt()`: order of stages, disjoint splits, determinism, stable subsets, the saved record."""

import json

import numpy as np
import pytest

from noisytail.data.corruption import (
    Corruption,
    CorruptionError,
    ImbalanceSpec,
    MetaSpec,
    NoiseSpec,
    corrupt,
)
from noisytail.data.imbalance import long_tail_counts
from noisytail.data.noise import CIFAR10_ASYMMETRIC_MAP

K = 10
TRUE = np.repeat(np.arange(K), 500)[np.random.default_rng(0).permutation(K * 500)]


def run(noise=None, imbalance=None, meta=None, **kw):
    kw.setdefault("val_fraction", 0.1)
    kw.setdefault("seed", 3)
    return corrupt(
        TRUE,
        num_classes=K,
        noise=noise or NoiseSpec("symmetric", 0.4),
        imbalance=imbalance or ImbalanceSpec(ratio=10),
        meta=meta or MetaSpec(per_class=10),
        **kw,
    )


def test_splits_disjoint_sorted_and_cover_kept_pool():
    c = run()
    for idx in (c.train_idx, c.val_idx, c.meta_idx):
        assert np.all(np.diff(idx) > 0)
    assert np.intersect1d(c.train_idx, c.val_idx).size == 0
    assert np.intersect1d(c.train_idx, c.meta_idx).size == 0
    assert np.intersect1d(c.val_idx, c.meta_idx).size == 0
    kept = np.flatnonzero(c.noisy_labels >= 0)
    assert np.array_equal(np.union1d(np.union1d(c.train_idx, c.val_idx), c.meta_idx), kept)
    # meta is clean and balanced, taken from the full set before the long tail
    assert np.array_equal(c.noisy_labels[c.meta_idx], c.true_labels[c.meta_idx])
    assert c.class_counts("meta", "true").tolist() == [10] * K
    idx, lab = c.split("meta")
    assert np.array_equal(lab, TRUE[idx])
    # long tail by true class over train + val, from the 490-per-class pool
    lt = c.class_counts("train", "true") + c.class_counts("val", "true")
    assert lt.tolist() == long_tail_counts(np.full(K, 490), ratio=10).tolist()
    # the noisy validation set is about 10% of every noisy class
    assert len(c.val_idx) == pytest.approx(0.1 * lt.sum(), abs=K)


def test_same_seed_identical_and_different_seed_differs():
    a, b, d = run(), run(), run(seed=4)
    for name in ("noisy_labels", "train_idx", "val_idx", "meta_idx"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.noisy_labels, d.noisy_labels)


def test_noise_rate_does_not_move_meta_or_long_tail_subsets():
    for order in ("imbalance_first", "noise_first"):
        a = run(NoiseSpec("symmetric", 0.2, order=order))
        b = run(NoiseSpec("uniform", 0.6, order=order))
        assert np.array_equal(a.meta_idx, b.meta_idx)
        kept_a = np.union1d(a.train_idx, a.val_idx)
        kept_b = np.union1d(b.train_idx, b.val_idx)
        assert np.array_equal(kept_a, kept_b)


def test_noise_first_selects_by_true_class_and_optionally_by_noisy():
    c = run(NoiseSpec("uniform", 0.6, order="noise_first"))
    lt = c.class_counts("train", "true") + c.class_counts("val", "true")
    assert lt.tolist() == long_tail_counts(np.full(K, 490), ratio=10).tolist()
    c = run(
        NoiseSpec("uniform", 0.6, order="noise_first"), ImbalanceSpec(ratio=10, select_by="noisy")
    )
    lt = c.class_counts("train", "noisy") + c.class_counts("val", "noisy")
    assert lt[0] / lt[-1] == pytest.approx(10, rel=0.05)
    with pytest.raises(CorruptionError, match="noise_first"):
        run(imbalance=ImbalanceSpec(ratio=10, select_by="noisy"))


def test_realised_noise_and_summary():
    c = run(NoiseSpec("symmetric", 0.4), ImbalanceSpec(), MetaSpec(), val_fraction=0.0)
    assert c.noise_rate() == pytest.approx(0.4)
    assert c.is_noisy().sum() == int(0.4 * len(TRUE))
    s = c.summary()
    json.dumps(s)
    assert s["noise_rate_requested"] == 0.4 and s["noise_rate_expected"] == pytest.approx(0.4)
    assert s["sizes"] == {"total": 5000, "train": 5000, "val": 0, "meta": 0, "dropped": 0}
    c = run(NoiseSpec("uniform", 0.4), ImbalanceSpec(ratio=10))
    s = c.summary()
    assert s["noise_rate_expected"] == pytest.approx(0.36)
    assert 5 < s["imbalance_ratio_realised"] < 20
    assert s["sizes"]["dropped"] == 5000 - len(c.train_idx) - len(c.val_idx) - 100
    assert np.abs(c.transition() - np.asarray(c.spec["requested_transition"])).max() < 0.15


def test_asymmetric_sources_and_errors():
    c = run(NoiseSpec("asymmetric", 0.4), asymmetric_map=CIFAR10_ASYMMETRIC_MAP)
    assert c.spec["asymmetric_source"] == "map"
    t = c.transition()
    assert np.allclose(t[[0, 1, 6, 7, 8], [0, 1, 6, 7, 8]], 1.0)
    coarse = np.arange(K) // 2
    c = run(NoiseSpec("asymmetric_subset", 0.4), coarse_labels=coarse)
    assert c.spec["asymmetric_source"] == "superclass"
    noisy = c.noisy_labels[c.train_idx]
    assert (coarse[noisy] == coarse[TRUE[c.train_idx]]).all()
    with pytest.raises(CorruptionError, match="no standard asymmetric map.*'pair'.*'matrix'"):
        run(NoiseSpec("asymmetric", 0.4))


def test_matrix_and_instance_kinds():
    m = np.eye(K) * 0.7 + np.roll(np.eye(K), 2, axis=1) * 0.3
    c = run(NoiseSpec("matrix", matrix=m.tolist()), ImbalanceSpec(), MetaSpec())
    assert c.noise_rate() == pytest.approx(0.3, abs=0.03)
    feats = np.random.default_rng(1).random((len(TRUE), 8))
    c = run(NoiseSpec("instance", 0.3), ImbalanceSpec(), MetaSpec(), features=feats)
    assert c.noise_rate() == pytest.approx(0.3, abs=0.03)
    with pytest.raises(CorruptionError, match="features"):
        run(NoiseSpec("instance", 0.3))


def test_bad_specs_raise_with_advice():
    with pytest.raises(CorruptionError, match=r"\[0, 1\)"):
        NoiseSpec("symmetric", 1.2)
    with pytest.raises(CorruptionError, match="Did you mean 'symmetric'"):
        NoiseSpec("symetric", 0.2)
    with pytest.raises(CorruptionError, match="row 0 sums to 0.5"):
        NoiseSpec("matrix", matrix=[[0.5, 0.0], [0.0, 1.0]])
    with pytest.raises(CorruptionError, match="10x10"):
        run(NoiseSpec("matrix", matrix=np.eye(3).tolist()))
    with pytest.raises(CorruptionError, match="pass matrix"):
        NoiseSpec("matrix")
    with pytest.raises(CorruptionError, match="smaller imbalance ratio"):
        run(imbalance=ImbalanceSpec(ratio=1000))
    with pytest.raises(CorruptionError, match="ratio must be >= 1"):
        ImbalanceSpec(ratio=0.01)


def test_save_load_round_trip(tmp_path):
    c = run(NoiseSpec("random_pair", 0.3))
    path = tmp_path / "corruption.npz"
    c.save(path)
    assert path.exists()
    d = Corruption.load(path)
    for name in ("true_labels", "noisy_labels", "train_idx", "val_idx", "meta_idx"):
        assert np.array_equal(getattr(c, name), getattr(d, name))
        assert getattr(d, name).dtype == np.int64
    assert (d.num_classes, d.seed, d.spec) == (c.num_classes, c.seed, c.spec)
    assert d.summary() == c.summary()


def test_overlap_mode_keeps_meta_in_training_pool():
    c = run(NoiseSpec("symmetric", 0.4), ImbalanceSpec(), MetaSpec(per_class=10, overlap=True))
    assert np.isin(c.meta_idx, np.union1d(c.train_idx, c.val_idx)).all()
    idx, lab = c.split("meta")
    assert np.array_equal(lab, TRUE[idx])  # the meta set itself stays clean


def test_provided_meta_split_is_the_only_meta_source_and_never_trained_on():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, size=400)
    offered = np.arange(300, 400)  # the source's clean split, appended after its training set
    corr = corrupt(
        true,
        num_classes=4,
        noise=NoiseSpec(kind="symmetric", rate=0.4),
        meta=MetaSpec(source="provided"),
        provided_meta=offered,
        seed=1,
    )
    assert np.array_equal(corr.meta_idx, offered)
    assert not np.intersect1d(corr.train_idx, offered).size
    assert np.array_equal(corr.noisy_labels[offered], true[offered])  # clean
    provided = {"num_classes": 4, "provided_meta": offered, "seed": 1}
    small = corrupt(true, meta=MetaSpec(per_class=5, source="provided"), **provided)
    assert np.isin(small.meta_idx, offered).all()
    assert np.bincount(true[small.meta_idx], minlength=4).tolist() == [5, 5, 5, 5]
    assert len(small.train_idx) == 300  # the unused offered samples are not trained on either
    with pytest.raises(CorruptionError, match="provided meta split has"):
        corrupt(true, meta=MetaSpec(per_class=90, source="provided"), **provided)
    with pytest.raises(CorruptionError, match="overlap"):
        corrupt(true, meta=MetaSpec(overlap=True, per_class=1, source="provided"), **provided)
    with pytest.raises(CorruptionError, match="meta.source=provided"):
        corrupt(true, meta=MetaSpec(per_class=5), **provided)
    with pytest.raises(CorruptionError, match="pass provided_meta"):
        corrupt(true, num_classes=4, meta=MetaSpec(source="provided"))


# --- properties that planted bugs slipped past (issue 13, item 10; see scripts/mutants.py)


def test_summary_rates_come_from_their_own_splits():
    c = run(NoiseSpec("symmetric", 0.4), val_fraction=0.2)
    s = c.summary()
    train, val = c.train_idx, c.val_idx
    train_rate = float(np.mean(TRUE[train] != c.noisy_labels[train]))
    val_rate = float(np.mean(TRUE[val] != c.noisy_labels[val]))
    assert train_rate != val_rate  # so that swapping them is visible
    assert s["noise_rate_realised"] == pytest.approx(train_rate, abs=1e-12)
    assert s["val_noise_rate_realised"] == pytest.approx(val_rate, abs=1e-12)


def test_expected_rate_weights_classes_by_their_train_counts():
    # Asymmetric noise flips only the mapped classes (2, 3, 4, 5, 9) with probability 0.4, so on a
    # long tail the expected rate is 0.4 x the share of training samples in those classes, not
    # 0.4 x 5/10 (the unweighted class mean).
    c = run(NoiseSpec("asymmetric", 0.4), asymmetric_map=CIFAR10_ASYMMETRIC_MAP)
    counts = np.bincount(TRUE[c.train_idx], minlength=K)
    share = counts[[2, 3, 4, 5, 9]].sum() / counts.sum()
    assert abs(share - 0.5) > 0.05
    assert c.summary()["noise_rate_expected"] == pytest.approx(0.4 * share, abs=1e-12)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_imbalance_first_flips_exactly_the_rate_of_the_long_tailed_pool(seed):
    # The long tail comes first, so exact-flip noise hits exactly floor(0.4 n) of the n kept
    # samples; noise drawn on the whole pool and then subsampled would only be 0.4 on average.
    c = run(NoiseSpec("symmetric", 0.4), seed=seed)
    kept = np.union1d(c.train_idx, c.val_idx)
    assert len(kept) < len(TRUE) - 100  # the long tail dropped samples
    assert int((c.noisy_labels[kept] != TRUE[kept]).sum()) == int(0.4 * len(kept) + 1e-9)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_validation_split_is_stratified_by_noisy_label(seed):
    # Each noisy class c of the kept pool holds out round-half-up(0.2 n_c) samples exactly.
    c = run(NoiseSpec("uniform", 0.6), val_fraction=0.2, seed=seed)
    kept = np.union1d(c.train_idx, c.val_idx)
    n_c = np.bincount(c.noisy_labels[kept], minlength=K)
    want = np.floor(0.2 * n_c + 0.5).astype(int)
    assert c.class_counts("val", "noisy").tolist() == want.tolist()


def test_is_noisy_ignores_samples_dropped_by_the_long_tail():
    c = run(NoiseSpec("symmetric", 0.4), ImbalanceSpec(ratio=10), MetaSpec())
    dropped = c.noisy_labels < 0
    assert dropped.sum() > 0
    assert not c.is_noisy()[dropped].any()
    kept = np.union1d(c.train_idx, c.val_idx)
    assert c.is_noisy().sum() == (c.noisy_labels[kept] != TRUE[kept]).sum()
