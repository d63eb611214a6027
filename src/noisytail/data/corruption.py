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
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import numpy as np

from noisytail.atomic import write_npz
from noisytail.data.imbalance import long_tail_counts, subsample_to_counts
from noisytail.data.noise import (
    CorruptionError,
    check_labels,
    realised_noise_rate,
    realised_transition,
)
from noisytail.data.noise_kinds import NOISE_KINDS, NoiseData, asymmetric_target, noise_kind
from noisytail.data.specs import (
    META_SOURCES,
    ORDERS,
    ImbalanceSpec,
    MetaSpec,
    NoiseSpec,
    check_specs,
)
from noisytail.data.splits import meta_counts, split_meta, stratified_split

__all__ = [
    "META_SOURCES",
    "NOISE_KINDS",
    "ORDERS",
    "Corruption",
    "CorruptionError",
    "ImbalanceSpec",
    "MetaSpec",
    "NoiseSpec",
    "apply_noise",
    "check_specs",
    "corrupt",
    "requested_transition",
]


def _noise_data(
    num_classes: int,
    asymmetric_map: Mapping[int, int] | None,
    coarse_labels: np.ndarray | None,
    features: np.ndarray | None = None,
    given_labels: np.ndarray | None = None,
) -> NoiseData:
    return NoiseData(int(num_classes), asymmetric_map, coarse_labels, features, given_labels)


def requested_transition(
    spec: NoiseSpec,
    num_classes: int,
    *,
    asymmetric_map: Mapping[int, int] | None = None,
    coarse_labels: np.ndarray | None = None,
) -> np.ndarray | None:
    """The expected transition ``[K, K]`` ``P(noisy = j | true = i)`` of a spec (its kind's row of
    `NOISE_KINDS`), or None where it depends on the sample ('instance', 'label_file')."""
    data = _noise_data(num_classes, asymmetric_map, coarse_labels)
    return noise_kind(spec.kind).transition(spec, data)


def apply_noise(
    labels: np.ndarray,
    spec: NoiseSpec,
    *,
    num_classes: int,
    rng: np.random.Generator,
    features: np.ndarray | None = None,
    asymmetric_map: Mapping[int, int] | None = None,
    coarse_labels: np.ndarray | None = None,
    given_labels: np.ndarray | None = None,
) -> np.ndarray:
    """Apply one `NoiseSpec` to labels ``[N]`` with its kind's sampler (`NOISE_KINDS`).
    ``features [N, D]`` only for 'instance', ``given_labels [N]`` only for 'label_file'."""
    data = _noise_data(num_classes, asymmetric_map, coarse_labels, features, given_labels)
    return noise_kind(spec.kind).draw(labels, spec, data, rng)


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
            "order": sp.get("noise", {}).get("order", sp.get("order")),
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
        """Atomically write a compressed ``.npz`` at exactly ``path`` (the spec as a JSON string
        inside; `noisytail.atomic.write_npz`)."""
        write_npz(
            path,
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
    features: np.ndarray | None = None,
    asymmetric_map: Mapping[int, int] | None = None,
    coarse_labels: np.ndarray | None = None,
    provided_meta: np.ndarray | None = None,
    given_labels: np.ndarray | None = None,
    label_source: Mapping[str, Any] | None = None,
) -> Corruption:
    """Meta split, long-tail subsampling, noise and validation split; see the module docstring
    for the order (``noise.order``). true_labels ``[N]``; features ``[N, D]`` only for 'instance'
    noise; ``asymmetric_map`` (e.g. the data set's ``{9: 1, 2: 0, ...}``) or ``coarse_labels [K]``
    (super-class of each fine class) for the 'asymmetric' kinds, the map taking precedence.
    Deterministic in its inputs and ``seed``. A spec left as None means: no noise, no imbalance,
    no meta set. ``provided_meta`` (with ``meta.source='provided'``): indices of samples a source
    offers as its clean meta split; the meta set is then drawn from them only (all of them when
    ``meta`` asks for no size), and none of them is trained on. ``given_labels [N]`` (with noise
    kind 'label_file'): real noisy labels, e.g. read from a file (-1 where a sample has none; such
    a sample must not be trained on); ``label_source`` (plain JSON data: the file's path, key,
    hash) is saved in the record under ``label_source``.
    """
    noise = noise if noise is not None else NoiseSpec()
    imbalance = imbalance if imbalance is not None else ImbalanceSpec()
    meta = meta if meta is not None else MetaSpec()
    check_specs(noise, imbalance, meta)
    true = check_labels(true_labels, num_classes, "true labels")
    k, n = int(num_classes), len(true)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CorruptionError(f"seed must be a non-negative integer, got {seed!r}.")
    if imbalance.class_order is not None and len(imbalance.class_order) != k:
        raise CorruptionError(
            f"imbalance.class_order has {len(imbalance.class_order)} entries, need {k} "
            "(one per class)."
        )
    if (meta.source in ("provided", "file")) != (provided_meta is not None):
        raise CorruptionError(
            "meta.source=provided draws the meta set from the source's clean split: "
            + (
                "pass provided_meta (the indices of that split)."
                if provided_meta is None
                else "set meta.source=provided to use provided_meta."
            )
        )
    kind = noise_kind(noise.kind)
    if given_labels is not None:
        if "given_labels" not in kind.needs:
            raise CorruptionError(
                f"given noisy labels (a label file) replace synthetic noise: noise kind "
                f"{noise.kind!r} cannot be used with them, use 'label_file'."
            )
        given_labels = np.asarray(given_labels)
        if given_labels.shape != (n,):
            raise CorruptionError(
                f"given_labels must be [N] with N = {n}, got shape {given_labels.shape}."
            )
        labelled = given_labels[given_labels != -1]
        check_labels(labelled, k, "given labels")
        given_labels = given_labels.astype(np.int64)
    noise_data = NoiseData(k, asymmetric_map, coarse_labels, features, given_labels)
    kind.check_data(noise_data, n)
    # Fail before any work on a spec that cannot be built (bad matrix size, no asymmetric map).
    transition = kind.transition(noise, noise_data)
    asym_source = asymmetric_target(noise_data)[1] if kind.uses_class_map else None
    rng_meta, rng_imb, rng_noise, rng_val = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4)
    )

    # 1. clean meta set from the full training set (or from the source's own clean split)
    if provided_meta is not None:
        offered = np.unique(np.asarray(provided_meta, dtype=np.int64))
        if len(offered) == 0 or offered[0] < 0 or offered[-1] >= n:
            raise CorruptionError(f"provided meta indices must be a non-empty subset of [0, {n}).")
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
        return kind.draw(true[idx], noise, noise_data.take(idx), rng_noise)

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
    if noise.order == "imbalance_first":
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
        "asymmetric_source": asym_source,
        "asymmetric_map": (
            sorted([int(s), int(d)] for s, d in asymmetric_map.items())
            if asym_source == "map"
            else None
        ),
        "requested_transition": (
            None if transition is None or noise.kind == "none" else transition.tolist()
        ),
        "label_source": None if label_source is None else dict(label_source),
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
