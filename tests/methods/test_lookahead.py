"""The shared one-step look-ahead, and one behaviour test over the four meta-reweighting methods."""

import contextlib
import copy

import numpy as np
import pytest
import torch
from torch import nn

from noisytail.methods.base import Batch, Context, TaskInfo
from noisytail.methods.l2b import l2b_losses, l2b_weights
from noisytail.methods.lookahead import (
    finite_difference_logits,
    functional_forward,
    head_parameters,
    lookahead_meta_loss,
    tangent_logits,
    trainable_parameters,
    virtual_step,
)
from noisytail.registry import METHODS, MODELS


def _bn_mlp(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)


@pytest.mark.parametrize("nesterov", [False, True])
def test_virtual_step_equals_torch_sgd_with_momentum_and_weight_decay(nesterov):
    model = _bn_mlp()
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=nesterov
    )
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for _ in range(2):  # populate the momentum buffers
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    opt.param_groups[0]["lr"] = 0.07
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.SGD(
        ref.parameters(), lr=0.07, momentum=0.9, weight_decay=5e-4, nesterov=nesterov
    )
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # torch shares buffers
    x2 = torch.randn(16, 5)
    ref_opt.zero_grad()
    nn.functional.cross_entropy(ref(x2), y).backward()
    ref_opt.step()

    bufs = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    new = virtual_step(
        nn.functional.cross_entropy(model(x2), y), trainable_parameters(model), optimizer=opt
    )
    for name, p in ref.named_parameters():
        torch.testing.assert_close(new[name], p, rtol=1e-5, atol=1e-6)
    # and the real optimizer's buffers were only read
    for p, b in zip(model.parameters(), bufs):
        assert torch.equal(opt.state[p]["momentum_buffer"], b)


def test_plain_virtual_step_and_first_step_without_buffers():
    model = _bn_mlp()
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
    new = virtual_step(loss, trainable_parameters(model), lr=0.3)
    for (name, p), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(new[name], p - 0.3 * g)
    # an optimizer without state yet: torch's first step (buf = g + wd·θ)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-2)
    loss = nn.functional.cross_entropy(model(x), y)
    new = virtual_step(loss, trainable_parameters(model), optimizer=opt)
    for (name, p), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(new[name], p - 0.3 * (g + 1e-2 * p))


