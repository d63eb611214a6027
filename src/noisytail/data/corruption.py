"""From true labels to the labels a method trains on, and the record saved with every run.

`corrupt` is pure and seeded. Order of operations (docs/methods.md, Conventions):

1. **Meta set.** A clean, class-balanced meta set is drawn from the *full* training set (so tail
   classes keep meta samples) and removed from it (`MetaSpec.overlap=True` keeps it in the pool
   instead: the paper-code compatibility mode for GDW's seed mismatch / L2B+DivideMix's draw).
2. **Long tail.** The remaining pool is subsampled by *true* class to the requested profile.
3. **Noise** is applied to the kept pool. ``order="noise_first"`` applies it to the whole balanced
   pool before step 2 (GDW's code order); step 2 then still selects by true class unless
   ``ImbalanceSpec.select_by="noisy"``.
4. **Validation.** A stratified split (by noisy label) of ``val_fraction`` is held out of the kept
   pool; it keeps its noisy labels, a noisy validation set for model selection.

Each stage draws from its own child of ``np.random.SeedSequence(seed)`` (meta, imbalance, noise,
validation), so changing e.g. the noise rate leaves the meta set and the long-tailed subset as
they were. PCG64 streams are the same on every machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import numpy as np

from noisytail.data.imbalance import PROFILES, long_tail_counts, subsample_to_counts
from noisytail.data.noise import (
    CorruptionError,
    apply_transition_matrix,
    asymmetric_matrix,
    check_labels,
    check_rate,
    instance_dependent_noise,
    map_to_array,
    mapped_subset_noise,
    pair_flip_matrix,
    random_pair_matrix,
    random_subset_noise,
    random_two_pair_matrix,
    realised_noise_rate,
    realised_transition,
    superclass_cyclic_map,
    symmetric_matrix,
    symmetric_noise,
    validate_transition_matrix,
)
from noisytail.data.splits import meta_counts, split_meta, stratified_split
from noisytail.registry import suggest

__all__ = [
    "NOISE_KINDS",
    "ORDERS",
    "Corruption",
    "CorruptionError",
    "ImbalanceSpec",
    "MetaSpec",
    "NoiseSpec",
    "apply_noise",
    "corrupt",
    "requested_transition",
]

NOISE_KINDS = (
    "none",  # clean labels
    "symmetric",  # exact flip of floor(r·N) samples to another class (MOIT)
    "uniform",  # uniform mixing, true class may be redrawn (L2B, GDW)
    "random_subset",  # floor(r·N) random samples get a uniform label over all K (DivideMix)
    "asymmetric",  # semantic map / CIFAR-100 super-class cycle, per sample with prob r (MOIT)
    "asymmetric_subset",  # the same map applied to a random floor(r·N) subset (DivideMix)
    "pair",  # c -> c+1 with prob r (Co-teaching pair flip)
    "random_pair",  # GDW/L2B `flip`: one random other class per class, matrix seed 1
    "random_two_pair",  # GDW/L2B `flip2`: r/2 to each of two random other classes
    "matrix",  # a user transition matrix
    "instance",  # instance-dependent (Xia et al. 2020), needs features
)
ORDERS = ("imbalance_first", "noise_first")


@dataclass(frozen=True)
class NoiseSpec:
    """Which label noise to apply. ``rate`` in [0, 1) (ignored by 'none' and 'matrix', which must
    leave it at 0); ``matrix`` ``[K][K]`` only for kind 'matrix'; ``rate_std`` for 'instance';
    ``pair_seed`` is the fixed seed of the 'random_pair' / 'random_two_pair' matrix (1 in the
    GDW/L2B codes), independent of the run seed."""

    kind: str = "none"
    rate: float = 0.0
    matrix: tuple[tuple[float, ...], ...] | None = None
    rate_std: float = 0.1
    pair_seed: int = 1

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise CorruptionError(
                f"unknown noise kind {self.kind!r}.{suggest(str(self.kind), list(NOISE_KINDS))} "
                f"Valid kinds: {', '.join(NOISE_KINDS)}."
            )
        object.__setattr__(self, "rate", check_rate(self.rate))
        if self.kind in ("none", "matrix") and self.rate != 0.0:
            raise CorruptionError(
                f"noise kind {self.kind!r} takes no rate (got {self.rate}): leave rate at 0"
                + (", the matrix sets the noise." if self.kind == "matrix" else " or pick a kind.")
            )
        if (self.kind == "matrix") != (self.matrix is not None):
            raise CorruptionError(
                "a transition matrix goes with kind 'matrix' and only with it: "
                + ("pass matrix=[[...], ...]." if self.kind == "matrix" else "drop matrix.")
            )
        if self.matrix is not None:
            m = np.asarray(self.matrix, dtype=np.float64)
            if m.ndim != 2:
                raise CorruptionError(f"noise matrix must be 2-D [K][K], got shape {m.shape}.")
            validate_transition_matrix(m, m.shape[0])
            object.__setattr__(self, "matrix", tuple(tuple(float(v) for v in row) for row in m))
        if not (math.isfinite(self.rate_std) and self.rate_std >= 0):
            raise CorruptionError(f"rate_std must be >= 0, got {self.rate_std}.")


@dataclass(frozen=True)
class ImbalanceSpec:
    """Long-tailed subsampling. ``ratio`` = n_max/n_min >= 1 (1 with ``n_max=None``: no
    subsampling); ``profile`` 'exponential' or 'step' (``step_fraction`` = fraction of minority
    classes); ``class_order[r]`` = class of rank r (head first; default 0..K−1); ``n_max``
    defaults to the smallest class of the pool; ``select_by`` 'true' or 'noisy' (the latter only
    with ``order='noise_first'``)."""

    ratio: float = 1.0
    profile: str = "exponential"
    step_fraction: float = 0.5
    class_order: tuple[int, ...] | None = None
    n_max: int | None = None
    select_by: str = "true"

    def __post_init__(self) -> None:
        ratio = float(self.ratio)
        if not (math.isfinite(ratio) and ratio >= 1.0):
            raise CorruptionError(
                f"imbalance ratio must be >= 1 (n_max / n_min, e.g. 100), got {self.ratio}."
            )
        object.__setattr__(self, "ratio", ratio)
        if self.profile not in PROFILES:
            raise CorruptionError(f"unknown imbalance profile {self.profile!r}: use {PROFILES}.")
        if self.select_by not in ("true", "noisy"):
            raise CorruptionError(f"select_by must be 'true' or 'noisy', got {self.select_by!r}.")
        if self.class_order is not None:
            object.__setattr__(self, "class_order", tuple(int(c) for c in self.class_order))
        if self.n_max is not None and int(self.n_max) < 1:
            raise CorruptionError(f"n_max must be >= 1, got {self.n_max}.")

    @property
    def active(self) -> bool:
        return self.ratio != 1.0 or self.n_max is not None


@dataclass(frozen=True)
class MetaSpec:
    """The clean meta set: ``per_class`` samples of each class, or ``total`` spread evenly (at most
    one of the two non-zero). ``balanced=False`` draws ``total`` at random (L2B+DivideMix).
    ``overlap=True`` leaves the meta samples in the training pool too (paper-code compatibility
    only, docs/methods.md, Conventions: meta set); by default the meta set is disjoint from train
    and validation."""

    per_class: int = 0
    total: int = 0
    balanced: bool = True
    overlap: bool = False

    def __post_init__(self) -> None:
        if self.per_class < 0 or self.total < 0:
            raise CorruptionError("meta per_class and total must be >= 0.")
        if self.per_class and self.total:
            raise CorruptionError("give meta per_class or total, not both.")
        if not self.balanced and self.per_class:
            raise CorruptionError(
                "an unbalanced (random) meta set is sized by total, not per_class."
            )

    @property
    def active(self) -> bool:
        return bool(self.per_class or self.total)


# ------------------------------------------------------------------------------- noise dispatch
def _asymmetric_target(
    num_classes: int,
    asymmetric_map: Mapping[int, int] | None,
    coarse_labels: np.ndarray | None,
) -> tuple[np.ndarray, str]:
    if asymmetric_map:
        return map_to_array(asymmetric_map, num_classes), "map"
    if coarse_labels is not None:
        coarse = np.asarray(coarse_labels)
        if coarse.shape != (num_classes,):
            raise CorruptionError(
                f"coarse labels must give the super-class of each of the {num_classes} fine "
                f"classes, got shape {coarse.shape}."
            )
        return superclass_cyclic_map(coarse), "superclass"
    raise CorruptionError(
        "this data set has no standard asymmetric map (and no super-classes): use noise kind "
        "'pair' or 'random_pair', or 'matrix' with your own transition matrix."
    )


def requested_transition(
    spec: NoiseSpec,
    num_classes: int,
    *,
    asymmetric_map: Mapping[int, int] | None = None,
    coarse_labels: np.ndarray | None = None,
) -> np.ndarray | None:
    """The expected transition ``[K, K]`` ``P(noisy = j | true = i)`` of a spec, or None for
    'instance' (it depends on the sample). Subset kinds have the same expectation as their
    per-sample twin: 'symmetric' ↔ off-diagonal symmetric, 'random_subset' ↔ uniform mixing."""
    k = int(num_classes)
    r = spec.rate
    if spec.kind == "none":
        return np.eye(k)  # corrupt() records None for 'none', to keep the spec small
    if spec.kind == "symmetric":
        return symmetric_matrix(k, r, include_true=False)
    if spec.kind in ("uniform", "random_subset"):
        return symmetric_matrix(k, r, include_true=True)
    if spec.kind in ("asymmetric", "asymmetric_subset"):
        target, _ = _asymmetric_target(k, asymmetric_map, coarse_labels)
        return asymmetric_matrix(k, r, {c: int(t) for c, t in enumerate(target)})
    if spec.kind == "pair":
        return pair_flip_matrix(k, r)
    if spec.kind == "random_pair":
        return random_pair_matrix(k, r, seed=spec.pair_seed)
    if spec.kind == "random_two_pair":
        return random_two_pair_matrix(k, r, seed=spec.pair_seed)
    if spec.kind == "matrix":
        return validate_transition_matrix(np.asarray(spec.matrix), k)
    return None  # instance


def apply_noise(
    labels: np.ndarray,
    spec: NoiseSpec,
    *,
    num_classes: int,
    rng: np.random.Generator,
    features: np.ndarray | None = None,
    asymmetric_map: Mapping[int, int] | None = None,
    coarse_labels: np.ndarray | None = None,
) -> np.ndarray:
    """Apply one `NoiseSpec` to labels ``[N]`` (features ``[N, D]`` only for 'instance')."""
    labels = check_labels(labels, num_classes)
    k, r = int(num_classes), spec.rate
    if spec.kind == "none" or (r == 0.0 and spec.kind != "matrix"):
        return labels.copy()
    if spec.kind == "symmetric":
        return symmetric_noise(labels, num_classes=k, rate=r, rng=rng)
    if spec.kind == "random_subset":
        return random_subset_noise(labels, num_classes=k, rate=r, rng=rng)
    if spec.kind == "asymmetric_subset":
        target, _ = _asymmetric_target(k, asymmetric_map, coarse_labels)
        return mapped_subset_noise(labels, num_classes=k, rate=r, mapping=target, rng=rng)
    if spec.kind == "instance":
        if features is None:
            raise CorruptionError(
                "instance noise needs features [N, D] (e.g. flattened images): pass features=."
            )
        return instance_dependent_noise(
            labels, features, num_classes=k, rate=r, rng=rng, rate_std=spec.rate_std
        )
    matrix = requested_transition(
        spec, k, asymmetric_map=asymmetric_map, coarse_labels=coarse_labels
    )
    return apply_transition_matrix(labels, matrix, rng)


# ------------------------------------------------------------------------------------ the record
_SPLITS = ("train", "val", "meta")


@dataclass
class Corruption:
    """The corrupted training set of one run, indexed into the original N training samples.

    - ``true_labels [N]``: the original labels (never shown to a method).
    - ``noisy_labels [N]``: the labels a method sees; equal to the true label for meta samples
      (unless ``overlap``, where meta samples also in train/val carry their noisy label) and -1 for
      samples in no split (dropped by the long-tail subsampling).
    - ``train_idx``, ``val_idx``, ``meta_idx``: sorted int64 indices; disjoint unless ``overlap``.
    - ``spec``: the specs and options as plain JSON data (see `corrupt`).
    """

    true_labels: np.ndarray
    noisy_labels: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    meta_idx: np.ndarray
    num_classes: int
    seed: int
    spec: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("true_labels", "noisy_labels", "train_idx", "val_idx", "meta_idx"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        self.num_classes, self.seed = int(self.num_classes), int(self.seed)

    # -- views
    def split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """``(idx, labels)`` of a split as a method may see it: noisy labels for 'train' and
        'val', true labels for the clean 'meta' set."""
        idx = self._idx(which)
        return idx, (self.true_labels if which == "meta" else self.noisy_labels)[idx]

    def _idx(self, which: str) -> np.ndarray:
        if which not in _SPLITS:
            raise CorruptionError(f"unknown split {which!r}: use one of {_SPLITS}.")
        return getattr(self, f"{which}_idx")

    def class_counts(self, which: str = "train", labels: str = "noisy") -> np.ndarray:
        """Samples per class ``[K]`` in a split, by 'noisy' or 'true' label."""
        if labels not in ("noisy", "true"):
            raise CorruptionError(f"labels must be 'noisy' or 'true', got {labels!r}.")
        source = self.noisy_labels if labels == "noisy" else self.true_labels
        return np.bincount(source[self._idx(which)], minlength=self.num_classes)

    def is_noisy(self) -> np.ndarray:
        """``[N]`` bool: the sample is in a split and its noisy label differs from the true one."""
        return (self.noisy_labels >= 0) & (self.noisy_labels != self.true_labels)

    def noise_rate(self, which: str = "train") -> float:
        """Realised fraction of wrong labels in a split (default: train)."""
        idx = self._idx(which)
        return realised_noise_rate(self.true_labels[idx], self.noisy_labels[idx])

    def transition(self, which: str = "train") -> np.ndarray:
        """Realised transition ``[K, K]`` over a split (default: train)."""
        idx = self._idx(which)
        return realised_transition(self.true_labels[idx], self.noisy_labels[idx], self.num_classes)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable description: noise kind, requested / expected / realised rates,
        imbalance ratio requested and realised (max/min of true train counts; None if a class is
        empty), per-class counts and split sizes."""
        sp = self.spec
        true_train = self.class_counts("train", "true")
        nonempty = true_train[true_train > 0]
        kind = sp.get("noise", {}).get("kind")
        expected = 0.0 if kind == "none" else None
        if sp.get("requested_transition") is not None and true_train.sum() > 0:
            t = np.asarray(sp["requested_transition"])
            expected = float((true_train / true_train.sum()) @ (1.0 - np.diag(t)))
        n = len(self.true_labels)
        in_split = np.zeros(n, dtype=bool)
        for which in _SPLITS:
            in_split[self._idx(which)] = True
        return {
            "seed": self.seed,
            "num_classes": self.num_classes,
            "order": sp.get("order"),
            "noise_kind": kind,
            "noise_rate_requested": sp.get("noise", {}).get("rate"),
            "noise_rate_expected": expected,
            "noise_rate_realised": self.noise_rate("train"),
            "val_noise_rate_realised": self.noise_rate("val"),
            "imbalance_ratio_requested": sp.get("imbalance", {}).get("ratio"),
            "imbalance_ratio_realised": (
                float(true_train.max() / true_train.min()) if true_train.min() > 0 else None
            ),
            "nonempty_train_classes": int(nonempty.size),
            "sizes": {
                "total": n,
                "train": len(self.train_idx),
                "val": len(self.val_idx),
                "meta": len(self.meta_idx),
                "dropped": int(n - in_split.sum()),
            },
            "counts_train_true": true_train.tolist(),
            "counts_train_noisy": self.class_counts("train", "noisy").tolist(),
            "counts_val_noisy": self.class_counts("val", "noisy").tolist(),
            "counts_meta": self.class_counts("meta", "true").tolist(),
        }

    # -- persistence
    def save(self, path: str | PathLike[str]) -> None:
        """Write a compressed ``.npz`` at exactly ``path`` (the spec as a JSON string inside)."""
        with open(path, "wb") as f:
            np.savez_compressed(
                f,
                true_labels=self.true_labels,
                noisy_labels=self.noisy_labels,
                train_idx=self.train_idx,
                val_idx=self.val_idx,
                meta_idx=self.meta_idx,
                num_classes=np.int64(self.num_classes),
                seed=np.int64(self.seed),
                spec=np.array(json.dumps(self.spec, sort_keys=True)),
            )

    @classmethod
    def load(cls, path: str | PathLike[str]) -> Corruption:
        """Read what `save` wrote."""
        with np.load(path, allow_pickle=False) as z:
            return cls(
                true_labels=z["true_labels"],
                noisy_labels=z["noisy_labels"],
                train_idx=z["train_idx"],
                val_idx=z["val_idx"],
                meta_idx=z["meta_idx"],
                num_classes=int(z["num_classes"]),
                seed=int(z["seed"]),
                spec=json.loads(str(z["spec"][()])),
            )


