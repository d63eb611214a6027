"""Clothing1M (Xiao et al. 2015): 1M clothing photos with real (web) label noise, 14 classes.

The standard layout under ``root``:

- ``images/...``: the photos; every path in the files below is relative to ``root``;
- ``noisy_label_kv.txt`` and ``clean_label_kv.txt``: ``images/.../x.jpg label`` per line;
- ``noisy_train_key_list.txt``, ``clean_train_key_list.txt``, ``clean_val_key_list.txt``,
  ``clean_test_key_list.txt``: one image path per line;
- optionally ``category_names_eng.txt`` (one class name per line); without it the 14 standard
  English names are used.

Splits (``train_split`` / ``test_split``): ``noisy_train`` (the noisy key list with its *noisy*
labels), ``clean_train``, ``clean_val``, ``clean_test`` (clean key lists with clean labels).
Default: train on ``noisy_train``, test on ``clean_test`` (docs/methods.md, L2B and GDW).

**Labels.** The noise is real, so no synthetic noise should be added (``noise.kind: none``).
The noisy labels are the training split's labels, i.e. what every method observes; the bundle
says ``labels_are_noisy``, so runs do not report a noise rate or detection scores against them.

**Meta set.** L2B (docs/methods.md, L2B) uses the whole clean validation set (14,313 images) as its
meta set, and GDW/MW-Net use clean validation data too: the bundle offers ``meta_split`` (default
``clean_val``) as its clean meta split, which ``meta.source: provided`` makes the meta set (never
trained on; ``meta.per_class``/``total`` take a share of it).

Images are decoded lazily (`LazyImageStore`, default 224 px, RGB); mean/std are ImageNet's (the
papers fine-tune ImageNet-pretrained ResNets). Errors are `DataError` naming the file and line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from noisytail.data.image_folder import IMAGENET_MEAN, IMAGENET_STD, LazyImageStore
from noisytail.data.list_file import check_exist, read_lines, read_path_label_file
from noisytail.data.source_info import data_source
from noisytail.data.types import DataError, DatasetBundle, DataSplit

#: The 14 classes in label order (Clothing1M's ``category_names_eng.txt``).
CLOTHING1M_CLASSES = [
    "T-Shirt",
    "Shirt",
    "Knitwear",
    "Chiffon",
    "Sweater",
    "Hoodie",
    "Windbreaker",
    "Jacket",
    "Downcoat",
    "Suit",
    "Shawl",
    "Dress",
    "Vest",
    "Underwear",
]

SPLITS = ("noisy_train", "clean_train", "clean_val", "clean_test")
KEY_LISTS = {s: f"{s}_key_list.txt" for s in SPLITS}
LABEL_FILES = {"noisy": "noisy_label_kv.txt", "clean": "clean_label_kv.txt"}
HOW_TO_GET = (
    "Clothing1M is distributed by its authors on request (Xiao et al. 2015, 'Learning from "
    "massive noisy labeled data'); pass data.root=<folder with images/ and the *_kv.txt and "
    "*_key_list.txt files>."
)


def _need(base: Path, name: str) -> Path:
    path = base / name
    if not path.is_file():
        raise DataError(f"Clothing1M file {path} is missing. {HOW_TO_GET}")
    return path


def read_label_kv(path: Path, num_classes: int) -> dict[str, int]:
    """``{image path: label}`` of a ``*_label_kv.txt`` file; repeated keys must agree."""
    paths, labels, lines = read_path_label_file(path)
    out: dict[str, int] = {}
    for key, label, line in zip(paths, labels.tolist(), lines):
        if label >= num_classes:
            raise DataError(
                f"{path} line {line}: label {label} is outside 0..{num_classes - 1} "
                f"({num_classes} classes)."
            )
        if out.setdefault(key, label) != label:
            raise DataError(
                f"{path} line {line}: {key} is labelled {label} here but {out[key]} on an "
                "earlier line."
            )
    return out


def read_key_list(path: Path) -> list[tuple[int, str]]:
    """``[(line, image path)]`` of a ``*_key_list.txt`` file (one path per line)."""
    rows = read_lines(path)
    if not rows:
        raise DataError(f"Key list {path} is empty: expected one image path per line.")
    for line, text in rows:
        if len(text.split()) != 1:
            raise DataError(f"Key list {path} line {line}: expected one image path, got {text!r}.")
    return rows


def _class_names(base: Path) -> list[str]:
    names_file = base / "category_names_eng.txt"
    if not names_file.is_file():
        return list(CLOTHING1M_CLASSES)
    names = [text for _, text in read_lines(names_file)]
    if len(names) != len(CLOTHING1M_CLASSES):
        raise DataError(
            f"{names_file} lists {len(names)} class names; Clothing1M has "
            f"{len(CLOTHING1M_CLASSES)}."
        )
    return names


@data_source("clothing1m", display_name="Clothing1M", how_to_get=HOW_TO_GET)
def load_clothing1m(
    root: str | None = None,
    *,
    train_split: str = "noisy_train",
    test_split: str = "clean_test",
    meta_split: str | None = "clean_val",
    image_size: int = 224,
    cache_items: int = 4096,
    check_files: bool = True,
) -> DatasetBundle:
    """Clothing1M's ``train_split`` (noisy labels for ``noisy_train``, clean otherwise) and
    ``test_split`` (a clean split) as lazy RGB image splits of ``image_size`` pixels, and the
    clean ``meta_split`` (default ``clean_val``, None for none) that ``meta.source: provided``
    uses as the meta set."""
    if root is None:
        raise DataError(f"clothing1m needs data.root. {HOW_TO_GET}")
    for option, value in (("train_split", train_split), ("test_split", test_split)):
        if value not in SPLITS:
            raise DataError(
                f"clothing1m {option} must be one of {', '.join(SPLITS)}, got {value!r}."
            )
    if meta_split is not None and meta_split not in SPLITS:
        raise DataError(f"clothing1m meta_split must be one of {', '.join(SPLITS)} or null.")
    if meta_split == "noisy_train":
        raise DataError("clothing1m meta_split must be a clean split (e.g. clean_val).")
    if meta_split is not None and meta_split in (train_split, test_split):
        raise DataError(f"clothing1m meta_split {meta_split!r} is also the train or test split.")
    if test_split == "noisy_train":
        raise DataError("clothing1m test_split must be a clean split (clean_test or clean_val).")
    if train_split == test_split:
        raise DataError(f"clothing1m train_split and test_split are both {train_split!r}.")
    base = Path(os.fspath(root)).expanduser()
    if not base.is_dir():
        raise DataError(f"clothing1m root {base} is not a folder. {HOW_TO_GET}")
    class_names = _class_names(base)
    k = len(class_names)
    kv_cache: dict[str, tuple[Path, dict[str, int]]] = {}

    def labels_for(kind: str) -> tuple[Path, dict[str, int]]:
        if kind not in kv_cache:
            path = _need(base, LABEL_FILES[kind])
            kv_cache[kind] = (path, read_label_kv(path, k))
        return kv_cache[kind]

    def split(name: str) -> DataSplit:
        key_path = _need(base, KEY_LISTS[name])
        kv_path, kv = labels_for("noisy" if name == "noisy_train" else "clean")
        keys = read_key_list(key_path)
        labels = np.empty(len(keys), dtype=np.int64)
        for r, (line, key) in enumerate(keys):
            if key not in kv:
                raise DataError(
                    f"Key list {key_path} line {line}: {key} has no label in {kv_path}."
                )
            labels[r] = kv[key]
        files = [key if os.path.isabs(key) else str(base / key) for _, key in keys]
        if check_files:
            check_exist(files, key_path, [line for line, _ in keys])
        return DataSplit(LazyImageStore(files, image_size, 3, cache_items), labels, files)

    return DatasetBundle(
        name="clothing1m",
        train=split(train_split),
        test=split(test_split),
        meta=split(meta_split) if meta_split is not None else None,
        labels_are_noisy=train_split == "noisy_train",
        class_names=class_names,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        root=str(base),
    )