@pytest.mark.parametrize("with_optimizer", [False, True])
def test_meta_gradient_matches_finite_differences(with_optimizer):
    model = _bn_mlp(torch.float64, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(12, 5, dtype=torch.float64), torch.randint(0, 3, (12,))
    mx, my = torch.randn(10, 5, dtype=torch.float64), torch.randint(0, 3, (10,))
    if with_optimizer:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    kw = dict(lr=0.5, optimizer=opt if with_optimizer else None)
    losses = l2b_losses(model(x), y)  # [2, B]
    _, grad = l2b_weights(model, losses, mx, my, **kw)

    def meta_at(eps):
        losses = l2b_losses(model(x), y)
        return float(lookahead_meta_loss(model, (eps * losses).sum(), mx, my, **kw).detach())

    h = 1e-6
    for r, i in [(0, 0), (0, 5), (1, 3), (1, 11)]:
        e = torch.zeros(2, 12, dtype=torch.float64)
        e[r, i] = h
        fd = (meta_at(e) - meta_at(-e)) / (2 * h)
        assert fd == pytest.approx(float(grad[r, i]), rel=1e-4, abs=1e-9)
    # the identity behind L2RW: dL_meta/dε_i = -lr <∇L_meta(θ'), ∇ℓ_i(θ)> (no optimizer state)
    if not with_optimizer:
        params = list(model.parameters())
        v = torch.autograd.grad(
            nn.functional.cross_entropy(model(mx), my), params
        )  # θ' = θ at ε = 0 without momentum/wd
        gi = torch.autograd.grad(l2b_losses(model(x), y)[0, 5], params)
        dot = sum((a * b).sum() for a, b in zip(v, gi))
        assert float(grad[0, 5]) == pytest.approx(-0.5 * float(dot), rel=1e-6)


def test_batchnorm_running_stats_untouched_by_virtual_step():
    model = _bn_mlp()
    model.train()
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    before = {n: b.clone() for n, b in model.named_buffers()}
    losses = l2b_losses(model(x), y)
    after_forward = {n: b.clone() for n, b in model.named_buffers()}
    assert not torch.equal(before["1.running_mean"], after_forward["1.running_mean"])
    l2b_weights(model, losses, torch.randn(10, 5), torch.randint(0, 3, (10,)), lr=0.1)
    functional_forward(model, trainable_parameters(model), torch.randn(4, 5))
    for n, b in model.named_buffers():
        assert torch.equal(b, after_forward[n]), n


def test_head_only_lookahead_uses_the_head():
    model = MODELS.build("mlp", num_classes=3, input_shape=(5,), hidden=(8,))
    params = head_parameters(model)
    assert set(params) == {"head.weight", "head.bias"}
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    w, g = l2b_weights(model, l2b_losses(model(x), y), x, y, lr=0.1, params=params)
    assert w.shape == (2, 8) and torch.isfinite(g).all()


# --------------------------------------------------------------------------------------------
# Behaviour: on separable blobs with 30% known flips, flipped samples get lower mean weight.


def blobs_problem(seed=0, n=600, k=3, d=8, flip=0.3):
    g = torch.Generator().manual_seed(seed)
    centres = 4.0 * torch.randn(k, d, generator=g)
    y_true = torch.arange(n) % k
    x = centres[y_true] + torch.randn(n, d, generator=g)
    flipped = torch.rand(n, generator=g) < flip
    y = y_true.clone()
    y[flipped] = (
        y_true[flipped] + 1 + torch.randint(0, k - 1, (int(flipped.sum()),), generator=g)
    ) % k
    my = torch.arange(10 * k) % k
    mx = centres[my] + torch.randn(10 * k, d, generator=g)
    return x, y, flipped, mx, my


def run_meta_method(name, steps=40, batch=64, seed=0, **kw):
    x, y, flipped, mx, my = blobs_problem(seed)
    torch.manual_seed(seed)
    model = MODELS.build("mlp", num_classes=3, input_shape=(8,), hidden=(32,))
    info = TaskInfo(3, np.bincount(y.numpy()), len(y), (8,), 1, steps)
    method = METHODS.build(name, args=kw, model=model, info=info)
    opt = torch.optim.SGD(method.parameter_groups(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    ctx = Context(
        info=info,
        optimizer=opt,
        device=torch.device("cpu"),
        generator=torch.Generator(),
        meta_batches=lambda: Batch(mx, my, torch.arange(len(my))),
        predict_train=None,
        autocast=contextlib.nullcontext,
    )
    gen = torch.Generator().manual_seed(seed + 1)
    seen_w, seen_f = [], []
    for step in range(steps):
        idx = torch.randperm(len(y), generator=gen)[:batch]
        ctx.step = step
        out = method(Batch(x[idx], y[idx], idx), ctx)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        assert torch.isfinite(out["loss"])
        if step >= steps // 4:
            seen_w.append(method.sample_weight[idx].clone())
            seen_f.append(flipped[idx])
    w, f = torch.cat(seen_w), torch.cat(seen_f)
    return float(w[f].mean()), float(w[~f].mean()), method


@pytest.mark.parametrize(
    "name,kw",
    [
        ("l2rw", {}),
        ("l2b", {"warmup_epochs": 0, "lookahead": "all"}),
        ("mwnet", {"vnet_lr": 1e-2, "meta_every": 1}),  # 40 steps: a meta step at each
        ("gdw", {"vnet_lr": 1e-2, "meta_every": 1}),
    ],
)
def test_flipped_samples_get_lower_weight(name, kw):
    flipped_w, clean_w, _ = run_meta_method(name, **kw)
    assert flipped_w < clean_w, (flipped_w, clean_w)


@pytest.mark.parametrize("state", ["none", "plain", "momentum", "nesterov", "head"])
def test_forward_mode_meta_gradient_equals_double_backward(state):
    from noisytail.methods.l2b import l2b_forward_meta_grad

    torch.manual_seed(0)
    model = MODELS.build("small_cnn", num_classes=4, input_shape=(1, 8, 8), width=4).double()
    opt = torch.optim.SGD(
        model.parameters(),
        lr=0.2,
        momentum=0.0 if state == "plain" else 0.9,
        weight_decay=1e-3,
        nesterov=state == "nesterov",
        dampening=0.1 if state == "momentum" else 0.0,
    )
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.randint(0, 4, (6,))
    mx, my = torch.randn(5, 1, 8, 8, dtype=torch.float64), torch.randint(0, 4, (5,))
    if state in ("momentum", "nesterov", "head"):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    use_opt = None if state == "none" else opt
    params = head_parameters(model) if state == "head" else None
    ref_model = copy.deepcopy(model)
    ref_params = head_parameters(ref_model) if state == "head" else None
    ref_opt = None
    if use_opt is not None:
        ref_opt = torch.optim.SGD(
            ref_model.parameters(),
            **{k: v for k, v in opt.param_groups[0].items() if k != "params"},
        )
        ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    losses = l2b_losses(ref_model(x), y)
    _, g_ref = l2b_weights(ref_model, losses, mx, my, lr=0.2, optimizer=ref_opt, params=ref_params)
    logits, losses_fw, g = l2b_forward_meta_grad(
        model, x, y, mx, my, lr=0.2, optimizer=use_opt, params=params
    )
    torch.testing.assert_close(g, g_ref, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(losses_fw, losses.detach())
    # the forward-mode forward is the real forward: graph kept, BN stats updated once, like ref
    for (n, a), b in zip(model.named_buffers(), ref_model.buffers()):
        torch.testing.assert_close(a, b, msg=n)
    losses_fw.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("autocast", [False, True])
def test_finite_difference_logits_is_close_to_the_forward_mode_tangent(autocast):
    """One-sided difference in float32 against the exact forward-mode tangent (BatchNorm in train
    mode), also when the training logits come from a bfloat16 autocast forward (θ's logits are
    then recomputed in float32); the model's BatchNorm statistics are untouched."""
    torch.manual_seed(0)
    model = MODELS.build("small_cnn", num_classes=4, input_shape=(1, 8, 8), width=4).train()
    x = torch.randn(32, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(x)
    assert (logits.dtype == torch.bfloat16) == autocast
    buffers = [b.clone() for b in model.buffers()]
    t = {n: torch.randn_like(p) for n, p in trainable_parameters(model).items()}
    exact = tangent_logits(model, x, t)
    approx = finite_difference_logits(model, x, logits, t)
    assert float((approx - exact).norm() / exact.norm()) < 0.02
    for a, b in zip(model.buffers(), buffers):
        torch.testing.assert_close(a, b)
    zero = {n: torch.zeros_like(v) for n, v in t.items()}
    assert float(finite_difference_logits(model, x, logits, zero).abs().max()) == 0.0
