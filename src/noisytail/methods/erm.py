"""Empirical risk minimisation with any registered loss.

Covers plain cross-entropy, the robust losses (GCE, SCE, bootstrapping) and the imbalance losses
(class-balanced, LDAM, logit adjustment, balanced softmax), which receive the training-label class
counts. ``drw_epoch`` turns on deferred re-weighting (Cao et al. 2019, arXiv 1906.07413, Sec. 3.3):
class-balanced weights (Cui et al. 2019) from that epoch on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..losses import build_loss, drw_class_weights
from ..models.base import Backbone
from ..registry import METHODS
from .base import Batch, Context, Method, TaskInfo


@METHODS.register("erm")
class ERM(Method):
    """Minimise ``loss(model(x), labels)`` on the (noisy) training labels."""

    def __init__(
        self,
        model: Backbone,
        info: TaskInfo,
        *,
        loss: str | Mapping[str, Any] = "ce",
        drw_epoch: int | None = None,
        drw_beta: float = 0.9999,
    ) -> None:
        super().__init__(model, info)
        self.loss_spec = loss
        self.loss_fn = build_loss(loss, class_counts=info.class_counts)
        self.drw_epoch = drw_epoch
        self.drw_beta = drw_beta

    def training_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        logits = self.model(batch.x)
        if self.drw_epoch is None:
            loss = self.loss_fn(logits, batch.labels)
        else:
            weight = drw_class_weights(
                self.info.class_counts,
                epoch=ctx.epoch,
                start_epoch=self.drw_epoch,
                beta=self.drw_beta,
            ).to(logits.device)
            loss = self.loss_fn(logits, batch.labels, class_weight=weight)
        with torch.no_grad():
            acc = (logits.argmax(1) == batch.labels).float().mean()
        return {"loss": loss, "train_accuracy_noisy": acc}
