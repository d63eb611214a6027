"""Noise-robust losses: generalized cross-entropy, symmetric cross-entropy, bootstrapping.

Same convention as ``classification.py``: ``(logits [B, K], labels [B], *, reduction="mean",
...)``; ``class_weight`` [K] weights each sample by its label's weight.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..registry import LOSSES
from .classification import _label_log_prob, _prepare, _reduce


@LOSSES.register("gce")
def generalized_ce(
    logits: Tensor,
    labels: Tensor,
    *,
    reduction: str = "mean",
    q: float = 0.7,
    class_weight: Tensor | None = None,
) -> Tensor:
    """Generalized cross-entropy ``L_q = (1 - p_y^q) / q`` (Zhang & Sabuncu 2018, "Generalized
    Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels", NeurIPS, the L_q
    loss: the negative Box-Cox transform of p_y).

    ``q -> 0`` gives cross-entropy, ``q = 1`` the MAE-like ``1 - p_y``; the paper uses q = 0.7.
    The truncated variant (L_q with a threshold k and per-sample pruning) is not implemented.
    """
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q must be in (0, 1], got {q}.")
    logits, labels = _prepare(logits, labels, reduction)
    _, log_py = _label_log_prob(logits, labels)
    loss = -(q * log_py).expm1() / q  # (1 - exp(q log p_y)) / q, accurate for small q
    return _reduce(loss, reduction, labels, class_weight)


@LOSSES.register("sce")
def symmetric_ce(
    logits: Tensor,
    labels: Tensor,
    *,
    reduction: str = "mean",
    alpha: float = 0.1,
    beta: float = 1.0,
    log_zero: float = -4.0,
    class_weight: Tensor | None = None,
) -> Tensor:
    """Symmetric cross-entropy ``α·CE + β·RCE`` (Wang et al. 2019, "Symmetric Cross Entropy for
    Robust Learning with Noisy Labels", ℓ_sl = α ℓ_ce + β ℓ_rce).

    The reverse cross-entropy ``RCE = -Σ_k p_k log q_k`` swaps prediction ``p`` and the one-hot
    label ``q``, with ``log 0`` replaced by the constant ``A = log_zero``; it reduces to
    ``-A·(1 - p_y)``. Defaults are the paper's CIFAR-10 setting (α = 0.1, β = 1.0, A = -4); for
    CIFAR-100 the paper uses α = 6.0, β = 0.1. Note: the widely used code (the authors' release
    and its descendants) clamps the one-hot label at 1e-4 and takes a natural log, i.e.
    A = ln(1e-4) ≈ -9.21; pass ``log_zero=math.log(1e-4)`` to match it.
    """
    if log_zero >= 0:
        raise ValueError(f"log_zero (A) must be negative, got {log_zero}.")
    logits, labels = _prepare(logits, labels, reduction)
    _, log_py = _label_log_prob(logits, labels)
    rce = -log_zero * (1.0 - log_py.exp())
    loss = alpha * -log_py + beta * rce
    return _reduce(loss, reduction, labels, class_weight)


@LOSSES.register("bootstrap_soft")
def bootstrap_soft(
    logits: Tensor,
    labels: Tensor,
    *,
    reduction: str = "mean",
    beta: float = 0.95,
    detach: bool = True,
    class_weight: Tensor | None = None,
) -> Tensor:
    """Soft bootstrapping: CE against ``β·onehot(y) + (1 - β)·p`` with ``p = softmax(logits)``
    (Reed et al. 2015, "Training Deep Neural Networks on Noisy Labels with Bootstrapping",
    L_soft = -Σ_k [β t_k + (1 - β) q_k] log q_k; β = 0.95 in the paper).

    With ``detach=True`` (the default) ``p`` in the target is a constant, so the target is a
    self-distillation label and only ``log p`` carries gradient. ``detach=False`` differentiates
    through the target as well, which is the paper's objective read literally (CE plus a
    (1 - β)-weighted entropy term, the "minimum entropy regularisation" view the paper gives).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}.")
    logits, labels = _prepare(logits, labels, reduction)
    log_p, log_py = _label_log_prob(logits, labels)
    p = log_p.exp()
    if detach:
        p = p.detach()
    loss = beta * -log_py - (1.0 - beta) * (p * log_p).sum(dim=1)
    return _reduce(loss, reduction, labels, class_weight)


@LOSSES.register("bootstrap_hard")
def bootstrap_hard(
    logits: Tensor,
    labels: Tensor,
    *,
    reduction: str = "mean",
    beta: float = 0.8,
    class_weight: Tensor | None = None,
) -> Tensor:
    """Hard bootstrapping: ``β·CE(y) + (1 - β)·CE(argmax p)`` (Reed et al. 2015,
    L_hard = -Σ_k [β t_k + (1 - β) z_k] log q_k with z the one-hot of the predicted class;
    β = 0.8 in the paper).

    The argmax comes from the same logits. MOIT+'s "β = 0.2" weights the *predicted* label, so it
    is ``beta=0.8`` here; MOIT+ takes the argmax on the un-augmented view, which a method does by
    combining two ``cross_entropy`` calls.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}.")
    logits, labels = _prepare(logits, labels, reduction)
    pred = logits.detach().argmax(dim=1)
    loss = beta * F.cross_entropy(logits, labels, reduction="none") + (
        1.0 - beta
    ) * F.cross_entropy(logits, pred, reduction="none")
    return _reduce(loss, reduction, labels, class_weight)
