"""Real noisy labels from a file, put in place of a bundle's training labels.

Formats, chosen by the file's extension:

- ``.npy``: an integer array ``[N]`` (no pickled objects).
- ``.npz``, ``.pt``, ``.pth``: one array / tensor, or a dict of them; ``key`` picks the entry
  (needed when there is more than one). CIFAR-10N's ``CIFAR-10_human.pt`` holds ``clean_label``,
  ``worse_label``, ``aggre_label``, ``random_label1..3``; CIFAR-100N's ``CIFAR-100_human.pt``
  holds ``clean_label`` and ``noisy_label``. ``.pt`` files are read with ``weights_only=True``
  plus numpy arrays, so they cannot run code.
- ``.csv``: a header with a ``label`` column (integers, or class names) and optionally an
  ``index`` column giving each row's training-sample index, or, for data of image files, a
  ``path`` column naming each row's image (relative to the data's root, else to the CSV's
  folder); then every training sample must occur once, in any order.

``N`` must equal the number of training samples, in the bundle's training order (a CSV with an
``index`` or ``path`` column: in its own order). Where the source
renumbered integer labels with gaps (``{0, 1, 9}`` became classes 0, 1, 2 named "0", "1", "9"),
integer labels in the file are those original values, and are renumbered the same way.

`read_label_file` returns the labels with where they came from (path, key, SHA-256 of the file),
which `noisytail.data.corruption.corrupt` takes as noise kind 'label_file' and saves in its record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisytail.data.csv_table import read_csv_rows
from noisytail.data.types import (
    INTEGER,
    DataError,
    DatasetBundle,
    class_lookup,
    integer_named,
)


def _numpy_safe_globals() -> list[Any]:
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed numpy.core
    reconstruct = core.multiarray._reconstruct
    return [
        reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        *(type(np.dtype(t)) for t in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8")),
        *(type(np.dtype(t)) for t in ("f2", "f4", "f8")),
    ]


def _reason(error: Exception) -> str:
    """One line from a load error; for torch's long weights-only message, just its core."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        core = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
        core = " ".join(core.split()).split(". Please use")[0].rstrip(".")
        return (
            f"{core}. Only tensors, numpy arrays and dicts of them are loaded (nothing that "
            "could run code); save the labels in that form."
        )
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:300] + "..."


def _pick(entries: dict[str, Any], key: str | None, path: Path) -> Any:
    names = ", ".join(str(k) for k in entries)
    if key is None:
        if len(entries) == 1:
            return next(iter(entries.values()))
        raise DataError(f"Label file {path} holds several arrays ({names}): choose one with key=.")
    if key not in entries:
        raise DataError(f"Label file {path} has no key {key!r}; its keys are: {names}.")
    return entries[key]


def _read_array_file(path: Path, key: str | None) -> Any:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            if key is not None:
                raise DataError(f"key={key!r} was given but {path} (.npy) holds a single array.")
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return _pick({k: npz[k] for k in npz.files}, key, path)
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except DataError:
        raise
    except Exception as e:  # numpy and torch raise many kinds for a bad file
        raise DataError(f"Cannot read label file {path}: {_reason(e)}") from e
    if isinstance(obj, dict):
        return _pick({str(k): v for k, v in obj.items()}, key, path)
    if key is not None:
        raise DataError(f"key={key!r} was given but {path} holds a single {type(obj).__name__}.")
    return obj


def _to_labels(values: Any, path: Path) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise DataError(
            f"Label file {path}: expected a 1-D array of labels, got shape {array.shape}."
        )
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        return array.astype(np.int64)
    raise DataError(f"Label file {path}: labels must be integers, got dtype {array.dtype}.")


def _path_index(
    path: Path, header: list[str], paths: list[str] | None, root: str | None
) -> tuple[int, Any] | tuple[None, None]:
    """The ``path`` column of a label CSV and a function from its cell (and line) to the
    training index of that image; ``(None, None)`` without the column."""
    if "path" not in header:
        return None, None
    if "index" in header:
        raise DataError(f"Label CSV {path} has both 'index' and 'path' columns: keep one.")
    if paths is None:
        raise DataError(
            f"Label CSV {path} has a 'path' column, but the data are not image files: give "
            "an 'index' column (each row's training-sample index) instead."
        )
    where = {os.path.realpath(p): i for i, p in enumerate(paths)}
    bases = [Path(root)] if root else []
    bases.append(path.parent)

    def index_of(value: str, line: int) -> int:
        name = Path(value).expanduser()
        for base in [Path("/")] if name.is_absolute() else bases:
            found = where.get(os.path.realpath(base / name))
            if found is not None:
                return found
        raise DataError(f"Label CSV {path} line {line}: {value!r} is not a training image.")

    return header.index("path"), index_of


