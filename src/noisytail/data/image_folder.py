"""Images in class folders, decoded lazily; also the lazy store and the seeded stratified split.

Layouts (``root`` is the data set folder):

- ``root/train/<class>/*`` and ``root/test/<class>/*`` (``root/val`` is used when there is no
  ``root/test``; with neither, ``train`` is split by ``test_fraction``);
- ``root/<class>/*``, split into train and test by a seeded stratified ``test_fraction``.

Class names are the sorted folder names under the training folder; images are searched
recursively inside each class folder. Hidden files and folders (names starting with ``.``) and
noisytail's own output (run, detection and bench folders, or a folder of them such as ``runs/``:
`noisytail.data.locations.is_output_folder`) are never classes or images; a skipped folder where
a class could be is named in one log line.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from noisytail.data.locations import is_output_folder
from noisytail.data.splits import stratified_split
from noisytail.data.types import DataError, DatasetBundle, DataSplit
from noisytail.registry import DATASETS

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

#: ImageNet per-channel statistics in [0, 1] units, the default for photos of unknown origin.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: For one channel: the average of the three ImageNet values.
IMAGENET_GRAY_MEAN = (0.449,)
IMAGENET_GRAY_STD = (0.226,)


def imagenet_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet ``(mean, std)`` for 3 channels, or their averages for 1 channel."""
    if channels == 1:
        return IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD
    return IMAGENET_MEAN, IMAGENET_STD


def split_train_test(
    labels: np.ndarray, test_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified ``(train_idx, test_idx)``, both sorted, for sources without a test set.

    Class ``c`` sends ``round(test_fraction * n_c)`` samples to test (at least one when
    ``n_c >= 2``, never all of them); see `noisytail.data.splits.stratified_split`.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}.")
    test_idx, train_idx = stratified_split(
        np.asarray(labels, dtype=np.int64), fraction=test_fraction, rng=np.random.default_rng(seed)
    )
    return train_idx, test_idx


class LazyImageStore:
    """Image files decoded on demand into uint8 ``[B, C, H, W]`` with ``H = W = image_size``.

    ``get(idx)`` opens each file with PIL, converts it to RGB (``channels=3``) or L
    (``channels=1``), resizes it to a square with bilinear filtering and keeps the result in an
    LRU cache of ``cache_items`` decoded images (0 disables caching), so later epochs do not decode
    again. ``decode_count`` counts actual decodes. A missing or unreadable file raises `DataError`
    naming it.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        image_size: int = 224,
        channels: int = 3,
        cache_items: int = 4096,
    ) -> None:
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
        if image_size < 1:
            raise DataError(f"image_size must be a positive number of pixels, got {image_size}.")
        if cache_items < 0:
            raise DataError(f"cache_items must be >= 0, got {cache_items}.")
        self.paths = [os.fspath(p) for p in paths]
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.cache_items = int(cache_items)
        self.shape: tuple[int, ...] = (self.channels, self.image_size, self.image_size)
        self.decode_count = 0
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, idx: np.ndarray) -> torch.Tensor:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        out = torch.empty((len(idx), *self.shape), dtype=torch.uint8)
        for j, i in enumerate(idx.tolist()):
            out[j] = self._item(i)
        return out

    def _item(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self.paths):
            raise IndexError(f"index {i} out of range for {len(self.paths)} images")
        cached = self._cache.get(i)
        if cached is not None:
            self._cache.move_to_end(i)
            return cached
        image = self.decode(self.paths[i])
        if self.cache_items:
            self._cache[i] = image
            if len(self._cache) > self.cache_items:
                self._cache.popitem(last=False)
        return image

    def decode(self, path: str) -> torch.Tensor:
        """Read one file into uint8 ``[C, H, W]`` (no caching)."""
        try:
            with Image.open(path) as im:
                im = im.convert("RGB" if self.channels == 3 else "L")
                im = im.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
                array = np.array(im, dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"Cannot read image {path}: {e}") from e
        self.decode_count += 1
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, skipping hidden files and folders and
    noisytail's output folders."""
    found = []
    for here, dirs, files in os.walk(folder):
        base = Path(here)
        dirs[:] = [d for d in dirs if not d.startswith(".") and not is_output_folder(base / d)]
        for name in files:
            p = base / name
            if not name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                found.append(p)
    return sorted(found)


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the sub-folders of ``folder`` that can be classes: not hidden, not
    noisytail's output. The folders skipped are named in one log line."""
    names, skipped = [], []
    for d in sorted(folder.iterdir()):
        if not d.is_dir():
            continue
        if d.name.startswith("."):
            skipped.append(f"{d.name} (hidden)")
        elif is_output_folder(d):
            skipped.append(f"{d.name} (noisytail output)")
        else:
            names.append(d.name)
    if skipped:
        log.warning(f"image_folder {folder}: not classes, skipped: {', '.join(skipped)}.")
    return names


