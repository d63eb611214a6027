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

import csv
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
from noisytail.data.types import DataError, DatasetBundle, DataSplit, TensorStore, renumber_classes

_INT = re.compile(r"[+-]?\d+")
log = logging.getLogger(__name__)


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the non-blank data rows of a CSV, each row with its line number."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = []
            for row in reader:
                if row and any(cell.strip() for cell in row):
                    rows.append((reader.line_num, row))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"Cannot read CSV {path}: {e}") from e
    if header is None:
        raise DataError(f"CSV {path} is empty: it needs a header row and at least one data row.")
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise DataError(f"CSV {path} has repeated column names: {', '.join(header)}.")
    if not rows:
        raise DataError(f"CSV {path} has a header but no data rows.")
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(
                f"CSV {path} line {line}: {len(row)} fields, but the header has {len(header)}."
            )
    return header, rows


def _column(path: Path, header: list[str], name: str, option: str) -> int:
    if name not in header:
        raise DataError(
            f"CSV {path} has no column {name!r} (columns: {', '.join(header)}); "
            f"set data.options.{option} to the right one."
        )
    return header.index(name)


class _Table:
    """One parsed CSV: raw label strings plus either file paths or a feature matrix."""

    def __init__(self, path: Path, root: Path | None, label_column: str, path_column: str) -> None:
        header, rows = read_csv_rows(path)
        label_at = _column(path, header, label_column, "label_column")
        self.path = path
        self.lines = [line for line, _ in rows]
        self.labels = [row[label_at].strip() for _, row in rows]
        for line, label in zip(self.lines, self.labels):
            if not label:
                raise DataError(f"CSV {path} line {line}: the {label_column!r} value is empty.")
        self.files: list[str] | None = None
        self.features: np.ndarray | None = None
        self.columns: list[str] = []
        if path_column in header:
            base = root if root is not None else path.parent
            at = header.index(path_column)
            self.files = []
            for line, row in rows:
                if not row[at].strip():
                    raise DataError(f"CSV {path} line {line}: the {path_column!r} value is empty.")
                file = Path(row[at].strip()).expanduser()
                file = file if file.is_absolute() else base / file
                if not file.is_file():
                    raise DataError(f"CSV {path} line {line}: file {str(file)!r} does not exist.")
                self.files.append(str(file))
        else:
            self.columns = [h for i, h in enumerate(header) if i != label_at]
            if not self.columns:
                raise DataError(
                    f"CSV {path} has only the label column: add a {path_column!r} column of "
                    "image files or numeric feature columns."
                )
            at = [i for i in range(len(header)) if i != label_at]
            self.features = np.empty((len(rows), len(at)), dtype=np.float64)
            for r, (line, row) in enumerate(rows):
                for c, i in enumerate(at):
                    try:
                        value = float(row[i])
                    except ValueError:
                        value = math.nan
                    if not math.isfinite(value):
                        raise DataError(
                            f"CSV {path} line {line}: column {header[i]!r} value {row[i]!r} is "
                            "not a finite number."
                        )
                    self.features[r, c] = value


