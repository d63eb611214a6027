"""GDW: the zero-mean constraint, the class-weighted logit gradient, the class-level step."""

import contextlib
import copy

import numpy as np
import pytest
import torch
from torch import nn

from noisytail.methods.base import Batch, Context, TaskInfo
from noisytail.methods.gdw import (
    clamp_probs,
    class_weight_step,
    class_weighted_logit_loss,
    zero_mean_constraint,
)
from noisytail.optim import backbone_parameters, scale_backbone_groups
from noisytail.registry import METHODS, MODELS


def test_zero_mean_constraint_keeps_weighted_gradient_zero_mean():
    torch.manual_seed(0)
    logits = torch.randn(20, 7, dtype=torch.float64)
    p = torch.softmax(logits, 1)
    y = torch.randint(0, 7, (20,))
    omega = torch.rand(20, 7, dtype=torch.float64) * 3
    new = zero_mean_constraint(omega, p, y)
    onehot = nn.functional.one_hot(y, 7).double()
    torch.testing.assert_close((new * (p - onehot)).sum(1), torch.zeros(20, dtype=torch.float64))
    off = 1 - onehot
    torch.testing.assert_close(new * off, omega * off)  # only the labelled entry changes
    # a constant row is left as it is
    const = torch.full_like(omega, 0.3)
    torch.testing.assert_close(zero_mean_constraint(const, p, y), const)


def test_constraint_survives_saturated_probabilities():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.9995, 0.0005, 0.0]])
    new = zero_mean_constraint(torch.ones(2, 3), p, torch.tensor([0, 0]))
    assert torch.isfinite(new).all()
    # with the probabilities GDW uses (clamped once), every row still sums to zero
    pc = clamp_probs(p)
    onehot = nn.functional.one_hot(torch.tensor([0, 0]), 3).float()
    torch.testing.assert_close((new * (pc - onehot)).sum(1), torch.zeros(2), atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="p_max"):
        clamp_probs(p, 1.0)


