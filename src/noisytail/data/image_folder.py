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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from noisytail.data.locations import IMAGE_EXTENSIONS, is_output_folder
from noisytail.data.source_info import data_source
from noisytail.data.splits import stratified_split
from noisytail.data.types import DataError, DatasetBundle, DataSplit
from noisytail.errors import short_error

log = logging.getLogger(__name__)


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


#: Grey modes wider than 8 bits: decoded with each image's range stretched to 0..255.
WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
#: PIL modes whose pixels are grey levels (``P`` counts when its palette is grey).
GRAY_MODES = frozenset({"1", "L", "LA"}) | WIDE_GRAY_MODES
#: The largest ``image_size`` inferred from the files, so that the default small CNN trains in
#: minutes on a CPU; more detail (e.g. 224 for a ResNet on a GPU) is set by hand.
MAX_INFERRED_SIZE = 64
#: How many files' headers `infer_image_format` reads at most (spread evenly over the list).
INSPECT_LIMIT = 2000
#: Default memory cap (MiB) of one store's in-memory cache of decoded images.
CACHE_MB = 1024


def unreadable(path: str, err: BaseException) -> DataError:
    """The one-line error for an image file that cannot be read: noisytail stops there."""
    return DataError(
        f"Cannot read image {path}: {short_error(err)}. Remove or replace the file "
        "(noisytail stops rather than skipping it, so that every input row is accounted for)."
    )


@dataclass(frozen=True)
class ImageFormat:
    """``image_size`` and ``channels`` inferred from image files, each with a one-line reason."""

    image_size: int
    channels: int
    size_reason: str
    channels_reason: str


def is_gray(im: Image.Image) -> bool:
    if im.mode in GRAY_MODES:
        return True
    if im.mode == "P":
        pal = im.getpalette() or []
        return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))
    return False


def infer_image_format(
    paths: Sequence[str | os.PathLike[str]],
    *,
    max_size: int = MAX_INFERRED_SIZE,
    limit: int = INSPECT_LIMIT,
) -> ImageFormat:
    """Image size and channels that fit the files, from their headers (no pixels decoded).

    ``image_size`` = the median shorter side of the images, capped at ``max_size`` (images are
    resized to that shorter side, keeping the aspect ratio, then centre-cropped to a square);
    ``channels`` = 1 when every image is grayscale, else 3. At most ``limit`` files are read,
    evenly spread over ``paths``. A file whose header cannot be read raises `DataError` naming it.
    """
    if not paths:
        raise DataError("No image files to infer the image size from.")
    n = len(paths)
    picks = np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(np.int64))
    sides, colour = [], []
    for i in picks.tolist():
        path = os.fspath(paths[i])
        try:
            with Image.open(path) as im:
                sides.append(min(im.size))
                if not is_gray(im):
                    colour.append(path)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise unreadable(path, e) from e
    median = int(np.median(sides))
    size = max(1, min(max_size, median))
    seen = f"{len(picks)} of the {n} images" if len(picks) < n else f"the {n} images"
    why = f"the median shorter side of {seen} is {median} px"
    if median > max_size:
        why += f", capped at {max_size} px"
    if colour:
        some = f"{len(colour)} of {seen} are" if len(colour) < len(picks) else f"{seen} are all"
        channels, c_why = 3, f"{some} in colour (e.g. {colour[0]})"
    else:
        channels, c_why = 1, f"all of {seen} are grayscale"
    return ImageFormat(size, channels, why, c_why)


_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (the process that made it, the pool)