def _scan(
    folder: Path, class_names: list[str], *, allow_empty: bool, found: list[str] | None = None
) -> tuple[list[str], list[int]]:
    """Paths and labels of every image in ``folder/<class>/``, for classes in ``class_names``
    (``found``: the class folders of ``folder``, if already listed)."""
    index = {name: i for i, name in enumerate(class_names)}
    paths: list[str] = []
    labels: list[int] = []
    for name in class_folders(folder) if found is None else found:
        if name not in index:
            raise DataError(
                f"Class folder {folder / name} is not among the training classes "
                f"({', '.join(class_names)})."
            )
        images = list_images(folder / name)
        if not images and not allow_empty:
            exts = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise DataError(f"Class folder {folder / name} has no images (looked for {exts}).")
        paths += [str(p) for p in images]
        labels += [index[name]] * len(images)
    if not paths:
        raise DataError(f"No images found under {folder}: expected {folder}/<class>/<image>.")
    return paths, labels


@DATASETS.register("image_folder")
def load_image_folder(
    root: str | None = None,
    *,
    image_size: int = 224,
    channels: int = 3,
    test_fraction: float = 0.2,
    seed: int = 0,
    cache_items: int = 4096,
) -> DatasetBundle:
    """Images in class folders as `LazyImageStore` splits of uint8 ``[C, image_size, image_size]``.

    ``test_fraction`` and ``seed`` apply only when there is no ``test``/``val`` folder. Mean/std
    default to ImageNet's. Each split's ``paths`` lists its files.
    """
    if root is None:
        raise DataError(
            "image_folder needs data.root: a folder laid out as <root>/<class>/<image> or "
            "<root>/train/<class>/<image> plus <root>/test/<class>/<image>."
        )
    base = Path(os.fspath(root)).expanduser()
    if not base.is_dir():
        raise DataError(f"image_folder root {base} is not a folder.")
    train_dir = base / "train" if (base / "train").is_dir() else base
    test_dir = next((base / d for d in ("test", "val") if (base / d).is_dir()), None)
    if train_dir == base:
        test_dir = None
    class_names = class_folders(train_dir)
    if not class_names:
        raise DataError(
            f"No class folders in {train_dir}: expected {train_dir}/<class>/<image> files."
        )
    paths, labels = _scan(train_dir, class_names, allow_empty=False, found=class_names)
    if test_dir is not None:
        test_paths, test_labels = _scan(test_dir, class_names, allow_empty=True)
    else:
        train_idx, test_idx = split_train_test(np.asarray(labels), test_fraction, seed)
        test_paths = [paths[i] for i in test_idx]
        test_labels = [labels[i] for i in test_idx]
        paths = [paths[i] for i in train_idx]
        labels = [labels[i] for i in train_idx]

    def split(p: list[str], y: list[int]) -> DataSplit:
        return DataSplit(LazyImageStore(p, image_size, channels, cache_items), np.asarray(y), p)

    mean, std = imagenet_stats(channels)
    return DatasetBundle(
        name="image_folder",
        train=split(paths, labels),
        test=split(test_paths, test_labels),
        class_names=class_names,
        mean=mean,
        std=std,
        root=str(base),
        data_folders=(str(base),),
    )
