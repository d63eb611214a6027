"""The one table of noise kinds: each name a `NoiseSpec` can give, with its matrix and sampler.

A `NoiseKind` pairs a kind's expected transition matrix ``P(noisy = j | true = i)`` ``[K, K]``
with its sampler (the generators of `noisytail.data.noise`); `noisytail.data.corruption` looks
every kind up here, for the saved record and for the labels alike. A new kind is one
`register_noise_kind` call, in any module imported before the config is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from noisytail.data.noise import (
    CorruptionError,
    apply_transition_matrix,
    asymmetric_matrix,
    check_labels,
    instance_dependent_noise,
    map_to_array,
    mapped_subset_noise,
    pair_flip_matrix,
    random_pair_matrix,
    random_subset_noise,
    random_two_pair_matrix,
    superclass_cyclic_map,
    symmetric_matrix,
    symmetric_noise,
    validate_transition_matrix,
)
from noisytail.registry import Registry, suggest

__all__ = [
    "NOISE_KINDS",
    "NoiseData",
    "NoiseKind",
    "asymmetric_target",
    "noise_kind",
    "register_noise_kind",
]


@dataclass(frozen=True)
class NoiseData:
    """What a data set offers a noise kind besides the labels.

    ``asymmetric_map`` (e.g. `CIFAR10_ASYMMETRIC_MAP`) or ``coarse_labels [K]`` (super-class of
    each fine class) for the 'asymmetric' kinds; ``features [N, D]`` and ``given_labels [N]`` are
    aligned with the labels being corrupted (`take` cuts them to a subset)."""

    num_classes: int
    asymmetric_map: Mapping[int, int] | None = None
    coarse_labels: np.ndarray | None = None
    features: np.ndarray | None = None
    given_labels: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> NoiseData:
        """The same data with ``features`` and ``given_labels`` cut to the rows ``idx``."""

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.asarray(a)[idx]

        return NoiseData(
            self.num_classes,
            self.asymmetric_map,
            self.coarse_labels,
            cut(self.features),
            cut(self.given_labels),
        )


#: ``transition(spec, data)``: the expected ``P(noisy = j | true = i)`` ``[K, K]``, or None where
#: it depends on the sample. ``spec`` is a `NoiseSpec` (``rate``, ``matrix``, ``rate_std``, ...).
TransitionFn = Callable[[Any, NoiseData], "np.ndarray | None"]
#: ``sample(labels, spec, data, rng)``: noisy labels ``[N]`` from true labels ``[N]``.
SampleFn = Callable[[np.ndarray, Any, NoiseData, np.random.Generator], np.ndarray]

_NEEDS = {
    "features": "features [N, D], one row per sample (e.g. flattened images): pass features=",
    "given_labels": "the noisy labels of every sample [N]: pass given_labels= (a config's "
    "data.label_file)",
}


@dataclass(frozen=True)
class NoiseKind:
    """One row of the noise-kind table (`register_noise_kind`).

    ``sample`` None: each label is drawn from its row of ``transition``. ``takes_rate`` False:
    the kind has no rate (it must stay 0); otherwise rate 0 leaves the labels as they are.
    ``takes_matrix``: the kind reads ``spec.matrix`` (and only it may have one). ``needs``: the
    `NoiseData` fields (``features``, ``given_labels``) it cannot work without.
    ``uses_class_map``: it reads the data set's asymmetric map or super-classes."""

    name: str
    transition: TransitionFn
    sample: SampleFn | None = None
    takes_rate: bool = True
    takes_matrix: bool = False
    needs: tuple[str, ...] = ()
    uses_class_map: bool = False

    def check_data(self, data: NoiseData, n: int | None = None) -> None:
        """Raise unless ``data`` holds what the kind needs (``n`` rows where given)."""
        for need in self.needs:
            value = getattr(data, need)
            if value is None or (n is not None and len(value) != n):
                rows = "" if n is None else f" with N = {n}"
                raise CorruptionError(
                    f"noise kind {self.name!r} needs {_NEEDS.get(need, need)}{rows}."
                )

    def draw(
        self, labels: np.ndarray, spec: Any, data: NoiseData, rng: np.random.Generator
    ) -> np.ndarray:
        """Noisy labels ``[N]`` for true labels ``[N]`` under ``spec`` (of this kind)."""
        labels = check_labels(labels, data.num_classes)
        self.check_data(data, len(labels))
        if self.takes_rate and spec.rate == 0.0:
            return labels.copy()
        if self.sample is not None:
            return check_labels(self.sample(labels, spec, data, rng), data.num_classes, "noisy")
        return apply_transition_matrix(labels, self.transition(spec, data), rng)


NOISE_KINDS: Registry[NoiseKind] = Registry("noise kind")
"""The noise kinds by name: the one place a kind's matrix and sampler are looked up."""


def register_noise_kind(
    name: str,
    transition: TransitionFn,
    sample: SampleFn | None = None,
    *,
    takes_rate: bool = True,
    takes_matrix: bool = False,
    needs: tuple[str, ...] = (),
    uses_class_map: bool = False,
) -> NoiseKind:
    """Add a noise kind to `NOISE_KINDS` (a name registered twice raises) and return it."""
    unknown = [n for n in needs if n not in _NEEDS]
    if unknown:
        raise ValueError(f"noise kind {name!r}: unknown needs {unknown}; use {sorted(_NEEDS)}.")
    kind = NoiseKind(
        name, transition, sample, takes_rate, takes_matrix, tuple(needs), uses_class_map
    )
    NOISE_KINDS.register(name)(kind)
    return kind


