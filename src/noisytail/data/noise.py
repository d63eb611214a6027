"""Synthetic label-noise generators and transition matrices (pure, seeded numpy).

Every generator maps true labels ``[N]`` (int64 in ``[0, K)``) to noisy labels ``[N]`` and takes an
explicit ``rng: np.random.Generator``; nothing here touches torch, devices or configs.

"Symmetric noise at rate r" means three different things in the literature (docs/methods.md,
Conventions), so each has its own name:

==========================  =======================================================  =============
function                    what happens                                             wrong fraction
==========================  =======================================================  =============
`symmetric_noise`           exact flip (MOIT): exactly floor(r·N) samples moved to a  r (exactly)
                            *different* class, uniformly
`uniform_noise`             uniform mixing (L2B, GDW, MW-Net): every label redrawn   r·(K−1)/K
                            from ``C = r/K·11ᵀ + (1−r)·I`` (true class can come back)
`random_subset_noise`       DivideMix: a random floor(r·N) subset gets a label        r·(K−1)/K
                            uniform over all K classes
==========================  =======================================================  =============

"Asymmetric / flip" is not one thing either (docs/methods.md, Conventions): `asymmetric_matrix` (a
semantic map such as `CIFAR10_ASYMMETRIC_MAP`, per sample with probability r, MOIT),
`mapped_subset_noise` (the same map applied to a random floor(r·N) subset, DivideMix),
`superclass_cyclic_matrix` (CIFAR-100, MOIT), `pair_flip_matrix` (c → c+1, Han et al. 2018),
`random_pair_matrix` / `random_two_pair_matrix` (GDW / L2B / MW-Net ``flip`` / ``flip2``, built with
their own fixed seed 1).

Which kind name maps to which of these is the table in `noisytail.data.noise_kinds`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from noisytail.errors import ConfigError

__all__ = [
    "CIFAR10_ASYMMETRIC_MAP",
    "CorruptionError",
    "apply_transition_matrix",
    "asymmetric_matrix",
    "check_labels",
    "check_rate",
    "instance_dependent_noise",
    "map_to_array",
    "mapped_subset_noise",
    "num_of",
    "pair_flip_matrix",
    "random_pair_matrix",
    "random_subset_noise",
    "random_two_pair_matrix",
    "realised_noise_rate",
    "realised_transition",
    "superclass_cyclic_map",
    "superclass_cyclic_matrix",
    "symmetric_matrix",
    "symmetric_noise",
    "uniform_noise",
    "validate_transition_matrix",
]

CIFAR10_ASYMMETRIC_MAP: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
"""CIFAR-10 semantic flips (MOIT, DivideMix): truck→automobile, bird→airplane, deer→horse,
cat↔dog."""


class CorruptionError(ConfigError):
    """Bad corruption request (rate, matrix, counts, split sizes); the message says what to do.
    A `ConfigError`: the request comes from the config's ``noise`` / ``imbalance`` / ``meta``."""


# ----------------------------------------------------------------------------------------- checks
def check_rate(rate: float, what: str = "noise rate") -> float:
    """Return `rate` as a float, or raise unless ``0 <= rate < 1``."""
    rate = float(rate)
    if not (math.isfinite(rate) and 0.0 <= rate < 1.0):
        raise CorruptionError(f"{what} must be in [0, 1), got {rate}: pass a fraction such as 0.4.")
    return rate


