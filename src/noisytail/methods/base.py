"""The `Method` interface that every training method implements, and the `Context` it receives.

The training loop (``noisytail.train``) feeds each method batches of ``Batch(x, labels, idx)``:
``x`` is one tensor, or a tuple of ``views`` tensors; ``labels`` are the (possibly noisy) training
labels; ``idx`` are the samples' indices into the training set, so methods can keep per-sample
state. True labels never reach a method. docs/methods.md describes each method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..data.batch import Batch
from ..models.base import Backbone

__all__ = ["Batch", "Context", "Method", "TaskInfo"]  # Batch: noisytail.data.batch, re-exported


@dataclass
class TaskInfo:
    """What a method may know about the task when it is built (never the true labels)."""

    num_classes: int
    class_counts: np.ndarray  # [K] counts of the *training* (noisy) labels
    num_train: int
    input_shape: tuple[int, ...]
    epochs: int
    steps_per_epoch: int
    train_labels: np.ndarray | None = None  # [N] the noisy training labels, pool order


class Context:
    """What the loop offers a method during training.

    Attributes are plain values the loop updates (``epoch``, ``step``, ...); ``meta_batch()``,
    ``predict_train()`` and ``pool_batch()`` are callables the loop installs.
    """

    def __init__(
        self,
        *,
        info: TaskInfo,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        generator: torch.Generator,
        meta_batches: Callable[[], Batch] | None,
        predict_train: Callable[[Callable[[torch.Tensor], torch.Tensor]], torch.Tensor],
        autocast: Callable[[], Any],
        pool_batch: Callable[[torch.Tensor, torch.Generator], Batch] | None = None,
    ) -> None:
        self.info = info
        self.optimizer = optimizer
        self.device = device
        self.generator = generator
        self._meta_batches = meta_batches
        self._predict_train = predict_train
        self._pool_batch = pool_batch
        self.autocast = autocast
        self.epoch = 0
        self.step = 0  # global step, counted from 0
        self.step_in_epoch = 0
        # Parameters the loop will not update this epoch (train.freeze_backbone_epochs): a
        # look-ahead must not move them either.
        self.frozen_parameters: tuple[nn.Parameter, ...] = ()

    @property
    def total_steps(self) -> int:
        return self.info.epochs * self.info.steps_per_epoch

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def has_meta(self) -> bool:
        return self._meta_batches is not None

    def meta_batch(self) -> Batch:
        """The next batch of the clean meta set (cycled forever)."""
        if self._meta_batches is None:
            raise RuntimeError("This run has no clean meta set: set meta.per_class or meta.total.")
        return self._meta_batches()

    def pool_batch(self, idx: torch.Tensor, generator: torch.Generator | None = None) -> Batch:
        """The training-pool samples at positions ``idx [M]`` (any positions, repeats allowed),
        built as the loop builds its batches: the same views, augmentation and plain view, the
        same (noisy) labels. Random numbers come from ``generator`` (default: ``self.generator``,
        seeded per epoch, so resumed runs replay). For methods that need samples beyond the batch
        (e.g. MTTV's partner images, drawn from the whole training set)."""
        if self._pool_batch is None:
            raise RuntimeError("This loop offers no pool_batch: extra training samples by index.")
        return self._pool_batch(idx, generator if generator is not None else self.generator)

    def predict_train(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Apply ``fn`` (inputs ``[B, ...]`` -> outputs ``[B, ...]``) to every training sample,
        un-augmented, in index order, under ``torch.no_grad``; returns ``[N, ...]``."""
        return self._predict_train(fn)


class Method(nn.Module):
    """Base class: a model plus the rule that turns a batch into a loss.

    Subclasses take ``model`` and ``info`` first, then explicit keyword hyper-parameters with the
    paper's defaults, and register themselves with ``@METHODS.register("name")``.

    Class attributes:
      ``views``: how many augmented views of each image ``x`` holds (1: a tensor; k>1: a tuple).
      ``needs_meta``: whether the method requires a clean meta set.
      ``include_plain_view``: also pass the un-augmented image as the last element of ``x``.
      ``self_supervised``: the method learns an encoder without the labels (the labels train at
      most a detached probe); ``noisytail pretrain`` runs exactly these methods.
      ``predict_networks``: the attributes (networks of the run's ``model`` config) whose logits
      `predict` averages; a trained model is rebuilt from these alone (`noisytail.inference`).
      ``updates_outside_backward``: the method steps parameters itself, outside the loop's
      backward (MW-Net's weighting network): under torchrun such updates are not averaged
      across processes, so the loop refuses to run it distributed (an instance may set it).
      ``contrasts_within_batch``: its loss contrasts the samples of the batch with one another;
      under torchrun each rank sees its slice only (the loop warns).
    """

    views: ClassVar[int] = 1
    needs_meta: ClassVar[bool] = False
    include_plain_view: ClassVar[bool] = False
    self_supervised: ClassVar[bool] = False
    predict_networks: ClassVar[tuple[str, ...]] = ("model",)
    updates_outside_backward: bool = False
    contrasts_within_batch: ClassVar[bool] = False

    def __init__(self, model: Backbone, info: TaskInfo) -> None:
        super().__init__()
        self.model = model
        self.info = info

    @classmethod
    def views_for(cls, args: dict[str, Any]) -> int:
        """How many augmented views a run with method arguments ``args`` needs (default
        ``views``); methods whose view count is a hyper-parameter override this."""
        return cls.views

    # --- hooks -----------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        """Parameters for the loop's main optimizer (default: all of ``self.model``)."""
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    def clip_groups(self) -> list[list[torch.nn.Parameter]]:
        """The parameter groups whose gradient norms ``train.grad_clip`` bounds, each on its own
        (`noisytail.optim.clip_gradients`): all the method's parameters (default); a method
        training independent networks gives one group each, as separate optimisers would."""
        return [list(self.parameters())]

    def on_train_start(self, ctx: Context) -> None:
        """Called once before the first epoch (and again after a resume)."""

    def train_subset(self) -> np.ndarray | None:
        """Training-pool positions ``[M]`` the loop's batches cover (None, the default: the whole
        pool). The loop asks once, after `on_train_start` (so a method may decide there, e.g.
        from a detection) and after a resume; every epoch then shuffles only these positions, so
        an epoch has ``M // batch_size`` full batches (e.g. MOIT+'s clean-only loader)."""
        return None

    def on_epoch_start(self, ctx: Context) -> None:
        """Called at the start of every epoch, e.g. for epoch-level statistics."""

    def training_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        """Return ``{"loss": scalar tensor, ...other scalars to log}``."""
        raise NotImplementedError

    def after_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        """Called after the loop's optimizer step on ``batch`` (under the same autocast); a
        method may take an update of its own here (e.g. DivideMix's L2B plug-in step). Returns
        extra scalars to log (default: none)."""
        return {}

    def forward(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        """``training_step``: the loop calls the method (or its DDP wrapper) like a module."""
        return self.training_step(batch, ctx)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, K]`` for evaluation."""
        return self.model(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, D]`` of inputs ``x [B, ...]``: the space in which the method compares
        samples, and in which the ``knn`` detector looks for neighbours. Default: the backbone's
        ``features``; a method with its own projection (MOIT) overrides it."""
        return self.model.features(x)

    def sample_scores(self) -> np.ndarray | None:
        """Per-sample clean scores ``[N]`` (higher = more likely clean), or None."""
        return None

    def extra_state(self) -> dict[str, Any]:
        """Non-parameter state to checkpoint (per-sample buffers, extra optimizers)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of `extra_state`."""


@torch.no_grad()
def write_per_sample(buffer: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> None:
    """``buffer[idx] = values`` for a per-sample state ``buffer [N]``, the same on every rank:
    under torchrun each rank's ``(idx, values)`` are gathered first. (DDP broadcasts rank 0's
    buffers at every forward, which would otherwise erase what the other ranks wrote, and
    rank 0's copy, the one saved, would hold its own share of the samples only.)"""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        world = dist.get_world_size()
        size = torch.tensor([idx.numel()], device=idx.device)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size)
        longest = int(max(s.item() for s in sizes))
        pad = longest - idx.numel()
        idx_p = torch.cat([idx, idx.new_zeros(pad)])
        val_p = torch.cat([values, values.new_zeros(pad)])
        idx_all = [torch.empty_like(idx_p) for _ in range(world)]
        val_all = [torch.empty_like(val_p) for _ in range(world)]
        dist.all_gather(idx_all, idx_p.contiguous())
        dist.all_gather(val_all, val_p.contiguous())
        keep = [slice(0, int(s.item())) for s in sizes]
        idx = torch.cat([t[k] for t, k in zip(idx_all, keep)])
        values = torch.cat([t[k] for t, k in zip(val_all, keep)])
    buffer[idx.to(buffer.device)] = values.to(buffer.device, buffer.dtype)
