"""Mixup of a batch with one λ per batch (Zhang et al., ICLR 2018, arXiv 1710.09412), as the L2B
code's ``--mixup`` applies it before its meta step (docs/methods.md, L2B)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .lookahead import at_least_float32


def mixup_batch(
    x: Tensor, labels: Tensor, num_classes: int, alpha: float, generator: torch.Generator
) -> tuple[Tensor, Tensor, float]:
    """``(λ·x + (1 − λ)·x[perm], λ·onehot(y) + (1 − λ)·onehot(y[perm]), λ)``, ``λ ~ Beta(α, α)``
    and ``perm`` a permutation of the batch, both from ``generator``: the L2B code's ``--mixup``
    (α = 32, so λ stays near 0.5; one λ per batch). ``x [B, ...]``, ``labels [B]``; the soft
    targets ``[B, K]`` make the observed-label loss ``λ·CE(y) + (1 − λ)·CE(y[perm])``."""
    perm = torch.randperm(len(labels), generator=generator).to(labels.device)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    onehot = F.one_hot(labels.long(), num_classes).to(at_least_float32(x).dtype)
    mixed = lam * x + (1.0 - lam) * x[perm.to(x.device)]
    return mixed, lam * onehot + (1.0 - lam) * onehot[perm], lam