def check_labels(labels: np.ndarray, num_classes: int, what: str = "labels") -> np.ndarray:
    """`labels` as a 1-D int64 array; raise unless every value lies in ``[0, num_classes)``."""
    if int(num_classes) < 1:
        raise CorruptionError(f"num_classes must be at least 1, got {num_classes}.")
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise CorruptionError(f"{what} must be 1-D [N], got shape {arr.shape}: flatten them first.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise CorruptionError(f"{what} must be integers, got dtype {arr.dtype}.")
    arr = arr.astype(np.int64, copy=True)
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CorruptionError(
            f"{what}[{i}] = {int(arr[i])} is outside [0, {num_classes}): "
            f"labels must be 0..{num_classes - 1}."
        )
    return arr


def num_of(rate: float, n: int) -> int:
    """floor(rate·n), robust to float round-off (0.29·100 is 29, not 28)."""
    return int(math.floor(rate * n + 1e-9))


def _need_two_classes(num_classes: int, rate: float) -> None:
    if rate > 0 and num_classes < 2:
        raise CorruptionError("label noise needs at least 2 classes; use rate 0 or kind 'none'.")


# -------------------------------------------------------------------------- sample-level noise
def symmetric_noise(
    labels: np.ndarray, *, num_classes: int, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Exact-flip symmetric noise (MOIT, Ortego et al. CVPR 2021, arXiv 2012.04462).

    Exactly ``floor(rate·N)`` samples, chosen uniformly without replacement, are relabelled to a
    class drawn uniformly from the K−1 *other* classes, so the realised wrong fraction is exactly
    ``rate``. labels ``[N]`` → noisy ``[N]`` int64.
    """
    labels = check_labels(labels, num_classes)
    rate = check_rate(rate)
    _need_two_classes(num_classes, rate)
    n_flip = num_of(rate, len(labels))
    chosen = rng.permutation(len(labels))[:n_flip]
    shift = rng.integers(1, num_classes, size=n_flip) if n_flip else np.zeros(0, np.int64)
    noisy = labels.copy()
    noisy[chosen] = (labels[chosen] + shift) % num_classes
    return noisy


def uniform_noise(
    labels: np.ndarray, *, num_classes: int, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Uniform-mixing noise (L2B ``unif``, GDW ``unif``, MW-Net): each label is redrawn from its row
    of ``C = rate/K·11ᵀ + (1−rate)·I``. The true class can be drawn again, so the expected wrong
    fraction is ``rate·(K−1)/K`` (36% at rate 0.4 on CIFAR-10). labels ``[N]`` → noisy ``[N]``.
    """
    labels = check_labels(labels, num_classes)
    return apply_transition_matrix(labels, symmetric_matrix(num_classes, rate, True), rng)


def random_subset_noise(
    labels: np.ndarray, *, num_classes: int, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """DivideMix-style noise (Li et al. ICLR 2020; L2B+DivideMix/UNICON/C2D): a random subset of
    ``floor(rate·N)`` samples gets a label uniform over all K classes (possibly the true one).
    Expected wrong fraction ``rate·(K−1)/K``. labels ``[N]`` → noisy ``[N]``.
    """
    labels = check_labels(labels, num_classes)
    rate = check_rate(rate)
    n_noisy = num_of(rate, len(labels))
    chosen = rng.permutation(len(labels))[:n_noisy]
    noisy = labels.copy()
    noisy[chosen] = rng.integers(0, num_classes, size=n_noisy)
    return noisy


def map_to_array(mapping: Mapping[int, int] | np.ndarray, num_classes: int) -> np.ndarray:
    """A class map as an array ``target [K]`` (``target[c] = c`` where the map leaves c alone)."""
    if isinstance(mapping, np.ndarray):
        target = check_labels(mapping, num_classes, "mapping")
        if len(target) != num_classes:
            raise CorruptionError(f"mapping array has {len(target)} entries, need {num_classes}.")
        return target
    target = np.arange(num_classes, dtype=np.int64)
    for src, dst in mapping.items():
        s, d = int(src), int(dst)
        if not (0 <= s < num_classes and 0 <= d < num_classes):
            raise CorruptionError(
                f"asymmetric map entry {s} -> {d} is outside [0, {num_classes}): "
                "fix the map or num_classes."
            )
        target[s] = d
    return target


def mapped_subset_noise(
    labels: np.ndarray,
    *,
    num_classes: int,
    rate: float,
    mapping: Mapping[int, int] | np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """DivideMix's asymmetric noise: a random ``floor(rate·N)`` subset of *all* samples is moved to
    ``mapping[y]``; samples of unmapped classes in the subset stay clean, so the realised rate is
    ``rate`` times the fraction of samples in mapped classes (about rate/2 on CIFAR-10).
    labels ``[N]`` → noisy ``[N]``.
    """
    labels = check_labels(labels, num_classes)
    rate = check_rate(rate)
    target = map_to_array(mapping, num_classes)
    chosen = rng.permutation(len(labels))[: num_of(rate, len(labels))]
    noisy = labels.copy()
    noisy[chosen] = target[labels[chosen]]
    return noisy


def instance_dependent_noise(
    labels: np.ndarray,
    features: np.ndarray,
    *,
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    rate_std: float = 0.1,
    normalize: bool = True,
) -> np.ndarray:
    """Instance-dependent noise after Xia et al., "Part-dependent label noise" (NeurIPS 2020,
    arXiv 2006.07836), the generator of their released code.

    - per-sample flip rate ``q_i ~ N(rate, rate_std²)`` truncated to the open interval (0, 1)
      (rejection sampling; ``rate_std = 0`` gives ``q_i = rate``);
    - ``W_c ~ N(0, 1)`` of shape ``[D, K]`` for every class c (drawn for all K classes, in order);
    - for sample i with true class y: ``s = x_i · W_y`` ``[K]``, ``s_y = −inf``,
      ``p = q_i · softmax(s)``, ``p_y = 1 − q_i``; the noisy label is drawn from p.

    The expected wrong fraction is ``E[q] ≈ rate``, and where a sample goes depends on its features.
    features ``[N, D]`` (more dims are flattened); with ``normalize`` each row is scaled to unit L2
    norm first (flattened pixels in [0, 1] are the usual input; Xia et al. use the raw normalised
    image tensor, which gives sharper, nearly one-hot flip distributions). ``rate = 0`` returns
    the labels unchanged. labels ``[N]`` → noisy ``[N]``.
    """
    labels = check_labels(labels, num_classes)
    rate = check_rate(rate)
    feats = np.asarray(features)
    if feats.ndim < 2 or feats.shape[0] != len(labels):
        raise CorruptionError(
            f"instance noise needs features [N, D] with N = {len(labels)} (one row per label), "
            f"got shape {feats.shape}."
        )
    feats = feats.reshape(len(labels), -1)
    if rate_std < 0 or not math.isfinite(rate_std):
        raise CorruptionError(f"rate_std must be >= 0, got {rate_std}.")
    if rate == 0.0:
        return labels.copy()
    _need_two_classes(num_classes, rate)
    n, k = len(labels), num_classes

    if rate_std == 0.0:
        q = np.full(n, rate)
    else:
        q = rng.normal(rate, rate_std, size=n)
        bad = (q <= 0.0) | (q >= 1.0)
        while bad.any():
            q[bad] = rng.normal(rate, rate_std, size=int(bad.sum()))
            bad = (q <= 0.0) | (q >= 1.0)

    probs = np.zeros((n, k))
    for c in range(k):
        w = rng.standard_normal((feats.shape[1], k))  # drawn for every class: a fixed stream
        rows = np.flatnonzero(labels == c)
        if rows.size == 0:
            continue
        x = feats[rows].astype(np.float64)
        if normalize:
            norm = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(norm > 0, norm, 1.0)
        s = x @ w
        s[:, c] = -np.inf
        s = np.exp(s - s.max(axis=1, keepdims=True))
        p = q[rows, None] * (s / s.sum(axis=1, keepdims=True))
        p[:, c] = 1.0 - q[rows]
        probs[rows] = p
    return _draw_rows(probs, rng)


# ------------------------------------------------------------------------- transition matrices
def symmetric_matrix(num_classes: int, rate: float, include_true: bool) -> np.ndarray:
    """Symmetric transition matrix ``[K, K]``.

    ``include_true=True``: uniform mixing ``rate/K·11ᵀ + (1−rate)·I`` (L2B/GDW ``unif``).
    ``include_true=False``: ``1−rate`` on the diagonal and ``rate/(K−1)`` elsewhere (co-teaching
    "symmetric"; the per-sample version of exact flip).
    """
    rate = check_rate(rate)
    k = int(num_classes)
    if include_true:
        return np.full((k, k), rate / k) + (1.0 - rate) * np.eye(k)
    _need_two_classes(k, rate)
    if k == 1:
        return np.ones((1, 1))
    m = np.full((k, k), rate / (k - 1))
    np.fill_diagonal(m, 1.0 - rate)
    return m


def pair_flip_matrix(num_classes: int, rate: float) -> np.ndarray:
    """Pair flip (Han et al., Co-teaching, NeurIPS 2018): class c → (c+1) mod K with prob rate."""
    rate = check_rate(rate)
    _need_two_classes(num_classes, rate)
    k = int(num_classes)
    m = (1.0 - rate) * np.eye(k)
    m[np.arange(k), (np.arange(k) + 1) % k] += rate
    return m


def _random_targets_matrix(num_classes: int, rate: float, seed: int, n_targets: int) -> np.ndarray:
    rate = check_rate(rate)
    _need_two_classes(num_classes, rate)
    k = int(num_classes)
    if k <= n_targets:
        raise CorruptionError(
            f"{'two-' if n_targets == 2 else ''}random-pair noise needs more than {n_targets} "
            f"classes, got {k}: use kind 'pair'."
        )
    # The legacy RandomState stream on purpose: with seed 1 this draws the same pairs as the
    # MW-Net / GDW / L2B codes (np.random.seed(1) then one choice per row), on every machine.
    legacy = np.random.RandomState(seed)
    m = (1.0 - rate) * np.eye(k)
    classes = np.arange(k)
    for c in range(k):
        others = classes[classes != c]
        if n_targets == 1:
            m[c, legacy.choice(others)] = rate
        else:
            m[c, legacy.choice(others, n_targets, replace=False)] = rate / n_targets
    return m


def random_pair_matrix(num_classes: int, rate: float, seed: int = 1) -> np.ndarray:
    """GDW / L2B ``flip`` (from MW-Net): each class sends ``rate`` to one randomly chosen other
    class; the choice uses its own fixed ``seed`` (1 in those codes), not the run seed. ``[K, K]``.
    """
    return _random_targets_matrix(num_classes, rate, seed, 1)


def random_two_pair_matrix(num_classes: int, rate: float, seed: int = 1) -> np.ndarray:
    """GDW / L2B ``flip2``: ``rate/2`` to each of two distinct random other classes (fixed
    ``seed``). Note L2B's CIFAR loader silently ignores ``flip2``; we apply it. ``[K, K]``.
    """
    return _random_targets_matrix(num_classes, rate, seed, 2)


def asymmetric_matrix(num_classes: int, rate: float, mapping: Mapping[int, int]) -> np.ndarray:
    """Semantic asymmetric noise (MOIT; e.g. `CIFAR10_ASYMMETRIC_MAP`): class s goes to
    ``mapping[s]`` with probability ``rate``; classes not in the map stay clean. ``[K, K]``.
    """
    rate = check_rate(rate)
    target = map_to_array(mapping, num_classes)
    m = np.eye(int(num_classes))
    src = np.flatnonzero(target != np.arange(num_classes))
    m[src, src] = 1.0 - rate
    m[src, target[src]] = rate
    return m


def superclass_cyclic_map(coarse_of_fine: np.ndarray) -> np.ndarray:
    """``target [K]``: within each super-class the sorted fine classes shift cyclically by one
    (fine j → next fine class of the same super-class; the last goes to the first). A super-class
    with a single fine class maps it to itself. coarse_of_fine ``[K]`` int (fine → super-class).
    """
    coarse = np.asarray(coarse_of_fine)
    if coarse.ndim != 1 or not np.issubdtype(coarse.dtype, np.integer):
        raise CorruptionError(
            f"coarse labels must be a 1-D integer array [K] (super-class of each fine class), "
            f"got shape {coarse.shape} and dtype {coarse.dtype}."
        )
    target = np.arange(len(coarse), dtype=np.int64)
    for s in np.unique(coarse):
        fine = np.flatnonzero(coarse == s)  # already sorted
        target[fine] = np.roll(fine, -1)
    return target


def superclass_cyclic_matrix(coarse_of_fine: np.ndarray, rate: float) -> np.ndarray:
    """CIFAR-100 asymmetric noise (MOIT): fine class → next fine class in its super-class
    (`superclass_cyclic_map`) with probability ``rate``. coarse_of_fine ``[K]`` → ``[K, K]``.
    """
    target = superclass_cyclic_map(coarse_of_fine)
    k = len(target)
    return asymmetric_matrix(k, rate, {c: int(t) for c, t in enumerate(target)})


def validate_transition_matrix(matrix: np.ndarray, num_classes: int) -> np.ndarray:
    """Return `matrix` as float64 ``[K, K]`` or raise: square K×K, finite, non-negative, and every
    row summing to 1 (atol 1e-6)."""
    m = np.asarray(matrix, dtype=np.float64)
    k = int(num_classes)
    if m.shape != (k, k):
        raise CorruptionError(
            f"transition matrix must be {k}x{k} (one row per true class), got shape {m.shape}."
        )
    if not np.isfinite(m).all() or (m < 0).any():
        r, c = np.argwhere(~np.isfinite(m) | (m < 0))[0]
        raise CorruptionError(
            f"transition matrix entry [{r}, {c}] = {m[r, c]}: entries must be finite and >= 0."
        )
    sums = m.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if bad.size:
        r = int(bad[0])
        raise CorruptionError(
            f"transition matrix row {r} sums to {sums[r]:.6g}: each row must sum to 1 "
            "(row = true class, columns = probabilities of each noisy label)."
        )
    return m


def _draw_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of ``probs [N, K]`` (inverse CDF with one uniform per row)."""
    n, k = probs.shape
    u = rng.random(n)
    if n == 0:
        return np.zeros(0, np.int64)
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = np.inf  # round-off never pushes a draw past the last class
    return (u[:, None] >= cdf).sum(axis=1).astype(np.int64)


def apply_transition_matrix(
    labels: np.ndarray, matrix: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Draw each noisy label from the row of its true class: ``P(ỹ=j | y=i) = matrix[i, j]``.
    labels ``[N]``, matrix ``[K, K]`` row-stochastic → noisy ``[N]`` int64."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise CorruptionError(f"transition matrix must be 2-D [K, K], got shape {m.shape}.")
    m = validate_transition_matrix(m, m.shape[0])
    labels = check_labels(labels, m.shape[0])
    return _draw_rows(m[labels], rng)


# ------------------------------------------------------------------------------- measurement
def realised_transition(true: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """Empirical transition ``[K, K]``: row i is the distribution of noisy labels among samples of
    true class i (rows without samples are all zero)."""
    true = check_labels(true, num_classes, "true labels")
    noisy = check_labels(noisy, num_classes, "noisy labels")
    if len(true) != len(noisy):
        raise CorruptionError(f"{len(true)} true labels but {len(noisy)} noisy labels.")
    k = int(num_classes)
    counts = np.bincount(true * k + noisy, minlength=k * k).reshape(k, k).astype(np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)


def realised_noise_rate(true: np.ndarray, noisy: np.ndarray) -> float:
    """Fraction of samples whose noisy label differs from the true one (0.0 for no samples)."""
    true, noisy = np.asarray(true), np.asarray(noisy)
    if true.shape != noisy.shape:
        raise CorruptionError(f"{true.shape} true labels but {noisy.shape} noisy labels.")
    return float(np.mean(true != noisy)) if true.size else 0.0
