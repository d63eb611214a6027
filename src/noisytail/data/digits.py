"""scikit-learn's bundled 8x8 handwritten digits (1 797 images, 10 classes), no download needed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from noisytail.data.image_folder import split_train_test
from noisytail.data.source_info import data_source
from noisytail.data.types import DatasetBundle, DataSplit, TensorStore


def digits_location() -> str:
    """The folder inside scikit-learn that holds ``digits.csv.gz`` (found without importing it)."""
    spec = importlib.util.find_spec("sklearn")
    assert spec is not None and spec.submodule_search_locations, "scikit-learn is a dependency"
    return str(Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data")


@data_source(
    "digits",
    display_name="scikit-learn digits",
    how_to_get="Ships with scikit-learn; nothing to get.",
    locate=digits_location,
)
def load_digits(
    root: str | None = None, *, test_fraction: float = 0.25, seed: int = 0
) -> DatasetBundle:
    """Digits as uint8 ``[N, 1, 8, 8]``: intensities 0..16 scaled to 0..255 (``round(v*255/16)``).

    A stratified train/test split by ``test_fraction`` (deterministic in ``seed``). Mean/std are
    computed from the training pixels. ``root`` is ignored: the data ship with scikit-learn.
    """
    from sklearn import datasets as sk_datasets  # imported here: it takes ~1 s

    raw = sk_datasets.load_digits()
    images = np.rint(raw.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [N, 1, 8, 8]
    labels = raw.target.astype(np.int64)
    train_idx, test_idx = split_train_test(labels, test_fraction, seed)
    train_pixels = images[train_idx].astype(np.float64) / 255.0
    return DatasetBundle(
        name="digits",
        train=DataSplit(TensorStore(torch.from_numpy(images[train_idx])), labels[train_idx]),
        test=DataSplit(TensorStore(torch.from_numpy(images[test_idx])), labels[test_idx]),
        class_names=[str(d) for d in range(10)],
        mean=(float(train_pixels.mean()),),
        std=(float(train_pixels.std()),),
        root=digits_location(),
    )
