"""Properties of the label-noise generators: measured rates and transitions match the request."""

import math

import numpy as np
import pytest

from noisytail.data.noise import (
    CIFAR10_ASYMMETRIC_MAP,
    CorruptionError,
    apply_transition_matrix,
    asymmetric_matrix,
    instance_dependent_noise,
    mapped_subset_noise,
    pair_flip_matrix,
    random_pair_matrix,
    random_subset_noise,
    random_two_pair_matrix,
    realised_noise_rate,
    realised_transition,
    superclass_cyclic_map,
    superclass_cyclic_matrix,
    symmetric_matrix,
    symmetric_noise,
    uniform_noise,
    validate_transition_matrix,
)
from noisytail.data.noise_kinds import NOISE_KINDS, NoiseData, noise_kind
from noisytail.data.specs import NoiseSpec

K = 10


def labels(n=20000, k=K, seed=0):
    return np.random.default_rng(seed).integers(0, k, n)


def rng(seed=1):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.29, 0.8])
def test_symmetric_is_exact_and_never_true(rate):
    y = labels()
    noisy = symmetric_noise(y, num_classes=K, rate=rate, rng=rng())
    assert noisy.dtype == np.int64 and noisy.shape == y.shape
    assert int((noisy != y).sum()) == int(np.floor(rate * len(y) + 1e-9))
    # a flipped label is never the true class, and every other class is reached
    t = realised_transition(y, noisy, K)
    if rate > 0:
        off = t[~np.eye(K, dtype=bool)]
        assert (off > 0).all()


def test_uniform_mixing_wrong_fraction_is_rate_times_k_minus_1_over_k():
    y, rate = labels(), 0.4
    noisy = uniform_noise(y, num_classes=K, rate=rate, rng=rng())
    expected = rate * (K - 1) / K
    std = np.sqrt(expected * (1 - expected) / len(y))
    assert abs(realised_noise_rate(y, noisy) - expected) < 4 * std


def test_random_subset_touches_at_most_floor_rate_n():
    y, rate = labels(), 0.5
    noisy = random_subset_noise(y, num_classes=K, rate=rate, rng=rng())
    wrong = (noisy != y).sum()
    assert wrong <= rate * len(y)
    assert abs(wrong / len(y) - rate * (K - 1) / K) < 0.015


@pytest.mark.parametrize(
    "matrix",
    [
        symmetric_matrix(K, 0.4, include_true=True),
        symmetric_matrix(K, 0.4, include_true=False),
        pair_flip_matrix(K, 0.45),
        random_pair_matrix(K, 0.4),
        random_two_pair_matrix(K, 0.4),
        asymmetric_matrix(K, 0.4, CIFAR10_ASYMMETRIC_MAP),
    ],
    ids=["uniform", "symmetric", "pair", "random_pair", "random_two_pair", "asymmetric"],
)
def test_realised_transition_matches_requested(matrix):
    validate_transition_matrix(matrix, K)
    y = labels(n=200_000)
    noisy = apply_transition_matrix(y, matrix, rng())
    assert np.abs(realised_transition(y, noisy, K) - matrix).max() < 0.02


def test_matrix_shapes():
    assert np.allclose(symmetric_matrix(K, 0.4, True), 0.04 + 0.6 * np.eye(K))
    m = symmetric_matrix(K, 0.4, False)
    assert np.allclose(np.diag(m), 0.6) and np.isclose(m[0, 1], 0.4 / 9)
    p = pair_flip_matrix(4, 0.3)
    assert p[3, 0] == pytest.approx(0.3) and p[0, 1] == pytest.approx(0.3)
    for builder, n_off in ((random_pair_matrix, 1), (random_two_pair_matrix, 2)):
        r = builder(K, 0.4)
        assert np.allclose(np.diag(r), 0.6)
        assert ((r > 0).sum(axis=1) == n_off + 1).all()
        assert np.array_equal(r, builder(K, 0.4))  # fixed seed 1, independent of any run rng
        assert not np.array_equal(r, builder(K, 0.4, seed=2))


def test_random_pair_matches_legacy_seed_one_convention():
    # MW-Net / GDW / L2B: np.random.seed(1), then one choice over the other classes per row.
    legacy = np.random.RandomState(1)
    m = random_pair_matrix(K, 0.4)
    for c in range(K):
        others = np.array([j for j in range(K) if j != c])
        assert m[c, legacy.choice(others)] == pytest.approx(0.4)


def test_asymmetric_leaves_unmapped_classes_clean():
    y = labels()
    noisy = apply_transition_matrix(y, asymmetric_matrix(K, 0.4, CIFAR10_ASYMMETRIC_MAP), rng())
    for c in (0, 1, 6, 7, 8):
        assert (noisy[y == c] == c).all()
    for s, d in CIFAR10_ASYMMETRIC_MAP.items():
        assert set(np.unique(noisy[y == s])) == {s, d}


