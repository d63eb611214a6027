"""The specs of a corruption: what the config's ``noise``, ``imbalance`` and ``meta`` sections
hold (`NoiseSpec`, `ImbalanceSpec`, `MetaSpec`), with their defaults and checks in one place.
`noisytail.data.corruption.corrupt` carries them out; `noisytail.config` reads them from YAML."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from noisytail.data.imbalance import PROFILES
from noisytail.data.noise import CorruptionError, check_rate, validate_transition_matrix
from noisytail.data.noise_kinds import noise_kind
from noisytail.registry import suggest

#: The SimCLR view recipes of ``data.augment`` (`noisytail.data.augment`): with the blur
#: (SimCLR's ImageNet recipe) and without it (its CIFAR recipe, and MOIT's).
SIMCLR_KINDS = ("simclr", "simclr_noblur")
#: Every ``data.augment``.
AUGMENT_KINDS = ("none", "flip", "crop", "crop_flip", *SIMCLR_KINDS)

ORDERS = ("imbalance_first", "noise_first")
META_SOURCES = ("train", "provided", "pseudo", "file")


def _choice(what: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise CorruptionError(
            f"{what}={value!r} is not one of {', '.join(allowed)}."
            + suggest(str(value), list(allowed))
        )


@dataclass(frozen=True)
class NoiseSpec:
    """Which label noise to apply: a config's ``noise`` section.

    ``kind`` names a row of `NOISE_KINDS`. ``rate`` in [0, 1) (kinds without a rate, 'none',
    'matrix' and 'label_file', leave it at 0); ``matrix`` ``[K][K]`` only for kind 'matrix';
    ``rate_std``: spread of per-sample flip rates for 'instance' (Xia et al. 2020); ``pair_seed``:
    the fixed seed of the 'random_pair' / 'random_two_pair' matrix (1 in the GDW/L2B codes),
    independent of the run seed; ``order``: 'imbalance_first', or 'noise_first' (GDW's code
    order: noise on the whole balanced pool, then the long tail)."""

    kind: str = "none"
    rate: float = 0.0
    matrix: tuple[tuple[float, ...], ...] | None = None
    rate_std: float = 0.1
    pair_seed: int = 1
    order: str = "imbalance_first"

    def __post_init__(self) -> None:
        kind = noise_kind(self.kind)
        object.__setattr__(self, "rate", check_rate(self.rate, "noise.rate"))
        if not kind.takes_rate and self.rate != 0.0:
            raise CorruptionError(
                f"noise kind {self.kind!r} takes no rate (got {self.rate}): leave noise.rate at 0"
                + (", the matrix sets the noise." if kind.takes_matrix else " or pick a kind.")
            )
        if kind.takes_matrix != (self.matrix is not None):
            raise CorruptionError(
                "a transition matrix goes with kind 'matrix' and only with it: "
                + ("pass matrix=[[...], ...]." if kind.takes_matrix else "drop noise.matrix.")
            )
        if self.matrix is not None:
            try:
                m = np.asarray(self.matrix, dtype=np.float64)
            except (TypeError, ValueError):
                m = np.zeros(0)
            if m.ndim != 2:
                raise CorruptionError(
                    f"noise.matrix must be a 2-D [K][K] list of numbers, got {self.matrix!r}."
                )
            validate_transition_matrix(m, m.shape[0])
            object.__setattr__(self, "matrix", tuple(tuple(float(v) for v in row) for row in m))
        if not (math.isfinite(self.rate_std) and self.rate_std >= 0):
            raise CorruptionError(f"noise.rate_std must be >= 0, got {self.rate_std}.")
        _choice("noise.order", self.order, ORDERS)


@dataclass(frozen=True)
class ImbalanceSpec:
    """Long-tailed subsampling: a config's ``imbalance`` section. ``ratio`` = n_max/n_min >= 1
    (1 with ``n_max=None``: no subsampling); ``profile`` 'exponential' or 'step'
    (``step_fraction`` = fraction of minority classes); ``class_order[r]`` = class of rank r (head
    first; default 0..K−1); ``n_max`` defaults to the smallest class of the pool; ``select_by``
    'true' or 'noisy' (the latter only with ``noise.order='noise_first'``)."""

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
                f"imbalance.ratio must be >= 1 (n_max / n_min, e.g. 100), got {self.ratio}."
            )
        object.__setattr__(self, "ratio", ratio)
        _choice("imbalance.profile", self.profile, PROFILES)
        _choice("imbalance.select_by", self.select_by, ("true", "noisy"))
        if self.class_order is not None:
            try:
                order = tuple(int(c) for c in self.class_order)
            except (TypeError, ValueError):
                raise CorruptionError(
                    f"imbalance.class_order must be a list of class ids, got {self.class_order!r}."
                ) from None
            object.__setattr__(self, "class_order", order)
        if self.n_max is not None and int(self.n_max) < 1:
            raise CorruptionError(f"imbalance.n_max must be >= 1, got {self.n_max}.")

    @property
    def active(self) -> bool:
        return self.ratio != 1.0 or self.n_max is not None


@dataclass(frozen=True)
class MetaSpec:
    """The clean meta set: a config's ``meta`` section. ``per_class`` samples of each class, or
    ``total`` spread evenly (at most one of the two non-zero). ``balanced=False`` draws ``total``
    at random (L2B+DivideMix). ``overlap=True`` leaves the meta samples in the training pool too
    (paper-code compatibility only, docs/methods.md, Conventions: meta set); by default the meta
    set is disjoint from train and validation. ``source``: 'train' (held out of the training
    pool), 'provided' (the data source's own clean split, `corrupt`'s ``provided_meta``),
    'pseudo' (no clean data: the loop draws ``per_class``/``total`` pool samples on which the
    model and the noisy label agree every epoch, `noisytail.data.splits.pseudo_meta`) or 'file'
    (``file``: a CSV of samples of an image folder or CSV whose labels a person checked; the
    source makes it its clean split and removes those samples from training,
    `noisytail.data.checked`)."""

    per_class: int = 0
    total: int = 0
    balanced: bool = True
    overlap: bool = False
    source: str = "train"
    file: str | None = None  # meta.source=file: the CSV of checked samples

    def __post_init__(self) -> None:
        if self.per_class < 0 or self.total < 0:
            raise CorruptionError("meta.per_class and meta.total must be >= 0.")
        if self.per_class and self.total:
            raise CorruptionError("give meta.per_class or meta.total, not both.")
        if not self.balanced and self.per_class:
            raise CorruptionError(
                "an unbalanced (random) meta set is sized by meta.total, not meta.per_class."
            )
        _choice("meta.source", self.source, META_SOURCES)
        if self.source == "pseudo" and not (self.per_class or self.total):
            raise CorruptionError(
                "meta.source=pseudo draws its meta set from the training pool: set exactly one "
                "of meta.per_class or meta.total (e.g. meta.per_class=100)."
            )
        if self.source == "pseudo" and not self.balanced:
            raise CorruptionError(
                "meta.source=pseudo draws its meta set class by class (the samples the model "
                "and the label agree on most): meta.balanced=false applies to meta.source=train."
            )
        if (self.source == "file") != bool(self.file):
            raise CorruptionError(
                "meta.source=file takes its meta set from meta.file=<checked.csv> (samples whose "
                "labels a person checked): set both, or neither."
            )

    @property
    def active(self) -> bool:
        """Whether `corrupt` holds a clean meta set out ('pseudo' leaves it to the loop)."""
        return bool(self.per_class or self.total) and self.source != "pseudo"


def check_specs(noise: NoiseSpec, imbalance: ImbalanceSpec, meta: MetaSpec) -> None:
    """The checks that take more than one spec (each spec checks itself)."""
    if imbalance.select_by == "noisy" and noise.order != "noise_first":
        raise CorruptionError(
            "selecting the long tail by noisy class (imbalance.select_by=noisy) needs "
            "noise.order=noise_first (there are no noisy labels yet when the imbalance comes "
            "first)."
        )
    if meta.source in ("provided", "file") and meta.overlap:
        raise CorruptionError(
            f"a {meta.source} meta split is never trained on: meta.overlap must be off."
        )


# ------------------------------------------------------------------------------- noise dispatch
