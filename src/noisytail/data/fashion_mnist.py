"""Fashion-MNIST from its four IDX files, held in memory as uint8 ``[N, 1, 28, 28]``.

The files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
and ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``). IDX format: two zero bytes, a
type code (0x08 = uint8), the number of dimensions ``d``, then ``d`` big-endian uint32 sizes and
the row-major data.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from noisytail.data.source_info import data_source
from noisytail.data.types import DataError, DatasetBundle, DataSplit, TensorStore

CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

#: Confusable classes: T-shirt/top -> Shirt, Shirt -> T-shirt/top, Pullover -> Coat,
#: Coat -> Pullover, Sandal -> Sneaker. Trouser, Dress, Sneaker, Bag and Ankle boot keep their
#: labels.
ASYMMETRIC_MAP = {0: 6, 6: 0, 2: 4, 4: 2, 5: 7}

MEAN = (0.2860,)
STD = (0.3530,)

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: Where the Debian package ``dataset-fashion-mnist`` installs the files.
SYSTEM_DIR = Path("/usr/share/datasets")

HOW_TO_GET = (
    "Install it with 'apt-get install dataset-fashion-mnist', or with internet access add "
    "'--set data.options.download=true', or point data.root at a folder holding the four IDX "
    "files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...)."
)

_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/noisytail`` (default ``~/.cache/noisytail``), where downloads go."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "noisytail"


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode the bytes of one IDX file into an array of its header's shape (native byte order)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{name} is not an IDX file (bad magic number); the file may be corrupt.")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_TYPES:
        raise DataError(f"{name} has unknown IDX type code 0x{type_code:02x}; it may be corrupt.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} is truncated inside its IDX header; the file is corrupt.")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{name} holds {len(data) - header} data bytes but its header {tuple(dims)} needs "
            f"{expected}; the file is corrupt or truncated."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = Path(path).read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"Cannot read {path}: {e}; the file may be corrupt.") from e
    array = parse_idx(data, path)
    array.flags.writeable = False
    return array


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzipped if its name ends in ``.gz``), cached per process.

    The cache key is the path with its modification time and size. The returned array is shared
    with the cache and therefore read-only: copy it before changing it.
    """
    path = os.fspath(path)
    stat = os.stat(path)
    return _read_idx_cached(path, stat.st_mtime_ns, stat.st_size)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_dirs(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched, in order: ``root`` (and its ``fashion-mnist``/torchvision sub-folders)
    if given, else ``$NOISYTAIL_DATA/fashion-mnist``, ``/usr/share/datasets/fashion-mnist`` and
    ``~/.cache/noisytail/fashion-mnist``, each also in torchvision's ``FashionMNIST/raw`` layout.
    """
    if root is not None:
        base = Path(os.fspath(root)).expanduser()
        return [base, base / "fashion-mnist", base / "FashionMNIST" / "raw"]
    bases = [Path(os.environ["NOISYTAIL_DATA"])] if os.environ.get("NOISYTAIL_DATA") else []
    bases += [SYSTEM_DIR, cache_dir()]
    dirs = []
    for base in bases:
        dirs += [
            base / "fashion-mnist",
            base / "fashion-mnist" / "FashionMNIST" / "raw",
            base / "FashionMNIST" / "raw",
        ]
    return dirs


def find_fashion_mnist(root: str | os.PathLike[str] | None = None) -> Path | None:
    """The first candidate folder holding all four IDX files, or None."""
    for folder in candidate_dirs(root):
        if all(_idx_file(folder, stem) for stem in FILES.values()):
            return folder
    return None


def _download(root: str | os.PathLike[str] | None) -> None:
    from torchvision.datasets import FashionMNIST

    if root is not None:
        target = Path(os.fspath(root)).expanduser()
    else:
        target = cache_dir() / "fashion-mnist"
    try:
        FashionMNIST(str(target), train=True, download=True)
    except Exception as e:  # network and archive errors come in many types
        raise DataError(f"Downloading Fashion-MNIST into {target} failed: {e}") from e


@data_source(
    "fashion_mnist", display_name="Fashion-MNIST", how_to_get=HOW_TO_GET, locate=find_fashion_mnist
)
def load_fashion_mnist(root: str | None = None, *, download: bool = False) -> DatasetBundle:
    """Fashion-MNIST: 60 000 train and 10 000 test images, uint8 ``[N, 1, 28, 28]``, 10 classes.

    Searches the folders of `candidate_dirs`; with ``download=True`` and nothing found, fetches the
    files with torchvision into ``root`` (or ``~/.cache/noisytail/fashion-mnist``). Mean/std are
    the published (0.2860,) and (0.3530,). ``asymmetric_map`` is `ASYMMETRIC_MAP`.
    """
    folder = find_fashion_mnist(root)
    if folder is None and download:
        _download(root)
        folder = find_fashion_mnist(root)
    if folder is None:
        where = ", ".join(str(d) for d in candidate_dirs(root))
        raise DataError(f"Fashion-MNIST not found (looked in {where}). {HOW_TO_GET}")
    arrays = {}
    for key, stem in FILES.items():
        path = _idx_file(folder, stem)
        assert path is not None  # find_fashion_mnist checked all four
        arrays[key] = read_idx(path)
    splits = []
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if (
            images.ndim != 3
            or labels.ndim != 1
            or len(images) != len(labels)
            or images.dtype != np.uint8
            or labels.dtype != np.uint8
        ):
            raise DataError(
                f"Fashion-MNIST {part} files in {folder} do not fit together: images "
                f"{images.dtype} {images.shape}, labels {labels.dtype} {labels.shape}; expected "
                "uint8 [N, 28, 28] and uint8 [N]."
            )
        pixels = torch.from_numpy(images.copy()).unsqueeze(1)
        splits.append(DataSplit(TensorStore(pixels), labels.astype(np.int64)))
    return DatasetBundle(
        name="fashion_mnist",
        train=splits[0],
        test=splits[1],
        class_names=list(CLASS_NAMES),
        mean=MEAN,
        std=STD,
        asymmetric_map=dict(ASYMMETRIC_MAP),
        root=str(folder),
    )
