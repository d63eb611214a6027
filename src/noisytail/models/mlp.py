"""A multi-layer perceptron for feature-vector inputs (tabular data, pre-computed embeddings)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..registry import MODELS
from .base import Backbone


@MODELS.register("mlp")
class MLP(Backbone):
    """Linear-ReLU(-Dropout) layers of widths ``hidden``; the features are the last hidden layer.

    Inputs of any shape are flattened (``input_shape`` (D,) is the usual case). ``hidden=()``
    gives a linear model on the raw inputs.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        input_shape: tuple[int, ...],
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not input_shape or min(input_shape) < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"mlp: bad input_shape={input_shape} or hidden={hidden}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"mlp: dropout must be in [0, 1), got {dropout}.")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.feature_dim = width
        self.reset_head(num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
