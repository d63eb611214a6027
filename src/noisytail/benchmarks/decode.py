"""Images/s of a lazy image store over epochs of shuffled batches: what an image folder's loading
costs a training run (BENCHMARKS.md, "Decoding a user's image folder")."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from noisytail.data.image_folder import list_images


def epoch_rates(
    store: Any, *, epochs: int = 3, batch_size: int = 128, seed: int = 0
) -> list[float]:
    """Images/s of ``epochs`` passes over ``store`` (an `ImageStore`), each in a fresh seeded
    random order, ``batch_size`` images per ``get``: the first pass decodes, later ones show the
    cache."""
    rng = np.random.default_rng(seed)
    n = len(store)
    rates = []
    for _ in range(epochs):
        order = rng.permutation(n)
        start = time.perf_counter()
        for at in range(0, n, batch_size):
            store.get(order[at : at + batch_size])
        rates.append(n / (time.perf_counter() - start))
    return rates


def folder_rates(
    root: str, store_cls: Any, *, image_size: int, channels: int, epochs: int = 3, **kw: Any
) -> dict[str, Any]:
    """`epoch_rates` of ``store_cls(paths, image_size, channels, **kw)`` over every image under
    ``root``."""
    from pathlib import Path

    paths = [str(p) for p in list_images(Path(root))]
    store = store_cls(paths, image_size, channels, **kw)
    rates = epoch_rates(store, epochs=epochs)
    return {"n": len(paths), "image_size": image_size, "channels": channels, "rates": rates}
