"""A functional, differentiable one-step look-ahead: the core of the meta-reweighting family.

L2RW (Ren et al. 2018, arXiv 1803.09050, Eq. 3-5), MW-Net (Shu et al. 2019, arXiv 1902.07379,
Eq. 4-6), L2B (Zhou et al., arXiv 2202.04291, Eq. 6-9) and GDW (Chen et al. 2021, arXiv
2111.00056, Eq. 5-8) all take one *virtual* SGD step on a weighted training loss,

    θ'(w) = θ − η · d(θ, w),     d = ∇_θ L_w(θ) + λ·θ + μ·buf          (SGD with momentum μ, wd λ)

evaluate the clean meta loss ``L_meta(θ'(w))`` and differentiate it with respect to the weights
``w`` (or to what produces them). This module does that with ``torch.autograd.grad(...,
create_graph=True)`` and ``torch.func.functional_call``: no ``higher``, no meta layers, no copy of
the model.

Decisions (each is tested in ``tests/methods/test_lookahead.py``):

* **BatchNorm.** The meta forward runs the model in its current mode (train mode: batch
  statistics, as the official codes do) on *cloned* buffers, so the real running statistics are
  untouched by the virtual step.
* **Optimizer state.** ``virtual_step(..., optimizer=opt)`` reads each parameter's learning rate,
  momentum, dampening, Nesterov flag, weight decay and momentum buffer from the real
  ``torch.optim.SGD`` (what ``higher.innerloop_ctx(net, optimizer)`` does in the L2B code);
  without an optimizer it is plain SGD at ``lr`` (MW-Net, GDW). The buffers are read, never
  written.
* **Cost.** The training forward is done once, by the caller, and reused: its per-sample losses
  feed the virtual step *and* (with detached weights) the real step, so no second forward on the
  same batch is needed. ``params`` restricts the look-ahead to a subset of the parameters (e.g.
  only the classifier head, ``head_parameters``); the others keep their real values in the meta
  forward and no second-order graph is built through them. That subset is an approximation
  (FaMUS-style), off by default.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "at_least_float32",
    "forward_with_tangents",
    "functional_forward",
    "head_parameters",
    "lookahead_meta_loss",
    "meta_tangents",
    "trainable_parameters",
    "virtual_step",
]


def at_least_float32(t: Tensor) -> Tensor:
    """Half-precision tensors (autocast logits) as float32; float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def trainable_parameters(model: nn.Module) -> dict[str, Tensor]:
    """``{name: parameter}`` of every parameter that requires a gradient."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def head_parameters(model: nn.Module, prefix: str = "head.") -> dict[str, Tensor]:
    """The classifier head's parameters (``Backbone.head``): a cheap look-ahead subset."""
    out = {n: p for n, p in trainable_parameters(model).items() if n.startswith(prefix)}
    if not out:
        raise ValueError(f"the model has no trainable parameters named {prefix!r}*.")
    return out


def _sgd_hyper(optimizer: torch.optim.Optimizer) -> dict[int, dict]:
    """``id(param) -> its param group`` of an SGD optimizer."""
    if not isinstance(optimizer, torch.optim.SGD):
        raise TypeError(
            f"the look-ahead reads SGD state (momentum buffers, weight decay); got "
            f"{type(optimizer).__name__}. Use train.optimizer=sgd, or a plain virtual step."
        )
    return {id(p): g for g in optimizer.param_groups for p in g["params"]}


def _sgd_direction(
    p: Tensor, g: Tensor, group: dict | None, state: dict, lr: float | None
) -> tuple[float, Tensor, float]:
    """``(lr, d, c)``: the step is ``p − lr·d``; ``c = ∂(lr·d)/∂g`` (a scalar)."""
    if group is None:
        return float(lr), g, float(lr)
    step_lr = group["lr"] if lr is None else lr
    d = g
    wd = group.get("weight_decay", 0.0)
    if wd:
        d = d + wd * p.detach()
    mom = group.get("momentum", 0.0)
    c = 1.0
    if mom:
        buf = state.get("momentum_buffer")
        damp = 1.0 - group.get("dampening", 0.0)
        if buf is None:  # torch's first step: buf = d
            buf, dbuf = d, 1.0
        else:
            buf, dbuf = mom * buf + damp * d, damp
        if group.get("nesterov", False):
            d, c = d + mom * buf, 1.0 + mom * dbuf
        else:
            d, c = buf, dbuf
    return step_lr, d, step_lr * c


def virtual_step(
    loss: Tensor,
    params: Mapping[str, Tensor],
    *,
    lr: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    create_graph: bool = True,
) -> dict[str, Tensor]:
    """One differentiable SGD step on ``loss``: returns ``{name: θ'}`` for ``params``.

    ``optimizer`` given: the step ``torch.optim.SGD.step`` would take (per-group lr, momentum,
    dampening, Nesterov, weight decay; the current momentum buffer, or none on the first step),
    with ``lr`` overriding the groups' learning rate if given. Without it: ``θ − lr·∇θ loss``.
    The returned tensors depend differentiably on whatever ``loss`` depends on (per-sample
    weights, a weighting network), through the gradient only: momentum and weight decay terms
    are constants of the step.
    """
    names = list(params)
    tensors = [params[n] for n in names]
    grads = torch.autograd.grad(loss, tensors, create_graph=create_graph, allow_unused=True)
    return _apply_sgd(names, tensors, grads, lr=lr, optimizer=optimizer)[0]


