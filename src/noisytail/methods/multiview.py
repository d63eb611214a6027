"""NT-Xent generalised to k > 2 views per image: every other view of the same image is a
positive, every view of another image a negative (the multi-positive InfoNCE of
`noisytail.losses.contrastive.info_nce` with ids = sample index; at k = 2 it is SimCLR's loss).

The loop asks ``MultiView.views_for(cfg.method.args)`` before it builds the method, so its loader
makes exactly ``num_views`` augmented views per image (default ``views`` = 4). A batch with fewer
views (a caller that builds its own) fails with a clear error; extra views are ignored.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..models.base import Backbone
from ..registry import METHODS
from .base import Batch, TaskInfo
from .simclr import SimCLR


@METHODS.register("multiview")
class MultiView(SimCLR):
    """k-view contrastive learning (default k = 4): multi-positive NT-Xent over all views, same
    projection head and online linear probe as SimCLR."""

    views: ClassVar[int] = 4

    def __init__(
        self,
        model: Backbone,
        info: TaskInfo,
        *,
        num_views: int = 4,
        temperature: float = 0.5,
        proj_dim: int = 128,
        proj_hidden: int | None = None,
        probe_lr_scale: float = 1.0,
        knn_every: int = 0,
        knn_k: int = 200,
        knn_t: float = 0.1,
    ) -> None:
        super().__init__(
            model,
            info,
            temperature=temperature,
            proj_dim=proj_dim,
            proj_hidden=proj_hidden,
            probe_lr_scale=probe_lr_scale,
            knn_every=knn_every,
            knn_k=knn_k,
            knn_t=knn_t,
        )
        if num_views < 2:
            raise ValueError(f"multiview: num_views must be at least 2, got {num_views}.")
        self.num_views = num_views

    @classmethod
    def views_for(cls, args: dict[str, Any]) -> int:
        """How many views a run with method ``args`` needs (the loop's loader makes that many)."""
        return int(args.get("num_views", cls.views))

    def _views(self, batch: Batch) -> list[torch.Tensor]:
        if isinstance(batch.x, torch.Tensor) or len(batch.x) < self.num_views:
            got = 1 if isinstance(batch.x, torch.Tensor) else len(batch.x)
            raise ValueError(
                f"multiview: num_views={self.num_views} but the batch holds {got} views; the "
                "loop's loader makes MultiView.views_for(method args) views."
            )
        return list(batch.x[: self.num_views])
