"""In-memory batch iteration: every batch is ``Batch(x, labels, idx)``.

``idx`` indexes the *training pool* (0..N_pool-1), so methods can keep per-sample state; the
pool's position -> original sample id map is ``Corruption.train_idx``. True labels are not in a
batch: the loader is given only the labels a method may train on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from .. import seeds
from .augment import augment, to_float
from .batch import Batch
from .specs import SIMCLR_KINDS
from .types import ImageStore, TensorStore

AugmentFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, stream): resumed runs replay exactly."""
    mixed = np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed & 0x7FFF_FFFF_FFFF_FFFF))


class PoolData:
    """The inputs of a set of samples (a training pool, a meta set, a test set), ready to batch.

    In-memory stores are gathered once into one uint8 tensor on ``device`` (the whole of
    Fashion-MNIST or CIFAR fits); lazy stores (image folders) are decoded per batch.
    """

    def __init__(
        self,
        store: ImageStore,
        idx: np.ndarray,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        on_device: bool = True,
        channels_last: bool = False,
    ) -> None:
        self.idx = np.asarray(idx, dtype=np.int64)
        self.mean, self.std = mean, std
        self.device = device
        self.channels_last = channels_last
        self._resident: torch.Tensor | None = None
        self._store = store
        if isinstance(store, TensorStore):
            data = store.get(self.idx)
            self._resident = data.to(device) if on_device else data

    def __len__(self) -> int:
        return len(self.idx)

    def raw(self, local: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Un-normalised inputs of pool positions ``local``, on ``device``."""
        if self._resident is not None:
            local_t = torch.as_tensor(local, dtype=torch.long).to(self._resident.device)
            return self._resident[local_t].to(self.device, non_blocking=True)
        local_np = np.asarray(torch.as_tensor(local).cpu(), dtype=np.int64)
        return self._store.get(self.idx[local_np]).to(self.device, non_blocking=True)

    def inputs(self, local: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised float inputs ``[B, ...]`` of pool positions ``local``."""
        x = to_float(self.raw(local), self.mean, self.std)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def pixel_normalisation(self) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
        """``(mean, std)`` that map this pool's [0, 1] pixels to its inputs, when its inputs are
        uint8 pixels normalised with them; ``(None, None)`` for float inputs (their range is
        unknown) and for an empty pool."""
        if not self.mean or len(self) == 0:
            return None, None
        if self.raw(np.zeros(1, dtype=np.int64)).dtype != torch.uint8:
            return None, None
        return tuple(self.mean), tuple(self.std)

    def iter_plain(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(x, local positions)`` in order, no augmentation (evaluation, feature extraction)."""
        for start in range(0, len(self), batch_size):
            local = torch.arange(start, min(start + batch_size, len(self)))
            yield self.inputs(local), local


class TrainLoader:
    """Shuffled (or class-balanced) batches of a pool with ``views`` augmented views each."""

    def __init__(
        self,
        data: PoolData,
        labels: np.ndarray,
        *,
        batch_size: int,
        augment_kind: str,
        views: int = 1,
        include_plain_view: bool = False,
        sampler: str = "random",
        seed: int = 0,
        stream: int = seeds.TRAIN_ORDER,
        rank: int = 0,
        world_size: int = 1,
        augment_fn: AugmentFn | None = None,
    ) -> None:
        if len(labels) != len(data):
            raise ValueError("labels and data must have the same length.")
        self.data = data
        self.labels_np = np.asarray(labels, dtype=np.int64)
        self.labels = torch.as_tensor(self.labels_np).to(data.device)
        self.batch_size = batch_size
        self.augment_kind = augment_kind
        self.augment_fn = augment_fn
        self.views = views
        self.include_plain_view = include_plain_view
        self.sampler = sampler
        self.seed, self.stream = seed, stream
        self.rank, self.world_size = rank, world_size
        self.subset: np.ndarray | None = None  # pool positions the epochs cover (None: all)
        # the pixels' own scale for the colour operations of "simclr"
        self._mean, self._std = (
            data.pixel_normalisation() if augment_kind in SIMCLR_KINDS else (None, None)
        )
        self._set_steps()

    def _set_steps(self) -> None:
        n = self.size
        global_batch = self.batch_size * self.world_size
        # Drop the last partial batch (BatchNorm dislikes tiny batches) unless the pool is small.
        self.steps_per_epoch = max(1, n // global_batch)

    @property
    def size(self) -> int:
        """How many samples an epoch covers: the pool, or the subset of `restrict`."""
        return len(self.data) if self.subset is None else len(self.subset)

    def restrict(self, positions: np.ndarray | None) -> None:
        """Draw every epoch from these pool positions only (None: the whole pool again); batch
        indices stay pool positions. The number of steps per epoch follows."""
        if positions is None:
            self.subset = None
        else:
            pos = np.unique(np.asarray(positions, dtype=np.int64))
            if pos.size == 0 or pos[0] < 0 or pos[-1] >= len(self.data):
                raise ValueError(
                    f"restrict: need 1 or more positions in [0, {len(self.data)}), got "
                    f"{pos.size} (range {pos[:1].tolist()}..{pos[-1:].tolist()})."
                )
            self.subset = pos
        self._set_steps()

    def __len__(self) -> int:
        return self.steps_per_epoch

    def _order(self, generator: torch.Generator) -> torch.Tensor:
        labels = self.labels_np if self.subset is None else self.labels_np[self.subset]
        n = len(labels)
        if self.sampler == "class_balanced":
            counts = np.bincount(labels, minlength=int(labels.max()) + 1)
            weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.float64)
            order = torch.multinomial(weights, n, replacement=True, generator=generator)
        else:
            order = torch.randperm(n, generator=generator)
        return order if self.subset is None else torch.from_numpy(self.subset)[order]

    def _augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.augment_fn is not None:
            return self.augment_fn(x, generator)
        return augment(x, self.augment_kind, generator, mean=self._mean, std=self._std)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of one epoch; identical for the same (seed, epoch) on every run."""
        order_gen = epoch_generator(self.seed, epoch, self.stream)
        aug_stream = self.stream + seeds.AUGMENT_OFFSET + seeds.RANK_STRIDE * self.rank
        aug_gen = epoch_generator(self.seed, epoch, aug_stream)
        order = self._order(order_gen)
        global_batch = self.batch_size * self.world_size
        n = self.size
        for step in range(self.steps_per_epoch):
            chunk = order[step * global_batch : min((step + 1) * global_batch, n)]
            # an unsharded loader (world_size 1, e.g. a meta set smaller than the global batch)
            # serves every rank the whole chunk; its rank still picks its augmentation stream
            local = chunk[self.rank :: self.world_size] if self.world_size > 1 else chunk
            yield self.make_batch(local, aug_gen)

    def make_batch(self, local: torch.Tensor, generator: torch.Generator) -> Batch:
        """The batch of pool positions ``local [B]`` with this loader's views (also what
        `noisytail.methods.base.Context.pool_batch` serves)."""
        x = self.data.inputs(local)
        if self.views == 1 and not self.include_plain_view:
            views: torch.Tensor | tuple[torch.Tensor, ...] = self._augment(x, generator)
        else:
            parts = [self._augment(x, generator) for _ in range(self.views)]
            if self.include_plain_view:
                parts.append(x)
            views = tuple(parts)
        local_dev = local.to(self.labels.device)
        return Batch(x=views, labels=self.labels[local_dev], idx=local_dev.to(x.device))


class CyclingLoader:
    """Endless batches from a loader: ``next_batch()`` restarts with a new epoch when done."""

    def __init__(self, loader: TrainLoader) -> None:
        self.loader = loader
        self._epoch = 0
        self._it: Iterator[Batch] = loader.epoch(0)

    def next_batch(self) -> Batch:
        try:
            return next(self._it)
        except StopIteration:
            self._epoch += 1
            self._it = self.loader.epoch(self._epoch)
            return next(self._it)

    def reset(self, epoch: int) -> None:
        """Restart the cycle for training epoch ``epoch``, at the loader's epoch ``epoch *
        META_EPOCH_STRIDE`` (`noisytail.seeds`): fresh batches every training epoch, the same
        ones when a resumed run replays it."""
        self._epoch = epoch * seeds.META_EPOCH_STRIDE
        self._it = self.loader.epoch(self._epoch)
