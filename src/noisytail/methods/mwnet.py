"""MW-Net: "Meta-Weight-Net: Learning an Explicit Mapping for Sample Weighting" (Shu et al.,
NeurIPS 2019, arXiv 1902.07379).

A weighting network ``V(ℓ; Θ)`` (an MLP 1-100-1, ReLU, sigmoid output) maps each sample's
training loss to its weight. Each iteration (Algorithm 1):

1. virtual step ``θ'(Θ) = θ − η_t ∇_θ (1/B) Σ_i V(ℓ_i; Θ) ℓ_i(θ)``              (Eq. 4; plain SGD
   at the current learning rate ``η_t``, as the official code and GDW's MW-Net mode);
2. ``Θ ← Adam step on L_meta(θ'(Θ))``, the mean clean CE of the virtual model         (Eq. 5;
   Adam, lr 1e-3, weight decay 1e-4, GDW's setting; the original MW-Net code used SGD 1e-3);
3. real step on ``(1/B) Σ_i V(ℓ_i; Θ_new) ℓ_i(θ)`` with the weights re-computed by the updated
   network and detached                                                                  (Eq. 6).

The loss fed to ``V`` is detached (as in the official code). The real step reuses the forward
pass of step 1 (same parameters, same batch) instead of a second forward. The Adam state of the
weighting network is in ``extra_state()`` for resume.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.base import Backbone
from ..registry import METHODS
from .base import Batch, Context, Method, TaskInfo
from .lookahead import at_least_float32, head_parameters, lookahead_meta_loss, trainable_parameters


class VNet(nn.Module):
    """The MW-Net weighting network: ``loss [B] -> weight [B]`` in (0, 1), 1-hidden-1 MLP."""

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.fc1 = nn.Linear(1, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, loss: Tensor) -> Tensor:
        h = torch.relu(self.fc1(loss.to(self.fc1.weight.dtype).reshape(-1, 1)))
        return torch.sigmoid(self.fc2(h)).reshape(-1)


class VNetReweighting(Method):
    """Shared machinery of MW-Net and GDW: the weighting network, its optimizer, the look-ahead."""

    needs_meta = True

    def __init__(
        self,
        model: Backbone,
        info: TaskInfo,
        *,
        hidden: int = 100,
        vnet_lr: float = 1e-3,
        vnet_weight_decay: float = 1e-4,
        lookahead: str = "all",
    ) -> None:
        super().__init__(model, info)
        if lookahead not in ("all", "head"):
            raise ValueError(f"lookahead must be 'all' or 'head', got {lookahead!r}.")
        self.vnet = VNet(hidden)
        self.vnet_optimizer = torch.optim.Adam(
            self.vnet.parameters(), lr=vnet_lr, weight_decay=vnet_weight_decay
        )
        self.lookahead = lookahead
        self.register_buffer("sample_weight", torch.full((info.num_train,), float("nan")))

    def _params(self) -> dict[str, Tensor]:
        if self.lookahead == "head":
            return head_parameters(self.model)
        return trainable_parameters(self.model)

    def _vnet_update(self, meta_loss: Tensor, extra: list[Tensor] = ()) -> list[Tensor]:
        """Adam step of the weighting network on ``meta_loss``; returns the grads of ``extra``.

        The gradients are set, used and cleared here, so they never reach the loop's gradient
        clipping or optimizer.
        """
        vparams = list(self.vnet.parameters())
        grads = torch.autograd.grad(meta_loss, vparams + list(extra), allow_unused=True)
        for p, g in zip(vparams, grads[: len(vparams)]):
            p.grad = None if g is None else g.detach().to(p.dtype)
        self.vnet_optimizer.step()
        for p in vparams:
            p.grad = None
        return list(grads[len(vparams) :])

    def extra_state(self) -> dict[str, Any]:
        return {"vnet_optimizer": self.vnet_optimizer.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "vnet_optimizer" in state:
            self.vnet_optimizer.load_state_dict(state["vnet_optimizer"])

    def sample_scores(self) -> np.ndarray | None:
        s = self.sample_weight.detach().cpu().numpy()
        return None if np.isnan(s).all() else np.nan_to_num(s, nan=float(np.nanmean(s)))


@METHODS.register("mwnet")
class MWNet(VNetReweighting):
    """MW-Net (Shu et al., arXiv 1902.07379): a 1-100-1 MLP maps each sample's CE loss to its
    weight and is trained on the clean meta loss of a one-step look-ahead (Eq. 4-6)."""

    def training_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        logits = self.model(batch.x)
        losses = F.cross_entropy(at_least_float32(logits), batch.labels, reduction="none")
        w = self.vnet(losses.detach())
        meta = ctx.meta_batch()
        meta_loss = lookahead_meta_loss(
            self.model,
            (w * losses).mean(),
            meta.x,
            meta.labels,
            lr=ctx.lr,
            params=self._params(),
        )
        self._vnet_update(meta_loss)
        with torch.no_grad():
            w_new = self.vnet(losses.detach())
            self.sample_weight[batch.idx] = w_new
            acc = (logits.argmax(1) == batch.labels).float().mean()
        return {
            "loss": (w_new * losses).mean(),
            "train_accuracy_noisy": acc,
            "meta_loss": meta_loss.detach(),
            "mean_weight": w_new.mean(),
        }