def _read_csv_labels(
    path: Path,
    class_names: list[str],
    n: int,
    paths: list[str] | None = None,
    root: str | None = None,
) -> np.ndarray:
    header, rows = read_csv_rows(path)
    if "label" not in header:
        raise DataError(f"Label CSV {path} has no 'label' column (columns: {', '.join(header)}).")
    label_at = header.index("label")
    index_at = header.index("index") if "index" in header else None
    path_at, index_of = _path_index(path, header, paths, root)
    find = class_lookup(class_names)
    # integers are class numbers 0..K-1 unless the classes are named by integers themselves
    numbers = not integer_named(class_names)
    labels = np.empty(len(rows), dtype=np.int64)
    order = np.arange(len(rows))
    for r, (line, row) in enumerate(rows):
        value = row[label_at].strip()
        found = find(value)
        if found is None and numbers and INTEGER.fullmatch(value):
            found = int(value)  # its range is checked with the other formats'
        if found is None:
            raise DataError(
                f"Label CSV {path} line {line}: {value!r} is not a class of the data "
                f"({', '.join(class_names)})"
                + (f" nor a class number 0..{len(class_names) - 1}." if numbers else ".")
            )
        labels[r] = found
        if index_at is not None:
            index = row[index_at].strip()
            if not INTEGER.fullmatch(index) or not 0 <= int(index) < n:
                raise DataError(
                    f"Label CSV {path} line {line}: index {index!r} is not in 0..{n - 1}."
                )
            order[r] = int(index)
        elif index_of is not None:
            order[r] = index_of(row[path_at].strip(), line)
    if index_at is None and index_of is None:
        return labels
    if len(rows) != n or len(np.unique(order)) != n:
        column = "index" if index_at is not None else "path"
        raise DataError(
            f"Label CSV {path}: the {column!r} column must list each of the {n} training "
            f"samples exactly once ({len(rows)} rows, {len(np.unique(order))} distinct)."
        )
    out = np.empty(n, dtype=np.int64)
    out[order] = labels
    return out


def _original_values(class_names: list[str]) -> list[int] | None:
    """The original integer labels of a source that renumbered them (class names that are
    integers other than ``0..K-1``), else None."""
    if not integer_named(class_names):
        return None
    values = [int(n) for n in class_names]
    return None if values == list(range(len(values))) else values


def _renumber(labels: np.ndarray, class_names: list[str], file: Path) -> np.ndarray:
    values = _original_values(class_names)
    if values is None:
        return labels
    index = {v: i for i, v in enumerate(values)}
    out = np.empty_like(labels)
    for i, v in enumerate(labels.tolist()):
        if v not in index:
            raise DataError(
                f"Label file {file}: label {v} at index {i} is not one of the data's labels "
                f"({', '.join(class_names)})."
            )
        out[i] = index[v]
    return out


@dataclasses.dataclass(frozen=True)
class LabelFile:
    """Training labels read from a file: ``labels [N]`` int64 in ``[0, K)``, and their source."""

    labels: np.ndarray
    path: str
    key: str | None
    sha256: str  # of the file's bytes

    def source(self) -> dict[str, Any]:
        """Where the labels came from, as plain JSON data (saved with the corruption)."""
        return {"path": self.path, "key": self.key, "sha256": self.sha256}


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    try:
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise DataError(f"Cannot read label file {file}: {_reason(e)}") from e
    return digest.hexdigest()


def read_label_file(
    bundle: DatasetBundle, path: str | os.PathLike[str], *, key: str | None = None
) -> LabelFile:
    """The training labels of ``bundle`` read from ``path`` (the file is only read).

    Raises `DataError` if the file cannot be read, ``key`` is missing or ambiguous, the length
    differs from the training split, or a label lies outside ``[0, num_classes)``.
    """
    file = Path(os.fspath(path)).expanduser()
    if not file.is_file():
        raise DataError(f"Label file {file} does not exist.")
    n = len(bundle.train)
    suffix = file.suffix.lower()
    if suffix == ".csv":
        if key is not None:
            raise DataError(f"key={key!r} does not apply to a CSV label file ({file}).")
        labels = _read_csv_labels(file, bundle.class_names, n, bundle.train.paths, bundle.root)
    elif suffix in (".npy", ".npz", ".pt", ".pth"):
        labels = _renumber(_to_labels(_read_array_file(file, key), file), bundle.class_names, file)
    else:
        raise DataError(
            f"Label file {file}: unknown format {suffix!r}; use .npy, .npz, .pt, .pth or .csv."
        )
    if len(labels) != n:
        raise DataError(
            f"Label file {file} has {len(labels)} labels but {bundle.name} has {n} training "
            "samples: they must match one to one."
        )
    bad = (labels < 0) | (labels >= bundle.num_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"Label file {file}: label {int(labels[first])} at index {first} is outside "
            f"[0, {bundle.num_classes}) for {bundle.name}."
        )
    return LabelFile(labels, str(file), key, _sha256(file))


def apply_label_file(
    bundle: DatasetBundle, path: str | os.PathLike[str], *, key: str | None = None
) -> DatasetBundle:
    """A copy of ``bundle`` whose training labels are read from ``path`` (`read_label_file`);
    test labels, inputs and everything else stay as they were."""
    labels = read_label_file(bundle, path, key=key).labels
    return dataclasses.replace(bundle, train=dataclasses.replace(bundle.train, labels=labels))
