"""Plain classification losses: cross-entropy, label smoothing, focal, soft targets, mixup.

Every loss is a pure function ``(logits [B, K], labels [B] int64, *, reduction="mean", ...)``
returning a scalar (``"mean"``, ``"sum"``) or a ``[B]`` tensor (``"none"``). Half-precision logits
are computed in float32.

Per-class weights (``class_weight`` [K], e.g. the DRW schedule) scale each sample's loss by the
weight of its label; ``"none"`` returns the weighted per-sample losses, ``"sum"`` their sum and
``"mean"`` their sum divided by the sum of the weights of the batch's labels. That is the
convention of ``torch.nn.functional.cross_entropy(weight=...)`` and of the LDAM-DRW code, so the
loss scale does not depend on which classes a batch happens to hold. Without ``class_weight``,
``"mean"`` is simply the batch mean of ``"none"``.

The private helpers here (``_prepare``, ``_reduce``) are shared by ``robust.py`` and
``imbalance.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import LOSSES

REDUCTIONS = ("mean", "sum", "none")


def _prepare(logits: Tensor, labels: Tensor, reduction: str) -> tuple[Tensor, Tensor]:
    """Check shapes and the reduction; return float logits (float32 for half) and int64 labels."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, K], got shape {tuple(logits.shape)}.")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must be [B] with B={logits.shape[0]}, got shape {tuple(labels.shape)}."
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}.")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits, labels.long()


def _reduce(
    loss: Tensor, reduction: str, labels: Tensor, class_weight: Tensor | None = None
) -> Tensor:
    """Reduce per-sample ``loss`` [B], weighting sample i by ``class_weight[labels[i]]``."""
    if class_weight is not None:
        class_weight = torch.as_tensor(class_weight, dtype=loss.dtype, device=loss.device)
        if class_weight.ndim != 1:
            raise ValueError(f"class_weight must be [K], got shape {tuple(class_weight.shape)}.")
        w = class_weight[labels]
        loss = loss * w
        if reduction == "mean":
            return loss.sum() / w.sum().clamp_min(torch.finfo(loss.dtype).tiny)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _label_log_prob(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(log_softmax [B, K], log p_y [B])``."""
    log_p = F.log_softmax(logits, dim=1)
    return log_p, log_p.gather(1, labels[:, None]).squeeze(1)


@LOSSES.register("ce")
def cross_entropy(
    logits: Tensor,
    labels: Tensor,
    *,
    reduction: str = "mean",
    class_weight: Tensor | None = None,
) -> Tensor:
    """Softmax cross-entropy ``-log p_y``, ``p = softmax(logits)``."""
    logits, labels = _prepare(logits, labels, reduction)
    loss = F.cross_entropy(logits, labels, reduction="none")
    return _reduce(loss, reduction, labels, class_weight)


@LOSSES.register("label_smoothing")
def label_smoothing_ce(
    logits: Tensor,
    labels: Tensor,
    *,
    reduction: str = "mean",
    smoothing: float = 0.1,
    class_weight: Tensor | None = None,
) -> Tensor:
    """Cross-entropy against ``(1 - ε)·onehot(y) + ε/K`` (Szegedy et al. 2016, "Rethinking the
    Inception Architecture", Sec. 7), ``ε = smoothing``.

    Per sample: ``(1 - ε)·(-log p_y) + ε·mean_k(-log p_k)``, as
    ``F.cross_entropy(label_smoothing=ε)`` computes it. ``class_weight`` weights the sample by its
    label's weight (torch instead weights every smoothing term by its own class; the two agree
    without weights).
    """
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}.")
    logits, labels = _prepare(logits, labels, reduction)
    log_p, log_py = _label_log_prob(logits, labels)
    loss = -(1.0 - smoothing) * log_py - smoothing * log_p.mean(dim=1)
    return _reduce(loss, reduction, labels, class_weight)


def _focal_terms(log_p_true: Tensor, gamma: float) -> Tensor:
    """``-(1 - p)^γ · log p`` for the log-probabilities of the true (target) events."""
    if gamma == 0:
        return -log_p_true
    return -((-log_p_true.exp()).add(1.0).clamp_min(0.0) ** gamma) * log_p_true


@LOSSES.register("focal")
def focal(
    logits: Tensor,
    labels: Tensor,
    *,
    reduction: str = "mean",
    gamma: float = 2.0,
    class_weight: Tensor | None = None,
) -> Tensor:
    """Focal loss ``-(1 - p_y)^γ · log p_y`` (Lin et al. 2017, "Focal Loss for Dense Object
    Detection", Eq. 4) on softmax probabilities ``p`` (the paper's detector uses per-class
    sigmoids; the softmax form is the usual one for classification). ``γ = 0`` gives
    cross-entropy. The α-balancing of Eq. 5 is ``class_weight``.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}.")
    logits, labels = _prepare(logits, labels, reduction)
    _, log_py = _label_log_prob(logits, labels)
    return _reduce(_focal_terms(log_py, gamma), reduction, labels, class_weight)


def soft_target_ce(logits: Tensor, targets: Tensor, *, reduction: str = "mean") -> Tensor:
    """Cross-entropy against a target distribution: ``-Σ_k t_k · log p_k``.

    ``targets`` are ``[B, K]`` probabilities (soft pseudo-labels, mixed one-hots, ...). Not
    registered: a building block for methods.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
    if logits.ndim != 2 or targets.shape != logits.shape:
        raise ValueError(
            f"logits and targets must both be [B, K], got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}."
        )
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    loss = -(targets.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(dim=1)
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def mixup_ce(
    logits: Tensor,
    labels_a: Tensor,
    labels_b: Tensor,
    lam: float | Tensor,
    *,
    reduction: str = "mean",
) -> Tensor:
    """Mixup cross-entropy ``λ·CE(y_a) + (1 - λ)·CE(y_b)`` (Zhang et al. 2018, "mixup", Eq. 1
    applied to the loss, which is linear in the one-hot target).

    ``lam`` is a float or a ``[B]`` tensor (one λ per sample). How λ is drawn (e.g. MOIT's dominant
    ``max(λ, 1 - λ)``) is the caller's business. Not registered: a building block for methods.
    """
    logits, labels_a = _prepare(logits, labels_a, reduction)
    _, labels_b = _prepare(logits, labels_b, reduction)
    if isinstance(lam, Tensor):
        lam = lam.to(device=logits.device, dtype=logits.dtype)
    ce_a = F.cross_entropy(logits, labels_a, reduction="none")
    ce_b = F.cross_entropy(logits, labels_b, reduction="none")
    loss = lam * ce_a + (1.0 - lam) * ce_b
    return _reduce(loss, reduction, labels_a)