def _decode_pool() -> ThreadPoolExecutor:
    """Threads that decode image files in parallel (PIL releases the GIL while decoding); a
    forked child makes its own (the parent's threads do not exist there)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        workers = max(1, min(8, os.cpu_count() or 1))
        _POOL = (os.getpid(), ThreadPoolExecutor(workers, thread_name_prefix="noisytail-decode"))
    return _POOL[1]


class LazyImageStore:
    """Image files decoded on demand into uint8 ``[B, C, H, W]`` with ``H = W = image_size``.

    Each file is opened with PIL (JPEGs in draft mode, decoded at a reduced scale when much
    larger than needed), converted to RGB (``channels=3``) or L (``channels=1``), resized with
    bilinear filtering so that its shorter side is ``image_size`` (aspect ratio kept) and
    centre-cropped to a square. The files of one `get` are decoded in parallel threads.

    Decoded images are cached: when the whole store fits in ``cache_mb`` MiB
    (``N * C * H * W`` bytes) every image is kept, in one uint8 tensor, after its first decode,
    so later epochs only index memory; otherwise an LRU cache keeps ``cache_items`` images
    (0 disables it). ``decode_count`` counts actual decodes. A missing or unreadable file raises
    `DataError` naming it.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        image_size: int = 224,
        channels: int = 3,
        cache_items: int = 4096,
        cache_mb: float = CACHE_MB,
    ) -> None:
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
        if image_size < 1:
            raise DataError(f"image_size must be a positive number of pixels, got {image_size}.")
        if cache_items < 0:
            raise DataError(f"cache_items must be >= 0, got {cache_items}.")
        if cache_mb < 0:
            raise DataError(f"cache_mb must be >= 0 (MiB of decoded images), got {cache_mb}.")
        self.paths = [os.fspath(p) for p in paths]
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.cache_items = int(cache_items)
        self.shape: tuple[int, ...] = (self.channels, self.image_size, self.image_size)
        self.decode_count = 0
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        nbytes = len(self.paths) * self.channels * self.image_size**2
        #: whether every decoded image is kept (the store fits in ``cache_mb``)
        self.resident = nbytes <= cache_mb * 2**20 and len(self.paths) > 0
        # [N, C, H, W] uint8, allocated on first use; numpy, whose single-threaded gather beats
        # torch's thread pool on a busy CPU (BENCHMARKS.md, decoding)
        self._all: np.ndarray | None = None
        self._done: np.ndarray | None = None  # [N] bool: which rows of _all are decoded

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, idx: np.ndarray) -> torch.Tensor:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self.paths)):
            bad = int(idx[(idx < 0) | (idx >= len(self.paths))][0])
            raise IndexError(f"index {bad} out of range for {len(self.paths)} images")
        if self.resident:
            if self._all is None:
                self._all = np.empty((len(self.paths), *self.shape), dtype=np.uint8)
                self._done = np.zeros(len(self.paths), dtype=bool)
            missing = np.unique(idx[~self._done[idx]])
            for i, image in zip(missing.tolist(), self._decode_many(missing.tolist())):
                self._all[i] = image.numpy()
            self._done[missing] = True
            return torch.from_numpy(self._all[idx])
        wanted = idx.tolist()
        unique = list(dict.fromkeys(wanted))
        # the batch's hits are taken before any fresh image enters the cache: inserting one may
        # evict an image that this same batch asks for later
        images: dict[int, torch.Tensor] = {}
        for i in unique:
            if i in self._cache:
                images[i] = self._cache[i]
                self._cache.move_to_end(i)
        missing = [i for i in unique if i not in images]
        for i, image in zip(missing, self._decode_many(missing)):
            images[i] = image
            if self.cache_items:
                self._cache[i] = image
                if len(self._cache) > self.cache_items:
                    self._cache.popitem(last=False)
        out = torch.empty((len(idx), *self.shape), dtype=torch.uint8)
        for j, i in enumerate(wanted):
            out[j] = images[i]
        return out

    def _decode_many(self, idx: list[int]) -> list[torch.Tensor]:
        paths = [self.paths[i] for i in idx]
        if len(paths) < 4:
            images = [self.decode(p) for p in paths]
        else:
            images = list(_decode_pool().map(self._decode_quiet, paths))
            self.decode_count += len(paths)
        return images

    def _decode_quiet(self, path: str) -> torch.Tensor:
        return decode_image(path, self.image_size, self.channels)

    def decode(self, path: str) -> torch.Tensor:
        """Read one file into uint8 ``[C, H, W]`` (no caching)."""
        image = decode_image(path, self.image_size, self.channels)
        self.decode_count += 1
        return image


