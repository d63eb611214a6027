"""L2B / L2RW: weight normalisation, warm-up, the plug-in step, and the loop."""

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from noisytail.methods.base import Batch, Context, TaskInfo
from noisytail.methods.l2b import l2b_losses, l2b_step, l2b_weights, normalise_meta_weights
from noisytail.registry import METHODS, MODELS


def test_normalisations():
    g = torch.tensor([[-2.0, 1.0, -1.0], [0.5, -1.0, 3.0]])
    w = normalise_meta_weights(g, "org")
    torch.testing.assert_close(w, torch.tensor([[0.5, 0.0, 0.25], [0.0, 0.25, 0.0]]))
    assert float(normalise_meta_weights(torch.ones(2, 3), "org").sum()) == 0.0  # all clamped
    for kind in ("softmax", "sigmoid"):
        w = normalise_meta_weights(g, kind, temperature=0.5)
        assert w.shape == g.shape and float(w.sum()) == pytest.approx(1.0)
        assert float(w[0, 0]) > float(w[0, 1])  # more negative gradient, more weight
    with pytest.raises(ValueError, match="norm_type"):
        normalise_meta_weights(g, "l1")


def test_losses_rows_and_soft_targets():
    logits = torch.randn(6, 4, requires_grad=True)
    y = torch.randint(0, 4, (6,))
    both = l2b_losses(logits, y)
    assert both.shape == (2, 6)
    torch.testing.assert_close(
        both[1], nn.functional.cross_entropy(logits, logits.argmax(1), reduction="none")
    )
    assert l2b_losses(logits, y, reweight_label=False).shape == (1, 6)
    soft = nn.functional.one_hot(y, 4).float()
    torch.testing.assert_close(l2b_losses(logits, soft), both)


def test_weights_sum_to_one_jointly_over_2b():
    model = MODELS.build("mlp", num_classes=3, input_shape=(5,), hidden=(8,))
    x, y = torch.randn(10, 5), torch.randint(0, 3, (10,))
    w, g = l2b_weights(model, l2b_losses(model(x), y), x, y, lr=0.1)
    assert w.shape == g.shape == (2, 10)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-6) and (w >= 0).all()


def _ctx(model_method, mx, my, epoch=0):
    opt = torch.optim.SGD(model_method.parameter_groups(), lr=0.1, momentum=0.9)
    ctx = Context(
        info=model_method.info,
        optimizer=opt,
        device=torch.device("cpu"),
        generator=torch.Generator(),
        meta_batches=lambda: Batch(mx, my, torch.arange(len(my))),
        predict_train=None,
        autocast=contextlib.nullcontext,
    )
    ctx.epoch = epoch
    return ctx, opt


def _method(name, **kw):
    model = MODELS.build("mlp", num_classes=3, input_shape=(5,), hidden=(8,))
    info = TaskInfo(3, np.array([10, 10, 10]), 30, (5,), 20, 1)
    return METHODS.build(name, args=kw, model=model, info=info)


def test_warmup_is_plain_ce_then_meta_steps():
    m = _method("l2b", warmup_epochs=2)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    ctx, _ = _ctx(m, x, y, epoch=1)
    out = m(Batch(x, y, torch.arange(8)), ctx)
    assert float(out["meta_step"]) == 0.0
    torch.testing.assert_close(out["loss"], nn.functional.cross_entropy(m.model(x), y))
    ctx.epoch = 2
    out = m(Batch(x, y, torch.arange(8)), ctx)
    assert float(out["meta_step"]) == 1.0 and "beta_mass" in out
    assert float(out["alpha_mass"] + out["beta_mass"]) == pytest.approx(1.0, abs=1e-5)
    assert not m.last_weights.requires_grad
    out["loss"].backward()  # the reused forward still has its graph
    got = [p.grad.clone() for p in m.model.parameters()]
    # the real step is the gradient of sum(w.detach() * losses), nothing through the weights
    want = torch.autograd.grad(
        (m.last_weights * l2b_losses(m.model(x), y)).sum(), list(m.model.parameters())
    )
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_meta_every_k_falls_back_to_ce():
    m = _method("l2rw", meta_every=3, between="ce")
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    ctx, _ = _ctx(m, x, y)
    steps = []
    for step in range(6):
        ctx.step = step
        steps.append(float(m(Batch(x, y, torch.arange(8)), ctx)["meta_step"]))
    assert steps == [1, 0, 0, 1, 0, 0]
    assert "beta_mass" not in m(Batch(x, y, torch.arange(8)), ctx)