# ---------------------------------------------------------------------------------- entry point
def _pick_from_provided(
    offered: np.ndarray, labels: np.ndarray, meta: MetaSpec, k: int, rng: np.random.Generator
) -> np.ndarray:
    """``meta``'s share of a source's clean split ``offered`` (labels ``[len(offered)]``)."""
    if not meta.balanced:
        if meta.total > len(offered):
            raise CorruptionError(
                f"meta total {meta.total} is larger than the provided meta split ({len(offered)})."
            )
        return np.sort(rng.permutation(offered)[: meta.total])
    want = meta_counts(k, per_class=meta.per_class or None, total=meta.total or None)
    picked = []
    for c in range(k):
        members = offered[labels == c]
        if len(members) < want[c]:
            raise CorruptionError(
                f"the provided meta split has {len(members)} samples of class {c}; "
                f"{want[c]} were asked for."
            )
        picked.append(rng.permutation(members)[: want[c]])
    return np.sort(np.concatenate(picked))


def corrupt(
    true_labels: np.ndarray,
    *,
    num_classes: int,
    noise: NoiseSpec | None = None,
    imbalance: ImbalanceSpec | None = None,
    meta: MetaSpec | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    order: str = "imbalance_first",
    features: np.ndarray | None = None,
    asymmetric_map: Mapping[int, int] | None = None,
    coarse_labels: np.ndarray | None = None,
    provided_meta: np.ndarray | None = None,
) -> Corruption:
    """Meta split, long-tail subsampling, noise and validation split; see the module docstring
    for the order. true_labels ``[N]``; features ``[N, D]`` only for 'instance' noise;
    ``asymmetric_map`` (e.g. the data set's ``{9: 1, 2: 0, ...}``) or ``coarse_labels [K]``
    (super-class of each fine class) for the 'asymmetric' kinds, the map taking precedence.
    Deterministic in its inputs and ``seed``. A spec left as None means: no noise, no imbalance,
    no meta set. ``provided_meta``: indices of samples a source offers as its clean meta split;
    the meta set is then drawn from them only (all of them when ``meta`` asks for no size), and
    none of them is trained on.
    """
    noise = noise if noise is not None else NoiseSpec()
    imbalance = imbalance if imbalance is not None else ImbalanceSpec()
    meta = meta if meta is not None else MetaSpec()
    true = check_labels(true_labels, num_classes, "true labels")
    k, n = int(num_classes), len(true)
    if order not in ORDERS:
        raise CorruptionError(f"unknown order {order!r}: use one of {ORDERS}.")
    if imbalance.select_by == "noisy" and order != "noise_first":
        raise CorruptionError(
            "selecting the long tail by noisy class needs order='noise_first' "
            "(there are no noisy labels yet when the imbalance comes first)."
        )
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CorruptionError(f"seed must be a non-negative integer, got {seed!r}.")
    if imbalance.class_order is not None and len(imbalance.class_order) != k:
        raise CorruptionError(
            f"class_order has {len(imbalance.class_order)} entries, need {k} (one per class)."
        )
    if noise.kind == "instance" and (features is None or len(features) != n):
        raise CorruptionError(
            f"instance noise needs features [N, D] with N = {n} (one row per training sample)."
        )
    # Fail before any work on a spec that cannot be built (bad matrix size, no asymmetric map).
    transition = requested_transition(
        noise, k, asymmetric_map=asymmetric_map, coarse_labels=coarse_labels
    )
    asym_source = (
        _asymmetric_target(k, asymmetric_map, coarse_labels)[1]
        if noise.kind in ("asymmetric", "asymmetric_subset")
        else None
    )
    rng_meta, rng_imb, rng_noise, rng_val = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4)
    )

    # 1. clean meta set from the full training set (or from the source's own clean split)
    if provided_meta is not None:
        offered = np.unique(np.asarray(provided_meta, dtype=np.int64))
        if len(offered) == 0 or offered[0] < 0 or offered[-1] >= n:
            raise CorruptionError(f"provided meta indices must be a non-empty subset of [0, {n}).")
        if meta.overlap:
            raise CorruptionError("a provided meta split is never trained on: overlap must be off.")
        if meta.active:
            meta_idx = _pick_from_provided(offered, true[offered], meta, k, rng_meta)
        else:
            meta_idx = offered
        pool = np.setdiff1d(np.arange(n), offered)
    elif meta.active:
        meta_idx, pool = split_meta(
            true,
            per_class=meta.per_class or None,
            total=meta.total or None,
            rng=rng_meta,
            num_classes=k,
            balanced=meta.balanced,
        )
        if meta.overlap:
            pool = np.arange(n)
    else:
        meta_idx, pool = np.zeros(0, np.int64), np.arange(n)

    def noisy_of(idx: np.ndarray) -> np.ndarray:
        feats = None if features is None else np.asarray(features)[idx]
        return apply_noise(
            true[idx],
            noise,
            num_classes=k,
            rng=rng_noise,
            features=feats,
            asymmetric_map=asymmetric_map,
            coarse_labels=coarse_labels,
        )

    def long_tail(select: np.ndarray) -> np.ndarray:  # positions into `pool`
        if not imbalance.active:
            return np.arange(len(pool))
        counts = long_tail_counts(
            np.bincount(select, minlength=k),
            ratio=imbalance.ratio,
            profile=imbalance.profile,
            step_fraction=imbalance.step_fraction,
            class_order=None if imbalance.class_order is None else np.array(imbalance.class_order),
            n_max=imbalance.n_max,
        )
        return subsample_to_counts(select, counts, rng_imb)

    # 2-3. long tail and noise, in the requested order
    noisy = np.full(n, -1, dtype=np.int64)
    if order == "imbalance_first":
        kept = pool[long_tail(true[pool])]
        noisy[kept] = noisy_of(kept)
    else:
        noisy_pool = noisy_of(pool)
        pos = long_tail(true[pool] if imbalance.select_by == "true" else noisy_pool)
        kept = pool[pos]
        noisy[kept] = noisy_pool[pos]

    # 4. noisy validation split, stratified by noisy label
    held, rest = stratified_split(noisy[kept], fraction=val_fraction, rng=rng_val)
    val_idx, train_idx = kept[held], kept[rest]

    unlabelled_meta = meta_idx[noisy[meta_idx] < 0]
    noisy[unlabelled_meta] = true[unlabelled_meta]

    spec = {
        "noise": dataclasses.asdict(noise),
        "imbalance": dataclasses.asdict(imbalance),
        "meta": dataclasses.asdict(meta),
        "val_fraction": float(val_fraction),
        "order": order,
        "asymmetric_source": asym_source,
        "asymmetric_map": (
            sorted([int(s), int(d)] for s, d in asymmetric_map.items())
            if asym_source == "map"
            else None
        ),
        "requested_transition": (
            None if transition is None or noise.kind == "none" else transition.tolist()
        ),
    }
    spec = json.loads(json.dumps(spec))  # plain JSON data, exactly what save/load round-trips
    return Corruption(
        true_labels=true,
        noisy_labels=noisy,
        train_idx=train_idx,
        val_idx=val_idx,
        meta_idx=meta_idx,
        num_classes=k,
        seed=int(seed),
        spec=spec,
    )
