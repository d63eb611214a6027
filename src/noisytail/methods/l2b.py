"""L2B: "Learning to Bootstrap (Robust Models) for Combating Label Noise" (Zhou et al., CVPR 2024,
arXiv 2202.04291).

The training loss mixes, per sample, the cross-entropy to the observed label and to the model's
own hard pseudo-label ``ŷ_i = argmax f_θ(x_i)`` (from the same forward pass):

    L(θ) = Σ_i α_i ℓ(f_θ(x_i), y_i) + β_i ℓ(f_θ(x_i), ŷ_i)                       (Eq. 6)

with ``α, β`` found online by a one-step look-ahead on a clean meta batch (L2RW's trick, Eq. 7-8):
``ε ∈ R^{2×B}`` starts at 0, ``θ'(ε)`` is one SGD step on ``Σ ε ⊙ [ℓ_obs; ℓ_ps]`` *with the real
optimizer's momentum and weight decay*, and

    w̃ = max(−∂L_meta(θ'(ε))/∂ε |_{ε=0}, 0),    [α; β] = w̃ / (Σ w̃ + 1e-10)        (Eq. 9, "org")

normalised jointly over the 2B entries (α + β ≠ 1 per sample). ``norm_type="softmax"`` uses
``softmax(−g/T)`` over the 2B entries (the ISIC setting, T=10) and ``"sigmoid"`` ``σ(−g)``
normalised. The real step is the weighted sum with the weights detached; the gradient-norm clip of
the paper (0.25 CIFAR-10, 0.8 CIFAR-100/ISIC) is the loop's ``train.grad_clip``.

``reweight_label=False`` is L2RW (β = 0). The first ``warmup_epochs`` epochs (paper: 10 on CIFAR,
1 on ISIC, 0 on Clothing1M) are plain mean cross-entropy. The official code's other switches are
options (``temperature`` defaults to 10, the official ISIC value; the code's default is 1):
``mixup_alpha`` (``--mixup``), ``meta_step`` (``--meta_step``), ``norm_type="hard"``
(noisytail's binary weights ``1[−g > 0] / count``; the official ``--hard_weight`` zeroes
every softmax weight ``<= --temperature``, i.e. all of them with its default temperature 1) and
L2RW's ``min_weight``; a meta set without clean data (``--no_val_data``) is the loop's
``meta.source=pseudo`` (docs/methods.md, L2B).

Departures from the official code, for cost (mathematically the same step): the real step reuses
the look-ahead's forward pass instead of a second forward on the same batch (so BatchNorm running
statistics are updated once per step, as in ERM); the meta batch comes from the cycled meta loader
instead of a fresh iterator per draw; by default the meta-gradient is computed in forward mode
(exact, see `l2b_forward_meta_grad`) instead of by a double backward. ``meta_every=k`` runs the
meta step only every k iterations. On the skipped iterations ``between="cached"`` (default)
weights each sample by the weights it got at its own latest meta step (kept per sample index,
re-normalised over the batch; plain CE for a sample never weighted yet), and ``between="ce"`` uses
plain mean CE on the observed labels. In the memorisation benchmark (BENCHMARKS.md) the CE
fallback lets the model fit the noise between meta steps and loses most of L2B's gain.

``l2b_step`` is the plug-in mode (the paper's L2B+DivideMix/UNICON/C2D): one L2B update of a model
after another method's own update, with soft or hard targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.base import Backbone
from ..registry import METHODS
from .base import Batch, Context, Method, TaskInfo, write_per_sample
from .lookahead import (
    SGDRule,
    at_least_float32,
    drift,
    forward_with_tangents,
    functional_forward,
    group_lrs,
    head_parameters,
    lookahead_meta_loss,
    meta_tangents,
    sgd_rules,
    trainable_parameters,
)
from .mixup import mixup_batch

NORM_TYPES = ("org", "softmax", "sigmoid", "hard")
META_GRADS = ("forward", "double_backward")


def normalise_meta_weights(
    grad: Tensor,
    norm_type: str = "org",
    temperature: float = 10.0,
    eps: float = 1e-10,
    floor: float = 0.0,
) -> Tensor:
    """Weights from the meta-gradient ``grad = ∂L_meta/∂ε`` (any shape), normalised jointly.

    ``"org"``: ``max(−g, floor) / (Σ max(−g, floor) + eps)`` (L2RW Eq. 5 with ``floor = 0``, L2B
    Eq. 9; ``floor > 0`` is the official L2RW code's minimum example weight); all zero when no
    entry exceeds a zero floor. ``"softmax"``: ``softmax(−g/T)`` over all entries.
    ``"sigmoid"``: ``σ(−g) / Σ σ(−g)``. ``"hard"``: binary weights, ``1[−g > 0]`` over their
    count (each entry the look-ahead favours counts equally; all zero when none does).
    """
    if norm_type == "org":
        w = torch.clamp(-grad, min=floor)
        return w / (w.sum() + eps)
    if floor:
        raise ValueError(f"a minimum weight (floor) goes with norm_type 'org', not {norm_type!r}.")
    if norm_type == "softmax":
        return torch.softmax((-grad / temperature).flatten(), dim=0).view_as(grad)
    if norm_type == "sigmoid":
        w = torch.sigmoid(-grad)
        return w / (w.sum() + eps)
    if norm_type == "hard":
        w = (-grad > 0).to(grad.dtype)
        return w / w.sum().clamp_min(1.0)
    raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}.")


def _per_sample_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """CE per sample against int labels ``[B]`` or soft targets ``[B, K]``."""
    logits = at_least_float32(logits)
    if targets.ndim == 2:
        return -(targets.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(1)
    return F.cross_entropy(logits, targets.long(), reduction="none")


def l2b_losses(logits: Tensor, targets: Tensor, reweight_label: bool = True) -> Tensor:
    """``[ℓ_obs]`` (``[1, B]``) or ``[ℓ_obs; ℓ_ps]`` (``[2, B]``) from one forward's logits."""
    obs = _per_sample_ce(logits, targets)
    if not reweight_label:
        return obs[None]
    pseudo = logits.detach().argmax(1)
    return torch.stack([obs, F.cross_entropy(at_least_float32(logits), pseudo, reduction="none")])


def l2b_weights(
    model: nn.Module,
    losses: Tensor,
    meta_x: Tensor,
    meta_y: Tensor,
    *,
    lr: float | Mapping[str, float] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    norm_type: str = "org",
    temperature: float = 10.0,
    params: Mapping[str, Tensor] | None = None,
    rules: Mapping[str, SGDRule] | None = None,
) -> tuple[Tensor, Tensor]:
    """``(weights, meta_grad)``, both shaped like ``losses`` (``[R, B]``), detached.

    ``losses`` must come from a forward of ``model`` at ``params`` with its graph; ``meta_grad``
    is ``∂L_meta(θ'(ε))/∂ε`` at ``ε = 0`` for the virtual step on ``Σ ε ⊙ losses`` (``lr``: one
    rate or ``{name: lr}``; ``rules`` replace ``lr``/``optimizer``, `noisytail.methods.lookahead`).
    """
    eps = torch.zeros_like(losses, requires_grad=True)
    meta = lookahead_meta_loss(
        model,
        (eps * losses).sum(),
        meta_x,
        meta_y,
        lr=lr,
        optimizer=optimizer,
        params=params,
        rules=rules,
    )
    (grad,) = torch.autograd.grad(meta, eps)
    return normalise_meta_weights(grad, norm_type, temperature).detach(), grad.detach()


def l2b_forward_meta_grad(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    meta_x: Tensor,
    meta_y: Tensor,
    *,
    lr: float | Mapping[str, float] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    reweight_label: bool = True,
    params: Mapping[str, Tensor] | None = None,
    rules: Mapping[str, SGDRule] | None = None,
    clone_buffers: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(logits, losses, meta_grad)`` with the same ``meta_grad`` as `l2b_weights`, cheaper.

    The training forward is done here, in forward mode along the direction of
    `noisytail.methods.lookahead.meta_tangents` (one meta forward/backward at ``θ'(0)``), so
    ``∂L_meta/∂ε_i = dℓ_i/ds = Σ_k (p_ik − t_ik)·ż_ik`` comes out of the forward itself: no
    create_graph backward and no double backward. ``logits``/``losses`` keep their ordinary
    graph for the real step. Exact (it is the same derivative), tested against `l2b_weights`.
    The forward runs at ``params`` (the model's own, or drifted ones, `l2b_meta_grad`).
    """
    if params is None:
        params = trainable_parameters(model)
    if rules is None:
        rules = sgd_rules(params, lr=lr, optimizer=optimizer)
    tangents = meta_tangents(model, meta_x, meta_y, params=params, rules=rules)
    logits, dz = forward_with_tangents(model, x, tangents, base=params, clone_buffers=clone_buffers)
    losses = l2b_losses(logits, targets, reweight_label)
    z = at_least_float32(logits.detach())
    p = torch.softmax(z, dim=1)
    dz = dz.detach().to(z.dtype)  # the tangent has a reverse graph too: not wanted
    k = z.shape[1]
    obs = targets.to(z.dtype) if targets.ndim == 2 else F.one_hot(targets.long(), k).to(z.dtype)
    rows = [((p - obs) * dz).sum(1)]
    if reweight_label:
        rows.append(((p - F.one_hot(z.argmax(1), k).to(z.dtype)) * dz).sum(1))
    return logits, losses, torch.stack(rows)


def l2b_meta_grad(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    meta_x: Tensor,
    meta_y: Tensor,
    *,
    params: Mapping[str, Tensor],
    rules: Mapping[str, SGDRule],
    reweight_label: bool = True,
    meta_step: int = 1,
    meta_grad: str = "forward",
) -> tuple[Tensor, Tensor, Tensor]:
    """``(logits, losses, meta_grad)``: the real forward at θ (with its graph) and its per-sample
    losses ``[R, B]``, and ``∂L_meta/∂ε`` ``[R, B]`` of the look-ahead.

    ``meta_step = k > 1`` is the L2B code's inner loop of ``k`` steps, each on a fresh zero ε of
    which only the last is differentiated: ``k − 1`` steps that only weight decay and momentum
    move (`noisytail.methods.lookahead.drift`), then the ε step with the losses (and
    pseudo-labels) of the drifted model. With a plain SGD virtual step (no optimizer state) the
    drift is nil and ``k`` changes nothing. ``meta_grad``: ``"forward"`` (`l2b_forward_meta_grad`)
    or ``"double_backward"`` (`l2b_weights`); the same numbers.
    """
    if meta_step < 1:
        raise ValueError(f"meta_step must be >= 1, got {meta_step}.")
    drifted = meta_step > 1
    base, base_rules = drift(params, rules, meta_step - 1)
    if meta_grad == "forward":
        if not drifted:
            return l2b_forward_meta_grad(
                model,
                x,
                targets,
                meta_x,
                meta_y,
                params=params,
                rules=rules,
                reweight_label=reweight_label,
            )
        _, _, g = l2b_forward_meta_grad(
            model,
            x,
            targets,
            meta_x,
            meta_y,
            params=base,
            rules=base_rules,
            reweight_label=reweight_label,
            clone_buffers=True,
        )
        logits = model(x)
        return logits, l2b_losses(logits, targets, reweight_label), g
    if meta_grad != "double_backward":
        raise ValueError(f"meta_grad must be one of {META_GRADS}, got {meta_grad!r}.")
    logits = model(x)
    losses = l2b_losses(logits, targets, reweight_label)
    virtual = losses
    if drifted:
        virtual = l2b_losses(functional_forward(model, base, x), targets, reweight_label)
    _, g = l2b_weights(model, virtual, meta_x, meta_y, params=base, rules=base_rules)
    return logits, losses, g


def l2b_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    targets: Tensor,
    meta_x: Tensor,
    meta_y: Tensor,
    *,
    reweight_label: bool = True,
    norm_type: str = "org",
    temperature: float = 10.0,
    grad_clip: float = 0.8,
    use_optimizer_state: bool = True,
    meta_grad: str = "forward",
    meta_step: int = 1,
) -> dict[str, float]:
    """The plug-in mode: one full L2B update of ``model`` (run it after another method's step).

    As in the paper's L2B+DivideMix/UNICON/C2D codes: ``targets`` may be the other method's soft
    targets ``[B, K]`` (e.g. DivideMix's label-refined targets on the *unmixed* batch) or hard
    labels ``[B]``; the pseudo-label is the argmax of the same forward. Zeroes the gradients,
    back-propagates the weighted loss, clips the gradient norm to ``grad_clip`` (0 = off; the
    plug-in scripts use 0.8) and steps ``optimizer``. ``meta_grad``, ``meta_step``: see `L2B`;
    the virtual step uses each parameter group's own learning rate. Returns the loss and the
    weight masses.
    """
    model.train()
    params = trainable_parameters(model)
    rules = sgd_rules(
        params,
        lr=group_lrs(optimizer, params),
        optimizer=optimizer if use_optimizer_state else None,
    )
    _, losses, g = l2b_meta_grad(
        model,
        x,
        targets,
        meta_x,
        meta_y,
        params=params,
        rules=rules,
        reweight_label=reweight_label,
        meta_step=meta_step,
        meta_grad=meta_grad,
    )
    w = normalise_meta_weights(g, norm_type, temperature)
    loss = (w * losses).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    out = {"loss": float(loss.detach()), "alpha_mass": float(w[0].sum())}
    if reweight_label:
        out["beta_mass"] = float(w[1].sum())
    return out


@METHODS.register("l2b")
class L2B(Method):
    """L2B (Zhou et al., arXiv 2202.04291): meta-learned weights of each sample's observed label
    *and* its hard pseudo-label, by a one-step look-ahead on a clean meta batch (Eq. 6-9).

    ``reweight_label=False`` gives L2RW (Ren et al. 2018). Defaults follow the official CIFAR
    setting: 10 warm-up epochs of CE, joint "org" normalisation, the real optimizer's momentum and
    weight decay in the virtual step. Set ``train.grad_clip`` (0.25 CIFAR-10, 0.8 CIFAR-100).

    ``meta_grad="forward"`` (default) computes ``∂L_meta/∂ε`` with one meta forward/backward at
    ``θ'(0)`` and a forward-mode training forward (`l2b_forward_meta_grad`);
    ``"double_backward"`` is the papers' computation (create_graph virtual step, then a backward
    through it, `l2b_weights`). Both give the same numbers; the first is cheaper.
    ``lookahead="head"`` (the default) restricts the virtual step to the classifier head, an
    approximation chosen by measurement (BENCHMARKS.md, "Meta steps at most 2× ERM": 1.5-1.7×
    ERM per step against 3.3-4.6× for the full step, and within one point of its accuracy on
    the meta benchmark); ``lookahead="all"`` is the paper's full look-ahead (the presets).
    ``meta_batch=m`` evaluates the meta loss on the first ``m`` rows of each meta batch (0: all;
    a cost route of issue 15, BENCHMARKS.md).
    The virtual step gives each parameter its own optimizer group's learning rate
    (``train.backbone_lr_scale``) and leaves out the parameters the loop does not update
    (``Context.frozen_parameters``, ``train.freeze_backbone_epochs``), as the real step does.

    Options of the official code: ``mixup_alpha`` (``--mixup``, α = 32): the batch is mixed with a
    permutation of itself, λ ~ Beta(α, α), and the observed-label loss becomes the mixup CE
    (`mixup_batch`; the pseudo-label is the argmax on the mixed input; warm-up too). ``meta_step``
    (``--meta_step``): see `l2b_meta_grad`. ``norm_type="hard"``: binary weights
    (`normalise_meta_weights`). ``min_weight`` ε (L2RW's official code): ``w̃ = max(−g/η_t, ε)``
    with ``η_t`` the head's current learning rate, so ε is on the scale of that code's unit-size
    virtual step whatever the schedule; ``norm_type="org"`` only.
    """

    needs_meta = True

    def __init__(
        self,
        model: Backbone,
        info: TaskInfo,
        *,
        reweight_label: bool = True,
        norm_type: str = "org",
        temperature: float = 10.0,
        warmup_epochs: int = 10,
        use_optimizer_state: bool = True,
        meta_every: int = 1,
        between: str = "cached",
        lookahead: str = "head",
        meta_grad: str = "forward",
        mixup_alpha: float = 0.0,
        meta_step: int = 1,
        min_weight: float = 0.0,
        meta_batch: int = 0,
    ) -> None:
        super().__init__(model, info)
        if meta_grad not in META_GRADS:
            raise ValueError(f"meta_grad must be one of {META_GRADS}, got {meta_grad!r}.")
        if norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}.")
        if meta_every < 1:
            raise ValueError(f"meta_every must be >= 1, got {meta_every}.")
        if between not in ("cached", "ce"):
            raise ValueError(f"between must be 'cached' or 'ce', got {between!r}.")
        if lookahead not in ("all", "head"):
            raise ValueError(f"lookahead must be 'all' or 'head', got {lookahead!r}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0 (0 = no mixup), got {mixup_alpha}.")
        if meta_step < 1:
            raise ValueError(f"meta_step must be >= 1, got {meta_step}.")
        if meta_batch < 0:
            raise ValueError(
                f"meta_batch must be >= 0 (0 = the whole meta batch), got {meta_batch}."
            )
        if min_weight < 0 or (min_weight > 0 and norm_type != "org"):
            raise ValueError(
                f"min_weight must be >= 0 and goes with norm_type 'org'; got {min_weight} with "
                f"{norm_type!r}."
            )
        self.reweight_label = reweight_label
        self.norm_type = norm_type
        self.temperature = temperature
        self.warmup_epochs = warmup_epochs
        self.use_optimizer_state = use_optimizer_state
        self.meta_every = meta_every
        self.between = between
        self.lookahead = lookahead
        self.meta_grad = meta_grad
        self.mixup_alpha = mixup_alpha
        self.meta_step = meta_step
        self.min_weight = min_weight
        self.meta_batch = meta_batch
        # Latest weight of each sample's observed label, times B (1 = uniform): a clean score.
        self.register_buffer("sample_weight", torch.full((info.num_train,), float("nan")))
        # ... and of its pseudo-label (L2B only), for the cached weights between meta steps.
        self.register_buffer("pseudo_weight", torch.full((info.num_train,), float("nan")))
        self.last_weights: Tensor | None = None  # [R, B] of the latest meta step, for inspection

    def _params(self, ctx: Context) -> dict[str, Tensor]:
        if self.lookahead == "head":
            return head_parameters(self.model, exclude=ctx.frozen_parameters)
        return trainable_parameters(self.model, exclude=ctx.frozen_parameters)

    def training_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        warm = ctx.epoch >= self.warmup_epochs
        x, targets = batch.x, batch.labels
        if self.mixup_alpha > 0:
            x, targets, _ = mixup_batch(
                x, batch.labels, self.info.num_classes, self.mixup_alpha, ctx.generator
            )
        if not (warm and ctx.step % self.meta_every == 0):
            logits = self.model(x)
            with torch.no_grad():
                acc = (logits.argmax(1) == batch.labels).float().mean()
            if warm and self.between == "cached":
                loss = self._cached_weight_loss(logits, targets, batch.idx)
            else:
                loss = _per_sample_ce(logits, targets).mean()
            return {"loss": loss, "train_accuracy_noisy": acc, "meta_step": torch.tensor(0.0)}
        meta = ctx.meta_batch()
        meta_x, meta_y = meta.x, meta.labels
        if self.meta_batch:  # a smaller meta batch: its first rows (the loader shuffles)
            meta_x, meta_y = meta_x[: self.meta_batch], meta_y[: self.meta_batch]
        params = self._params(ctx)
        rules = sgd_rules(
            params,
            lr=group_lrs(ctx.optimizer, params),
            optimizer=ctx.optimizer if self.use_optimizer_state else None,
        )
        logits, losses, g = l2b_meta_grad(
            self.model,
            x,
            targets,
            meta_x,
            meta_y,
            params=params,
            rules=rules,
            reweight_label=self.reweight_label,
            meta_step=self.meta_step,
            meta_grad=self.meta_grad,
        )
        w = normalise_meta_weights(
            g, self.norm_type, self.temperature, floor=self.min_weight * ctx.lr
        )
        with torch.no_grad():
            acc = (logits.argmax(1) == batch.labels).float().mean()
        self.last_weights = w
        write_per_sample(self.sample_weight, batch.idx, w[0] * len(batch))
        if self.reweight_label:
            write_per_sample(self.pseudo_weight, batch.idx, w[1] * len(batch))
        out: dict[str, Any] = {
            "loss": (w * losses).sum(),
            "train_accuracy_noisy": acc,
            "meta_step": torch.tensor(1.0),
            "alpha_mass": w[0].sum(),
            "zero_weight_fraction": (w[0] == 0).float().mean(),
        }
        if self.reweight_label:
            out["beta_mass"] = w[1].sum()
        return out

    def _cached_weight_loss(self, logits: Tensor, targets: Tensor, idx: Tensor) -> Tensor:
        """Eq. 6 with each sample's weights from its own latest meta step, normalised jointly
        over the batch like a meta step's; a sample never weighted yet counts as plain CE."""
        losses = l2b_losses(logits, targets, self.reweight_label)  # [R, B]
        alpha = self.sample_weight[idx].to(losses.dtype)
        fresh = torch.isnan(alpha)
        rows = [torch.where(fresh, torch.ones_like(alpha), alpha)]
        if self.reweight_label:
            beta = self.pseudo_weight[idx].to(losses.dtype)
            rows.append(torch.where(fresh | torch.isnan(beta), torch.zeros_like(beta), beta))
        w = torch.stack(rows)
        return (w * losses).sum() / w.sum().clamp_min(1e-12)

    def sample_scores(self) -> np.ndarray | None:
        s = self.sample_weight.detach().cpu().numpy()
        return None if np.isnan(s).all() else np.nan_to_num(s, nan=float(np.nanmean(s)))
