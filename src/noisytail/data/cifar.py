"""CIFAR-10 and CIFAR-100 from the python-pickle release, in memory as uint8 ``[N, 3, 32, 32]``.

CIFAR-10: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``; each batch is a
pickled dict with ``b"data"`` (uint8 ``[N, 3072]``: the red, green and blue 32x32 planes, row-major)
and ``b"labels"``; ``batches.meta`` has ``b"label_names"``.
CIFAR-100: ``cifar-100-python/{train, test, meta}`` with ``b"fine_labels"`` and
``b"coarse_labels"``; ``meta`` has ``b"fine_label_names"``.

Pickles are read with an unpickler that only admits numpy arrays, so a tampered file cannot run
code.
"""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisytail.data.fashion_mnist import SYSTEM_DIR, cache_dir
from noisytail.data.source_info import data_source
from noisytail.data.types import DataError, DatasetBundle, DataSplit, TensorStore

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
CIFAR100_FILES = ["train", "test", "meta"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

#: The standard CIFAR-10 flips: truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog.
CIFAR10_ASYMMETRIC_MAP = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core") :]  # numpy 2 renamed numpy.core
        return super().find_class(module, name)


@functools.lru_cache(maxsize=16)
def _load_pickle_cached(path: str, mtime_ns: int, size: int) -> dict[Any, Any]:
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise DataError(f"Cannot read CIFAR file {path}: {e}; it may be corrupt.") from e
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR file {path} holds a {type(obj).__name__}, not a dict.")
    for value in obj.values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False  # shared with the cache
    return obj


def load_pickle(path: str | os.PathLike[str]) -> dict[Any, Any]:
    """One CIFAR pickle as a dict (keys as stored, usually bytes), cached per process."""
    path = os.fspath(path)
    stat = os.stat(path)
    return _load_pickle_cached(path, stat.st_mtime_ns, stat.st_size)


def _field(d: dict[Any, Any], key: str, path: Path) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    keys = ", ".join(k.decode() if isinstance(k, bytes) else str(k) for k in d)
    raise DataError(f"CIFAR file {path} has no {key!r} entry (it has: {keys}).")


def _names(d: dict[Any, Any], key: str, path: Path) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in _field(d, key, path)]


