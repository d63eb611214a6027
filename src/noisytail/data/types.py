"""The containers every data source returns.

A source returns a `DatasetBundle`: a train and a test `DataSplit`, the class names and the
per-channel normalisation. Pixels live in an `ImageStore`: `TensorStore` keeps the whole split in
one uint8 tensor (Fashion-MNIST, CIFAR, digits: airbench-style, augmented by the batch);
`LazyImageStore` (in ``image_folder.py``) decodes files on demand with a cache. Labels are always a
numpy int64 array in [0, num_classes).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad or missing data; the message says what to do."""


def renumber_classes(
    label_arrays: list[np.ndarray], where: str
) -> tuple[list[np.ndarray], list[str], str | None]:
    """Integer labels ``>= 0`` as contiguous classes ``0..K-1``.

    Returns the renumbered arrays, the class names (each class's original integer, as text) and,
    when the values were not already ``0..K-1``, a one-line note saying so (e.g. labels
    ``{0, 1, 9}`` become classes 0, 1, 2 named "0", "1", "9"), so that no class is left empty
    for noise to flip labels into. The order of the classes is the numeric order of the values.
    """
    arrays = [np.asarray(a, dtype=np.int64) for a in label_arrays]
    values = np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.int64)
    names = [str(int(v)) for v in values]
    if np.array_equal(values, np.arange(len(values))):
        return arrays, names, None
    shown = ", ".join(names) if len(names) <= 8 else f"{', '.join(names[:6])}, ..., {names[-1]}"
    note = (
        f"{where}: the integer labels {{{shown}}} are not 0..{len(values) - 1}; they are "
        f"renumbered as classes 0..{len(values) - 1} in numeric order (reports keep the "
        "original labels as class names), so that no class is empty."
    )
    return [np.searchsorted(values, a) for a in arrays], names, note


#: A label written as an integer (``renumber_classes`` names integer classes ``str(int(v))``).
INTEGER = re.compile(r"[+-]?\d+")


def integer_named(class_names: Sequence[str]) -> bool:
    """Whether every class is named by an integer (a source that read integer labels)."""
    return bool(class_names) and all(INTEGER.fullmatch(name) for name in class_names)


def class_lookup(class_names: Sequence[str]) -> Callable[[str], int | None]:
    """A label's text to its class id in ``class_names``, or None: the name itself, or, when
    every class name is an integer, the same integer (``"01"`` is class ``"1"``, as the data's
    own file reads it: `renumber_classes`)."""
    exact = {name: i for i, name in enumerate(class_names)}
    numeric = None
    if integer_named(class_names):
        numeric = {int(name): i for i, name in enumerate(class_names)}

    def find(value: str) -> int | None:
        if value in exact:
            return exact[value]
        if numeric is not None and INTEGER.fullmatch(value):
            return numeric.get(int(value))
        return None

    return find


class ImageStore(Protocol):
    """Random access to a split's inputs.

    ``get(idx)`` returns a tensor ``[len(idx), *shape]``: uint8 ``[B, C, H, W]`` for images
    (converted to float and normalised by the loader), or float32 ``[B, D]`` for feature vectors.
    """

    shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def get(self, idx: np.ndarray) -> torch.Tensor: ...


@dataclass
class TensorStore:
    """A split held in memory as one tensor ``[N, *shape]`` (uint8 images or float features)."""

    data: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def get(self, idx: np.ndarray) -> torch.Tensor:
        return self.data[torch.as_tensor(np.asarray(idx), dtype=torch.long)]

    def to(self, device: torch.device | str) -> TensorStore:
        return TensorStore(self.data.to(device))


