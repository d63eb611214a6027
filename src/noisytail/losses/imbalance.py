"""Class-imbalance losses: class-balanced weighting, LDAM(-DRW), logit adjustment, balanced softmax.

Each loss takes the training-set class counts as ``class_counts`` ([K] tensor or sequence; counts
of the labels the model trains on). A class with no samples is counted as one, so that logs and
effective numbers stay finite. ``build_loss`` injects ``class_counts`` from the task.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import LOSSES
from .classification import _focal_terms, _label_log_prob, _prepare, _reduce
from .classification import cross_entropy as _cross_entropy
from .robust import generalized_ce as _generalized_ce

Counts = Tensor | Sequence[int] | Sequence[float]


def as_class_counts(class_counts: Counts, num_classes: int | None = None) -> Tensor:
    """Validate counts and return them as a float tensor [K] (on the input's device if a tensor)."""
    counts = torch.as_tensor(class_counts)
    if counts.ndim != 1 or counts.numel() == 0:
        raise ValueError(f"class_counts must be a non-empty [K] vector, got {tuple(counts.shape)}.")
    if num_classes is not None and counts.numel() != num_classes:
        raise ValueError(f"class_counts has {counts.numel()} entries for {num_classes} classes.")
    counts = counts.to(torch.float64 if counts.dtype == torch.float64 else torch.float32)
    if not torch.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("class_counts must be finite and non-negative.")
    return counts


def _counts_like(class_counts: Counts, logits: Tensor) -> Tensor:
    """Counts on the logits' device and dtype, zeros counted as one (no host sync)."""
    counts = torch.as_tensor(class_counts, device=logits.device, dtype=logits.dtype)
    if counts.shape != (logits.shape[1],):
        raise ValueError(
            f"class_counts must be [K] with K={logits.shape[1]}, got {tuple(counts.shape)}."
        )
    return counts.clamp_min(1.0)


def _log_prior(class_counts: Counts, logits: Tensor) -> Tensor:
    counts = _counts_like(class_counts, logits)
    return counts.log() - counts.sum().log()


def class_balanced_weights(class_counts: Counts, beta: float = 0.9999) -> Tensor:
    """Per-class weights ``(1 - β) / (1 - β^{n_c})`` scaled to sum to K (Cui et al. 2019,
    "Class-Balanced Loss Based on Effective Number of Samples": the effective number
    ``E_n = (1 - β^n) / (1 - β)``; the weight is ``1 / E_n``, normalised so Σ_c w_c = K).

    ``β = 0`` gives all ones; ``β -> 1`` approaches inverse frequency, and ``β = 1`` is taken as
    that limit. Returns float32 [K] on the counts' device.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}.")
    counts = torch.as_tensor(class_counts).to(torch.float64).clamp_min(1.0)
    if counts.ndim != 1:
        raise ValueError(f"class_counts must be [K], got shape {tuple(counts.shape)}.")
    # effective number E_n = (1 - β^n) / (1 - β); its limit at β = 1 is n
    effective = counts if beta == 1.0 else (1.0 - torch.pow(beta, counts)) / (1.0 - beta)
    weights = 1.0 / effective
    weights = weights / weights.sum() * counts.numel()
    return weights.float()


def drw_class_weights(
    class_counts: Counts, *, epoch: int, start_epoch: int, beta: float = 0.9999
) -> Tensor:
    """Deferred re-weighting (Cao et al. 2019, LDAM paper, Alg. 1 "DRW"): all ones before
    ``start_epoch``, class-balanced weights (``class_balanced_weights(β)``) from then on.

    ``epoch`` is 0-based (as ``Context.epoch``); the paper's CIFAR schedule is 200 epochs with
    ``start_epoch = 160``. Pass the result as ``class_weight=`` to a loss.
    """
    counts = torch.as_tensor(class_counts)
    if epoch < start_epoch:
        return torch.ones(counts.numel(), dtype=torch.float32, device=counts.device)
    return class_balanced_weights(counts, beta)


@LOSSES.register("cb_ce")
def class_balanced_ce(
    logits: Tensor,
    labels: Tensor,
    *,
    class_counts: Counts,
    reduction: str = "mean",
    beta: float = 0.9999,
) -> Tensor:
    """Class-balanced softmax cross-entropy (Cui et al. 2019): CE weighted by
    ``class_balanced_weights(class_counts, β)``. The paper tunes β per data set
    (β ∈ {0.9, 0.99, 0.999, 0.9999}).

    ``"mean"`` divides by the sum of the batch's weights (as ``F.cross_entropy(weight=...)``, the
    "CB re-weighting" baseline of the LDAM code); Cui et al. divide by the batch size instead, a
    per-batch scale factor.
    """
    weights = class_balanced_weights(class_counts, beta).to(logits.device)
    return _cross_entropy(logits, labels, reduction=reduction, class_weight=weights)


@LOSSES.register("cb_focal")
def class_balanced_focal(
    logits: Tensor,
    labels: Tensor,
    *,
    class_counts: Counts,
    reduction: str = "mean",
    beta: float = 0.9999,
    gamma: float = 2.0,
    sigmoid: bool = False,
) -> Tensor:
    """Class-balanced focal loss (Cui et al. 2019): the focal loss weighted by
    ``class_balanced_weights(class_counts, β)``.

    ``sigmoid=False``: the softmax focal loss of ``focal``. ``sigmoid=True``: the paper's CB-focal,
    one sigmoid per class, ``-Σ_i (1 - p_i^t)^γ log p_i^t`` with ``p_i^t = σ(z_i)`` for the label
    and ``σ(-z_i)`` for the others (the paper also initialises the last bias to ``-log(1/π - 1)``,
    π = 0.1, which is the model's business). The paper tunes β and γ per data set.

    ``"mean"`` divides by the sum of the batch's weights, as `class_balanced_ce` does; Cui et al.
    divide by the batch size instead, a per-batch scale factor.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}.")
    logits, labels = _prepare(logits, labels, reduction)
    weights = class_balanced_weights(class_counts, beta).to(logits.device)
    if sigmoid:
        sign = 2.0 * F.one_hot(labels, logits.shape[1]).to(logits.dtype) - 1.0
        loss = _focal_terms(F.logsigmoid(sign * logits), gamma).sum(dim=1)
    else:
        _, log_py = _label_log_prob(logits, labels)
        loss = _focal_terms(log_py, gamma)
    return _reduce(loss, reduction, labels, weights)