def test_mapped_subset_uses_map_on_a_subset():
    y, rate = labels(), 0.4
    noisy = mapped_subset_noise(
        y, num_classes=K, rate=rate, mapping=CIFAR10_ASYMMETRIC_MAP, rng=rng()
    )
    target = np.arange(K)
    for s, d in CIFAR10_ASYMMETRIC_MAP.items():
        target[s] = d
    changed = noisy != y
    assert (noisy[changed] == target[y[changed]]).all()
    assert abs(changed.mean() - rate * 0.5) < 0.015  # half the classes are mapped


def test_superclass_cyclic_stays_within_superclass():
    coarse = np.repeat(np.arange(5), 4)  # 20 fine classes, 4 per super-class
    rng_perm = np.random.default_rng(3)
    coarse = coarse[rng_perm.permutation(20)]
    target = superclass_cyclic_map(coarse)
    assert (coarse[target] == coarse).all() and (target != np.arange(20)).all()
    for s in range(5):
        fine = np.flatnonzero(coarse == s)
        assert list(target[fine]) == list(np.roll(fine, -1))
    m = superclass_cyclic_matrix(coarse, 0.3)
    y = labels(n=20000, k=20)
    noisy = apply_transition_matrix(y, m, rng())
    assert (coarse[noisy] == coarse[y]).all()
    assert abs(realised_noise_rate(y, noisy) - 0.3) < 0.02


def test_instance_noise_rate_and_dependence_on_features():
    n, d, k, rate = 6000, 16, 5, 0.3
    g = np.random.default_rng(0)
    y = g.integers(0, k, n)
    x = g.normal(size=(n, d))
    noisy = instance_dependent_noise(y, x, num_classes=k, rate=rate, rng=rng())
    assert abs(realised_noise_rate(y, noisy) - rate) < 0.03
    assert np.array_equal(
        noisy, instance_dependent_noise(y, x, num_classes=k, rate=rate, rng=rng())
    )

    # Same class, two distinct feature groups: their flip targets differ.
    y0 = np.zeros(4000, dtype=np.int64)
    a, b = g.normal(size=d), g.normal(size=d)
    x0 = np.concatenate([np.tile(a, (2000, 1)), np.tile(b, (2000, 1))])
    noisy0 = instance_dependent_noise(y0, x0, num_classes=k, rate=rate, rng=rng())
    ha = np.bincount(noisy0[:2000], minlength=k)[1:] / 2000
    hb = np.bincount(noisy0[2000:], minlength=k)[1:] / 2000
    assert np.abs(ha - hb).max() > 0.05


def test_rate_zero_is_identity_and_bad_rates_raise():
    y = labels(n=100)
    for fn in (symmetric_noise, uniform_noise, random_subset_noise):
        assert np.array_equal(fn(y, num_classes=K, rate=0.0, rng=rng()), y)
        for bad in (-0.1, 1.0, 1.5, float("nan")):
            with pytest.raises(CorruptionError, match=r"\[0, 1\)"):
                fn(y, num_classes=K, rate=bad, rng=rng())


def test_bad_labels_and_matrices_raise():
    with pytest.raises(CorruptionError, match="outside"):
        symmetric_noise(np.array([0, 10]), num_classes=K, rate=0.1, rng=rng())
    with pytest.raises(CorruptionError, match="row 1 sums to 0.9"):
        validate_transition_matrix(np.array([[1.0, 0.0], [0.5, 0.4]]), 2)
    with pytest.raises(CorruptionError, match="2x2"):
        validate_transition_matrix(np.eye(3), 2)
    with pytest.raises(CorruptionError, match=">= 0"):
        validate_transition_matrix(np.array([[1.5, -0.5], [0, 1]]), 2)
    assert issubclass(CorruptionError, ValueError)


def test_realised_transition_rows_without_samples_are_zero():
    t = realised_transition(np.array([0, 0, 2]), np.array([0, 1, 2]), 3)
    assert np.allclose(t, [[0.5, 0.5, 0], [0, 0, 0], [0, 0, 1]])


# --- properties that planted bugs slipped past (issue 13, item 10; see scripts/mutants.py)


@pytest.mark.parametrize(("n", "rate", "wrong"), [(100, 0.29, 29), (100, 0.57, 57), (7, 0.3, 2)])
def test_symmetric_count_survives_float_round_off(n, rate, wrong):
    # 0.29 * 100 = 28.999999999999996 in floating point: floor() alone would flip 28.
    y = labels(n=n)
    noisy = symmetric_noise(y, num_classes=K, rate=rate, rng=rng())
    assert int((noisy != y).sum()) == wrong