@dataclass
class DataSplit:
    """Inputs, integer labels ``[N]`` and, where samples are files, their paths."""

    images: ImageStore
    labels: np.ndarray
    paths: list[str] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.images) != len(self.labels):
            raise DataError(
                f"{len(self.images)} inputs but {len(self.labels)} labels: they must match."
            )
        if self.paths is not None and len(self.paths) != len(self.labels):
            raise DataError(f"{len(self.paths)} paths but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> DataSplit:
        """The samples at ``idx`` (a view for in-memory stores)."""
        idx = np.asarray(idx, dtype=np.int64)
        paths = [self.paths[i] for i in idx] if self.paths is not None else None
        return DataSplit(SubsetStore(self.images, idx), self.labels[idx], paths)


@dataclass
class SubsetStore:
    """A store restricted to ``idx`` of a parent store."""

    parent: ImageStore
    idx: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.parent.shape

    def __len__(self) -> int:
        return len(self.idx)

    def get(self, idx: np.ndarray) -> torch.Tensor:
        return self.parent.get(self.idx[np.asarray(idx, dtype=np.int64)])


@dataclass
class ConcatStore:
    """The stores ``parts`` one after the other (all with the same sample shape)."""

    parts: list[ImageStore]

    def __post_init__(self) -> None:
        if len({tuple(p.shape) for p in self.parts}) > 1:
            raise DataError(f"cannot join stores of shapes {[tuple(p.shape) for p in self.parts]}.")
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.parts[0].shape)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def get(self, idx: np.ndarray) -> torch.Tensor:
        idx = np.asarray(idx, dtype=np.int64)
        part = np.searchsorted(self.offsets, idx, side="right") - 1
        out = None
        for p in np.unique(part):
            sel = np.nonzero(part == p)[0]
            block = self.parts[p].get(idx[sel] - self.offsets[p])
            if out is None:
                out = block.new_empty((len(idx), *block.shape[1:]))
            out[torch.as_tensor(sel, device=block.device)] = block
        if out is None:  # no index: an empty batch shaped like the first part's
            return self.parts[0].get(idx)
        return out


def concat_splits(first: DataSplit, second: DataSplit) -> DataSplit:
    """``first`` then ``second`` as one split (paths kept only if both have them)."""
    paths = first.paths + second.paths if first.paths is not None and second.paths else None
    return DataSplit(
        ConcatStore([first.images, second.images]),
        np.concatenate([first.labels, second.labels]),
        paths,
    )


@dataclass
class DatasetBundle:
    """What a data source returns.

    ``mean``/``std`` are per-channel statistics in [0, 1] pixel units used to normalise images
    (empty for feature vectors). ``coarse_labels`` maps each fine class to a super-class where the
    data set has them (CIFAR-100), for within-super-class asymmetric noise. ``asymmetric_map`` is
    the data set's standard semantic flip map ``{source class: target class}`` if it has one.
    ``meta`` is a clean labelled split the source offers for meta-learning (Clothing1M's clean
    validation keys, a list file of verified images), used with ``meta.source: provided``.
    ``labels_are_noisy``: the training labels carry real noise and the true labels are unknown
    (Clothing1M), so noise rates and detection scores against "true" labels mean nothing.
    ``data_folders`` / ``data_files``: where the source's data live, so that no output lands
    among them (`noisytail.data.locations`); a source that sets neither owns its ``root``.
    ``inferred``: the options the source inferred from the files (e.g. ``image_size``), each as
    ``(value, why in one line)`` (`noisytail.defaults` prints them and records the values).
    ``train_rows [n_source_train]``: each sample of the training split *as the source returned
    it* (the ids of `PreparedData.train_source_idx`) to its 0-based data row in the source's
    file, where the two differ (a CSV whose checked rows went to ``meta``); None: id = row.
    ``feature_names [D]``: a table's feature columns in the model's input order (a feature
    CSV), so that new rows are read by name (`noisytail.prediction.read_feature_csv`).
    """

    name: str
    train: DataSplit
    test: DataSplit
    class_names: list[str]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    coarse_labels: np.ndarray | None = None
    asymmetric_map: dict[int, int] = field(default_factory=dict)
    root: str | None = None
    meta: DataSplit | None = None
    labels_are_noisy: bool = False
    data_folders: tuple[str, ...] = ()
    data_files: tuple[str, ...] = ()
    inferred: dict[str, tuple[Any, str]] = field(default_factory=dict)
    train_rows: np.ndarray | None = None
    feature_names: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train.images.shape

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    def validate(self) -> None:
        """Raise `DataError` if any label lies outside ``[0, num_classes)``; warn of class names
        that differ only in case or spaces."""
        for split_name, split in (("train", self.train), ("test", self.test)):
            bad = (split.labels < 0) | (split.labels >= self.num_classes)
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"{self.name} {split_name} label {int(split.labels[first])} at index {first} "
                    f"is outside [0, {self.num_classes}): labels must be 0..{self.num_classes - 1}."
                )
        seen: dict[str, str] = {}
        for name in self.class_names:  # 'Red' and 'red': a typo, or truly two classes?
            first_name = seen.setdefault(str(name).strip().casefold(), str(name))
            if first_name != str(name):
                log.warning(
                    "classes %r and %r differ only in case or spaces: they are two classes; "
                    "correct the labels if they are one.",
                    first_name,
                    name,
                )