def test_plugin_step_updates_the_model_with_soft_targets():
    torch.manual_seed(0)
    model = MODELS.build("mlp", num_classes=3, input_shape=(5,), hidden=(8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    # "another method's update" first (creates the momentum buffers the look-ahead reads)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    soft = torch.softmax(torch.randn(16, 3), 1)
    out = l2b_step(model, opt, x, soft, x[:6], y[:6], grad_clip=0.8)
    assert out["alpha_mass"] + out["beta_mass"] == pytest.approx(1.0, abs=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    grad_norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters()))
    assert float(grad_norm) <= 0.8 + 1e-5


def test_l2rw_is_l2b_without_label_reweighting():
    torch.manual_seed(0)
    a = _method("l2rw", use_optimizer_state=True)
    b = _method("l2b", reweight_label=False, warmup_epochs=0)
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    outs = []
    for m in (a, b):
        ctx, _ = _ctx(m, x, y)
        outs.append(m(Batch(x, y, torch.arange(8)), ctx))
        outs[-1]["w"] = m.last_weights
    torch.testing.assert_close(outs[0]["w"], outs[1]["w"])
    torch.testing.assert_close(outs[0]["loss"], outs[1]["loss"])


@pytest.mark.parametrize("args", [["method.warmup_epochs=1", "train.grad_clip=0.25"]])
def test_l2b_meta_path_in_the_loop(args, tmp_path, digits_config):
    from noisytail.train import fit

    cfg = digits_config(
        "method.name=l2b",
        "train.epochs=2",
        "meta.per_class=5",
        "noise.kind=uniform",
        "noise.rate=0.2",
        *args,
    )
    summary = fit(cfg, tmp_path / "run", write_report=False)
    assert summary["finished"] and summary["test_accuracy"] > 0.2


def test_skipped_iterations_reuse_each_samples_own_latest_weights():
    torch.manual_seed(0)
    m = _method("l2b", meta_every=2, warmup_epochs=0)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    ctx, _ = _ctx(m, x, y)
    idx = torch.arange(8)
    ctx.step = 0
    m(Batch(x, y, idx), ctx)  # meta step: remembers alpha, beta per sample
    alpha, beta = m.last_weights[0] * 8, m.last_weights[1] * 8
    ctx.step = 1
    out = m(Batch(x, y, idx), ctx)
    assert float(out["meta_step"]) == 0.0
    losses = l2b_losses(m.model(x), y)
    want = (alpha * losses[0] + beta * losses[1]).sum() / (alpha + beta).sum()
    torch.testing.assert_close(out["loss"], want)
    # a sample never weighted yet counts as plain CE on its observed label
    m2 = _method("l2rw", meta_every=2)
    ctx2, _ = _ctx(m2, x, y)
    ctx2.step = 1
    ce = nn.functional.cross_entropy(m2.model(x), y)
    torch.testing.assert_close(m2(Batch(x, y, idx), ctx2)["loss"], ce)
    with pytest.raises(ValueError, match="between"):
        _method("l2b", between="old")


def test_softmax_weights_divide_by_the_temperature_by_hand():
    # -g / T = [0, ln 3] with T = 10: softmax [1/4, 3/4].
    grad = torch.tensor([[0.0, -10.0 * float(np.log(3.0))]])
    w = normalise_meta_weights(grad, "softmax", temperature=10.0)
    torch.testing.assert_close(w, torch.tensor([[0.25, 0.75]]))
