"""Tiny on-disk copies of the file-based data sets (list files, Clothing1M, ISIC 2019)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ISIC_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
ISIC_GT = "ISIC_2019_Training_GroundTruth.csv"


def _png(path: Path, colour: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), colour, dtype=np.uint8)).save(path)


def _write_lists(root: Path, counts=(5, 3, 1), test_per_class: int = 2) -> None:
    """``root/train/n<c>/<i>.png`` plus ``train.txt``, ``test.txt`` and ``val.txt``."""
    train, test, val = [], [], []
    for c, n in enumerate(counts):
        for i in range(n):
            _png(root / "train" / f"n{c}" / f"{i}.png", (40 * c, 10, 10))
            train.append(f"train/n{c}/{i}.png {c}")
        for i in range(test_per_class):
            _png(root / "val" / f"n{c}" / f"{i}.png", (40 * c, 10, 10))
            test.append(f"val/n{c}/{i}.png {c}")
        val.append(f"val/n{c}/0.png {c}")
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "test.txt").write_text("# a comment\n\n" + "\n".join(test) + "\n")
    (root / "val.txt").write_text("\n".join(val) + "\n")


def _write_clothing(root: Path) -> dict[str, list[tuple[str, int]]]:
    """Noisy train (12 images, labels 0..2), clean train/val/test (3 each, 14 classes allowed).

    Four noisy-train images also have a (different) clean label, as in the real data set.
    """
    rng = np.random.default_rng(0)
    splits: dict[str, list[tuple[str, int]]] = {
        "noisy_train": [(f"images/0/{i:02d}/n{i}.jpg", i % 3) for i in range(12)],
        "clean_train": [(f"images/1/00/ct{i}.jpg", 3 + i) for i in range(3)],
        "clean_val": [(f"images/2/00/cv{i}.jpg", 13 - i) for i in range(3)],
        "clean_test": [(f"images/3/00/cte{i}.jpg", i) for i in range(3)],
    }
    for items in splits.values():
        for key, _ in items:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / key)
    noisy = splits["noisy_train"]
    clean = splits["clean_train"] + splits["clean_val"] + splits["clean_test"]
    clean += [(key, (y + 1) % 3) for key, y in noisy[:4]]  # clean labels of some noisy images
    (root / "noisy_label_kv.txt").write_text("".join(f"{k} {y}\n" for k, y in noisy))
    (root / "clean_label_kv.txt").write_text("".join(f"{k} {y}\n" for k, y in clean))
    for name, items in splits.items():
        (root / f"{name}_key_list.txt").write_text("".join(f"{k}\n" for k, _ in items))
    return splits


def _write_isic(root: Path, counts=(6, 12, 4, 2, 3, 2, 2, 2), unk: int = 0) -> list[str]:
    """Images ``ISIC_<n>`` with ``counts[c]`` of class ``c`` (and ``unk`` of UNK)."""
    folder = root / "ISIC_2019_Training_Input"
    folder.mkdir(parents=True)
    rows = ["image," + ",".join(ISIC_CLASSES)]
    ids = []
    for c, n in enumerate([*counts, unk]):
        for _ in range(n):
            image = f"ISIC_{len(ids):07d}"
            onehot = ["1.0" if j == c else "0.0" for j in range(len(ISIC_CLASSES))]
            rows.append(image + "," + ",".join(onehot))
            Image.fromarray(np.full((8, 8, 3), 20 * c, dtype=np.uint8)).save(
                folder / f"{image}.jpg"
            )
            ids.append(image)
    (root / ISIC_GT).write_text("\n".join(rows) + "\n")
    return ids


@pytest.fixture
def write_lists():
    """``write_lists(root, counts=(5, 3, 1), test_per_class=2)``: images and three lists."""
    return _write_lists


@pytest.fixture
def write_clothing():
    """``write_clothing(root)``: a tiny Clothing1M layout; returns ``{split: [(key, label)]}``."""
    return _write_clothing


@pytest.fixture
def write_isic():
    """``write_isic(root, counts=..., unk=0)``: a tiny ISIC 2019 layout; returns the image ids."""
    return _write_isic
