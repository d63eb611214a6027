"""A functional, differentiable one-step look-ahead: the core of the meta-reweighting family.

L2RW (Ren et al. 2018, arXiv 1803.09050, Eq. 3-5), MW-Net (Shu et al. 2019, arXiv 1902.07379,
Eq. 4-6), L2B (Zhou et al., arXiv 2202.04291, Eq. 6-9) and GDW (Chen et al. 2021, arXiv
2111.00056, Eq. 5-8) all take one *virtual* SGD step on a weighted training loss,

    θ'(w) = θ − η · d(θ, w),     d = ∇_θ L_w(θ) + λ·θ + μ·buf          (SGD with momentum μ, wd λ)

evaluate the clean meta loss ``L_meta(θ'(w))`` and differentiate it with respect to the weights
``w`` (or to what produces them). This module does that with ``torch.autograd.grad(...,
create_graph=True)`` and ``torch.func.functional_call``: no ``higher``, no meta layers, no copy of
the model.

Decisions (tested in ``tests/methods/test_lookahead.py``, ``test_l2b.py`` and ``test_gdw.py``):

* **BatchNorm.** The meta forward runs the model in its current mode (train mode: batch
  statistics, as the official codes do) on *cloned* buffers, so the real running statistics are
  untouched by the virtual step.
* **Optimizer state.** ``virtual_step(..., optimizer=opt)`` reads each parameter's learning rate,
  momentum, dampening, Nesterov flag, weight decay and momentum buffer from the real
  ``torch.optim.SGD`` (what ``higher.innerloop_ctx(net, optimizer)`` does in the L2B code);
  without an optimizer it is plain SGD at ``lr`` (MW-Net, GDW). The buffers are read, never
  written.
* **Parameter groups and frozen parameters.** ``lr`` may be one float or ``{name: lr}``
  (`group_lrs`: each parameter's own optimizer group's rate, e.g. a backbone at
  ``train.backbone_lr_scale`` times the head's). Parameters the loop will not update this step
  (``Context.frozen_parameters``, ``train.freeze_backbone_epochs``) are left out of ``params``
  (`trainable_parameters`'s ``exclude``): the virtual step does not move them, as the real step
  will not.
* **Several inner steps.** `drift` takes ``k`` SGD steps with a zero loss gradient, as the L2B
  code's inner loop does for ``meta_step = k + 1`` (it re-creates its zero ε at every inner step
  and differentiates only the last one): only weight decay and momentum move θ, and the weights
  come from the last step, taken from the drifted θ with the advanced momentum buffers.
* **Cost.** The training forward is done once, by the caller, and reused: its per-sample losses
  feed the virtual step *and* (with detached weights) the real step, so no second forward on the
  same batch is needed. ``params`` restricts the look-ahead to a subset of the parameters (e.g.
  only the classifier head, ``head_parameters``); the others keep their real values in the meta
  forward and no second-order graph is built through them. That subset is an approximation
  (FaMUS-style).
* **The head look-ahead** (``params`` all in ``Backbone.head``, `head_parameters`): the backbone
  does not move, so the meta forward runs it once without a graph and only the head is
  differentiable (`meta_forward`), and the tangent of the training batch's logits along a head
  direction comes from the training forward's own features (`split_forward`,
  `tangent_logits`): no second forward of the batch. Same numbers as the general path (tested);
  L2B, L2RW, MW-Net and GDW share it, and it is their default route (BENCHMARKS.md, "Meta steps
  at most 2× ERM").
* **Forward-mode passes** (`forward_with_tangents`) take training-mode BatchNorm's tangent from
  its own backward kernel (`tangent_rules.batch_norm_jvp`: its Jacobian is symmetric) and
  ReLU's without copies, instead of PyTorch's rules: the same numbers (tested against them and
  finite differences), and on small_cnn in bf16 the pass costs about 2.2 forwards instead of 6.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..models.base import Backbone
from .tangent_rules import FastTangents

HEAD_PREFIX = "head."
__all__ = [
    "SGDRule",
    "at_least_float32",
    "drift",
    "finite_difference_logits",
    "forward_with_tangents",
    "functional_forward",
    "group_lrs",
    "head_parameters",
    "lookahead_meta_loss",
    "meta_features",
    "meta_forward",
    "meta_tangents",
    "sgd_rules",
    "split_forward",
    "tangent_logits",
    "trainable_parameters",
    "virtual_step",
]


def at_least_float32(t: Tensor) -> Tensor:
    """Half-precision tensors (autocast logits) as float32; float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def trainable_parameters(model: nn.Module, exclude: Iterable[Tensor] = ()) -> dict[str, Tensor]:
    """``{name: parameter}`` of every parameter that requires a gradient and is not in
    ``exclude`` (e.g. ``Context.frozen_parameters``)."""
    skip = {id(p) for p in exclude}
    return {n: p for n, p in model.named_parameters() if p.requires_grad and id(p) not in skip}