def decode_image(path: str, image_size: int, channels: int) -> torch.Tensor:
    """One image file as uint8 ``[channels, image_size, image_size]``: shorter side resized to
    ``image_size`` (bilinear, aspect ratio kept), then the centre square. `DataError` names a
    file that cannot be read."""
    mode = "RGB" if channels == 3 else "L"
    try:
        with Image.open(path) as im:
            im.draft(mode, (image_size, image_size))  # JPEG: decode at a reduced scale, >= size
            im = stretch_to_8bit(im) if im.mode in WIDE_GRAY_MODES else im
            im = im.convert(mode)
            w, h = im.size
            if min(w, h) != image_size:
                scale = image_size / min(w, h)
                w, h = max(image_size, round(w * scale)), max(image_size, round(h * scale))
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            if (w, h) != (image_size, image_size):
                left, top = (w - image_size) // 2, (h - image_size) // 2
                im = im.crop((left, top, left + image_size, top + image_size))
            array = np.array(im, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise unreadable(path, e) from e
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def stretch_to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float grey image as 8-bit ``L``, its own range stretched to 0..255
    (a constant image is black; NaN counts as the minimum). Pillow's own conversion clips at
    255 instead of rescaling, which turns a 16-bit scan almost white and a float image in [0, 1]
    almost black."""
    values = np.asarray(im, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return Image.fromarray(np.zeros(values.shape, dtype=np.uint8), "L")
    low, high = values[finite].min(), values[finite].max()
    values = np.where(finite, values, low)
    scale = 255.0 / (high - low) if high > low else 0.0
    return Image.fromarray(np.round((values - low) * scale).astype(np.uint8), "L")


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


def image_options(
    paths: Sequence[str], image_size: int | None, channels: int | None, where: str
) -> tuple[int, int, dict[str, tuple[Any, str]]]:
    """``image_size`` and ``channels`` as given, or inferred from ``paths``
    (`infer_image_format`) where None; the third value maps each inferred option to
    ``(value, why)``, for `DatasetBundle.inferred`."""
    notes: dict[str, tuple[Any, str]] = {}
    if image_size is None or channels is None:
        fmt = infer_image_format(paths)
        if image_size is None:
            image_size = fmt.image_size
            notes["image_size"] = (image_size, f"{where}: {fmt.size_reason}")
        if channels is None:
            channels = fmt.channels
            notes["channels"] = (channels, f"{where}: {fmt.channels_reason}")
    return int(image_size), int(channels), notes


def check_classes(class_names: Sequence[str], where: str, fix: str) -> None:
    """A classifier needs two classes: `DataError` naming the one class there is."""
    if len(class_names) == 1:
        raise DataError(
            f"{where} has one class ({class_names[0]!r}): a classifier needs at least two; {fix}."
        )


def split_or_not(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`split_train_test`, or everything in train when ``test_fraction`` is 0 (e.g. to check
    every sample's label)."""
    if test_fraction == 0:
        return np.arange(len(labels)), np.zeros(0, dtype=np.int64)
    return split_train_test(labels, test_fraction, seed)


@data_source(
    "image_folder",
    display_name="an image folder",
    how_to_get="Needs data.root=<folder> with <class>/<image> or train/ and test/ class folders.",
)
def load_image_folder(
    root: str | None = None,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    cache_items: int = 4096,
    cache_mb: float = CACHE_MB,
    meta_csv: str | None = None,
) -> DatasetBundle:
    """Images in class folders as `LazyImageStore` splits of uint8 ``[C, image_size, image_size]``.

    ``image_size`` / ``channels`` left empty are inferred from the training images
    (`infer_image_format`: the median shorter side, capped; grayscale when every image is), and
    the bundle's ``inferred`` says so. ``test_fraction`` and ``seed`` apply only when there is no
    ``test``/``val`` folder (0: no test split). Mean/std default to ImageNet's. Each split's
    ``paths`` lists its files. A single class folder is a `DataError`. ``meta_csv``
    (``meta.source: file``): a ``path,label`` CSV of images whose labels a person checked (paths
    relative to ``root``, labels = class folder names); they become the bundle's ``meta`` split
    and are removed from the training images before the split.
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
    check_classes(class_names, f"image_folder {train_dir}", "add a sub-folder per class")
    paths, labels = _scan(train_dir, class_names, allow_empty=False, found=class_names)
    checked = None
    if meta_csv is not None:
        from noisytail.data.csv_table import checked_mask, kept_in_test, note_checked, read_checked

        checked, y_meta = read_checked(meta_csv, base, class_names)
        drop = checked_mask(checked, paths, None, f"image_folder {train_dir}")
        paths = [p for p, d in zip(paths, drop) if not d]
        labels = [y for y, d in zip(labels, drop) if not d]
        note_checked(checked, int(drop.sum()))
    if test_dir is not None:
        test_paths, test_labels = _scan(test_dir, class_names, allow_empty=True)
        if checked is not None:
            keep = kept_in_test(checked, test_paths, None, f"image_folder {test_dir}")
            test_paths = [test_paths[i] for i in keep]
            test_labels = [test_labels[i] for i in keep]
    else:
        train_idx, test_idx = split_or_not(np.asarray(labels), test_fraction, seed)
        test_paths = [paths[i] for i in test_idx]
        test_labels = [labels[i] for i in test_idx]
        paths = [paths[i] for i in train_idx]
        labels = [labels[i] for i in train_idx]
    image_size, channels, inferred = image_options(
        paths, image_size, channels, f"image_folder {train_dir}"
    )

    def split(p: list[str], y: list[int]) -> DataSplit:
        store = LazyImageStore(p, image_size, channels, cache_items, cache_mb)
        return DataSplit(store, np.asarray(y), p)

    mean, std = imagenet_stats(channels)
    return DatasetBundle(
        name="image_folder",
        train=split(paths, labels),
        test=split(test_paths, test_labels),
        class_names=class_names,
        mean=mean,
        std=std,
        root=str(base),
        meta=split(checked.files or [], y_meta.tolist()) if checked is not None else None,
        data_folders=(str(base),),
        data_files=(str(checked.path),) if checked is not None else (),
        inferred=inferred,
    )
