"""The meta set's batches: the clean meta split (``meta.per_class`` / ``meta.total``) or, with
``meta.source=pseudo``, each epoch's pseudo-labelled meta set (`noisytail.data.splits.pseudo_meta`;
docs/methods.md, L2B)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import seeds
from .loader import CyclingLoader, PoolData, TrainLoader
from .splits import meta_counts, pseudo_meta
from .types import ImageStore


class MetaSets:
    """Endless augmented batches of a meta set drawn from the train store ``store``.

    ``pool``: `PoolData`'s keyword arguments (mean, std, device, ...); a meta set is cut into
    batches of at most ``batch_size`` (per rank) in the ``seeds.META_ORDER`` stream, and shared
    across ``world_size`` ranks only when it holds at least ``full_batch`` samples.
    """

    def __init__(
        self,
        store: ImageStore,
        pool: dict[str, Any],
        *,
        batch_size: int,
        full_batch: int,
        augment: str,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.store, self.pool = store, pool
        self.batch_size, self.full_batch, self.augment = batch_size, full_batch, augment
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def cycle(self, store_idx: np.ndarray, labels: np.ndarray) -> CyclingLoader:
        """Endless augmented batches of the meta set ``store_idx`` (ids in the train store)
        with its ``labels [M]``."""
        n = len(store_idx)
        loader = TrainLoader(
            PoolData(self.store, store_idx, **self.pool),
            labels,
            batch_size=min(self.batch_size, n),
            augment_kind=self.augment,
            seed=self.seed,
            stream=seeds.META_ORDER,
            rank=self.rank,
            world_size=self.world_size if n >= self.full_batch else 1,
        )
        return CyclingLoader(loader)

    def pseudo(
        self,
        probs: np.ndarray,
        labels: np.ndarray,
        train_idx: np.ndarray,
        *,
        per_class: int | None,
        total: int | None,
    ) -> CyclingLoader | None:
        """``meta.source=pseudo``: the meta set of the pool samples on which the model
        (``probs [N, K]``, un-augmented) and the noisy ``labels [N]`` agree most confidently,
        ``per_class`` per class or ``total`` in all (`meta_counts`); ``train_idx [N]``: the
        pool's ids in the train store. None when they agree on no sample."""
        k = probs.shape[1]
        counts = meta_counts(k, per_class=per_class) if per_class else meta_counts(k, total=total)
        pos, meta_labels = pseudo_meta(probs, labels, counts)
        return self.cycle(train_idx[pos], meta_labels) if len(pos) else None
