"""MW-Net: "Meta-Weight-Net: Learning an Explicit Mapping for Sample Weighting" (Shu et al.,
NeurIPS 2019, arXiv 1902.07379).

A weighting network ``V(ℓ; Θ)`` (an MLP 1-100-1, ReLU, sigmoid output) maps each sample's
training loss to its weight. Each iteration (Algorithm 1):

1. virtual step ``θ'(Θ) = θ − η_t ∇_θ (1/B) Σ_i V(ℓ_i; Θ) ℓ_i(θ)``              (Eq. 4; plain SGD
   at the current learning rate ``η_t``, as the official code and GDW's MW-Net mode; each
   parameter at its own optimizer group's rate, parameters frozen by the loop left out);
2. ``Θ ← Adam step on L_meta(θ'(Θ))``, the mean clean CE of the virtual model         (Eq. 5;
   Adam, lr 1e-3, weight decay 1e-4: the official code's ``MW-Net.py``, its stable version, and
   GDW's code. The repository's earlier ``train_WRN-28-10_Meta_PGC.py`` used SGD, lr 1e-3,
   momentum 0.9, Nesterov, weight decay 5e-4 instead);
3. real step on ``(1/B) Σ_i V(ℓ_i; Θ_new) ℓ_i(θ)`` with the weights re-computed by the updated
   network and detached                                                                  (Eq. 6).

The loss fed to ``V`` is detached (as in the official code). The real step reuses the forward
pass of step 1 (same parameters, same batch) instead of a second forward. By default
(``meta_grad="forward"``) the meta-gradient is computed without a second-order graph: a plain
backward gives the virtual step, one meta forward/backward gives ``v = ∇L_meta(θ')``, and a
forward-mode pass along ``−η_t v`` gives ``∂L_meta/∂w_i`` (exact: ``θ'`` is linear in the
weights; `VNetReweighting._meta_step`; a model with dropout is refused, as the forward-mode
pass would draw other masks); ``"double_backward"`` is the official computation. The
Adam state of the weighting network is in ``extra_state()`` for resume.

**By default the weighting network is updated every 4th iteration** (``meta_every=4``, with the
paper's full look-ahead, and Adam's rate scaled to match, `default_vnet_lr`); every iteration is
still weighted by the network as it is, at ERM's cost, so a step costs about 1.8× ERM on average
on the MLP instead of 3.9×, and 1.9× on small_cnn instead of 4.4-4.6×. Chosen by measurement
(BENCHMARKS.md, "Meta steps at most 2× ERM"): within a point of the step at every iteration in
the meta benchmark's three settings; at Adam's unscaled rate every 3rd iteration had lost 4.7
points under pair noise. The presets set ``meta_every: 1`` and ``vnet_lr: 1e-3``, the paper's.
``lookahead="head"`` moves only the classifier head in the look-ahead (as L2B's default,
`noisytail.methods.lookahead`: the meta forward runs the backbone once without a graph and the
forward-mode pass is the head's own, on the training forward's features; about 1.5× ERM), but
it lost 3-4 points on the meta benchmark: the weighting network, trained through the head
alone, lets the model memorise the noise sooner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.base import Backbone
from ..registry import METHODS
from .base import Batch, Context, Method, TaskInfo
from .lookahead import (
    at_least_float32,
    finite_difference_logits,
    group_lrs,
    head_parameters,
    lookahead_meta_loss,
    meta_forward,
    refuse_random_layers,
    split_forward,
    tangent_logits,
    trainable_parameters,
)


def class_weighted_logit_loss(
    logits: Tensor, omega: Tensor, probs: Tensor, labels: Tensor
) -> Tensor:
    """The surrogate ``(1/B) Σ_ij ω_ij · sg(p_ij − y_ij) · z_ij``: its gradient with respect to the
    logits ``z`` is ``ω ⊙ (p − y) / B``; differentiable (linearly) in ``ω``."""
    logits = at_least_float32(logits)
    onehot = F.one_hot(labels.long(), logits.shape[1]).to(logits.dtype)
    residual = (probs.detach().to(logits.dtype) - onehot) * omega
    return (residual * logits).sum() / logits.shape[0]


class VNet(nn.Module):
    """The MW-Net weighting network: ``loss [B] -> weight [B]`` in (0, 1), 1-hidden-1 MLP, in its
    parameters' precision even under autocast (it costs nothing, and bfloat16 would round the
    weights to about 0.4 %)."""

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.fc1 = nn.Linear(1, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, loss: Tensor) -> Tensor:
        with torch.autocast(device_type=loss.device.type, enabled=False):
            h = torch.relu(self.fc1(loss.to(self.fc1.weight.dtype).reshape(-1, 1)))
            return torch.sigmoid(self.fc2(h)).reshape(-1)


#: How the meta-gradient is computed (`VNetReweighting._meta_step`).
META_GRADS = ("forward", "double_backward", "first_order")
#: How the forward-mode part of ``meta_grad="forward"`` / ``"first_order"`` is computed.
TANGENTS = ("forward_mode", "finite_difference")

#: The weighting network's Adam learning rate with a meta step at every iteration (MW-Net's).
VNET_LR = 1e-3


def default_vnet_lr(meta_every: int) -> float:
    """The weighting network's learning rate when none is set: `VNET_LR` times ``meta_every``.

    Adam moves each parameter by about its learning rate per step whatever the gradient's size,
    so with a meta step every k-th iteration the network would move k times less per epoch. With
    1e-3 at every 3rd iteration MW-Net lost 4.7 points under 40 % pair noise; 3e-3 (and 4e-3 at
    every 4th) was level with the step at every iteration (BENCHMARKS.md, "Meta steps at most 2×
    ERM"). An explicit ``vnet_lr`` is used as given.
    """
    return VNET_LR * meta_every


class VNetReweighting(Method):
    """Shared machinery of MW-Net and GDW: the weighting network, its optimizer, the look-ahead."""

    needs_meta = True
    updates_outside_backward = True  # the weighting network's own Adam step

    def __init__(
        self,
        model: Backbone,
        info: TaskInfo,
        *,
        hidden: int = 100,
        vnet_lr: float | None = None,
        vnet_weight_decay: float = 1e-4,
        lookahead: str = "all",
        meta_grad: str = "forward",
        meta_every: int = 4,
        tangent: str = "forward_mode",
        meta_batch: int = 0,
    ) -> None:
        super().__init__(model, info)
        if tangent not in TANGENTS:
            raise ValueError(f"tangent must be one of {TANGENTS}, got {tangent!r}.")
        if meta_batch < 0:
            raise ValueError(
                f"meta_batch must be >= 0 (0 = the whole meta batch), got {meta_batch}."
            )
        self.tangent = tangent
        self.meta_batch = meta_batch
        if lookahead not in ("all", "head"):
            raise ValueError(f"lookahead must be 'all' or 'head', got {lookahead!r}.")
        if meta_every < 1:
            raise ValueError(f"meta_every must be >= 1, got {meta_every}.")
        self.meta_every = meta_every
        if meta_grad not in META_GRADS:
            raise ValueError(f"meta_grad must be one of {META_GRADS}, got {meta_grad!r}.")
        self.meta_grad = meta_grad
        if lookahead == "all" and meta_grad != "double_backward":
            refuse_random_layers(
                model,
                f"meta_grad={meta_grad!r} with lookahead='all'",
                "set meta_grad: double_backward, or lookahead: head",
            )
        self.vnet = VNet(hidden)
        self.vnet_optimizer = torch.optim.Adam(
            self.vnet.parameters(),
            lr=default_vnet_lr(meta_every) if vnet_lr is None else vnet_lr,
            weight_decay=vnet_weight_decay,
        )
        self.lookahead = lookahead
        self.register_buffer("sample_weight", torch.full((info.num_train,), float("nan")))

    def _meta_due(self, ctx: Context) -> bool:
        """Whether this iteration updates the weighting network (every ``meta_every``-th; the
        others weight the batch with the network as it is, at ERM's cost)."""
        return ctx.step % self.meta_every == 0

    def _params(self, ctx: Context, route: str | None = None) -> dict[str, Tensor]:
        """The look-ahead's parameters: trainable, not frozen this epoch (all, or the head;
        ``route`` overrides ``lookahead`` for this step)."""
        if (route or self.lookahead) == "head":
            return head_parameters(self.model, exclude=ctx.frozen_parameters)
        return trainable_parameters(self.model, exclude=ctx.frozen_parameters)

    def _lookahead(
        self, ctx: Context, route: str | None = None
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        """``(params, {name: lr})``: each parameter's own optimizer group's learning rate."""
        params = self._params(ctx, route)
        return params, group_lrs(ctx.optimizer, params)

    def _meta_step(
        self,
        x: Tensor,
        logits: Tensor,
        labels: Tensor,
        probs: Tensor,
        weights: Tensor,
        meta: Batch,
        lr: float | Mapping[str, float],
        params: Mapping[str, Tensor] | None = None,
        features: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Look-ahead, meta loss and Adam step of the weighting network; returns
        ``(meta_loss, G)`` with ``G = ∂L_meta/∂ω`` ``[B, K]`` for the class-level weights
        ``weights`` (``[B, K]``, in the graph of the VNet output) of the virtual step whose logit
        gradient is ``ω ⊙ (p − y) / B`` (plain SGD at ``lr``, one rate or ``{name: lr}``, over
        ``params``, default all trainable; for ``ω_ij = w_i`` this is MW-Net's ``∇ mean(w·ℓ)``).

        ``meta_grad="double_backward"``: the papers' computation (create_graph virtual step,
        backward through it). ``"forward"`` (default, same numbers): a plain backward gives the
        step ``g``; one meta forward/backward at ``θ' = θ − lr·g`` gives ``v = ∇L_meta(θ')``;
        since ``θ'`` is linear in ``ω``, ``G_ij = −lr·(∂z_ij/∂θ · v)(p_ij − y_ij)/B``, a
        forward-mode pass of the batch along ``−lr·v`` (on cloned BatchNorm buffers). No
        second-order graph is built. With the look-ahead on the head and the batch's
        ``features`` (`split_forward`), that pass is the head's alone, on those features, and the
        meta forward runs the backbone without a graph (`noisytail.methods.lookahead`,
        `meta_forward`, `tangent_logits`): no second forward of the batch.

        Approximations, cheaper (BENCHMARKS.md, "A GDW step at most 2× ERM: three more
        approximations"):
        ``meta_grad="first_order"`` takes ``v = ∇L_meta(θ)`` instead of ``∇L_meta(θ')``: the
        gradient of the meta loss linearised at θ, ``L_meta(θ) + v·(θ'(ω) − θ)`` (DARTS'
        first-order approximation, Liu et al., ICLR 2019, Sec. 2.3; for L2RW, whose virtual
        weights start at 0, θ' = θ and nothing changes), so the virtual step's backward is not
        needed. ``tangent="finite_difference"`` replaces the forward-mode pass with one float32
        forward (`finite_difference_logits`). ``meta_batch=m`` evaluates the meta loss on the
        first ``m`` rows of the meta batch (0: all).
        """
        if params is None:
            params = trainable_parameters(self.model)
        if self.meta_batch:  # a smaller meta batch: its first rows (the loader shuffles)
            meta = Batch(
                meta.x[: self.meta_batch],
                meta.labels[: self.meta_batch],
                meta.idx[: self.meta_batch],
            )
        if self.meta_grad == "double_backward":
            virtual = class_weighted_logit_loss(logits, weights, probs, labels)
            meta_loss = lookahead_meta_loss(
                self.model, virtual, meta.x, meta.labels, lr=lr, params=params
            )
            grads = torch.autograd.grad(
                meta_loss, list(self.vnet.parameters()) + [weights], allow_unused=True
            )
            g_omega = grads[-1] if grads[-1] is not None else torch.zeros_like(weights)
            self._vnet_step(grads[:-1])
            return meta_loss.detach(), g_omega.detach()
        names = list(params)
        lrs = {n: float(lr if isinstance(lr, (int, float)) else lr[n]) for n in names}
        if self.meta_grad == "first_order":  # v at θ itself: no backward for the virtual step
            shifted = {n: params[n].detach().requires_grad_() for n in names}
        else:
            virtual = class_weighted_logit_loss(logits, weights.detach(), probs, labels)
            grads = torch.autograd.grad(
                virtual, [params[n] for n in names], retain_graph=True, allow_unused=True
            )
            shifted = {
                n: (params[n] - lrs[n] * (g if g is not None else 0.0)).detach().requires_grad_()
                for n, g in zip(names, grads)
            }
        meta_logits = meta_forward(self.model, shifted, meta.x)
        meta_loss = F.cross_entropy(at_least_float32(meta_logits), meta.labels)
        v = torch.autograd.grad(meta_loss, [shifted[n] for n in names])
        tangents = {n: -lrs[n] * vi.to(params[n].dtype) for n, vi in zip(names, v)}
        if self.tangent == "finite_difference":
            dz = finite_difference_logits(self.model, x, logits, tangents)
        else:
            dz = tangent_logits(self.model, x, tangents, features=features)
        onehot = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
        g_omega = dz.to(probs.dtype) * (probs - onehot) / x.shape[0]
        vgrads = torch.autograd.grad(
            weights, list(self.vnet.parameters()), grad_outputs=g_omega, allow_unused=True
        )
        self._vnet_step(vgrads)
        return meta_loss.detach(), g_omega

    def _vnet_step(self, grads: Sequence[Tensor | None]) -> None:
        """Adam step of the weighting network with ``grads`` (set, used and cleared here, so
        they never reach the loop's gradient clipping or optimizer)."""
        vparams = list(self.vnet.parameters())
        for p, g in zip(vparams, grads):
            p.grad = None if g is None else g.detach().to(p.dtype)
        self.vnet_optimizer.step()
        for p in vparams:
            p.grad = None

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
        feats, logits = split_forward(self.model, batch.x)
        losses = F.cross_entropy(at_least_float32(logits), batch.labels, reduction="none")
        probs = torch.softmax(at_least_float32(logits.detach()), dim=1)
        out: dict[str, Tensor] = {}
        if self._meta_due(ctx):
            w = self.vnet(losses.detach())
            params, lrs = self._lookahead(ctx)
            out["meta_loss"], _ = self._meta_step(
                batch.x,
                logits,
                batch.labels,
                probs,
                w[:, None].expand_as(probs),
                ctx.meta_batch(),
                lrs,
                params,
                feats,
            )
        with torch.no_grad():
            w_new = self.vnet(losses.detach())
            self.sample_weight[batch.idx] = w_new.to(self.sample_weight.dtype)
            acc = (logits.argmax(1) == batch.labels).float().mean()
        return {
            **out,
            "loss": (w_new * losses).mean(),
            "train_accuracy_noisy": acc,
            "mean_weight": w_new.mean(),
        }
