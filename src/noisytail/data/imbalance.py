"""Long-tailed class profiles and subsampling (pure, seeded numpy).

Convention (docs/methods.md, Conventions; Cao et al. LDAM, NeurIPS 2019, arXiv 1906.07413; MW-Net;
GDW; MTTV): the imbalance *ratio* ρ = n_max / n_min ≥ 1 (their ``imb_factor`` f = 1/ρ), rank 0 is
the head class, and the exponential profile is ``n_c = floor(n_max · f^(c/(K−1)))``.
"""

from __future__ import annotations

import math

import numpy as np

from noisytail.data.noise import CorruptionError

__all__ = ["PROFILES", "long_tail_counts", "subsample_to_counts"]

PROFILES = ("exponential", "step")


def _check_order(class_order: np.ndarray | None, k: int) -> np.ndarray:
    if class_order is None:
        return np.arange(k)
    order = np.asarray(class_order)
    if order.shape != (k,) or not np.array_equal(np.sort(order), np.arange(k)):
        raise CorruptionError(
            f"class_order must be a permutation of 0..{k - 1} (head class first), got {order!r}."
        )
    return order.astype(np.int64)


def long_tail_counts(
    n_per_class: np.ndarray,
    *,
    ratio: float,
    profile: str = "exponential",
    step_fraction: float = 0.5,
    class_order: np.ndarray | None = None,
    n_max: int | None = None,
) -> np.ndarray:
    """Target number of samples per class ``[K]`` for a long-tailed subset.

    n_per_class ``[K]``: samples available per class. ``class_order[r]`` is the class of rank r
    (rank 0 = head; default 0..K−1). ``n_max`` defaults to the smallest available count, so every
    target is feasible; each target is capped by what the class has.

    - ``"exponential"`` (CIFAR-LT, LDAM/MW-Net/GDW): rank r gets ``floor(n_max · (1/ρ)^(r/(K−1)))``;
      with 5000 per class, K = 10, ρ = 100: 5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50.
    - ``"step"`` (LDAM): the first ``floor((1 − step_fraction)·K)`` ranks keep ``n_max``, the rest
      get ``floor(n_max / ρ)``.

    Raises `CorruptionError` if a class would be left with no sample.
    """
    avail = np.asarray(n_per_class)
    if avail.ndim != 1 or avail.size == 0 or (avail < 0).any():
        raise CorruptionError(
            f"n_per_class must be a 1-D array of non-negative counts, got {n_per_class!r}."
        )
    avail = avail.astype(np.int64)
    k = len(avail)
    ratio = float(ratio)
    if not (math.isfinite(ratio) and ratio >= 1.0):
        raise CorruptionError(
            f"imbalance ratio must be >= 1 (n_max / n_min; 100 for CIFAR-LT), got {ratio}."
        )
    if profile not in PROFILES:
        raise CorruptionError(f"unknown imbalance profile {profile!r}: use one of {PROFILES}.")
    order = _check_order(class_order, k)
    top = int(avail.min()) if n_max is None else int(n_max)
    if top < 1:
        empty = int(np.argmin(avail))
        raise CorruptionError(
            f"class {empty} has no samples (n_max = {top}): every class needs data, "
            "or pass n_max explicitly."
        )

    rank_counts = np.empty(k, dtype=np.int64)
    if profile == "exponential":
        f = 1.0 / ratio
        for r in range(k):
            rank_counts[r] = int(top * f ** (r / (k - 1))) if k > 1 else top
    else:
        if not 0.0 < step_fraction < 1.0:
            raise CorruptionError(
                f"step_fraction must be in (0, 1) (fraction of minority classes), "
                f"got {step_fraction}."
            )
        n_head = int(math.floor((1.0 - step_fraction) * k + 1e-9))
        if ratio > 1 and n_head == 0:
            raise CorruptionError(
                f"step_fraction {step_fraction:g} with {k} classes leaves no head class, so the "
                f"data would stay balanced: choose a fraction of at most {(k - 1) / k:g}."
            )
        rank_counts[:n_head] = top
        rank_counts[n_head:] = int(top / ratio)

    counts = np.empty(k, dtype=np.int64)
    counts[order] = rank_counts
    counts = np.minimum(counts, avail)
    empty = np.flatnonzero(counts < 1)
    if empty.size:
        names = ", ".join(str(int(c)) for c in empty[:5]) + (", ..." if empty.size > 5 else "")
        raise CorruptionError(
            f"class{'es' if empty.size > 1 else ''} {names} would keep 0 samples (ratio "
            f"{ratio:g}, n_max {top}): use a smaller imbalance ratio or more data."
        )
    return counts


def subsample_to_counts(
    labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Sorted indices into `labels` keeping ``counts[c]`` random samples of each class c.

    labels ``[N]`` int, counts ``[K]``. Each class is permuted once and its first ``counts[c]``
    kept, so the rng stream depends only on class sizes: for a fixed rng, a smaller count keeps a
    subset of what a larger one keeps (nested long-tailed subsets across ratios).
    """
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    keep = []
    for c in range(len(counts)):
        idx = np.flatnonzero(labels == c)
        if counts[c] > idx.size or counts[c] < 0:
            raise CorruptionError(
                f"class {c} has {idx.size} samples but {int(counts[c])} were asked for: "
                "lower the count (long_tail_counts caps it for you)."
            )
        keep.append(rng.permutation(idx)[: counts[c]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