def _apply_sgd(
    names: list[str],
    tensors: list[Tensor],
    grads: list[Tensor | None],
    *,
    lr: float | None,
    optimizer: torch.optim.Optimizer | None,
) -> tuple[dict[str, Tensor], dict[str, float]]:
    groups = _sgd_hyper(optimizer) if optimizer is not None else None
    if groups is None and lr is None:
        raise ValueError("the virtual step needs lr or an optimizer.")
    out: dict[str, Tensor] = {}
    scale: dict[str, float] = {}
    for name, p, g in zip(names, tensors, grads):
        if g is None:
            g = torch.zeros_like(p)
        group = None
        if groups is not None:
            group = groups.get(id(p))
            if group is None:
                raise ValueError(f"parameter {name!r} is not in the optimizer.")
        state = optimizer.state.get(p, {}) if optimizer is not None else {}
        step_lr, d, scale[name] = _sgd_direction(p, g, group, state, lr)
        out[name] = p - step_lr * d
    return out, scale


def meta_tangents(
    model: nn.Module,
    meta_x: Tensor,
    meta_y: Tensor,
    *,
    lr: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    params: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The direction ``t`` with ``∂L_meta(θ'(ε))/∂ε_i |_{ε=0} = ⟨t, ∇θ ℓ_i(θ)⟩`` (L2RW/L2B).

    At ``ε = 0`` the weighted loss has zero gradient, so ``θ'(0) = θ − lr·(λθ + μ·buf)`` does not
    depend on the batch, and ``∂θ'/∂ε_i = −c·∇θ ℓ_i`` with ``c`` the step's scale (``lr``, times
    ``1 − dampening`` with a momentum buffer, ``1 + μ(...)`` for Nesterov). Hence ``t = −c·∇θ'
    L_meta(θ'(0))``: one meta forward and backward, no second-order graph. The per-sample
    products ``⟨t, ∇θ ℓ_i⟩`` are then a forward-mode derivative (`forward_with_tangents`).
    """
    if params is None:
        params = trainable_parameters(model)
    names = list(params)
    shifted, scale = _apply_sgd(
        names, [params[n] for n in names], [None] * len(names), lr=lr, optimizer=optimizer
    )
    shifted = {n: shifted[n].detach().requires_grad_() for n in names}
    logits = functional_forward(model, shifted, meta_x)
    meta = torch.nn.functional.cross_entropy(at_least_float32(logits), meta_y.long())
    grads = torch.autograd.grad(meta, [shifted[n] for n in names])
    return {n: -scale[n] * g.to(params[n].dtype) for n, g in zip(names, grads)}


def forward_with_tangents(
    model: nn.Module, x: Tensor, tangents: Mapping[str, Tensor], *, clone_buffers: bool = False
) -> tuple[Tensor, Tensor]:
    """``(model(x), d/ds model(x; θ + s·t)|_{s=0})`` in one forward pass (forward-mode AD).

    The first output keeps its ordinary autograd graph (it is the real training forward: the
    BatchNorm running statistics are updated once, as by ``model(x)``, unless ``clone_buffers``);
    the tangent is detached.
    """
    import torch.autograd.forward_ad as fwad

    params = dict(model.named_parameters())
    with fwad.dual_level():
        dual: dict[str, Tensor] = {n: fwad.make_dual(params[n], t) for n, t in tangents.items()}
        if clone_buffers:
            dual.update({n: b.clone() for n, b in model.named_buffers()})
        out = functional_call(model, dual, (x,), strict=False)
        primal, tangent = fwad.unpack_dual(out)
    if tangent is None:
        tangent = torch.zeros_like(primal)
    return primal, tangent.detach()


def functional_forward(
    model: nn.Module, params: Mapping[str, Tensor], x: Tensor, *, clone_buffers: bool = True
) -> Tensor:
    """``model(x)`` with ``params`` substituted (the others keep their values).

    With ``clone_buffers`` the BatchNorm running statistics are updated on copies, so the real
    model's buffers are untouched, whatever the mode.
    """
    tensors: dict[str, Tensor] = dict(params)
    if clone_buffers:
        tensors.update({n: b.clone() for n, b in model.named_buffers()})
    return functional_call(model, tensors, (x,), strict=False)


def lookahead_meta_loss(
    model: nn.Module,
    train_loss: Tensor,
    meta_x: Tensor,
    meta_y: Tensor,
    *,
    lr: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    params: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Mean clean cross-entropy of the virtually updated model on ``(meta_x, meta_y)``.

    ``train_loss`` is the weighted training loss built by the caller from its own forward pass;
    the result can be differentiated with respect to the weights (``torch.autograd.grad``).
    """
    if params is None:
        params = trainable_parameters(model)
    new = virtual_step(train_loss, params, lr=lr, optimizer=optimizer)
    logits = functional_forward(model, new, meta_x)
    return torch.nn.functional.cross_entropy(at_least_float32(logits), meta_y.long())
