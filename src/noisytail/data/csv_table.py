"""Reading a CSV manifest as a table: rows with their line numbers, a label column, image paths or
numeric feature columns, and the CSV of checked samples (``meta.source: file``). No image is
decoded here: `csv_source` and `image_folder` build their data sets on top of it."""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path

import numpy as np

from noisytail.data.locations import IMAGE_EXTENSIONS
from noisytail.data.types import INTEGER, DataError, class_lookup, renumber_classes

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
    if len(header) == 1 and (sep := next((c for c in ";\t|" if c in header[0]), None)):
        shown = "tabs" if sep == "\t" else repr(sep)
        raise DataError(
            f"CSV {path} is separated by {shown}, not commas (its header reads as one column, "
            f"{header[0]!r}): save it comma-separated, e.g. pandas' df.to_csv(path, index=False)."
        )
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


def column_index(path: Path, header: list[str], name: str, option: str) -> int:
    if name not in header:
        raise DataError(
            f"CSV {path} has no column {name!r} (columns: {', '.join(header)}); "
            f"set data.options.{option} to the right one."
        )
    return header.index(name)


class CsvTable:
    """One parsed CSV: raw label strings plus either file paths or a feature matrix."""

    def __init__(self, path: Path, root: Path | None, label_column: str, path_column: str) -> None:
        header, rows = read_csv_rows(path)
        label_at = column_index(path, header, label_column, "label_column")
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
                        if os.path.splitext(row[i].strip())[1].lower() in IMAGE_EXTENSIONS:
                            raise DataError(
                                f"CSV {path} line {line}: column {header[i]!r} holds file names "
                                f"({row[i].strip()!r}), not numbers: name it {path_column!r} "
                                f"or set data.options.path_column={header[i]}."
                            )
                        raise DataError(
                            f"CSV {path} line {line}: column {header[i]!r} value {row[i]!r} is "
                            "not a finite number."
                        )
                    self.features[r, c] = value


def encode_labels(
    train: CsvTable, test: CsvTable | None, notes: list[str] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Class names and int64 label arrays for train and test (module docstring); a one-line
    note for each reinterpretation of the labels is appended to ``notes``."""
    tables = [train] if test is None else [train, test]
    is_int = [[bool(INTEGER.fullmatch(v)) for v in t.labels] for t in tables]
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
            return (0, int(name), name) if INTEGER.fullmatch(name) else (1, 0, name)

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


def resolve_csv(csv_path: str, root: Path | None) -> Path:
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
) -> tuple[CsvTable, np.ndarray]:
    """A CSV of samples whose labels a person checked (``meta.source: file``): its table (image
    ``path`` column, or the feature columns of the data) and its labels ``[M]`` as class ids of
    ``class_names``. A relative CSV name is taken from the working folder, else inside ``root``;
    relative image paths in it start at ``root`` when given, else at the CSV's folder."""
    path = Path(os.fspath(meta_csv)).expanduser()
    if not path.is_absolute() and not path.is_file() and root is not None:
        path = root / path
    if not path.is_file():
        raise DataError(f"CSV file {path} (the checked samples, meta.file) does not exist.")
    table = CsvTable(path, root, label_column, path_column)
    find = class_lookup(class_names)
    ids = []
    for line, label in zip(table.lines, table.labels):
        found = find(label)
        if found is None:
            raise DataError(
                f"CSV {table.path} line {line}: label {label!r} is not a class of the data "
                f"({', '.join(class_names)})."
            )
        ids.append(found)
    return table, np.array(ids, dtype=np.int64)


def checked_mask(
    checked: CsvTable, files: list[str] | None, features: np.ndarray | None, where: str
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


def kept_in_test(
    checked: CsvTable, files: list[str] | None, features: np.ndarray | None, where: str
) -> np.ndarray:
    """The indices ``[M']`` of a separate test split's samples that are not among the
    ``checked`` ones: a checked sample joins the meta set, which meta methods train on, so it
    leaves the test split (saying so) rather than inflate the test score."""
    drop = checked_mask(checked, files, features, where)
    if drop.any():
        log.warning(
            f"{int(drop.sum())} of the checked samples in {checked.path} are in the test split "
            f"of {where}; they are removed from it (the meta set is trained on)."
        )
    return np.flatnonzero(~drop)


def note_checked(checked: CsvTable, removed: int) -> None:
    log.warning(
        f"{len(checked.labels)} samples with checked labels from {checked.path} form the meta "
        f"set; {removed} of them were in the training data and are removed from it (never "
        "trained on)."
    )