def head_parameters(
    model: nn.Module, prefix: str = HEAD_PREFIX, exclude: Iterable[Tensor] = ()
) -> dict[str, Tensor]:
    """The classifier head's parameters (``Backbone.head``): a cheap look-ahead subset."""
    out = {n: p for n, p in trainable_parameters(model, exclude).items() if n.startswith(prefix)}
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


def group_lrs(optimizer: torch.optim.Optimizer, params: Mapping[str, Tensor]) -> dict[str, float]:
    """``{name: lr}``: each parameter's current learning rate, its optimizer group's ``lr`` (the
    loop sets it to the schedule's rate times the group's ``lr_scale`` every step)."""
    of = {id(p): float(g["lr"]) for g in optimizer.param_groups for p in g["params"]}
    missing = [n for n, p in params.items() if id(p) not in of]
    if missing:
        raise ValueError(f"parameter {missing[0]!r} is not in the optimizer.")
    return {n: of[id(p)] for n, p in params.items()}


@dataclass
class SGDRule:
    """One parameter's SGD step: ``torch.optim.SGD``'s hyper-parameters and momentum buffer."""

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    buf: Tensor | None = None  # the momentum buffer; None before the optimizer's first step

    def step(self, p: Tensor, g: Tensor) -> tuple[Tensor, Tensor | None, float]:
        """``(p − lr·d, new buffer, c)`` with ``d`` SGD's direction for gradient ``g`` and
        ``c = ∂(lr·d)/∂g`` (a scalar). Weight decay and the old buffer are constants."""
        d = g
        if self.weight_decay:
            d = d + self.weight_decay * p.detach()
        c, buf = 1.0, None
        if self.momentum:
            if self.buf is None:  # torch's first step: buf = d
                buf, dbuf = d, 1.0
            else:
                damp = 1.0 - self.dampening
                buf, dbuf = self.momentum * self.buf + damp * d, damp
            if self.nesterov:
                d, c = d + self.momentum * buf, 1.0 + self.momentum * dbuf
            else:
                d, c = buf, dbuf
        return p - self.lr * d, buf, self.lr * c


def _lr_of(lr: float | Mapping[str, float] | None, name: str) -> float | None:
    if lr is None or isinstance(lr, (int, float)):
        return lr
    return float(lr[name])


def sgd_rules(
    params: Mapping[str, Tensor],
    *,
    lr: float | Mapping[str, float] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, SGDRule]:
    """``{name: SGDRule}``: with ``optimizer``, the step ``torch.optim.SGD.step`` would take
    (group hyper-parameters, current momentum buffer), ``lr`` (one float or per name) overriding
    the groups' rate if given; without, plain SGD at ``lr``."""
    if optimizer is None:
        if lr is None:
            raise ValueError("the virtual step needs lr or an optimizer.")
        return {n: SGDRule(_lr_of(lr, n)) for n in params}
    groups = _sgd_hyper(optimizer)
    rules: dict[str, SGDRule] = {}
    for name, p in params.items():
        group = groups.get(id(p))
        if group is None:
            raise ValueError(f"parameter {name!r} is not in the optimizer.")
        own = _lr_of(lr, name)
        rules[name] = SGDRule(
            lr=float(group["lr"]) if own is None else own,
            momentum=group.get("momentum", 0.0),
            dampening=group.get("dampening", 0.0),
            nesterov=group.get("nesterov", False),
            weight_decay=group.get("weight_decay", 0.0),
            buf=optimizer.state.get(p, {}).get("momentum_buffer"),
        )
    return rules


