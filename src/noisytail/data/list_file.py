"""Images listed in text files, one ``relative/path label`` per line (e.g. ImageNet-LT).

ImageNet-LT (Liu et al. 2019) ships ``ImageNet_LT_train.txt`` (115,846 images, Pareto profile),
``ImageNet_LT_val.txt`` and ``ImageNet_LT_test.txt`` in this form, with paths relative to the
ImageNet image root (``train/n01440764/n01440764_10026.JPEG 0``); MTTV uses it
(docs/methods.md, MTTV).

- ``root`` is the folder the paths start from; list names that are not absolute are also looked
  up there first, then in the working directory.
- A line is a path, white space, and an integer label ``>= 0``; the path may contain spaces
  (the label is the last field). Blank lines and lines starting with ``#`` are skipped.
- Class names are ``"0"``..``str(K-1)`` with ``K = num_classes``. Without ``num_classes``, each
  distinct label in the lists is one class, named by its value; labels that are not ``0..K-1``
  (gaps, e.g. a subset of ImageNet's classes) are renumbered in numeric order, saying so.
- The bundle has a train and a test split only: ``test_list`` is the test split; with
  ``evaluate_on="val"`` (or when only ``val_list`` is given) ``val_list`` is used instead. With
  neither, a seeded stratified ``test_fraction`` of the training list is held out. A
  ``val_list`` that is not used as the test split is only checked to exist: model selection uses
  noisytail's own validation split (``data.val_fraction``).

Errors are `DataError` naming the list file and line. Images are decoded lazily
(`LazyImageStore`); ``check_files`` checks that every listed file exists when loading.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from noisytail.data.image_folder import LazyImageStore, imagenet_stats, split_train_test
from noisytail.data.locations import image_parents
from noisytail.data.source_info import data_source
from noisytail.data.types import DataError, DatasetBundle, DataSplit, renumber_classes

_INT = re.compile(r"\d+")
log = logging.getLogger(__name__)


def resolve_file(name: str | os.PathLike[str], root: Path | None, what: str) -> Path:
    """``name`` as given if absolute, else inside ``root`` if it exists there, else as given."""
    path = Path(os.fspath(name)).expanduser()
    if not path.is_absolute() and root is not None and (root / path).is_file():
        path = root / path
    if not path.is_file():
        where = f" (looked in {root} and the working directory)" if root is not None else ""
        raise DataError(f"{what} {path} does not exist{where}.")
    return path


def read_lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank, non-comment lines of a text file, stripped, with their 1-based numbers."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = [(i, line.strip()) for i, line in enumerate(f, start=1)]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read {path}: {e}") from e
    return [(i, text) for i, text in lines if text and not text.startswith("#")]


def read_path_label_file(path: Path) -> tuple[list[str], np.ndarray, list[int]]:
    """``(paths, labels, line_numbers)`` of a ``path label`` list; raises `DataError` on a
    malformed line, naming the file and line."""
    rows = read_lines(path)
    if not rows:
        raise DataError(f"List file {path} has no entries: expected 'relative/path label' lines.")
    paths: list[str] = []
    labels = np.empty(len(rows), dtype=np.int64)
    lines: list[int] = []
    for r, (line, text) in enumerate(rows):
        parts = text.rsplit(None, 1)
        if len(parts) != 2 or not _INT.fullmatch(parts[1]):
            raise DataError(
                f"List file {path} line {line}: expected 'relative/path label' with an integer "
                f"label >= 0, got {text!r}."
            )
        paths.append(parts[0].strip())
        labels[r] = int(parts[1])
        lines.append(line)
    return paths, labels, lines


def check_exist(files: list[str], listed_in: Path, lines: list[int] | None = None) -> None:
    """Raise `DataError` naming the first listed file that does not exist (and its line)."""
    for r, file in enumerate(files):
        if not os.path.isfile(file):
            at = f" line {lines[r]}" if lines is not None else ""
            raise DataError(f"{listed_in}{at}: image {file} does not exist.")


def _absolute(paths: list[str], base: Path) -> list[str]:
    return [p if os.path.isabs(p) else str(base / p) for p in paths]


@data_source(
    "list_file",
    display_name="list-file images",
    how_to_get="Needs data.options.train_list=<file> ('relative/path label' lines, e.g. "
    "ImageNet_LT_train.txt; test_list / val_list likewise) and data.root=<image root>.",
)
def load_list_file(
    root: str | None = None,
    *,
    train_list: str | None = None,
    test_list: str | None = None,
    val_list: str | None = None,
    evaluate_on: str = "test",
    num_classes: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    image_size: int = 224,
    channels: int = 3,
    cache_items: int = 4096,
    check_files: bool = True,
) -> DatasetBundle:
    """Train (and test) splits from ``path label`` list files; image paths start at ``root``.

    ``evaluate_on`` ("test" or "val") picks which list becomes the bundle's test split when both
    are given. Mean/std are ImageNet's.
    """
    if train_list is None:
        raise DataError(
            "list_file needs data.options.train_list=<file> with 'relative/path label' lines "
            "(e.g. ImageNet_LT_train.txt) and data.root=<image root>."
        )
    if evaluate_on not in ("test", "val"):
        raise DataError(f"list_file evaluate_on must be 'test' or 'val', got {evaluate_on!r}.")
    base = Path(os.fspath(root)).expanduser() if root is not None else None
    if base is not None and not base.is_dir():
        raise DataError(f"list_file root {base} is not a folder.")
    train_path = resolve_file(train_list, base, "Training list")
    image_base = base if base is not None else train_path.parent
    paths, labels, lines = read_path_label_file(train_path)

    eval_name = None
    if test_list is not None and (evaluate_on == "test" or val_list is None):
        eval_name, what = test_list, "Test list"
    elif val_list is not None:
        eval_name, what = val_list, "Validation list"
    if val_list is not None and eval_name != val_list:
        resolve_file(val_list, base, "Validation list")  # not used, but a typo is an error
    if eval_name is not None:
        eval_path = resolve_file(eval_name, base, what)
        test_paths, test_labels, test_lines = read_path_label_file(eval_path)
    else:
        eval_path = None
        train_idx, test_idx = split_train_test(labels, test_fraction, seed)
        test_paths = [paths[i] for i in test_idx]
        test_labels = labels[test_idx]
        test_lines = [lines[i] for i in test_idx]
        paths, labels = [paths[i] for i in train_idx], labels[train_idx]
        lines = [lines[i] for i in train_idx]

    k = int(max(labels.max(), test_labels.max() if len(test_labels) else 0)) + 1
    if num_classes is not None:
        if num_classes < k:
            listed = train_path if labels.max() >= num_classes else eval_path
            raise DataError(
                f"List file {listed} has label {k - 1}, but num_classes={num_classes}: labels "
                f"must be 0..{num_classes - 1}."
            )
        class_names = [str(c) for c in range(num_classes)]
    else:
        (labels, test_labels), class_names, note = renumber_classes(
            [labels, test_labels], f"List file {train_path}"
        )
        if note is not None:
            log.warning(note)

    paths = _absolute(paths, image_base)
    test_paths = _absolute(test_paths, image_base)
    if check_files:
        check_exist(paths, train_path, lines)
        check_exist(test_paths, eval_path if eval_path is not None else train_path, test_lines)

    def split(p: list[str], y: np.ndarray) -> DataSplit:
        return DataSplit(LazyImageStore(p, image_size, channels, cache_items), y, p)

    mean, std = imagenet_stats(channels)
    return DatasetBundle(
        name="list_file",
        train=split(paths, labels),
        test=split(test_paths, test_labels),
        class_names=class_names,
        mean=mean,
        std=std,
        root=str(image_base),
        data_folders=image_parents(paths + test_paths),
        data_files=tuple(str(f) for f in (train_path, eval_path) if f is not None),
    )
