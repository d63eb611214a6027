"""Backbone contract: ``features(x) -> [B, D]``, a linear ``head``; forward = head(features)."""

from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """Base class of every registered model.

    Subclasses build their layers, set ``feature_dim`` and call ``self.reset_head(num_classes)``.
    Contrastive heads, linear probes and kNN detectors use ``features``.
    """

    feature_dim: int
    head: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:  # [B, ...] -> [B, D]
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, ...] -> [B, K]
        return self.head(self.features(x))

    def reset_head(self, num_classes: int) -> None:
        """A fresh linear classifier on the features (used by fine-tuning and MOIT+)."""
        self.head = nn.Linear(self.feature_dim, num_classes)