def drift(
    params: Mapping[str, Tensor], rules: Mapping[str, SGDRule], steps: int
) -> tuple[dict[str, Tensor], dict[str, SGDRule]]:
    """θ and the rules (momentum buffers) after ``steps`` SGD steps with a zero loss gradient.

    The returned tensors are detached leaves that require a gradient (a look-ahead starts from
    them); ``steps = 0`` returns ``params`` and ``rules`` unchanged.
    """
    if steps <= 0:
        return dict(params), dict(rules)
    cur = {n: p.detach() for n, p in params.items()}
    new_rules = {n: replace(r) for n, r in rules.items()}
    for _ in range(steps):
        for n, rule in new_rules.items():
            cur[n], rule.buf, _ = rule.step(cur[n], torch.zeros_like(cur[n]))
    return {n: t.detach().requires_grad_() for n, t in cur.items()}, new_rules


def virtual_step(
    loss: Tensor,
    params: Mapping[str, Tensor],
    *,
    lr: float | Mapping[str, float] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    rules: Mapping[str, SGDRule] | None = None,
    create_graph: bool = True,
) -> dict[str, Tensor]:
    """One differentiable SGD step on ``loss``: returns ``{name: θ'}`` for ``params``.

    ``optimizer`` given: the step ``torch.optim.SGD.step`` would take (per-group lr, momentum,
    dampening, Nesterov, weight decay; the current momentum buffer, or none on the first step),
    with ``lr`` (a float, or ``{name: lr}``) overriding the groups' learning rate if given.
    Without it: ``θ − lr·∇θ loss``. ``rules`` (`sgd_rules`, `drift`) replace both.
    The returned tensors depend differentiably on whatever ``loss`` depends on (per-sample
    weights, a weighting network), through the gradient only: momentum and weight decay terms
    are constants of the step.
    """
    if rules is None:
        rules = sgd_rules(params, lr=lr, optimizer=optimizer)
    names = list(params)
    grads = torch.autograd.grad(
        loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True
    )
    out: dict[str, Tensor] = {}
    for name, g in zip(names, grads):
        p = params[name]
        out[name] = rules[name].step(p, torch.zeros_like(p) if g is None else g)[0]
    return out


def meta_tangents(
    model: nn.Module,
    meta_x: Tensor,
    meta_y: Tensor,
    *,
    lr: float | Mapping[str, float] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    params: Mapping[str, Tensor] | None = None,
    rules: Mapping[str, SGDRule] | None = None,
) -> dict[str, Tensor]:
    """The direction ``t`` with ``∂L_meta(θ'(ε))/∂ε_i |_{ε=0} = ⟨t, ∇θ ℓ_i(θ)⟩`` (L2RW/L2B).

    At ``ε = 0`` the weighted loss has zero gradient, so ``θ'(0) = θ − lr·(λθ + μ·buf)`` does not
    depend on the batch, and ``∂θ'/∂ε_i = −c·∇θ ℓ_i`` with ``c`` the step's scale (``lr``, times
    ``1 − dampening`` with a momentum buffer, ``1 + μ(...)`` for Nesterov). Hence ``t = −c·∇θ'
    L_meta(θ'(0))``: one meta forward and backward, no second-order graph. The per-sample
    products ``⟨t, ∇θ ℓ_i⟩`` are then a forward-mode derivative (`forward_with_tangents`).
    ``params`` may be drifted values (`drift`) with their ``rules``.
    """
    if params is None:
        params = trainable_parameters(model)
    if rules is None:
        rules = sgd_rules(params, lr=lr, optimizer=optimizer)
    names = list(params)
    shifted: dict[str, Tensor] = {}
    scale: dict[str, float] = {}
    for n in names:
        p = params[n]
        new, _, scale[n] = rules[n].step(p.detach(), torch.zeros_like(p))
        shifted[n] = new.detach().requires_grad_()
    logits = meta_forward(model, shifted, meta_x)
    meta = torch.nn.functional.cross_entropy(at_least_float32(logits), meta_y.long())
    grads = torch.autograd.grad(meta, [shifted[n] for n in names])
    return {n: -scale[n] * g.to(params[n].dtype) for n, g in zip(names, grads)}