def noise_kind(name: str) -> NoiseKind:
    """The `NOISE_KINDS` entry of ``name``; an unknown name is a `CorruptionError`."""
    if name not in NOISE_KINDS:
        names = NOISE_KINDS.names()
        raise CorruptionError(
            f"unknown noise kind {name!r}.{suggest(str(name), names)} "
            f"Valid kinds: {', '.join(names)}."
        )
    return NOISE_KINDS.get(name)


def asymmetric_target(data: NoiseData) -> tuple[np.ndarray, str]:
    """``(target [K], source)``: the data set's asymmetric map as an array (source "map"), else
    the super-class cycle of its coarse labels (source "superclass"); raise if it has neither."""
    k = data.num_classes
    if data.asymmetric_map:
        return map_to_array(data.asymmetric_map, k), "map"
    if data.coarse_labels is not None:
        coarse = np.asarray(data.coarse_labels)
        if coarse.shape != (k,):
            raise CorruptionError(
                f"coarse labels must give the super-class of each of the {k} fine "
                f"classes, got shape {coarse.shape}."
            )
        return superclass_cyclic_map(coarse), "superclass"
    raise CorruptionError(
        "this data set has no standard asymmetric map (and no super-classes): use noise kind "
        "'pair' or 'random_pair', or 'matrix' with your own transition matrix."
    )


def _asymmetric(spec: Any, data: NoiseData) -> np.ndarray:
    target, _ = asymmetric_target(data)
    return asymmetric_matrix(data.num_classes, spec.rate, {c: int(t) for c, t in enumerate(target)})


def _given(labels: np.ndarray, spec: Any, data: NoiseData, rng: np.random.Generator) -> np.ndarray:
    given = np.asarray(data.given_labels, dtype=np.int64)
    if (given < 0).any():
        i = int(np.flatnonzero(given < 0)[0])
        raise CorruptionError(f"sample {i} of the pool has no given label (it is {given[i]}).")
    return given.copy()


# The built-in kinds. Subset kinds share the expectation of their per-sample twin: 'symmetric'
# (exact flip) <-> off-diagonal symmetric, 'random_subset' <-> uniform mixing.
register_noise_kind(  # clean labels
    "none", lambda s, d: np.eye(d.num_classes), lambda y, s, d, rng: y.copy(), takes_rate=False
)
register_noise_kind(  # exact flip of floor(r·N) samples to another class (MOIT)
    "symmetric",
    lambda s, d: symmetric_matrix(d.num_classes, s.rate, include_true=False),
    lambda y, s, d, rng: symmetric_noise(y, num_classes=d.num_classes, rate=s.rate, rng=rng),
)
register_noise_kind(  # uniform mixing, the true class may be redrawn (L2B, GDW)
    "uniform", lambda s, d: symmetric_matrix(d.num_classes, s.rate, include_true=True)
)
register_noise_kind(  # floor(r·N) random samples get a uniform label over all K (DivideMix)
    "random_subset",
    lambda s, d: symmetric_matrix(d.num_classes, s.rate, include_true=True),
    lambda y, s, d, rng: random_subset_noise(y, num_classes=d.num_classes, rate=s.rate, rng=rng),
)
register_noise_kind(  # semantic map / CIFAR-100 super-class cycle, per sample with prob r (MOIT)
    "asymmetric", _asymmetric, uses_class_map=True
)
register_noise_kind(  # the same map applied to a random floor(r·N) subset (DivideMix)
    "asymmetric_subset",
    _asymmetric,
    lambda y, s, d, rng: mapped_subset_noise(
        y, num_classes=d.num_classes, rate=s.rate, mapping=asymmetric_target(d)[0], rng=rng
    ),
    uses_class_map=True,
)
register_noise_kind(  # c -> c+1 with prob r (Co-teaching pair flip)
    "pair", lambda s, d: pair_flip_matrix(d.num_classes, s.rate)
)
register_noise_kind(  # GDW/L2B `flip`: one random other class per class, matrix seed 1
    "random_pair", lambda s, d: random_pair_matrix(d.num_classes, s.rate, seed=s.pair_seed)
)
register_noise_kind(  # GDW/L2B `flip2`: r/2 to each of two random other classes
    "random_two_pair",
    lambda s, d: random_two_pair_matrix(d.num_classes, s.rate, seed=s.pair_seed),
)
register_noise_kind(  # a user transition matrix
    "matrix",
    lambda s, d: validate_transition_matrix(np.asarray(s.matrix), d.num_classes),
    takes_rate=False,
    takes_matrix=True,
)
register_noise_kind(  # instance-dependent (Xia et al. 2020): depends on each sample's features
    "instance",
    lambda s, d: None,
    lambda y, s, d, rng: instance_dependent_noise(
        y, d.features, num_classes=d.num_classes, rate=s.rate, rng=rng, rate_std=s.rate_std
    ),
    needs=("features",),
)
register_noise_kind(  # real noisy labels read from a file (data.label_file), e.g. CIFAR-10N
    "label_file", lambda s, d: None, _given, takes_rate=False, needs=("given_labels",)
)