def _encode_labels(
    train: _Table, test: _Table | None, notes: list[str] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Class names and int64 label arrays for train and test (module docstring); a one-line
    note for each reinterpretation of the labels is appended to ``notes``."""
    tables = [train] if test is None else [train, test]
    is_int = [[bool(_INT.fullmatch(v)) for v in t.labels] for t in tables]
    n = sum(len(t.labels) for t in tables)
    n_int = sum(sum(flags) for flags in is_int)
    if n_int == n:
        ints = [np.array([int(v) for v in t.labels], dtype=np.int64) for t in tables]
        for t, y in zip(tables, ints):
            if (y < 0).any():
                line = t.lines[int(np.flatnonzero(y < 0)[0])]
                raise DataError(f"CSV {t.path} line {line}: negative label; labels must be >= 0.")
        ints, names, note = renumber_classes(ints, f"CSV {train.path}")
        if note is not None and notes is not None:
            notes.append(note)
    else:
        if n_int > n - n_int:  # an integer column with a stray value
            for t, flags in zip(tables, is_int):
                if not all(flags):
                    r = flags.index(False)
                    raise DataError(
                        f"CSV {t.path} line {t.lines[r]}: label {t.labels[r]!r} is not an "
                        f"integer, unlike {n_int} of the {n} labels; correct that row (or write "
                        "every label as a class name)."
                    )
        if n_int and notes is not None:
            notes.append(
                f"CSV {train.path}: the labels mix names and integers ({n_int} of {n}); all are "
                "taken as class names, the integers first in numeric order."
            )

        def order(name: str) -> tuple[int, int, str]:
            return (0, int(name), name) if _INT.fullmatch(name) else (1, 0, name)

        names = sorted(set(train.labels), key=order)
        index = {n: i for i, n in enumerate(names)}
        ints = []
        for t in tables:
            for line, v in zip(t.lines, t.labels):
                if v not in index:
                    raise DataError(
                        f"CSV {t.path} line {line}: label {v!r} does not occur in the training "
                        f"CSV (classes: {', '.join(names)})."
                    )
            ints.append(np.array([index[v] for v in t.labels], dtype=np.int64))
    return names, ints[0], ints[1] if test is not None else np.zeros(0, dtype=np.int64)


def _resolve(csv_path: str, root: Path | None) -> Path:
    path = Path(os.fspath(csv_path)).expanduser()
    if not path.is_absolute() and root is not None:
        path = root / path
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist.")
    return path


def read_checked(
    meta_csv: str | os.PathLike[str],
    root: Path | None,
    class_names: list[str],
    label_column: str = "label",
    path_column: str = "path",
) -> tuple[_Table, np.ndarray]:
    """A CSV of samples whose labels a person checked (``meta.source: file``): its table (image
    ``path`` column, or the feature columns of the data) and its labels ``[M]`` as class ids of
    ``class_names``. A relative CSV name is taken from the working folder, else inside ``root``;
    relative image paths in it start at ``root`` when given, else at the CSV's folder."""
    path = Path(os.fspath(meta_csv)).expanduser()
    if not path.is_absolute() and not path.is_file() and root is not None:
        path = root / path
    if not path.is_file():
        raise DataError(f"CSV file {path} (the checked samples, meta.file) does not exist.")
    table = _Table(path, root, label_column, path_column)
    index = {name: i for i, name in enumerate(class_names)}
    for line, label in zip(table.lines, table.labels):
        if label not in index:
            raise DataError(
                f"CSV {table.path} line {line}: label {label!r} is not a class of the data "
                f"({', '.join(class_names)})."
            )
    return table, np.array([index[v] for v in table.labels], dtype=np.int64)


def checked_mask(
    checked: _Table, files: list[str] | None, features: np.ndarray | None, where: str
) -> np.ndarray:
    """``[N]`` bool: which samples of the data (image ``files``, or raw ``features`` rows) appear
    in the ``checked`` table: the same file (after resolving links), or the same feature values.
    A checked table of the other form (paths against features) is a `DataError`."""
    if files is not None:
        if checked.files is None:
            raise DataError(
                f"CSV {checked.path}: the data are images, so the checked samples need a "
                f"'path' column naming image files (as in {where})."
            )
        wanted = {os.path.realpath(f) for f in checked.files}
        return np.array([os.path.realpath(f) in wanted for f in files], dtype=bool)
    assert features is not None
    if checked.features is None or checked.features.shape[1] != features.shape[1]:
        raise DataError(
            f"CSV {checked.path}: the checked samples need the feature columns of {where} "
            "and the label column."
        )
    wanted_rows = {tuple(row) for row in checked.features.tolist()}
    return np.array([tuple(row) in wanted_rows for row in features.tolist()], dtype=bool)


def note_checked(checked: _Table, removed: int) -> None:
    log.warning(
        f"{len(checked.labels)} samples with checked labels from {checked.path} form the meta "
        f"set; {removed} of them were in the training data and are removed from it (never "
        "trained on)."
    )


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
    path_column: str = "path",
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
    train_path = _resolve(train_csv, base)
    train = _Table(train_path, base, label_column, path_column)
    test = None
    if test_csv is not None:
        test = _Table(_resolve(test_csv, base), base, label_column, path_column)
        if (test.files is None) != (train.files is None) or test.columns != train.columns:
            raise DataError(f"CSV {test.path} does not have the same form/columns as {train.path}.")
    notes: list[str] = []
    class_names, y_train, y_test = _encode_labels(train, test, notes)
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

    def pick(table: _Table, idx: np.ndarray) -> tuple[list[str] | None, np.ndarray | None]:
        files = [table.files[i] for i in idx] if table.files is not None else None
        feats = table.features[idx] if table.features is not None else None
        return files, feats

    parts = [pick(train, train_idx)]
    labels = [y_train[train_idx]]
    if test is None:
        parts.append(pick(train, test_idx))
        labels.append(y_train[test_idx])
    else:
        parts.append(pick(test, np.arange(len(y_test))))
        labels.append(y_test)
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
        mean, std = (), ()
    return DatasetBundle(
        name="csv",
        train=splits[0],
        test=splits[1],
        class_names=class_names,
        mean=mean,
        std=std,
        root=str(base if base is not None else train_path.parent),
        meta=splits[2] if checked is not None else None,
        data_folders=image_parents(
            (train.files or [])
            + ((test.files or []) if test is not None else [])
            + ((checked.files or []) if checked is not None else [])
        ),
        data_files=tuple(str(t.path) for t in (train, test, checked) if t is not None),
        inferred=inferred,
    )
