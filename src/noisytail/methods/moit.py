"""MOIT (Ortego et al., "Multi-Objective Interpolation Training for Robustness to Label Noise",
CVPR 2021, arXiv 2012.04462; official code github.com/DiegoOrtego/LabelNoiseMOIT; docs/methods.md,
MOIT and MOIT+).

Per batch (``x = (view 1, view 2, plain image)``):

1. **Interpolation.** Each view batch is mixed with its own permutation and its own
   ``lam = max(l, 1 - l)``, ``l ~ Beta(alpha, alpha)`` (alpha = 1), so the original image dominates.
2. **ICL.** `interpolated_supcon` on the L2-normalised 128-d linear projection of the pooled
   features (temperature 0.1), plus the same loss against a **cross-batch memory** (XBM) of the
   last ``xbm_per_class * K * 2`` embeddings and noisy labels: filled every step, used from epoch
   ``xbm_start_epoch`` (0-based; the official ``epoch > 3`` with 1-based epochs).
3. **Classification.** Until ``switch_epoch``: mixup cross-entropy with the noisy labels over both
   views. From ``switch_epoch`` on (official ``epoch > 130`` of 250, 1-based), the
   semi-supervised loss: ``mean(a_i * mixupCE)`` with ``a_i`` the clean flag of the dominant
   sample, plus ``mean(lam (1 - a_i) CE(pred, p_i)) + mean((1 - lam)(1 - a_j) CE(pred, p_j))``
   with ``p`` the detached softmax of the un-augmented image, ``j`` the partner.

Total loss = ICL(batch) + ICL(memory) + classification, all weights 1.

Every step forwards view 1, view 2 and the plain image separately in train mode, as the official
code does: BatchNorm normalises each view by its own statistics, and its running statistics (used
by the test evaluation and the detection) end each step on the un-augmented images. The plain
pass runs without a graph (the official one is detached).

**Detection** (`on_epoch_start`, from epoch ``detect_start_epoch``): the normalised projection of
every training sample (un-augmented, ``ctx.predict_train``), MOIT's two-pass kNN vote and the
per-class median-balanced selection (`noisytail.neighbors.moit_detect`). The official code runs it
after each epoch; here it runs before the next, on the same weights. ``k`` defaults to
`default_k` of the noisy class counts: 5 % of the median class size, clipped to [10, 250]
(CIFAR-10: 250 as in the paper; 150 images per class: 10).

Per-sample state (checkpointed through ``extra_state``, indexed by ``batch.idx``): the noisy
labels seen so far (the loop hands labels out batch by batch, and the last partial batch of an
epoch is dropped, so a few samples can be unseen after one epoch: they take no part in the kNN and
count as clean until seen), the clean mask, the agreement flags, ``d2``, and the epoch of the last
detection. ``sample_scores`` = ``0.5 * clean + 0.5 * (1 - d2 / log 100)``: every clean sample ranks
above every flagged one, and within each group a lower discrepancy ranks higher.

Note for MOIT+: the clean mask in the final checkpoint is the one used during the last epoch
(computed from the weights after the second-to-last epoch); the official MOIT+ uses the mask
computed after the last epoch, so `MOITPlus` re-runs the detection on the final weights.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..losses.classification import mixup_ce, soft_target_ce
from ..losses.interpolated import interpolated_supcon
from ..models.base import Backbone
from ..neighbors import default_k, moit_detect
from ..registry import METHODS
from .base import Batch, Context, Method, TaskInfo

#: ``-log`` of the lower clamp of the kNN probabilities: the largest possible ``d2``.
D_MAX = math.log(100.0)


class CrossBatchMemory:
    """A FIFO ring buffer of ``capacity`` embeddings ``[D]`` and integer labels (XBM, Wang et al.
    2020, as MOIT's ``xbm_memory.py``). Contents stay on the device of the first enqueue."""

    def __init__(self, capacity: int, dim: int) -> None:
        if capacity < 1:
            raise ValueError(f"memory capacity must be positive, got {capacity}")
        self.capacity, self.dim = capacity, dim
        self.feats = torch.zeros(capacity, dim)
        self.labels = torch.zeros(capacity, dtype=torch.long)
        self.ptr = 0  # next slot to write
        self.size = 0  # valid entries

    def __len__(self) -> int:
        return self.size

    def enqueue(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """Write ``feats [n, D]`` / ``labels [n]`` over the oldest entries (detached)."""
        feats, labels = feats.detach(), labels.detach().long()
        if feats.device != self.feats.device:
            self.feats, self.labels = self.feats.to(feats.device), self.labels.to(feats.device)
        n = feats.shape[0]
        if n > self.capacity:  # only the newest fit
            feats, labels, n = feats[-self.capacity :], labels[-self.capacity :], self.capacity
        slots = (self.ptr + torch.arange(n, device=feats.device)) % self.capacity
        self.feats[slots] = feats.to(self.feats.dtype)
        self.labels[slots] = labels
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.capacity, self.size + n)

    def recent(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The newest ``n`` entries (all valid ones by default), oldest first."""
        n = self.size if n is None else max(0, min(n, self.size))
        slots = (self.ptr - n + torch.arange(n, device=self.feats.device)) % self.capacity
        return self.feats[slots], self.labels[slots]

    def state(self) -> dict[str, Any]:
        return {
            "feats": self.feats.cpu(),
            "labels": self.labels.cpu(),
            "ptr": self.ptr,
            "size": self.size,
        }

    def load(self, state: dict[str, Any]) -> None:
        if tuple(state["feats"].shape) != (self.capacity, self.dim):
            raise ValueError(
                f"memory state has shape {tuple(state['feats'].shape)}, expected "
                f"({self.capacity}, {self.dim})"
            )
        self.feats = state["feats"].to(self.feats.device)
        self.labels = state["labels"].to(self.feats.device)
        self.ptr, self.size = int(state["ptr"]), int(state["size"])


def draw_mixup(b: int, alpha: float, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """A permutation of ``b`` and MOIT's dominant ``lam = max(l, 1 - l)``, ``l ~ Beta(alpha,
    alpha)`` (``alpha <= 0``: no mixing, ``lam = 1``), both from ``generator``."""
    perm = torch.randperm(b, generator=generator)
    if alpha <= 0:
        return perm, 1.0
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    return perm, max(lam, 1.0 - lam)


def split_views(batch: Batch, views: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``(augmented views, plain view)`` from a batch built with ``include_plain_view``."""
    if isinstance(batch.x, torch.Tensor) or len(batch.x) != views + 1:
        raise ValueError(f"expected {views} augmented views plus the plain image in batch.x")
    return list(batch.x[:views]), batch.x[views]


class SampleLabels:
    """The noisy label of each training index seen so far (-1 = not seen yet)."""

    def __init__(self, n: int) -> None:
        self.values = torch.full((n,), -1, dtype=torch.long)

    def update(self, batch: Batch) -> None:
        self.values[batch.idx.cpu()] = batch.labels.cpu().long()

    @property
    def known(self) -> torch.Tensor:
        return self.values >= 0


@METHODS.register("moit")
class MOIT(Method):
    """MOIT: interpolated supervised contrastive learning with a cross-batch memory, mixup
    cross-entropy, per-epoch kNN noise detection, and a semi-supervised loss after the switch."""

    views = 2
    include_plain_view = True
    contrasts_within_batch = True

    def __init__(
        self,
        model: Backbone,
        info: TaskInfo,
        *,
        temperature: float = 0.1,
        proj_dim: int = 128,
        alpha: float = 1.0,
        xbm_per_class: int = 100,
        xbm_start_epoch: int = 3,
        k: int | None = None,
        selection: str = "balanced",
        detect_start_epoch: int = 1,
        switch_epoch: int | None = None,
        switch_fraction: float = 0.52,
    ) -> None:
        super().__init__(model, info)
        if temperature <= 0:
            raise ValueError(f"moit: temperature must be positive, got {temperature}")
        if selection not in ("balanced", "agreement"):
            raise ValueError(
                f"moit: selection must be 'balanced' or 'agreement', got {selection!r}"
            )
        if not 0.0 <= switch_fraction <= 1.0:
            raise ValueError(f"moit: switch_fraction must lie in [0, 1], got {switch_fraction}")
        if k is not None and k < 1:
            raise ValueError(f"moit: k must be a positive number of neighbours, got {k}")
        if k is not None and k >= info.num_train:
            raise ValueError(
                f"moit: k={k} neighbours need more than {k} training samples, got "
                f"{info.num_train}; the noise detection would never run (omit k for the default)"
            )
        self.temperature = temperature
        self.alpha = alpha
        self.xbm_start_epoch = xbm_start_epoch
        self.k = k if k is not None else default_k(info.class_counts)
        self.selection = selection
        self.detect_start_epoch = detect_start_epoch
        # Paper: switch at 130 of 250 epochs (0.52); ``switch_epoch`` wins when given.
        self.switch_epoch = (
            switch_epoch if switch_epoch is not None else int(round(switch_fraction * info.epochs))
        )
        self.projector = nn.Linear(model.feature_dim, proj_dim)
        self.memory = CrossBatchMemory(xbm_per_class * info.num_classes * 2, proj_dim)
        n = info.num_train
        self.sample_labels = SampleLabels(n)
        if info.train_labels is not None:  # the loop gives every noisy label up front
            self.sample_labels.values = torch.as_tensor(info.train_labels, dtype=torch.long).clone()
        self.clean = torch.ones(n, dtype=torch.bool)
        self.agreement = torch.ones(n, dtype=torch.bool)
        self.d2 = torch.zeros(n)
        self.detected_epoch = -1
        self._clean_dev: torch.Tensor | None = None

    # --- pieces -----------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": params + list(self.projector.parameters())}]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised projection ``[B, proj_dim]`` (what the kNN and the ICL use)."""
        return F.normalize(self.projector(self.model.features(x)).float(), dim=1)

    def in_ssl_phase(self, epoch: int) -> bool:
        return epoch >= self.switch_epoch and self.detected_epoch >= 0

    # --- detection --------------------------------------------------------------------------
    def on_epoch_start(self, ctx: Context) -> None:
        if ctx.epoch < self.detect_start_epoch:
            return
        known = self.sample_labels.known
        if int(known.sum()) <= self.k:
            return  # e.g. right after a resume that lost nothing: labels come with the batches
        feats = ctx.predict_train(self.embed)  # the kNN runs where the features are
        self.detect(feats, ctx.epoch)

    @torch.no_grad()
    def detect(self, feats: torch.Tensor, epoch: int) -> None:
        """Run the kNN detection on ``feats [N, D]`` (all training samples, index order) and store
        the per-sample flags; samples whose label is unknown stay clean. ``feats`` may sit on
        any device (the neighbour search runs there); the flags are kept on the CPU."""
        known = self.sample_labels.known
        ids = known.nonzero().squeeze(1)
        labels = self.sample_labels.values[ids]
        det = moit_detect(
            feats[ids.to(feats.device)],
            labels,
            self.info.num_classes,
            k=self.k,
            selection=self.selection,
        )
        self.clean.fill_(True)
        self.agreement.fill_(True)
        self.d2.zero_()
        self.clean[ids] = torch.from_numpy(det.clean)
        self.agreement[ids] = det.vote.agreement
        self.d2[ids] = det.vote.d2.float()
        self.detected_epoch = epoch
        self._clean_dev = None

    def sample_scores(self) -> np.ndarray | None:
        if self.detected_epoch < 0:
            return None
        score = 0.5 * self.clean.double() + 0.5 * (1.0 - self.d2.double() / D_MAX).clamp(0, 1)
        return score.numpy()

    # --- training ---------------------------------------------------------------------------
    def _clean_on(self, device: torch.device) -> torch.Tensor:
        if self._clean_dev is None or self._clean_dev.device != device:
            self._clean_dev = self.clean.to(device)
        return self._clean_dev

    def training_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        (v1, v2), plain = split_views(batch, 2)
        self.sample_labels.update(batch)
        b, dev = len(batch), batch.labels.device
        y = batch.labels
        p1, lam1 = draw_mixup(b, self.alpha, ctx.generator)
        p2, lam2 = draw_mixup(b, self.alpha, ctx.generator)
        p1, p2 = p1.to(dev), p2.to(dev)
        # Three train-mode passes, as the official step: each mixed view on its own (BatchNorm
        # normalises each with its own statistics), then the plain image, whose statistics are
        # the last update of the running ones that evaluation and the kNN detection use.
        h = torch.cat(
            [
                self.model.features(lam1 * v1 + (1 - lam1) * v1[p1]),
                self.model.features(lam2 * v2 + (1 - lam2) * v2[p2]),
            ]
        )
        logits = self.model.head(h)
        z = F.normalize(self.projector(h).float(), dim=1)
        with torch.no_grad():
            prob = torch.softmax(self.model(plain).float(), dim=1)

        perm = torch.cat([p1, p2])
        lam = torch.cat([torch.full((b,), lam1), torch.full((b,), lam2)]).to(dev)
        use_memory = ctx.epoch >= self.xbm_start_epoch
        # The official memory holds the current batch at its write pointer; the entries it
        # overwrote are not keys. Here: the newest ``capacity - 2B`` older entries.
        mem_z, mem_y = (
            self.memory.recent(self.memory.capacity - 2 * b) if use_memory else (None, None)
        )
        icl = interpolated_supcon(
            z,
            y,
            y[perm],
            perm,
            lam,
            temperature=self.temperature,
            memory_z=mem_z,
            memory_labels=mem_y,
        )
        self.memory.enqueue(z.detach(), y.repeat(2))

        ya, yb = y.repeat(2), y[perm]
        out: dict[str, torch.Tensor] = {}
        if not self.in_ssl_phase(ctx.epoch):
            ce = mixup_ce(logits, ya, yb, lam)
        else:
            clean = self._clean_on(dev)
            a = clean[batch.idx].float()
            a_rows, a_partner = a.repeat(2), a[perm]
            labelled = (a_rows * mixup_ce(logits, ya, yb, lam, reduction="none")).mean()
            p_rows, p_partner = prob.repeat(2, 1), prob[perm]
            unl_a = lam * (1 - a_rows) * soft_target_ce(logits, p_rows, reduction="none")
            unl_b = (
                (1 - lam) * (1 - a_partner) * soft_target_ce(logits, p_partner, reduction="none")
            )
            ce = labelled + unl_a.mean() + unl_b.mean()
            out["labelled_loss"] = labelled.detach()
            out["clean_fraction_batch"] = a.mean()
        with torch.no_grad():
            acc = (logits[:b].argmax(1) == y).float().mean()
        out.update(
            loss=icl + ce,
            icl_loss=icl.detach(),
            ce_loss=ce.detach(),
            train_accuracy_noisy=acc,
        )
        if self.detected_epoch >= 0:
            out["clean_fraction"] = self.clean.float().mean()
        return out

    # --- checkpoint -------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {
            "labels": self.sample_labels.values.clone(),
            "clean": self.clean.clone(),
            "agreement": self.agreement.clone(),
            "d2": self.d2.clone(),
            "detected_epoch": self.detected_epoch,
            "k": self.k,
            "memory": self.memory.state(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        n = self.info.num_train
        if tuple(state["clean"].shape) != (n,):
            raise ValueError(
                f"moit: saved state is for {tuple(state['clean'].shape)[0]} samples, this run "
                f"trains on {n}"
            )
        self.sample_labels.values = state["labels"].cpu().long()
        self.clean = state["clean"].cpu().bool()
        self.agreement = state["agreement"].cpu().bool()
        self.d2 = state["d2"].cpu().float()
        self.detected_epoch = int(state["detected_epoch"])
        self.memory.load(state["memory"])
        self._clean_dev = None
