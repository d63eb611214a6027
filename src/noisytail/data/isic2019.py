"""ISIC 2019 skin-lesion classification (the challenge's training set, 25,331 dermoscopy images).

Layout under ``root`` (names as the challenge ships them, both overridable):

- ``ISIC_2019_Training_GroundTruth.csv``: a header ``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK``
  then one row per image, its id and a one-hot row (``1.0`` in exactly one class column);
- ``ISIC_2019_Training_Input/<image>.jpg``.

Classes are the one-hot columns in header order; a class column that is all zero in every row is
dropped when it is the last one (``UNK`` in the 2019 training set), so the data set has the 8
classes L2B uses (docs/methods.md, L2B).

Splits. ``test_list`` (and optionally ``train_list``) name the images of each split, one per line:
an image id (``ISIC_0000000``), a file name or a path, optionally followed by more fields separated
by white space or a comma (the first field is used). Without ``train_list`` the training split is
every image not in the test list. Without ``test_list`` a seeded stratified split holds out
``test_fraction`` of each class; the default 4,291 / 25,331 gives L2B's test-set size (its
``ISIC/test.lst``, docs/methods.md, L2B; the lists themselves are not in this repository). L2B's
640-image clean meta set (``ISIC/val.lst``) is then drawn by noisytail's corruption step
(``meta.total: 640``), leaving 20,400 training images as in L2B; with the list itself, ``meta_list:
ISIC/val.lst`` offers those images as the clean meta split (``meta.source: provided``) and removes
them from the training split. ISIC is naturally imbalanced (NV is about half).

Images are decoded lazily (`LazyImageStore`, default 224 px, RGB); mean/std are ImageNet's (L2B
fine-tunes an ImageNet-pretrained ResNet-50). Errors are `DataError` naming the file and line.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from noisytail.data.csv_table import read_csv_rows
from noisytail.data.image_folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LazyImageStore,
    split_train_test,
)
from noisytail.data.list_file import check_exist, read_lines, resolve_file
from noisytail.data.source_info import data_source
from noisytail.data.types import DataError, DatasetBundle, DataSplit

#: L2B's ISIC 2019 split sizes (docs/methods.md, L2B): train 20,400 + meta 640 + test 4,291
#: = 25,331.
L2B_TEST_FRACTION = 4291 / 25331
HOW_TO_GET = (
    "Download the ISIC 2019 training images and ground-truth CSV from the ISIC challenge site "
    "(challenge.isic-archive.com, 2019) and pass data.root=<folder holding "
    "ISIC_2019_Training_GroundTruth.csv and ISIC_2019_Training_Input/>."
)
_SEP = re.compile(r"[\s,]+")


def read_ground_truth(path: Path) -> tuple[list[str], list[str], np.ndarray, list[int]]:
    """``(image ids, class names, labels, line numbers)`` of the one-hot ground-truth CSV."""
    header, rows = read_csv_rows(path)
    if header[0].lower() != "image" or len(header) < 3:
        raise DataError(
            f"ISIC ground truth {path} line 1: expected 'image' then one column per class "
            f"(MEL,NV,...), got {','.join(header)}."
        )
    classes = header[1:]
    onehot = np.zeros((len(rows), len(classes)), dtype=np.float64)
    ids: list[str] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    for r, (line, row) in enumerate(rows):
        image = row[0].strip()
        if not image:
            raise DataError(f"ISIC ground truth {path} line {line}: the image id is empty.")
        if image in seen:
            raise DataError(
                f"ISIC ground truth {path} line {line}: image {image} already on line "
                f"{seen[image]}."
            )
        seen[image] = line
        for c, cell in enumerate(row[1:]):
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if value not in (0.0, 1.0):
                raise DataError(
                    f"ISIC ground truth {path} line {line}: column {classes[c]!r} is {cell!r}; "
                    "expected 0 or 1 (one-hot)."
                )
            onehot[r, c] = value
        if onehot[r].sum() != 1.0:
            raise DataError(
                f"ISIC ground truth {path} line {line}: image {image} has "
                f"{int(onehot[r].sum())} classes marked; expected exactly one."
            )
        ids.append(image)
        lines.append(line)
    if onehot[:, -1].sum() == 0:  # UNK: no training image has it
        classes, onehot = classes[:-1], onehot[:, :-1]
    return ids, classes, onehot.argmax(axis=1).astype(np.int64), lines


def read_id_list(path: Path, known: dict[str, int]) -> list[int]:
    """Row numbers (into the ground truth) of the images listed in ``path``, in file order."""
    out: list[int] = []
    seen: dict[str, int] = {}
    for line, text in read_lines(path):
        first = _SEP.split(text, maxsplit=1)[0]
        image = Path(first.replace("\\", "/")).name
        stem = image.rsplit(".", 1)[0] if "." in image else image
        if stem not in known:
            raise DataError(
                f"Image list {path} line {line}: {first!r} is not in the ground-truth CSV."
            )
        if stem in seen:
            raise DataError(f"Image list {path} line {line}: {stem} already on line {seen[stem]}.")
        seen[stem] = line
        out.append(known[stem])
    if not out:
        raise DataError(f"Image list {path} is empty: expected one image id per line.")
    return out


@data_source("isic2019", display_name="ISIC 2019", how_to_get=HOW_TO_GET)
def load_isic2019(
    root: str | None = None,
    *,
    ground_truth: str = "ISIC_2019_Training_GroundTruth.csv",
    image_dir: str = "ISIC_2019_Training_Input",
    image_ext: str = ".jpg",
    test_list: str | None = None,
    train_list: str | None = None,
    meta_list: str | None = None,
    test_fraction: float = L2B_TEST_FRACTION,
    seed: int = 0,
    image_size: int = 224,
    cache_items: int = 4096,
    check_files: bool = True,
) -> DatasetBundle:
    """ISIC 2019 as lazy RGB image splits; see the module docstring for the split rules."""
    if root is None:
        raise DataError(f"isic2019 needs data.root. {HOW_TO_GET}")
    base = Path(os.fspath(root)).expanduser()
    if not base.is_dir():
        raise DataError(f"isic2019 root {base} is not a folder. {HOW_TO_GET}")
    gt_path = resolve_file(ground_truth, base, "ISIC ground-truth CSV")
    images = base / image_dir
    if not images.is_dir():
        raise DataError(f"ISIC image folder {images} does not exist. {HOW_TO_GET}")
    ids, class_names, labels, lines = read_ground_truth(gt_path)
    known = {image: r for r, image in enumerate(ids)}

    if test_list is not None:
        test_idx = np.asarray(read_id_list(resolve_file(test_list, base, "Test list"), known))
        if train_list is not None:
            train_path = resolve_file(train_list, base, "Training list")
            train_idx = np.asarray(read_id_list(train_path, known))
            both = np.intersect1d(train_idx, test_idx)
            if len(both):
                raise DataError(
                    f"Training list {train_path} and test list {test_list} share "
                    f"{len(both)} images (e.g. {ids[int(both[0])]})."
                )
        else:
            train_idx = np.setdiff1d(np.arange(len(ids)), test_idx)
    elif train_list is not None:
        raise DataError("isic2019: a train_list needs a test_list too.")
    else:
        train_idx, test_idx = split_train_test(labels, test_fraction, seed)

    meta_idx = None
    if meta_list is not None:  # e.g. L2B's ISIC/val.lst: a clean meta split, never trained on
        meta_path = resolve_file(meta_list, base, "Meta list")
        meta_idx = np.asarray(read_id_list(meta_path, known))
        if np.intersect1d(meta_idx, test_idx).size:
            raise DataError(f"Meta list {meta_path} shares images with the test split.")
        train_idx = np.setdiff1d(train_idx, meta_idx)

    files = [str(images / f"{image}{image_ext}") for image in ids]

    def split(idx: np.ndarray) -> DataSplit:
        p = [files[i] for i in idx]
        if check_files:
            check_exist(p, gt_path, [lines[i] for i in idx])
        return DataSplit(LazyImageStore(p, image_size, 3, cache_items), labels[idx], p)

    return DatasetBundle(
        name="isic2019",
        train=split(train_idx),
        test=split(test_idx),
        meta=split(meta_idx) if meta_idx is not None else None,
        class_names=class_names,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        root=str(base),
    )