def ldam_margins(class_counts: Counts, max_margin: float = 0.5) -> Tensor:
    """LDAM margins ``Δ_c = C / n_c^{1/4}`` with C chosen so that ``max_c Δ_c = max_margin``
    (Cao et al. 2019). Returns float32 [K]."""
    counts = torch.as_tensor(class_counts).to(torch.float64).clamp_min(1.0)
    margins = counts.pow(-0.25)
    return (margins * (max_margin / margins.max())).float()


@LOSSES.register("ldam")
def ldam(
    logits: Tensor,
    labels: Tensor,
    *,
    class_counts: Counts,
    reduction: str = "mean",
    max_margin: float = 0.5,
    scale: float = 30.0,
    class_weight: Tensor | None = None,
) -> Tensor:
    """Label-distribution-aware margin loss (Cao et al. 2019, "Learning Imbalanced Datasets with
    Label-Distribution-Aware Margin Loss"): CE on ``s·(z - Δ_y·onehot(y))``, i.e.
    ``-log e^{s(z_y - Δ_y)} / (e^{s(z_y - Δ_y)} + Σ_{j≠y} e^{s z_j})``, margins from
    ``ldam_margins``.

    The paper's model normalises the last features and weights, so ``z`` are cosines in [-1, 1]
    and ``scale = 30`` sets the temperature (see ``cosine_logits``). With an ordinary linear head
    use ``scale=1`` or a small value. LDAM-DRW is this loss with
    ``class_weight=drw_class_weights(...)``.
    """
    logits, labels = _prepare(logits, labels, reduction)
    margins = ldam_margins(_counts_like(class_counts, logits), max_margin).to(logits)
    shifted = logits - F.one_hot(labels, logits.shape[1]).to(logits.dtype) * margins[labels, None]
    loss = F.cross_entropy(scale * shifted, labels, reduction="none")
    return _reduce(loss, reduction, labels, class_weight)


def cosine_logits(features: Tensor, weight: Tensor) -> Tensor:
    """``normalize(features) @ normalize(weight).T``: the normalised classifier LDAM assumes
    (``features`` [B, D], ``weight`` [K, D], e.g. ``model.head.weight``). Not a loss."""
    return F.normalize(features, dim=1) @ F.normalize(weight, dim=1).t()


@LOSSES.register("logit_adjustment")
def logit_adjusted_ce(
    logits: Tensor,
    labels: Tensor,
    *,
    class_counts: Counts,
    reduction: str = "mean",
    tau: float = 1.0,
    class_weight: Tensor | None = None,
) -> Tensor:
    """Logit-adjusted softmax cross-entropy (Menon et al. 2021, "Long-tail learning via logit
    adjustment"): ``-log e^{z_y + τ log π_y} / Σ_k e^{z_k + τ log π_k}`` with the training prior
    ``π = n / Σ n``. Predict with the plain logits ``z``.
    """
    logits, labels = _prepare(logits, labels, reduction)
    adjusted = logits + tau * _log_prior(class_counts, logits)
    return _cross_entropy(adjusted, labels, reduction=reduction, class_weight=class_weight)


@LOSSES.register("balanced_softmax")
def balanced_softmax(
    logits: Tensor,
    labels: Tensor,
    *,
    class_counts: Counts,
    reduction: str = "mean",
    class_weight: Tensor | None = None,
) -> Tensor:
    """Balanced softmax (Ren et al. 2020, "Balanced Meta-Softmax for Long-Tailed Visual
    Recognition"): CE with ``p_y = n_y e^{z_y} / Σ_k n_k e^{z_k}``, i.e. CE on ``z + log n``.
    Equal to ``logit_adjusted_ce`` with τ = 1 (the prior's normaliser cancels).
    """
    logits, labels = _prepare(logits, labels, reduction)
    adjusted = logits + _counts_like(class_counts, logits).log()
    return _cross_entropy(adjusted, labels, reduction=reduction, class_weight=class_weight)


@LOSSES.register("la_gce")
def logit_adjusted_gce(
    logits: Tensor,
    labels: Tensor,
    *,
    class_counts: Counts,
    reduction: str = "mean",
    tau: float = 1.0,
    q: float = 0.7,
    class_weight: Tensor | None = None,
) -> Tensor:
    """Generalized cross-entropy (``generalized_ce``, q) on prior-adjusted logits
    ``z + τ log π`` (Menon et al.'s adjustment): one loss for imbalance and noise together.

    This combination is ours (noisytail), not a published loss: a candidate for the fine-tuning
    loss of "Learning From Long-Tailed Data With Noisy Labels" (Karthik et al. 2021), whose
    exact choice is not known here. The weighted sum of separate terms is ``build_loss``'s "sum".
    """
    logits, labels = _prepare(logits, labels, reduction)
    adjusted = logits + tau * _log_prior(class_counts, logits)
    return _generalized_ce(adjusted, labels, reduction=reduction, q=q, class_weight=class_weight)
