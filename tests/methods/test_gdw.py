"""GDW: the zero-mean constraint, the class-weighted logit gradient, the class-level step."""

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from noisytail.methods.base import Batch, Context, TaskInfo
from noisytail.methods.gdw import (
    class_weight_step,
    class_weighted_logit_loss,
    zero_mean_constraint,
)
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


def test_mwnet_mode_matches_mwnet_method():
    a, ctx_a = _gdw("mwnet")
    torch.manual_seed(0)
    b = METHODS.build(
        "mwnet",
        model=MODELS.build("mlp", num_classes=4, input_shape=(5,), hidden=(8,)),
        info=a.info,
    )
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(16, 5), torch.randint(0, 4, (16,))
    out_a = a(Batch(x, y, torch.arange(16)), ctx_a)
    out_b = b(Batch(x, y, torch.arange(16)), ctx_a)
    torch.testing.assert_close(out_a["loss"], out_b["loss"])
    for p, q in zip(a.vnet.parameters(), b.vnet.parameters()):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("mode", ["gdw", "mwnet"])
def test_forward_mode_equals_double_backward(mode):
    """Same VNet update, same class weights, same BatchNorm statistics (float64, a CNN)."""
    a, ctx_a = _gdw(mode, "cnn", meta_grad="forward")
    b, ctx_b = _gdw(mode, "cnn", meta_grad="double_backward")
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