def _saturated_gdw(**kw):
    """GDW on a linear model whose inputs are the basis vectors, so the gradient of the head's
    weight column i is the logit gradient of sample i; sample 0 has p_y = 0.99963 > 0.999."""
    torch.manual_seed(0)
    model = MODELS.build("mlp", num_classes=4, input_shape=(6,), hidden=()).double()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)
        model.head.weight[:, 0] = torch.tensor([9.0, 0.0, 0.0, 0.0])
        model.head.bias.zero_()
    info = TaskInfo(4, np.array([10] * 4), 40, (6,), 2, 1)
    m = METHODS.build("gdw", args=kw, model=model, info=info).double()
    opt = torch.optim.SGD(m.parameter_groups(), lr=0.1)
    mx = torch.randn(8, 6, dtype=torch.float64)
    my = torch.randint(0, 4, (8,))
    ctx = Context(
        info=info,
        optimizer=opt,
        device=torch.device("cpu"),
        generator=torch.Generator(),
        meta_batches=lambda: Batch(mx, my, torch.arange(8)),
        predict_train=None,
        autocast=contextlib.nullcontext,
    )
    x = torch.eye(6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    return m, ctx, x, y


def test_saturated_row_keeps_zero_sum_in_the_real_step():
    m, ctx, x, y = _saturated_gdw()
    assert float(torch.softmax(m.model(x[:1]), 1)[0, 0]) > 0.999
    m(Batch(x, y, torch.arange(6)), ctx)["loss"].backward()
    g = m.model.head.weight.grad  # [K, B]: column i = logit gradient of sample i
    torch.testing.assert_close(g.sum(0), torch.zeros(6, dtype=torch.float64), atol=1e-15, rtol=0)
    assert float(g[:, 0].abs().sum()) > 1e-6


def test_equal_class_weights_give_mwnet_gradient_on_a_saturated_row():
    """No class-level step (eta_omega 0) and a fixed weighting network (lr 0): GDW's real step
    must be MW-Net's, the gradient of mean(V(l) * l), computed here directly."""
    m, ctx, x, y = _saturated_gdw(eta_omega=0.0, vnet_lr=0.0)
    ce = nn.functional.cross_entropy(m.model(x), y, reduction="none")
    w = m.vnet(ce.detach()).detach()
    want = torch.autograd.grad((w * ce).mean(), [m.model.head.weight, m.model.head.bias])
    m(Batch(x, y, torch.arange(6)), ctx)["loss"].backward()
    got = [m.model.head.weight.grad, m.model.head.bias.grad]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_equal_class_weights_reduce_to_instance_weighting():
    torch.manual_seed(0)
    model = MODELS.build("mlp", num_classes=4, input_shape=(5,), hidden=(8,))
    x, y = torch.randn(12, 5), torch.randint(0, 4, (12,))
    w = torch.rand(12)
    logits = model(x)
    p = torch.softmax(logits.detach(), 1)
    omega = zero_mean_constraint(w[:, None].expand(12, 4), p, y)
    g_gdw = torch.autograd.grad(
        class_weighted_logit_loss(logits, omega, p, y), list(model.parameters()), retain_graph=True
    )
    ce = nn.functional.cross_entropy(logits, y, reduction="none")
    g_inst = torch.autograd.grad((w * ce).mean(), list(model.parameters()))
    for a, b in zip(g_gdw, g_inst):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # and the logit gradient is ω ⊙ (p - y) / B
    z = logits.detach().requires_grad_()
    (gz,) = torch.autograd.grad(class_weighted_logit_loss(z, omega, p, y), z)
    onehot = nn.functional.one_hot(y, 4).float()
    torch.testing.assert_close(gz, omega * (p - onehot) / 12)


def test_class_weight_step_clips_and_clamps():
    omega = torch.ones(2, 3)
    g = torch.tensor([[1.0, -1.0, 0.0], [100.0, 0.0, 0.0]])
    new = class_weight_step(omega, g, lr=100.0, max_step=0.2)
    torch.testing.assert_close(new, torch.tensor([[0.8, 1.2, 1.0], [0.8, 1.0, 1.0]]))
    tiny = class_weight_step(torch.full((1, 2), 1e-6), torch.tensor([[1.0, 1.0]]), lr=1.0)
    assert float(tiny.min()) == pytest.approx(1e-6)


def _gdw(mode="gdw", model_name="mlp", **kw):
    torch.manual_seed(0)
    if model_name == "mlp":
        model = MODELS.build("mlp", num_classes=4, input_shape=(5,), hidden=(8,))
    else:
        model = MODELS.build("small_cnn", num_classes=4, input_shape=(1, 8, 8), width=4)
    info = TaskInfo(4, np.array([10] * 4), 40, (5,), 2, 1)
    m = METHODS.build("gdw", args={"mode": mode, **kw}, model=model, info=info)
    if model_name != "mlp":
        m.double()
    opt = torch.optim.SGD(m.parameter_groups(), lr=0.1, momentum=0.9)
    shape = (8, 5) if model_name == "mlp" else (8, 1, 8, 8)
    dtype = torch.float32 if model_name == "mlp" else torch.float64
    mx, my = torch.randn(*shape, dtype=dtype), torch.randint(0, 4, (8,))
    ctx = Context(
        info=info,
        optimizer=opt,
        device=torch.device("cpu"),
        generator=torch.Generator(),
        meta_batches=lambda: Batch(mx, my, torch.arange(8)),
        predict_train=None,
        autocast=contextlib.nullcontext,
    )
    return m, ctx


def test_gdw_step_keeps_constraint_and_moves_weights():
    m, ctx = _gdw()
    x, y = torch.randn(16, 5), torch.randint(0, 4, (16,))
    vnet_before = [p.detach().clone() for p in m.vnet.parameters()]
    out = m(Batch(x, y, torch.arange(16)), ctx)
    omega = m.last_omega
    p = torch.softmax(m.model(x).detach(), 1)
    onehot = nn.functional.one_hot(y, 4).float()
    torch.testing.assert_close((omega * (p - onehot)).sum(1), torch.zeros(16), atol=1e-6, rtol=0)
    assert float(omega.std()) > 0  # the class-level step changed the broadcast weights
    assert any(not torch.equal(a, b) for a, b in zip(vnet_before, m.vnet.parameters()))
    # the logged loss is the batch CE, the gradient the surrogate's
    ce = nn.functional.cross_entropy(m.model(x), y)
    assert float(out["loss"].detach()) == pytest.approx(float(ce.detach()), rel=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in m.model.parameters())
    assert all(p.grad is None for p in m.vnet.parameters())


# --------------------------------------------------------------------------------------------
# An independent reference: the official MW-Net / GDW iteration written out by hand for a
# one-hidden-layer MLP (explicit forward, explicit virtual step, torch's Adam), float64.


def _mlp_logits(theta, x):
    h = torch.relu(x @ theta["body.1.weight"].T + theta["body.1.bias"])
    return h @ theta["head.weight"].T + theta["head.bias"]


def reference_step(
    theta, lrs, vnet, x, y, mx, my, mode, eta=100.0, clip=0.2, p_max=0.999, first_order=False
):
    """One official iteration (Shu et al. Alg. 1; Chen et al. Alg. 1). ``lrs``: each parameter's
    virtual-step rate (0 = not moved). ``first_order``: the meta loss linearised at θ,
    ``L_meta(θ) + ∇L_meta(θ)·(θ' − θ)``, whose gradients are the meta-gradient at θ. Returns the
    VNet after its Adam step and the real step's gradient ``{name: grad}``."""
    theta = {n: t.detach().clone().requires_grad_() for n, t in theta.items()}
    names = list(theta)
    vnet = copy.deepcopy(vnet)
    adam = torch.optim.Adam(vnet.parameters(), lr=1e-3, weight_decay=1e-4)
    logits = _mlp_logits(theta, x)
    b, k = logits.shape
    ce = nn.functional.cross_entropy(logits, y, reduction="none")
    w = vnet(ce.detach())
    onehot = nn.functional.one_hot(y, k).double()
    p = torch.softmax(logits.detach(), 1)

    def constrain(om):  # the labelled entry: sum_{j != y} om_j p_j / (1 - p_y)
        p_y = (p * onehot).sum(1)
        om_y = ((om * p).sum(1) - (om * onehot).sum(1) * p_y) / (1 - p_y)
        return om * (1 - onehot) + om_y[:, None] * onehot

    if mode == "gdw":
        p = p.clamp(max=p_max)
        omega = constrain(w[:, None].repeat(1, k))
        g = torch.autograd.grad(
            logits, [theta[n] for n in names], omega * (p - onehot) / b, create_graph=True
        )
    else:
        g = torch.autograd.grad((w * ce).mean(), [theta[n] for n in names], create_graph=True)
    fast = {n: theta[n] - lrs[n] * gi for n, gi in zip(names, g)}
    if first_order:
        at = {n: t.detach().clone().requires_grad_() for n, t in theta.items()}
        v = torch.autograd.grad(
            nn.functional.cross_entropy(_mlp_logits(at, mx), my), [at[n] for n in names]
        )
        meta = sum((vi * (fast[n] - theta[n])).sum() for n, vi in zip(names, v))
    else:
        meta = nn.functional.cross_entropy(_mlp_logits(fast, mx), my)
    vparams = list(vnet.parameters())
    wrt = vparams + ([omega] if mode == "gdw" else [])
    grads = torch.autograd.grad(meta, wrt)
    for q, gq in zip(vparams, grads):
        q.grad = gq
    adam.step()
    if mode == "gdw":
        big_g = grads[-1]
        step = (eta * big_g / big_g.abs().sum()).clamp(-clip, clip)
        new = constrain((omega.detach() - step).clamp(1e-6, 1e6))
        real = torch.autograd.grad(logits, [theta[n] for n in names], new * (p - onehot) / b)
    else:
        w_new = vnet(ce.detach()).detach()
        real = torch.autograd.grad((w_new * ce).mean(), [theta[n] for n in names])
    return vnet, dict(zip(names, real))


def _vnet_method(name, scale=1.0, frozen=False, **kw):
    kw.setdefault("meta_every", 1)  # the official iteration: a meta step each time, Adam at 1e-3
    torch.manual_seed(0)
    model = MODELS.build("mlp", num_classes=4, input_shape=(5,), hidden=(7,))
    info = TaskInfo(4, np.array([10] * 4), 40, (5,), 2, 1)
    m = METHODS.build(name, args=kw, model=model, info=info).double()
    backbone = backbone_parameters(m.model)
    groups = scale_backbone_groups(m.parameter_groups(), backbone, scale)
    opt = torch.optim.SGD(groups, lr=0.3, momentum=0.9, weight_decay=5e-4)
    for g in opt.param_groups:  # as the loop sets them each step
        g["lr"] = 0.3 * g.get("lr_scale", 1.0)
    torch.manual_seed(1)
    mx, my = torch.randn(9, 5, dtype=torch.float64), torch.randint(0, 4, (9,))
    ctx = Context(
        info=info,
        optimizer=opt,
        device=torch.device("cpu"),
        generator=torch.Generator(),
        meta_batches=lambda: Batch(mx, my, torch.arange(9)),
        predict_train=None,
        autocast=contextlib.nullcontext,
    )
    if frozen:
        ctx.frozen_parameters = tuple(backbone)
    x = torch.randn(12, 5, dtype=torch.float64) * 2
    y = torch.randint(0, 4, (12,))
    lrs = {
        n: 0.0
        if (frozen and n.startswith("body."))
        else 0.3 * (scale if n.startswith("body.") else 1)
        for n, _ in m.model.named_parameters()
    }
    return m, ctx, x, y, mx, my, lrs


@pytest.mark.parametrize(
    "name,kw,mode",
    [("mwnet", {}, "mwnet"), ("gdw", {"mode": "mwnet"}, "mwnet"), ("gdw", {}, "gdw")],
)
@pytest.mark.parametrize("meta_grad", ["forward", "double_backward", "first_order"])
@pytest.mark.parametrize("groups", ["one_lr", "backbone_lr_0.1", "frozen_backbone"])
@pytest.mark.parametrize("lookahead", ["all", "head"])
def test_step_matches_a_hand_written_reference(name, kw, mode, meta_grad, groups, lookahead):
    """MW-Net, GDW's MW-Net mode and GDW against the reference: the weighting network after its
    Adam step and the real step's gradient. With backbone_lr_scale 0.1 the backbone's virtual
    step is at a tenth of the head's rate; with a frozen backbone the virtual step leaves it.
    ``lookahead="head"`` (the default route) is the reference with the backbone's virtual rate
    at 0: only the head moves in the look-ahead. ``meta_grad="first_order"`` is the reference
    with its meta loss linearised at θ."""
    scale = 0.1 if groups == "backbone_lr_0.1" else 1.0
    m, ctx, x, y, mx, my, lrs = _vnet_method(
        name,
        scale=scale,
        frozen=groups == "frozen_backbone",
        meta_grad=meta_grad,
        lookahead=lookahead,
        **kw,
    )
    if lookahead == "head":
        lrs = {n: (0.0 if n.startswith("body.") else r) for n, r in lrs.items()}
    theta = dict(m.model.named_parameters())
    vnet0 = copy.deepcopy(m.vnet)
    first_order = meta_grad == "first_order"
    vnet, want = reference_step(theta, lrs, vnet0, x, y, mx, my, mode, first_order=first_order)
    m(Batch(x, y, torch.arange(12)), ctx)["loss"].backward()
    for (n, q), r in zip(m.vnet.named_parameters(), vnet.parameters()):
        torch.testing.assert_close(q, r, rtol=1e-9, atol=1e-12, msg=n)
    for n, q in m.model.named_parameters():
        torch.testing.assert_close(q.grad, want[n], rtol=1e-9, atol=1e-12, msg=n)
    # the reference can tell the variants apart (the test would see a wrong rate or mode)
    other = dict(lrs, **{n: 0.3 for n in lrs if n.startswith("body.")})
    if other != lrs:
        v2, _ = reference_step(theta, other, vnet0, x, y, mx, my, mode, first_order=first_order)
        assert any(
            not torch.allclose(a, b, rtol=1e-9, atol=1e-12)
            for a, b in zip(v2.parameters(), vnet.parameters())
        )


@pytest.mark.parametrize("mode", ["gdw", "mwnet"])
@pytest.mark.parametrize("lookahead", ["all", "head"])
def test_forward_mode_equals_double_backward(mode, lookahead):
    """Same VNet update, same class weights, same BatchNorm statistics (float64, a CNN)."""
    a, ctx_a = _gdw(mode, "cnn", meta_grad="forward", lookahead=lookahead)
    b, ctx_b = _gdw(mode, "cnn", meta_grad="double_backward", lookahead=lookahead)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(1)
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.randint(0, 4, (6,))
    outs = []
    for m, ctx in ((a, ctx_a), (b, ctx_b)):
        out = m(Batch(x, y, torch.arange(6)), ctx)
        out["loss"].backward()
        outs.append(out)
    for p, q in zip(a.vnet.parameters(), b.vnet.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12)
    for p, q in zip(a.model.buffers(), b.model.buffers()):
        torch.testing.assert_close(p, q)
    if mode == "gdw":
        torch.testing.assert_close(a.last_omega, b.last_omega, rtol=1e-9, atol=1e-12)


def test_forward_mode_class_weight_gradient_equals_double_backward():
    a, ctx = _gdw("gdw", "cnn", meta_grad="forward")
    b, _ = _gdw("gdw", "cnn", meta_grad="double_backward")
    b.load_state_dict(a.state_dict())
    torch.manual_seed(1)
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.randint(0, 4, (6,))
    meta = ctx.meta_batch()
    gs = []
    for m in (a, b):
        logits = m.model(x)
        losses = nn.functional.cross_entropy(logits, y, reduction="none")
        probs = torch.softmax(logits.detach(), 1)
        omega = zero_mean_constraint(m.vnet(losses.detach())[:, None].expand(6, 4), probs, y)
        meta_loss, g = m._meta_step(x, logits, y, probs, omega, meta, 0.3)
        gs.append((meta_loss, g))
    torch.testing.assert_close(gs[0][0], gs[1][0])
    torch.testing.assert_close(gs[0][1], gs[1][1], rtol=1e-8, atol=1e-14)
    assert float(gs[0][1].abs().max()) > 1e-6


@pytest.mark.parametrize("step,route", [(0, "all"), (1, "head"), (3, "head"), (4, "all")])
def test_between_head_takes_a_head_meta_step_between_full_ones(step, route):
    """``between="head"``, ``meta_every=4``: iteration 0, 4, ... take the full look-ahead, the
    others the head-only one (the reference with the backbone's virtual rate at 0), each with
    the class-level step; the weighting network moves at every iteration, at the unscaled 1e-3."""
    m, ctx, x, y, mx, my, lrs = _vnet_method("gdw", meta_every=4, between="head")
    assert m.vnet_optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    ctx.step = step
    if route == "head":
        lrs = {n: (0.0 if n.startswith("body.") else r) for n, r in lrs.items()}
    theta = dict(m.model.named_parameters())
    vnet, want = reference_step(theta, lrs, copy.deepcopy(m.vnet), x, y, mx, my, "gdw")
    m(Batch(x, y, torch.arange(12)), ctx)["loss"].backward()
    for (n, q), r in zip(m.vnet.named_parameters(), vnet.parameters()):
        torch.testing.assert_close(q, r, rtol=1e-9, atol=1e-12, msg=n)
    for n, q in m.model.named_parameters():
        torch.testing.assert_close(q.grad, want[n], rtol=1e-9, atol=1e-12, msg=n)


def test_between_is_checked():
    with pytest.raises(ValueError, match="between"):
        _vnet_method("gdw", between="every")


@pytest.mark.parametrize("mode", ["gdw", "mwnet"])
def test_first_order_differs_from_the_full_meta_gradient(mode):
    """The meta-gradient at θ is an approximation: the reference tells it from the one at θ'."""
    m, ctx, x, y, mx, my, lrs = _vnet_method("gdw", mode=mode)
    theta = dict(m.model.named_parameters())
    exact, _ = reference_step(theta, lrs, m.vnet, x, y, mx, my, mode)
    approx, _ = reference_step(theta, lrs, m.vnet, x, y, mx, my, mode, first_order=True)
    assert any(
        not torch.allclose(a, b, rtol=1e-6, atol=1e-9)
        for a, b in zip(exact.parameters(), approx.parameters())
    )


@pytest.mark.parametrize("meta_grad", ["forward", "double_backward", "first_order"])
def test_meta_batch_uses_the_first_rows_of_the_meta_batch(meta_grad):
    """``meta_batch=5``: the reference on the meta batch's first 5 rows (of 9)."""
    m, ctx, x, y, mx, my, lrs = _vnet_method("gdw", meta_grad=meta_grad, meta_batch=5)
    theta = dict(m.model.named_parameters())
    first_order = meta_grad == "first_order"
    args = ("gdw",)
    vnet, want = reference_step(
        theta, lrs, m.vnet, x, y, mx[:5], my[:5], *args, first_order=first_order
    )
    whole, _ = reference_step(theta, lrs, m.vnet, x, y, mx, my, *args, first_order=first_order)
    m(Batch(x, y, torch.arange(12)), ctx)["loss"].backward()
    for q, r in zip(m.vnet.parameters(), vnet.parameters()):
        torch.testing.assert_close(q, r, rtol=1e-9, atol=1e-12)
    assert any(not torch.allclose(q, w) for q, w in zip(m.vnet.parameters(), whole.parameters()))
    for n, q in m.model.named_parameters():
        torch.testing.assert_close(q.grad, want[n], rtol=1e-9, atol=1e-12, msg=n)


@pytest.mark.parametrize("meta_grad", ["forward", "first_order"])
def test_finite_difference_tangent_is_close_to_forward_mode(meta_grad):
    """``tangent="finite_difference"``: the class-level weights' gradient ``G`` of a float32 CNN
    with BatchNorm within a few percent of the forward-mode one (it is a one-sided difference)."""
    gs = []
    for tangent in ("forward_mode", "finite_difference"):
        torch.manual_seed(0)
        model = MODELS.build("small_cnn", num_classes=4, input_shape=(1, 8, 8), width=4)
        info = TaskInfo(4, np.array([10] * 4), 40, (5,), 2, 1)
        args = {"meta_grad": meta_grad, "tangent": tangent}
        m = METHODS.build("gdw", args=args, model=model, info=info)
        torch.manual_seed(1)
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,))
        mx, my = torch.randn(8, 1, 8, 8), torch.randint(0, 4, (8,))
        logits = m.model(x)
        probs = torch.softmax(logits.detach(), 1)
        losses = nn.functional.cross_entropy(logits, y, reduction="none")
        omega = zero_mean_constraint(m.vnet(losses.detach())[:, None].expand(16, 4), probs, y)
        gs.append(m._meta_step(x, logits, y, probs, omega, Batch(mx, my, torch.arange(8)), 0.3)[1])
    exact, approx = gs
    assert float(exact.abs().max()) > 1e-6
    assert float((approx - exact).norm() / exact.norm()) < 0.05


def test_tangent_and_meta_batch_are_checked():
    with pytest.raises(ValueError, match="tangent"):
        _gdw(tangent="central")
    with pytest.raises(ValueError, match="meta_batch"):
        _gdw(meta_batch=-1)
    with pytest.raises(ValueError, match="meta_grad"):
        _gdw(meta_grad="second_order")


@pytest.mark.parametrize("classes,want", [(10, 100.0), (14, 100.0), (100, 1000.0)])
def test_eta_omega_defaults_to_the_official_value_for_the_number_of_classes(classes, want):
    """The official README: η_ω 100 on CIFAR-10, 1000 on CIFAR-100; a given value wins."""
    info = TaskInfo(
        num_classes=classes,
        class_counts=np.full(classes, 10),
        num_train=10 * classes,
        input_shape=(4,),
        epochs=1,
        steps_per_epoch=1,
    )
    model = MODELS.build("mlp", num_classes=classes, input_shape=(4,), hidden=[8])
    assert METHODS.build("gdw", model=model, info=info).eta_omega == want
    given = METHODS.build("gdw", args={"eta_omega": 3.0}, model=model, info=info)
    assert given.eta_omega == 3.0
