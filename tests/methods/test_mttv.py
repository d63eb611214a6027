"""MTTV: fused embeddings, EMA momentum encoder outside the optimizer, filtered loss."""

import contextlib

import numpy as np
import pytest
import torch

from noisytail.data.views import multi_view, partner_permutation
from noisytail.losses.contrastive import mttv_loss
from noisytail.methods.base import Batch, Context, TaskInfo
from noisytail.registry import METHODS, MODELS


def setup(b=16, seed=0, **kw):
    torch.manual_seed(seed)
    model = MODELS.build("small_cnn", num_classes=4, input_shape=(1, 8, 8), width=4)
    info = TaskInfo(4, np.array([8, 4, 2, 2]), 64, (1, 8, 8), 1, 4)
    method = METHODS.build("mttv", args=kw, model=model, info=info)
    opt = torch.optim.SGD(method.parameter_groups(), lr=0.5, momentum=0.9)
    ctx = Context(
        info=info,
        optimizer=opt,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(seed),
        meta_batches=None,
        predict_train=None,
        autocast=contextlib.nullcontext,
    )
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(b, 1, 8, 8, generator=g)
    views = (*multi_view(x, 2, g), x)
    batch = Batch(views, torch.randint(0, 4, (b,), generator=g), torch.arange(b))
    return method, opt, ctx, batch


def snapshot(params):
    return [p.detach().clone() for p in params]


def test_momentum_encoder_is_not_optimised():
    method, opt, _, _ = setup()
    optimised = {id(p) for g in opt.param_groups for p in g["params"]}
    momentum = method._momentum_params()
    assert momentum and all(not p.requires_grad for p in momentum)
    assert not optimised & {id(p) for p in momentum}
    assert {id(p) for p in method._online_params()} <= optimised


def test_ema_moves_by_the_stated_rule():
    method, opt, ctx, batch = setup(momentum=0.9)
    for _ in range(2):  # two real steps so that q and k differ
        out = method(batch, ctx)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    k_old = snapshot(method._momentum_params())
    q_now = snapshot(method._online_params())
    assert any(not torch.allclose(a, b) for a, b in zip(k_old, q_now))
    method(batch, ctx)  # the update happens at the start of the step, before k encodes
    for k_new, k0, q in zip(method._momentum_params(), k_old, q_now):
        assert torch.allclose(k_new, 0.9 * k0 + 0.1 * q, atol=1e-6)


def test_first_step_keeps_k_equal_to_q():
    method, _, ctx, batch = setup()
    method(batch, ctx)
    for k, q in zip(method._momentum_params(), method._online_params()):
        assert torch.allclose(k, q, atol=1e-7)  # 0.9 q + 0.1 q, up to rounding


def test_loss_is_mttv_loss_of_the_fused_embeddings():
    method, _, ctx, batch = setup(seed=2)
    state = ctx.generator.get_state()
    out = method(batch, ctx)
    ctx.generator.set_state(state)
    perm = partner_permutation(len(batch), ctx.generator)
    a1, a2, plain = batch.x
    with torch.no_grad():
        q = lambda x: method.projector(method.model.features(x))  # noqa: E731
        k = lambda x: method.momentum_projector(method.momentum_model.features(x))  # noqa: E731
        u = q(plain) + q(a2)[perm]
        v = k(a1) + k(plain)[perm]
        expected = mttv_loss(u, v, temperature=0.3, low=0.1, high=0.9)
    assert out["ssl_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert 0.0 <= out["filtered_fraction"].item() <= 1.0


def test_no_gradient_reaches_the_momentum_encoder():
    method, _, ctx, batch = setup()
    method(batch, ctx)["loss"].backward()
    assert all(p.grad is None for p in method._momentum_params())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method._online_params())


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_training_is_finite(fusion):
    method, opt, ctx, batch = setup(fusion=fusion)
    for _ in range(3):
        out = method(batch, ctx)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        assert torch.isfinite(out["loss"])
