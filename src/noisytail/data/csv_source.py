"""A data set described by a CSV manifest with a header row.

Two forms, told apart by the header:

- **images**: a ``path`` column (name set by ``path_column``) and a label column. Paths are
  relative to ``root`` (default: the CSV's own folder) unless absolute; every file must exist.
  Inputs come back as a `LazyImageStore` of uint8 ``[C, image_size, image_size]``.
- **features**: a label column and any number of numeric columns (every column except the label).
  Inputs come back as a `TensorStore` of float32 ``[N, D]``, standardised with the *training*
  split's per-column mean and standard deviation (a constant column becomes all zeros), so the
  bundle's ``mean``/``std`` are empty.

Labels are integers ``>= 0`` or strings:

- integers: one class per distinct value, in numeric order, named by the value; values that are
  not ``0..K-1`` (e.g. ``{0, 1, 9}``) are renumbered ``0..K-1``, saying so in one line;
- strings: class names = the sorted distinct training labels;
- a column of integers with a few other values (fewer than the integers) is an error naming the
  first such row (a stray value, most likely a typo); a column of mostly names with a few
  integers treats every label as a name, integers first in numeric order, saying so.

Errors name the file and line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisytail.data.csv_table import (
    CsvTable,
    checked_mask,
    encode_labels,
    kept_in_test,
    note_checked,
    read_checked,
    resolve_csv,
)
from noisytail.data.image_folder import (
    CACHE_MB,
    LazyImageStore,
    check_classes,
    image_options,
    imagenet_stats,
    split_or_not,
)
from noisytail.data.locations import image_parents
from noisytail.data.source_info import data_source
from noisytail.data.types import DataError, DatasetBundle, DataSplit, TensorStore

log = logging.getLogger(__name__)


#: The column of image paths in a CSV manifest, unless ``path_column`` names another.
PATH_COLUMN = "path"


@data_source(
    "csv",
    display_name="a CSV file",
    how_to_get="Needs data.options.train_csv=<file.csv> ('path,label' rows or numeric features "
    "plus 'label'); data.root sets where relative paths start.",
)
def load_csv(
    root: str | None = None,
    *,
    train_csv: str | None = None,
    test_csv: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    label_column: str = "label",
    path_column: str = PATH_COLUMN,
    image_size: int | None = None,
    channels: int | None = None,
    cache_items: int = 4096,
    cache_mb: float = CACHE_MB,
    meta_csv: str | None = None,
) -> DatasetBundle:
    """Load the manifest ``train_csv`` (and ``test_csv``, else a seeded stratified split;
    ``test_fraction=0``: no test split).

    ``meta_csv`` (``meta.source: file``): samples whose labels a person checked, in the form of
    ``train_csv`` (`read_checked`); they become the bundle's ``meta`` split, and the rows of
    ``train_csv`` that they match (`checked_mask`) are removed before the split.

    Relative CSV names are taken inside ``root`` when it is given. ``image_size``, ``channels``,
    ``cache_items`` and ``cache_mb`` apply to the image form (`LazyImageStore`); left empty,
    ``image_size`` and ``channels`` are inferred from the training images
    (`noisytail.data.image_folder.infer_image_format`); mean/std default to ImageNet's there.
    A manifest with a single class is a `DataError`.
    """
    if train_csv is None:
        raise DataError(
            "The csv data set needs data.options.train_csv=<file.csv> (a 'path,label' manifest "
            "or numeric feature columns plus a 'label' column)."
        )
    base = Path(os.fspath(root)).expanduser() if root is not None else None
    train_path = resolve_csv(train_csv, base)
    train = CsvTable(train_path, base, label_column, path_column)
    test = None
    if test_csv is not None:
        test = CsvTable(resolve_csv(test_csv, base), base, label_column, path_column)
        if (test.files is None) != (train.files is None) or test.columns != train.columns:
            raise DataError(f"CSV {test.path} does not have the same form/columns as {train.path}.")
    notes: list[str] = []
    class_names, y_train, y_test = encode_labels(train, test, notes)
    for note in notes:
        log.warning(note)
    check_classes(class_names, f"CSV {train_path}", "a label column needs two or more values")
    pool = np.arange(len(y_train))
    checked = None
    if meta_csv is not None:
        checked, y_meta = read_checked(meta_csv, base, class_names, label_column, path_column)
        drop = checked_mask(checked, train.files, train.features, str(train_path))
        pool = np.flatnonzero(~drop)
        note_checked(checked, int(drop.sum()))
    if test is None:
        train_idx, test_idx = split_or_not(y_train[pool], test_fraction, seed)
        train_idx, test_idx = pool[train_idx], pool[test_idx]
    else:
        train_idx, test_idx = pool, np.zeros(0, dtype=np.int64)

    def pick(table: CsvTable, idx: np.ndarray) -> tuple[list[str] | None, np.ndarray | None]:
        files = [table.files[i] for i in idx] if table.files is not None else None
        feats = table.features[idx] if table.features is not None else None
        return files, feats

    parts = [pick(train, train_idx)]
    labels = [y_train[train_idx]]
    if test is None:
        parts.append(pick(train, test_idx))
        labels.append(y_train[test_idx])
    else:
        keep = np.arange(len(y_test))
        if checked is not None:
            keep = kept_in_test(checked, test.files, test.features, f"CSV {test.path}")
        parts.append(pick(test, keep))
        labels.append(y_test[keep])
    if checked is not None:
        parts.append((checked.files, checked.features))
        labels.append(y_meta)

    splits = []
    inferred: dict[str, tuple[Any, str]] = {}
    if train.files is not None:
        assert parts[0][0] is not None
        image_size, channels, inferred = image_options(
            parts[0][0], image_size, channels, f"CSV {train_path}"
        )
        for (files, _), y in zip(parts, labels):
            assert files is not None
            store = LazyImageStore(files, image_size, channels, cache_items, cache_mb)
            splits.append(DataSplit(store, y, files))
        mean, std = imagenet_stats(channels)
    else:
        train_x = parts[0][1]
        assert train_x is not None
        mu, sd = train_x.mean(axis=0), train_x.std(axis=0)
        sd[sd == 0] = 1.0
        for (_, feats), y in zip(parts, labels):
            assert feats is not None
            x = torch.from_numpy(((feats - mu) / sd).astype(np.float32))
            splits.append(DataSplit(TensorStore(x), y))
        # stored standardised (the loader passes floats through); recorded for new rows
        mean, std = tuple(float(m) for m in mu), tuple(float(s) for s in sd)
    return DatasetBundle(
        name="csv",
        train=splits[0],
        test=splits[1],
        class_names=class_names,
        mean=mean,
        std=std,
        root=str(base if base is not None else train_path.parent),
        meta=splits[2] if checked is not None else None,
        train_rows=train_idx,
        feature_names=list(train.columns) if train.features is not None else None,
        data_folders=image_parents(
            (train.files or [])
            + ((test.files or []) if test is not None else [])
            + ((checked.files or []) if checked is not None else [])
        ),
        data_files=tuple(str(t.path) for t in (train, test, checked) if t is not None),
        inferred=inferred,
    )