def forward_with_tangents(
    model: nn.Module,
    x: Tensor,
    tangents: Mapping[str, Tensor],
    *,
    clone_buffers: bool = False,
    base: Mapping[str, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """``(model(x), d/ds model(x; θ + s·t)|_{s=0})`` in one forward pass (forward-mode AD).

    The first output keeps its ordinary autograd graph (it is the real training forward: the
    BatchNorm running statistics are updated once, as by ``model(x)``, unless ``clone_buffers``);
    the tangent is detached. ``base`` replaces θ for the named parameters (e.g. `drift`'s).
    Training-mode BatchNorm layers take `tangent_rules.batch_norm_jvp`'s tangent and ReLUs a
    copy-free one (`FastTangents`: same numbers, a fraction of the cost of PyTorch's rules).
    """
    import torch.autograd.forward_ad as fwad

    params = {**dict(model.named_parameters()), **dict(base or {})}
    with fwad.dual_level(), FastTangents():
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


def _splits(model: nn.Module) -> bool:
    """Whether ``model(x)`` is ``model.head(model.features(x))`` (a `Backbone` that keeps its
    ``forward``)."""
    return isinstance(model, Backbone) and type(model).forward is Backbone.forward


def _head_names(model: nn.Module, names: Iterable[str]) -> dict[str, str] | None:
    """``{name: name inside model.head}`` when ``model`` splits (`_splits`) and every name is a
    head parameter; else ``None``."""
    names = list(names)
    if not names or not _splits(model):
        return None
    if not all(n.startswith(HEAD_PREFIX) for n in names):
        return None
    return {n: n[len(HEAD_PREFIX) :] for n in names}


def split_forward(model: nn.Module, x: Tensor) -> tuple[Tensor | None, Tensor]:
    """``(features [B, D], logits [B, K])`` of one ordinary forward (the training forward, with its
    graph); features ``None`` for a model that is not ``head(features(x))``."""
    if not _splits(model):
        return None, model(x)
    feats = model.features(x)
    return feats, model.head(feats)


class _FeaturesOf(nn.Module):
    """``model.features`` as a module's forward (for ``functional_call``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.features(x)


def refuse_random_layers(model: nn.Module, route: str, instead: str) -> None:
    """Raise ValueError if ``model`` has dropout (p > 0): ``route`` forwards the batch a second
    time (the tangent pass), where other dropout masks than the training forward's would make
    its meta-gradient another quantity than the one it computes. ``instead`` names the exact
    alternative."""
    random = [
        name or type(model).__name__
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0
    ]
    if random:
        raise ValueError(
            f"{route} needs a model without dropout (it forwards the batch twice and the two "
            f"passes would draw different masks); this one has {', '.join(random)}: {instead}."
        )


def meta_features(model: nn.Module, x: Tensor) -> Tensor:
    """``model.features(x)`` ``[M, D]`` without a graph, BatchNorm running statistics updated on
    copies (the model's mode as it is: batch statistics in train mode)."""
    buffers = {f"model.{n}": b.clone() for n, b in model.named_buffers()}
    with torch.no_grad():
        return functional_call(_FeaturesOf(model), buffers, (x,), strict=False)


def meta_forward(model: nn.Module, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Meta logits ``[M, K]`` at ``params`` (the virtual θ'; the others keep their values),
    BatchNorm running statistics untouched (`functional_forward`). With head parameters only, the
    backbone runs once without a graph and only the head is functional: the same numbers and
    the same gradients with respect to ``params``, without the backbone's graph."""
    local = _head_names(model, params)
    if local is None:
        return functional_forward(model, params, x)
    head = {local[n]: p for n, p in params.items()}
    return functional_call(model.head, head, (meta_features(model, x),), strict=False)


def tangent_logits(
    model: nn.Module,
    x: Tensor,
    tangents: Mapping[str, Tensor],
    *,
    features: Tensor | None = None,
) -> Tensor:
    """``d/ds model(x; θ + s·t)|_{s=0}`` ``[B, K]``, detached.

    With ``features`` (those of ``x`` from the training forward, `split_forward`) and tangents on
    head parameters only, it is the head's own forward-mode derivative at those features: no
    second forward of the batch. Otherwise a forward-mode pass of ``x`` through the whole model
    on cloned BatchNorm buffers (`forward_with_tangents`).
    """
    local = None if features is None else _head_names(model, tangents)
    if local is None:
        with torch.no_grad():  # only the tangent is kept: no graph for the primal
            return forward_with_tangents(model, x, tangents, clone_buffers=True)[1]
    head = {local[n]: t for n, t in tangents.items()}
    return forward_with_tangents(model.head, features.detach(), head)[1]


#: The size of the parameter step of `finite_difference_logits` (``‖ε·t‖``). DARTS (Liu et al.,
#: ICLR 2019, Sec. 2.3) uses 0.01. Against the forward-mode pass in float32 (random directions,
#: BatchNorm in train mode), 3e-4 erred by about 1 % on small_cnn at width 32 and 0.2 % at width
#: 4, against 3-8 % at 0.01; smaller steps drown in rounding (1e-4: 0.6-3.6 %).
FD_STEP = 3e-4


def finite_difference_logits(
    model: nn.Module,
    x: Tensor,
    logits: Tensor,
    tangents: Mapping[str, Tensor],
    *,
    step: float = FD_STEP,
) -> Tensor:
    """``(model(x; θ + ε·t) − logits) / ε`` ``[B, K]``, detached: `tangent_logits` by a one-sided
    finite difference, with ``ε = step / ‖t‖``, at the cost of one forward without a graph instead
    of a forward-mode pass (about 3 forwards).

    ``logits`` are ``model(x)`` at θ from the training forward. Both forwards run in float32
    (autocast off): a bfloat16 difference of logits would be rounding noise. When ``logits`` are
    not float32 (an autocast forward), θ's logits are recomputed in float32 too. BatchNorm in train
    mode uses the batch's statistics in both forwards (running statistics on copies); a model
    with random layers (dropout) would need them off. Truncation error ``O(ε‖t‖²)``.
    """
    if not tangents:
        return torch.zeros_like(logits, dtype=torch.float32).detach()
    norm = torch.sqrt(sum((t.detach().float() ** 2).sum() for t in tangents.values()))
    if float(norm) == 0.0:
        return torch.zeros_like(logits, dtype=torch.float32).detach()
    eps = step / norm
    params = dict(model.named_parameters())
    shifted = {
        n: params[n].detach() + (eps * t.float()).to(params[n].dtype) for n, t in tangents.items()
    }
    with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
        moved = functional_forward(model, shifted, x).float()
        base = logits.detach()
        if base.dtype != torch.float32:
            base = functional_forward(model, {}, x).float()
    return (moved - base) / eps


def lookahead_meta_loss(
    model: nn.Module,
    train_loss: Tensor,
    meta_x: Tensor,
    meta_y: Tensor,
    *,
    lr: float | Mapping[str, float] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    params: Mapping[str, Tensor] | None = None,
    rules: Mapping[str, SGDRule] | None = None,
) -> Tensor:
    """Mean clean cross-entropy of the virtually updated model on ``(meta_x, meta_y)``.

    ``train_loss`` is the weighted training loss built by the caller from its own forward pass
    (at ``params``); the result can be differentiated with respect to the weights
    (``torch.autograd.grad``).
    """
    if params is None:
        params = trainable_parameters(model)
    new = virtual_step(train_loss, params, lr=lr, optimizer=optimizer, rules=rules)
    logits = meta_forward(model, new, meta_x)
    return torch.nn.functional.cross_entropy(at_least_float32(logits), meta_y.long())