def _images(d: dict[Any, Any], path: Path) -> np.ndarray:
    data = np.asarray(_field(d, "data", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"CIFAR file {path}: 'data' is {data.dtype} {data.shape}, expected uint8 [N, 3072]."
        )
    return data.reshape(-1, 3, 32, 32)


def _labels(d: dict[Any, Any], key: str, n: int, path: Path) -> np.ndarray:
    labels = np.asarray(_field(d, key, path), dtype=np.int64)
    if labels.shape != (n,):
        raise DataError(f"CIFAR file {path}: {key!r} has shape {labels.shape}, expected ({n},).")
    return labels


def candidate_dirs(folder: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where ``folder`` (e.g. ``cifar-10-batches-py``) is searched: ``root`` itself and
    ``root/folder`` if ``root`` is given, else ``folder`` under ``$NOISYTAIL_DATA``,
    ``/usr/share/datasets`` and ``~/.cache/noisytail``."""
    if root is not None:
        base = Path(os.fspath(root)).expanduser()
        return [base, base / folder]
    bases = [Path(os.environ["NOISYTAIL_DATA"])] if os.environ.get("NOISYTAIL_DATA") else []
    return [b / folder for b in [*bases, SYSTEM_DIR, cache_dir()]]


def find_cifar(which: str, root: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder holding all files of ``which`` (``"cifar10"`` or ``"cifar100"``), or None."""
    folder, files = (
        (CIFAR10_DIR, CIFAR10_FILES) if which == "cifar10" else (CIFAR100_DIR, CIFAR100_FILES)
    )
    for d in candidate_dirs(folder, root):
        if all((d / f).is_file() for f in files):
            return d
    return None


def how_to_get(which: str) -> str:
    folder = CIFAR10_DIR if which == "cifar10" else CIFAR100_DIR
    title = "CIFAR-10" if which == "cifar10" else "CIFAR-100"
    return (
        f"With internet access add '--set data.options.download=true', or point data.root at "
        f"{folder}/ (the {title} python version) or at its parent folder."
    )


def _find_or_download(which: str, root: str | None, download: bool) -> Path:
    found = find_cifar(which, root)
    if found is None and download:
        from torchvision.datasets import CIFAR10, CIFAR100

        target = Path(os.fspath(root)).expanduser() if root is not None else cache_dir()
        try:
            (CIFAR10 if which == "cifar10" else CIFAR100)(str(target), train=True, download=True)
        except Exception as e:  # network and archive errors come in many types
            raise DataError(f"Downloading {which} into {target} failed: {e}") from e
        found = find_cifar(which, root)
    if found is None:
        folder = CIFAR10_DIR if which == "cifar10" else CIFAR100_DIR
        where = ", ".join(str(d) for d in candidate_dirs(folder, root))
        raise DataError(f"{which} not found (looked in {where}). {how_to_get(which)}")
    return found


def _split(images: np.ndarray, labels: np.ndarray) -> DataSplit:
    """A split owning a copy of ``images`` (the cached arrays stay untouched)."""
    return DataSplit(TensorStore(torch.from_numpy(np.array(images, order="C"))), labels)


@data_source(
    "cifar10",
    display_name="CIFAR-10",
    how_to_get=how_to_get("cifar10"),
    locate=lambda: find_cifar("cifar10"),
)
def load_cifar10(root: str | None = None, *, download: bool = False) -> DatasetBundle:
    """CIFAR-10: 50 000 train / 10 000 test images, uint8 ``[N, 3, 32, 32]``, 10 classes.

    ``root`` may be ``cifar-10-batches-py`` itself or its parent. ``download=True`` fetches the
    archive with torchvision into ``root`` (or ``~/.cache/noisytail``) when nothing is found.
    ``asymmetric_map`` is `CIFAR10_ASYMMETRIC_MAP`.
    """
    folder = _find_or_download("cifar10", root, download)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        d = load_pickle(folder / name)
        images = _images(d, folder / name)
        parts.append((images, _labels(d, "labels", len(images), folder / name)))
    train_images = np.concatenate([p[0] for p in parts[:5]])
    train_labels = np.concatenate([p[1] for p in parts[:5]])
    class_names = _names(
        load_pickle(folder / "batches.meta"), "label_names", folder / "batches.meta"
    )
    return DatasetBundle(
        name="cifar10",
        train=_split(train_images, train_labels),
        test=_split(*parts[5]),
        class_names=class_names,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        asymmetric_map=dict(CIFAR10_ASYMMETRIC_MAP),
        root=str(folder),
    )


@data_source(
    "cifar100",
    display_name="CIFAR-100",
    how_to_get=how_to_get("cifar100"),
    locate=lambda: find_cifar("cifar100"),
)
def load_cifar100(root: str | None = None, *, download: bool = False) -> DatasetBundle:
    """CIFAR-100: 50 000 train / 10 000 test images, uint8 ``[N, 3, 32, 32]``, 100 fine classes.

    ``coarse_labels`` is an int64 array ``[100]`` mapping each fine class to its super-class
    (0..19), read from the pickles' ``coarse_labels``. ``root`` may be ``cifar-100-python`` or
    its parent; ``download`` as for `load_cifar10`.
    """
    folder = _find_or_download("cifar100", root, download)
    class_names = _names(load_pickle(folder / "meta"), "fine_label_names", folder / "meta")
    splits = []
    coarse_of = np.full(len(class_names), -1, dtype=np.int64)
    for name in ("train", "test"):
        d = load_pickle(folder / name)
        images = _images(d, folder / name)
        fine = _labels(d, "fine_labels", len(images), folder / name)
        coarse = _labels(d, "coarse_labels", len(images), folder / name)
        if fine.size and (fine.min() < 0 or fine.max() >= len(class_names)):
            raise DataError(f"CIFAR-100 {folder / name}: fine labels outside 0..99.")
        for f, c in set(zip(fine.tolist(), coarse.tolist())):
            if coarse_of[f] not in (-1, c):
                raise DataError(
                    f"CIFAR-100 {folder / name}: fine class {f} appears with coarse classes "
                    f"{coarse_of[f]} and {c}."
                )
            coarse_of[f] = c
        splits.append(_split(images, fine))
    missing = np.flatnonzero(coarse_of < 0)
    if missing.size:
        raise DataError(
            f"CIFAR-100 in {folder}: fine classes {missing.tolist()[:10]} never occur, so their "
            "super-class is unknown; the files are incomplete."
        )
    return DatasetBundle(
        name="cifar100",
        train=splits[0],
        test=splits[1],
        class_names=class_names,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        coarse_labels=coarse_of,
        root=str(folder),
    )