def test_instance_noise_flips_every_class_at_rate_q():
    # rate_std = 0 makes q_i = rate for every sample, so the wrong fraction of *each* class is a
    # binomial proportion with mean rate: the flip mass q must go to other classes only.
    n, d, k, rate = 30_000, 8, 3, 0.3
    g = np.random.default_rng(4)
    y, x = g.integers(0, k, n), g.random((n, d))
    noisy = instance_dependent_noise(y, x, num_classes=k, rate=rate, rng=rng(), rate_std=0.0)
    for c in range(k):
        members = y == c
        std = np.sqrt(rate * (1 - rate) / members.sum())
        assert abs((noisy[members] != c).mean() - rate) < 4 * std, c


def test_instance_noise_normalises_features_by_default():
    # Unit-norm rows make the flip distribution invariant to the scale of the features.
    n, d, k, rate = 2000, 8, 4, 0.4
    g = np.random.default_rng(5)
    y, x = g.integers(0, k, n), g.random((n, d))
    a = instance_dependent_noise(y, x, num_classes=k, rate=rate, rng=rng())
    b = instance_dependent_noise(y, 10.0 * x, num_classes=k, rate=rate, rng=rng())
    assert np.array_equal(a, b)
    raw = instance_dependent_noise(
        y, 10.0 * x, num_classes=k, rate=rate, rng=rng(), normalize=False
    )
    assert not np.array_equal(a, raw)


def test_instance_noise_rate_is_the_mean_of_q_truncated_to_the_open_unit_interval():
    # q ~ N(0.05, 0.1^2) redrawn until 0 < q < 1: E[q] = mu + sigma (phi(a) - phi(b)) / Z with
    # a = -mu / sigma, b = (1 - mu) / sigma, Z = Phi(b) - Phi(a); here 0.1009, twice the rate.
    mu, sigma = 0.05, 0.1
    a, b = -mu / sigma, (1 - mu) / sigma

    def phi(t):
        return math.exp(-t * t / 2) / math.sqrt(2 * math.pi)

    def cdf(t):
        return 0.5 * (1 + math.erf(t / math.sqrt(2)))

    expected = mu + sigma * (phi(a) - phi(b)) / (cdf(b) - cdf(a))
    n, d, k = 40_000, 8, 5
    g = np.random.default_rng(6)
    y, x = g.integers(0, k, n), g.random((n, d))
    noisy = instance_dependent_noise(y, x, num_classes=k, rate=mu, rng=rng(), rate_std=sigma)
    std = np.sqrt(expected * (1 - expected) / n)
    assert expected == pytest.approx(0.1009, abs=1e-4)
    assert abs(realised_noise_rate(y, noisy) - expected) < 4 * std


def test_random_subset_transition_is_uniform_mixing():
    # Every class, the true one included, is drawn with probability rate / K.
    y, rate = labels(n=100_000), 0.5
    noisy = random_subset_noise(y, num_classes=K, rate=rate, rng=rng())
    t = realised_transition(y, noisy, K)
    assert np.abs(t - symmetric_matrix(K, rate, include_true=True)).max() < 0.01


# --- the noise-kind table: every kind samples what its transition promises


def _spec_for(name: str, kind):  # a spec of each kind at a rate where matrices differ clearly
    if kind.takes_matrix:
        return NoiseSpec(name, matrix=(0.5 * np.eye(K) + 0.5 * np.roll(np.eye(K), 3, 1)).tolist())
    return NoiseSpec(name, 0.6 if kind.takes_rate else 0.0)


def test_every_noise_kind_samples_its_own_transition():
    y = np.repeat(np.arange(K), 3000)
    data = NoiseData(K, asymmetric_map=CIFAR10_ASYMMETRIC_MAP, given_labels=(y + 1) % K)
    checked = []
    for name in NOISE_KINDS.names():
        kind = NOISE_KINDS.get(name)
        spec = _spec_for(name, kind)
        if kind.needs and "features" in kind.needs:
            continue  # instance noise depends on the sample; its own tests above
        noisy = kind.draw(y, spec, data, rng())
        expected = kind.transition(spec, data)
        if expected is None:  # given labels: the sampler returns exactly them
            assert np.array_equal(noisy, data.given_labels), name
        else:
            assert np.abs(realised_transition(y, noisy, K) - expected).max() < 0.04, name
        checked.append(name)
    assert {"none", "symmetric", "random_subset", "asymmetric_subset", "matrix"} <= set(checked)


def test_unknown_kind_and_missing_inputs_are_one_line_errors():
    with pytest.raises(CorruptionError, match="unknown noise kind 'pairr'.*Did you mean 'pair'"):
        noise_kind("pairr")
    with pytest.raises(CorruptionError, match="'label_file' needs the noisy labels"):
        noise_kind("label_file").draw(labels(10), NoiseSpec("label_file"), NoiseData(K), rng())
    given = NoiseData(K, given_labels=np.array([1, -1, 2]))
    with pytest.raises(CorruptionError, match="sample 1 .* no given label"):
        noise_kind("label_file").draw(np.array([0, 1, 2]), NoiseSpec("label_file"), given, rng())
