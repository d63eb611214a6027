"""Clean meta set and stratified hold-out splits (pure, seeded numpy).

The meta set follows the intent of L2B and GDW (docs/methods.md, Conventions: meta set): a small
clean, class-balanced set carved out of the training set (1,000 images for CIFAR: 100 per class for
CIFAR-10, 10 per class for CIFAR-100) and *removed* from it. Every function returns sorted int64
indices.
"""

from __future__ import annotations

import math

import numpy as np

from noisytail import seeds
from noisytail.data.noise import CorruptionError

__all__ = ["balanced_indices", "meta_counts", "pseudo_meta", "split_meta", "stratified_split"]


def _as_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise CorruptionError(f"labels must be a 1-D integer array, got shape {arr.shape}.")
    if arr.size and arr.min() < 0:
        raise CorruptionError("labels must be >= 0 to split by class.")
    return arr.astype(np.int64)


def meta_counts(
    num_classes: int, *, per_class: int | None = None, total: int | None = None
) -> np.ndarray:
    """Meta samples per class ``[K]``: ``per_class`` each, or ``total`` spread as evenly as
    possible (the remainder goes to the lowest class ids)."""
    if (per_class is None) == (total is None):
        raise CorruptionError("give exactly one of per_class or total for the meta set.")
    k = int(num_classes)
    if per_class is not None:
        if per_class < 0:
            raise CorruptionError(f"meta per_class must be >= 0, got {per_class}.")
        return np.full(k, int(per_class), dtype=np.int64)
    if total < 0:
        raise CorruptionError(f"meta total must be >= 0, got {total}.")
    counts = np.full(k, int(total) // k, dtype=np.int64)
    counts[: int(total) % k] += 1
    return counts


def split_meta(
    labels: np.ndarray,
    *,
    per_class: int | None = None,
    total: int | None = None,
    rng: np.random.Generator,
    num_classes: int | None = None,
    balanced: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """A clean meta set: ``(meta_idx, rest_idx)``, disjoint, sorted, covering ``range(N)``.

    labels ``[N]`` (true labels). Balanced (default): ``per_class`` samples of every class, or
    ``total`` spread as evenly as possible over the K classes (remainder to the lowest classes).
    Each class must keep at least one sample for training, so a class with fewer than its meta
    count + 1 samples raises. ``balanced=False`` (with ``total``) draws ``total`` samples uniformly
    at random, as the L2B+DivideMix code does. Per class, one permutation is drawn and its head
    taken, so a smaller meta set is a subset of a larger one under the same rng.
    """
    labels = _as_labels(labels)
    k = int(num_classes) if num_classes is not None else int(labels.max(initial=-1)) + 1
    n = len(labels)
    if not balanced:
        if total is None or per_class is not None:
            raise CorruptionError(
                "an unbalanced (random) meta set is given by total, not per_class."
            )
        if not 0 <= total < n:
            raise CorruptionError(f"meta total {total} must be in [0, {n}) for {n} samples.")
        meta = np.sort(rng.permutation(n)[:total])
    else:
        want = meta_counts(k, per_class=per_class, total=total)
        meta_parts = []
        for c in range(k):
            idx = np.flatnonzero(labels == c)
            if want[c] and idx.size < want[c] + 1:
                raise CorruptionError(
                    f"class {c} has {idx.size} samples but the meta set needs {int(want[c])} plus "
                    "at least one left for training: use a smaller meta set."
                )
            meta_parts.append(rng.permutation(idx)[: want[c]])
        meta = np.sort(np.concatenate(meta_parts)) if meta_parts else np.zeros(0, np.int64)
    mask = np.zeros(n, dtype=bool)
    mask[meta] = True
    return meta.astype(np.int64), np.flatnonzero(~mask)


def pseudo_meta(
    probs: np.ndarray, labels: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A pseudo-labelled meta set drawn from the (noisy) training pool: ``(positions, labels)``.

    ``probs [N, K]``: the current model's softmax on the un-augmented pool; ``labels [N]``: the
    noisy labels; ``counts [K]`` (`meta_counts`). For each class c, the ``counts[c]`` samples
    predicted c with the highest probability among those whose noisy label is c too (prediction
    and label agree; ties to the lower position), labelled c. A class with fewer agreeing
    samples gives what it has. This is noisytail's reading of the L2B code's ``--no_val_data``
    ("pseudo labeled training subset" as the meta set, Clothing1M; the loader it calls is missing
    from the repository): docs/methods.md, L2B. Returns sorted int64 positions and their labels.
    """
    probs = np.asarray(probs)
    labels = _as_labels(labels)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise CorruptionError(f"probs must be [N, K] with N = {len(labels)}, got {probs.shape}.")
    pred, conf = probs.argmax(1), probs.max(1)
    parts = []
    for c in range(probs.shape[1]):
        cand = np.flatnonzero((pred == c) & (labels == c))
        parts.append(cand[np.argsort(-conf[cand], kind="stable")][: int(counts[c])])
    pos = np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
    return pos, labels[pos]


def stratified_split(
    labels: np.ndarray, *, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of each class: ``(held_idx, rest_idx)``, disjoint, sorted.

    labels ``[N]`` (the labels you may see: noisy ones for a validation split). Class c holds out
    ``round(fraction · n_c)`` samples, at least one when ``fraction > 0`` and ``n_c >= 2``, and
    always leaves at least one in the rest.
    """
    fraction = float(fraction)
    if not (math.isfinite(fraction) and 0.0 <= fraction < 1.0):
        raise CorruptionError(f"split fraction must be in [0, 1), got {fraction}: e.g. 0.1.")
    labels = _as_labels(labels)
    held_parts = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        perm = rng.permutation(idx)
        if fraction > 0.0 and idx.size >= 2:
            n_held = int(math.floor(fraction * idx.size + 0.5))  # round half up
            held_parts.append(perm[: min(max(n_held, 1), idx.size - 1)])
    held = np.sort(np.concatenate(held_parts)) if held_parts else np.zeros(0, np.int64)
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return held.astype(np.int64), np.flatnonzero(~mask)


def balanced_indices(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``per_class`` samples of every class of ``labels`` (all of a smaller
    class), drawn without replacement with ``seed``: a balanced labelled split for a probe."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(np.random.SeedSequence([seed, seeds.PROBE_SPLIT]))
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picked.append(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
