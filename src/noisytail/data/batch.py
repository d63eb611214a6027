"""`Batch`: what the loaders (`noisytail.data.loader`) yield and a method's ``training_step`` takes.

It lives in the data layer, which builds it; ``noisytail.methods.base`` re-exports it with the rest
of the method interface (`Method`, `Context`, `TaskInfo`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """One training batch. ``x``: ``[B, ...]`` or a tuple of views; ``labels``, ``idx``: ``[B]``.

    ``labels`` are the (possibly noisy) training labels and ``idx`` the samples' indices into the
    training pool, so that a method can keep per-sample state; true labels never travel here.
    """

    x: torch.Tensor | tuple[torch.Tensor, ...]
    labels: torch.Tensor
    idx: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])
