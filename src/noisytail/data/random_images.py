"""Random uint8 images with random labels, CIFAR-shaped by default: a stand-in for measuring speed
(``scripts/bench_speed.py``, ``scripts/gpu_check.sh``) where a real data set is absent.

There is nothing to learn in them; never use them to judge accuracy.
"""

from __future__ import annotations

import numpy as np
import torch

from noisytail.data.source_info import data_source
from noisytail.data.types import DataError, DatasetBundle, DataSplit, TensorStore


@data_source(
    "random_images",
    display_name="random images",
    how_to_get="Generated on the fly (for speed checks only).",
    locate=lambda: "(generated)",
)
def load_random_images(
    root: str | None = None,
    *,
    num_train: int = 10000,
    num_test: int = 1000,
    num_classes: int = 10,
    channels: int = 3,
    image_size: int = 32,
    seed: int = 0,
) -> DatasetBundle:
    """``num_train`` + ``num_test`` images ``[N, channels, image_size, image_size]`` uniform in
    0..255 with labels uniform over ``num_classes`` (every class present), from ``seed``.
    ``root`` is ignored."""
    if min(num_train, num_test) < num_classes or num_classes < 2:
        raise DataError(
            f"random_images: need num_classes >= 2 and at least one image per class in each "
            f"split (num_train={num_train}, num_test={num_test}, num_classes={num_classes})."
        )
    if channels < 1 or image_size < 1:
        raise DataError("random_images: channels and image_size must be positive.")
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)

    def split(n: int) -> DataSplit:
        images = torch.randint(0, 256, (n, channels, image_size, image_size), generator=gen)
        labels = np.concatenate([np.arange(num_classes), rng.integers(0, num_classes, n)])[:n]
        return DataSplit(TensorStore(images.to(torch.uint8)), rng.permutation(labels))

    return DatasetBundle(
        name="random_images",
        train=split(num_train),
        test=split(num_test),
        class_names=[f"class_{c}" for c in range(num_classes)],
        mean=(0.5,) * channels,
        std=(0.2887,) * channels,  # the standard deviation of U(0, 1)
    )
