"""GDW: "Generalized Data Weighting via Class-level Gradient Manipulation" (Chen et al., NeurIPS
2021, arXiv 2111.00056).

For softmax cross-entropy the gradient with respect to the logits is ``p − y``. Instance weighting
scales it by one scalar per sample; GDW gives every class component its own weight ``ω_ij`` and
back-propagates ``ω ⊙ (p − y) / B`` (Sec. 3). Per iteration:

``eta_omega`` left empty is 100 below 100 classes and 1000 from 100 classes on (the official
README's values for CIFAR-10 and CIFAR-100).

1. **Instance weights** (stage 1): ``ω_ij = V(ℓ_i; Θ)`` for all j, from the MW-Net weighting
   network (`noisytail.methods.mwnet.VNet`).
2. **Zero-mean constraint** (Eq. 7): ``ω_{i,y_i} = Σ_{j≠y_i} ω_ij p_ij / (1 − p_{i,y_i})``, so
   that ``Σ_j ω_ij (p_ij − y_ij) = 0`` like the CE logit gradient. As in the official code, ``p``
   is clamped to ``≤ 0.999`` once (`clamp_probs`) and that same ``p`` is used here *and* in the
   residual ``p − y`` of steps 3 and 6, so a saturated row (``p_{i,y_i} > 0.999``) still sums to
   zero, and equal class weights still give MW-Net's logit gradient ``ω_i (p_i − y_i)`` (exactly,
   unless an off-label probability exceeds 0.999).
3. **Virtual step** ``θ' = θ − η_t ∇_θ`` of the surrogate whose logit gradient is
   ``ω ⊙ (p − y) / B``: ``(1/B) Σ_ij ω_ij · sg(p_ij − y_ij) · z_ij`` (``sg`` = stop-gradient,
   ``z`` the logits). Its parameter gradient is linear in ω, so ``G = ∂L_meta/∂ω`` (B×K) comes
   out of the same backward that trains the weighting network: the class-level step costs no
   extra pass over MW-Net (Sec. 3.3).
4. **Meta loss**: mean clean CE of ``θ'``; Adam step of ``Θ`` (lr 1e-3, wd 1e-4).
5. **Class-level step** (Eq. 8): ``ω ← ω − clip(η_ω · G / Σ|G|, ±0.2)`` (η_ω = 100 on CIFAR-10,
   1000 on CIFAR-100), clamp to [1e-6, 1e6], re-apply the constraint with the real model's p.
6. **Real step** with the logit gradient ``ω ⊙ (p − y) / B``, ω detached.

``mode="mwnet"`` is the MW-Net baseline on the same code path (step 5 is skipped and step 6 uses
``mean(V(ℓ; Θ_new) · ℓ)``), as the official ``--mode mw-net``, but with the exact CE gradient
(MW-Net's own): the official mode clamps ``p`` at 0.999 too (its unclamped branches never run),
so there a sample with ``p_{i,y_i} > 0.999`` keeps a residual of 0.001 on its label. The real
step reuses the forward pass of step 1; the official code runs a second forward on the same
batch. ``meta_grad``
("forward" by default, or the official "double_backward"; same numbers) is explained in
`noisytail.methods.mwnet.VNetReweighting._meta_step`: in forward mode ``G`` is
``−η_t (J_z v) ⊙ (p − y) / B``, read off a forward-mode pass, still at no cost beyond MW-Net's.
The logged ``loss`` is the batch mean CE (the surrogate's value is meaningless); its gradient is
the surrogate's. ``meta_every=k``: the weighting network and the class-level step run every k-th
iteration only; the others take MW-Net's real step with the network as it is (with equal class
weights the constraint gives exactly that). **Unlike MW-Net's, GDW's default is the paper's step
at every iteration** (``meta_every=1``, 4.1-4.6× ERM): every 4th iteration with the weighting
network's rate scaled to match (1.8-1.9× ERM) was level under uniform noise but lost 1.3 points
under pair noise and 3.8 on the long-tailed setting of the meta benchmark (2 seeds; every 3rd:
−1.0 and −3.6), where the class-level step at every iteration is what GDW adds (BENCHMARKS.md
"Meta steps at most 2× ERM"). ``meta_every: 4`` is the cheap choice on balanced data;
``lookahead="head"`` is cheaper still but lost accuracy.

``between="head"`` (with ``meta_every=k > 1``): the iterations between the full meta steps take a
meta step too, with the look-ahead on the classifier head only (`lookahead.head_parameters`: no
second pass through the backbone), so the class-level step and the weighting network's update
run at every iteration and the full look-ahead every k-th. The weighting network's rate then
defaults to the unscaled 1e-3 (it moves every iteration). Measured (BENCHMARKS.md, "GDW with a
head-only meta step between full ones"): at k = 4, 2.5x ERM on small_cnn (the default 4.7x),
within 0.5 points of the full step on balanced data and 1.2 below it on the long tail.

``meta_grad="first_order"``, ``tangent="finite_difference"`` and ``meta_batch`` are cheaper
approximations of the full step (`noisytail.methods.mwnet.VNetReweighting._meta_step`). Measured
(BENCHMARKS.md, "A GDW step at most 2× ERM: three more approximations"): together 1.7-1.9× ERM on
small_cnn but 2-16 points lost, mostly to the first-order meta-gradient; the finite-difference
tangent alone is level (3.5× instead of 4.5× in fp32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.base import Backbone
from ..registry import METHODS
from .base import Batch, Context, TaskInfo
from .lookahead import at_least_float32, split_forward
from .mwnet import VNET_LR, VNetReweighting, class_weighted_logit_loss

__all__ = [
    "GDW",
    "clamp_probs",
    "class_weight_step",
    "class_weighted_logit_loss",
    "zero_mean_constraint",
]


def clamp_probs(probs: Tensor, p_max: float = 0.999) -> Tensor:
    """The softmax probabilities ``[B, K]`` GDW works with: detached, every entry ``≤ p_max``.

    Computed once per step and used in the constraint *and* the residual ``p − y`` (clamping is
    idempotent, so passing the result again changes nothing).
    """
    if not 0.0 < p_max < 1.0:
        raise ValueError(f"p_max must be in (0, 1), got {p_max}.")
    return at_least_float32(probs.detach()).clamp(max=p_max)


def zero_mean_constraint(
    omega: Tensor, probs: Tensor, labels: Tensor, p_max: float = 0.999
) -> Tensor:
    """``omega`` ``[B, K]`` with its labelled-class entry set to ``Σ_{j≠y} ω_ij p_ij / (1 − p_iy)``
    (Eq. 7), so that ``Σ_j ω_ij (p_ij − y_ij) = 0`` for these ``p``.

    ``probs`` are clamped by `clamp_probs` (``1 − p_iy ≥ 1 − p_max``); pass the same clamped
    probabilities to the residual (`class_weighted_logit_loss`) or the zero sum does not hold for
    saturated rows. Differentiable in ``omega``.
    """
    probs = clamp_probs(probs, p_max)
    onehot = F.one_hot(labels.long(), probs.shape[1]).to(probs.dtype)
    p_y = (probs * onehot).sum(1)
    num = (omega * probs * (1.0 - onehot)).sum(1)
    return omega * (1.0 - onehot) + (num / (1.0 - p_y))[:, None] * onehot


def class_weight_step(
    omega: Tensor,
    grad: Tensor,
    *,
    lr: float = 100.0,
    max_step: float = 0.2,
    clamp: tuple[float, float] = (1e-6, 1e6),
) -> Tensor:
    """``clamp(ω − clip(lr · G / Σ|G|, ±max_step))`` (GDW Eq. 8; Σ over all B×K entries)."""
    step = lr * grad / grad.abs().sum().clamp_min(1e-12)
    return (omega - step.clamp(-max_step, max_step)).clamp(*clamp)


def eta_omega_for(num_classes: int) -> float:
    """GDW's class-level step size by the number of classes: 100 (CIFAR-10) below 100 classes,
    1000 (CIFAR-100) from 100 on (the official README)."""
    return 1000.0 if num_classes >= 100 else 100.0


@METHODS.register("gdw")
class GDW(VNetReweighting):
    """GDW (Chen et al., arXiv 2111.00056): class-level weights ``ω_ij`` of the logit gradient,
    started from MW-Net's instance weight, constrained to zero mean and moved by one normalised
    gradient step on the meta loss (Eq. 7-8). ``mode="mwnet"``: the MW-Net baseline."""

    def __init__(
        self,
        model: Backbone,
        info: TaskInfo,
        *,
        mode: str = "gdw",
        eta_omega: float | None = None,
        max_step: float = 0.2,
        p_max: float = 0.999,
        hidden: int = 100,
        vnet_lr: float | None = None,
        vnet_weight_decay: float = 1e-4,
        lookahead: str = "all",
        meta_grad: str = "forward",
        meta_every: int = 1,
        between: str = "mwnet",
        tangent: str = "forward_mode",
        meta_batch: int = 0,
    ) -> None:
        if between not in ("mwnet", "head"):
            raise ValueError(f"between must be 'mwnet' or 'head', got {between!r}.")
        if between == "head" and vnet_lr is None:
            vnet_lr = VNET_LR  # a meta step at every iteration: the paper's rate
        super().__init__(
            model,
            info,
            hidden=hidden,
            vnet_lr=vnet_lr,
            vnet_weight_decay=vnet_weight_decay,
            lookahead=lookahead,
            meta_grad=meta_grad,
            meta_every=meta_every,
            tangent=tangent,
            meta_batch=meta_batch,
        )
        if mode not in ("gdw", "mwnet"):
            raise ValueError(f"mode must be 'gdw' or 'mwnet', got {mode!r}.")
        if not 0.0 < p_max < 1.0:
            raise ValueError(f"p_max must be in (0, 1), got {p_max}.")
        self.mode = mode
        self.between = between
        self.eta_omega = eta_omega if eta_omega is not None else eta_omega_for(info.num_classes)
        self.max_step = max_step
        self.p_max = p_max
        self.last_omega: Tensor | None = None

    def training_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        labels = batch.labels
        feats, logits = split_forward(self.model, batch.x)
        losses = F.cross_entropy(at_least_float32(logits), labels, reduction="none")
        probs = torch.softmax(at_least_float32(logits.detach()), dim=1)
        if self.mode == "gdw":  # clamped once, used in the constraint and in every p − y
            probs = clamp_probs(probs, self.p_max)
        with torch.no_grad():
            acc = (logits.argmax(1) == labels).float().mean()
        out = {"train_accuracy_noisy": acc}
        full = self._meta_due(ctx)
        due = full or self.between == "head"
        if due:  # between meta steps ω is not needed: MW-Net's real step below
            w = self.vnet(losses.detach())  # stage 1: instance weights
            omega = w[:, None].expand_as(probs)
            if self.mode == "gdw":  # = w_i everywhere, but in the graph entry by entry
                omega = zero_mean_constraint(omega, probs, labels, self.p_max)
            # the full look-ahead every k-th step; between them (between="head") the head's only
            params, lrs = self._lookahead(ctx, None if full else "head")
            out["meta_loss"], g = self._meta_step(
                batch.x, logits, labels, probs, omega, ctx.meta_batch(), lrs, params, feats
            )
        ce = losses.mean().detach()
        if self.mode == "mwnet" or not due:  # no class-level step without G: MW-Net's weights
            with torch.no_grad():
                w_new = self.vnet(losses.detach())
                self.sample_weight[batch.idx] = w_new.to(self.sample_weight.dtype)
            out.update(loss=(w_new * losses).mean(), mean_weight=w_new.mean())
            return out
        with torch.no_grad():
            new = class_weight_step(omega.detach(), g, lr=self.eta_omega, max_step=self.max_step)
            new = zero_mean_constraint(new, probs, labels, self.p_max)
            self.last_omega = new
            self.sample_weight[batch.idx] = (
                new.gather(1, labels[:, None]).squeeze(1).to(self.sample_weight.dtype)
            )
        surrogate = class_weighted_logit_loss(logits, new, probs, labels)
        out.update(
            loss=surrogate - surrogate.detach() + ce,
            mean_weight=w.detach().mean(),
            omega_label_mean=new.gather(1, labels[:, None]).mean(),
            omega_std=new.std(),
        )
        return out
