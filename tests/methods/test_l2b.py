"""L2B / L2RW: weight normalisation, warm-up, the plug-in step, and the loop."""

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from noisytail.methods.base import Batch, Context, TaskInfo
from noisytail.methods.l2b import (
    l2b_losses,
    l2b_step,
    l2b_weights,
    normalise_meta_weights,
)
from noisytail.methods.mixup import mixup_batch
from noisytail.optim import backbone_parameters, scale_backbone_groups
from noisytail.registry import METHODS, MODELS, RegistryError


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
    kw.setdefault("lookahead", "all")  # the paper's full look-ahead, which these tests check
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


# --------------------------------------------------------------------------------------------
# An independent reference for L2RW / L2B weights (Ren et al. Eq. 3-5, Zhou et al. Eq. 7-9): the
# meta loss of a hand-written one-hidden-layer MLP after a hand-written virtual SGD step on
# sum_i eps_i * loss_i, differentiated in eps by central finite differences (float64).


def _mlp(theta, x):
    h = torch.relu(x @ theta["body.1.weight"].T + theta["body.1.bias"])
    return h @ theta["head.weight"].T + theta["head.bias"]


def _rows(logits, targets, reweight_label):
    """Per-sample losses [R, B]: the observed (hard or soft) targets, then the pseudo-label."""
    logp = torch.log_softmax(logits, 1)
    soft = targets if targets.ndim == 2 else nn.functional.one_hot(targets, logits.shape[1])
    rows = [-(soft.double() * logp).sum(1)]
    if reweight_label:
        rows.append(-logp.gather(1, logits.argmax(1, keepdim=True)).squeeze(1))
    return torch.stack(rows)


def reference_meta_grad(
    theta, lrs, x, targets, mx, my, *, reweight_label, mom=0.0, wd=0.0, bufs=None, drift=0
):
    """dL_meta/d eps [R, B] at eps = 0 by finite differences. The virtual step of parameter n is
    ``th - lr_n * (mom * buf_n + d)``, ``d = sum eps * grad(loss) + wd * th`` (torch's SGD with a
    momentum buffer; ``lr_n = 0``: not moved). ``drift`` zero-eps steps come first."""
    theta = {n: t.detach().clone() for n, t in theta.items()}
    bufs = {n: (bufs or {}).get(n, torch.zeros_like(t)) for n, t in theta.items()}
    for _ in range(drift):
        for n in theta:
            bufs[n] = mom * bufs[n] + wd * theta[n]
            theta[n] = theta[n] - lrs[n] * bufs[n]
    theta = {n: t.requires_grad_() for n, t in theta.items()}
    losses = _rows(_mlp(theta, x), targets, reweight_label)
    per = [  # per-entry parameter gradients, one autograd call each
        [torch.autograd.grad(losses[r, i], list(theta.values()), retain_graph=True)
         for i in range(losses.shape[1])]
        for r in range(losses.shape[0])
    ]  # fmt: skip

    def meta(eps):
        fast = {}
        for k, (n, t) in enumerate(theta.items()):
            d = sum(eps[r, i] * per[r][i][k] for r in range(len(per)) for i in range(len(per[0])))
            fast[n] = t.detach() - lrs[n] * (mom * bufs[n] + d + wd * t.detach())
        return float(nn.functional.cross_entropy(_mlp(fast, mx), my))

    h = 1e-6
    out = torch.zeros(losses.shape, dtype=torch.float64)
    for r in range(out.shape[0]):
        for i in range(out.shape[1]):
            e = torch.zeros_like(out)
            e[r, i] = h
            out[r, i] = (meta(e) - meta(-e)) / (2 * h)
    return out


def _meta_method(name, *, scale=1.0, frozen=False, momentum=0.0, **kw):
    """A method on a 1-hidden-layer MLP with the loop's optimizer groups and one real SGD step
    taken (so momentum buffers exist); returns it, its context, a batch and the reference's
    per-parameter rates and momentum settings."""
    torch.manual_seed(0)
    kw.setdefault("lookahead", "all")
    model = MODELS.build("mlp", num_classes=3, input_shape=(5,), hidden=(6,))
    info = TaskInfo(3, np.array([10, 10, 10]), 30, (5,), 20, 1)
    m = METHODS.build(name, args=kw, model=model, info=info).double()
    backbone = backbone_parameters(m.model)
    groups = scale_backbone_groups(m.parameter_groups(), backbone, scale)
    opt = torch.optim.SGD(groups, lr=0.5, momentum=momentum, weight_decay=1e-3)
    gen = torch.Generator().manual_seed(1)  # three blobs; two of the six labels flipped
    centres = 2.0 * torch.randn(3, 5, generator=gen, dtype=torch.float64)
    y, my = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    x = centres[y] + torch.randn(6, 5, generator=gen, dtype=torch.float64)
    mx = centres[my] + torch.randn(7, 5, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 1, 0])
    for _ in range(3):  # a few real steps: momentum buffers, and a model that has learnt a bit
        opt.zero_grad()
        nn.functional.cross_entropy(m.model(mx), my).backward()
        opt.step()
    opt.zero_grad()
    for g in opt.param_groups:  # as the loop sets them each step
        g["lr"] = 0.5 * g.get("lr_scale", 1.0)
    ctx = Context(
        info=info,
        optimizer=opt,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(5),
        meta_batches=lambda: Batch(mx, my, torch.arange(7)),
        predict_train=None,
        autocast=contextlib.nullcontext,
    )
    if frozen:
        ctx.frozen_parameters = tuple(backbone)
    lrs = {}
    for n, _ in m.model.named_parameters():
        body = n.startswith("body.")
        lrs[n] = 0.0 if (frozen and body) else 0.5 * (scale if body else 1.0)
    state = {"mom": momentum, "wd": 1e-3} if m.use_optimizer_state else {}
    if m.use_optimizer_state and momentum:
        state["bufs"] = {n: opt.state[p]["momentum_buffer"] for n, p in m.model.named_parameters()}
    return m, ctx, (x, y, mx, my), lrs, state


CASES = [
    ("l2rw", {}),  # Ren et al.: plain SGD virtual step
    ("l2rw", {"use_optimizer_state": True}),  # the L2B code's beta = 0 baseline
    ("l2b", {"warmup_epochs": 0}),  # both rows, the real optimizer's momentum and weight decay
]


@pytest.mark.parametrize("name,kw", CASES, ids=["l2rw", "l2rw_state", "l2b"])
@pytest.mark.parametrize("meta_grad", ["forward", "double_backward"])
@pytest.mark.parametrize("groups", ["one_lr", "backbone_lr_0.1", "frozen_backbone"])
def test_weights_match_finite_differences_of_a_hand_written_meta_loss(name, kw, meta_grad, groups):
    """With backbone_lr_scale 0.1 the backbone's virtual step is at a tenth of the head's rate,
    with a frozen backbone it is not moved: the weights must follow."""
    m, ctx, (x, y, mx, my), lrs, state = _meta_method(
        name,
        scale=0.1 if groups == "backbone_lr_0.1" else 1.0,
        frozen=groups == "frozen_backbone",
        momentum=0.9,
        meta_grad=meta_grad,
        **kw,
    )
    theta = dict(m.model.named_parameters())
    g = reference_meta_grad(theta, lrs, x, y, mx, my, reweight_label=m.reweight_label, **state)
    want = torch.clamp(-g, min=0) / (torch.clamp(-g, min=0).sum() + 1e-10)
    out = m(Batch(x, y, torch.arange(6)), ctx)
    torch.testing.assert_close(m.last_weights, want, rtol=1e-5, atol=1e-8)
    losses = _rows(_mlp(theta, x), y, m.reweight_label)
    torch.testing.assert_close(out["loss"], (want * losses).sum(), rtol=1e-5, atol=1e-8)
    # the reference tells the settings apart: one rate for all would give other weights
    if groups != "one_lr":
        g1 = reference_meta_grad(
            theta, dict.fromkeys(lrs, 0.5), x, y, mx, my, reweight_label=m.reweight_label, **state
        )
        assert not torch.allclose(g1, g, rtol=1e-3)


@pytest.mark.parametrize("meta_grad", ["forward", "double_backward"])
def test_meta_step_drifts_by_momentum_and_weight_decay_first(meta_grad):
    """meta_step = 3 (the L2B code's inner loop, a fresh zero eps each step): two steps that
    only momentum and weight decay move, then the eps step from there."""
    m, ctx, (x, y, mx, my), lrs, state = _meta_method(
        "l2b", momentum=0.9, warmup_epochs=0, meta_step=3, meta_grad=meta_grad
    )
    theta = dict(m.model.named_parameters())
    g = reference_meta_grad(theta, lrs, x, y, mx, my, reweight_label=True, drift=2, **state)
    m(Batch(x, y, torch.arange(6)), ctx)
    want = torch.clamp(-g, min=0) / (torch.clamp(-g, min=0).sum() + 1e-10)
    torch.testing.assert_close(m.last_weights, want, rtol=1e-5, atol=1e-8)
    g1 = reference_meta_grad(theta, lrs, x, y, mx, my, reweight_label=True, **state)
    assert not torch.allclose(g1, g, rtol=1e-3)  # the drift matters here
    # a plain SGD virtual step has nothing to drift: meta_step changes nothing
    ws = []
    for k in (1, 3):
        m, ctx, (x, y, _, _), _, _ = _meta_method("l2rw", meta_step=k, meta_grad=meta_grad)
        m(Batch(x, y, torch.arange(6)), ctx)
        ws.append(m.last_weights)
    torch.testing.assert_close(ws[0], ws[1])


def test_min_weight_floors_the_unit_step_weights():
    """L2RW's official minimum weight: max(-dL/d eps / lr, eps), normalised."""
    m, ctx, (x, y, mx, my), lrs, _ = _meta_method("l2rw", min_weight=0.05)
    g = reference_meta_grad(
        dict(m.model.named_parameters()), lrs, x, y, mx, my, reweight_label=False
    )
    w = torch.clamp(-g / 0.5, min=0.05)
    m(Batch(x, y, torch.arange(6)), ctx)
    torch.testing.assert_close(m.last_weights, w / w.sum(), rtol=1e-5, atol=1e-8)
    assert float(m.last_weights.min()) > 0  # no sample is dropped entirely
    with pytest.raises(RegistryError, match="min_weight"):
        _method("l2rw", min_weight=0.1, norm_type="softmax")


def test_hard_weights_are_binary_on_the_favoured_entries():
    g = torch.tensor([[-2.0, 1.0, -1.0], [0.5, -1.0, 3.0]])
    torch.testing.assert_close(
        normalise_meta_weights(g, "hard"), torch.tensor([[1.0, 0, 1], [0, 1, 0]]) / 3
    )
    assert float(normalise_meta_weights(torch.ones(2, 3), "hard").sum()) == 0.0
    assert float(normalise_meta_weights(torch.zeros(2, 3), "hard").sum()) == 0.0
    m, ctx, (x, y, mx, my), lrs, state = _meta_method(
        "l2b", warmup_epochs=0, norm_type="hard", momentum=0.9
    )
    g = reference_meta_grad(
        dict(m.model.named_parameters()), lrs, x, y, mx, my, reweight_label=True, **state
    )
    m(Batch(x, y, torch.arange(6)), ctx)
    support = -g > 0
    assert torch.equal(m.last_weights > 0, support) and 0 < int(support.sum()) < g.numel()
    torch.testing.assert_close(
        m.last_weights[support],
        torch.full((int(support.sum()),), 1.0 / float(support.sum()), dtype=torch.float64),
    )


def test_mixup_mixes_inputs_and_observed_labels_with_beta_32():
    lams = [
        mixup_batch(torch.zeros(4, 2), torch.arange(4), 4, 32.0, torch.Generator().manual_seed(s))[
            2
        ]
        for s in range(2000)
    ]
    lams = np.array(lams)  # Beta(32, 32): mean 1/2, sd sqrt(1 / (4 * 65)) = 0.062
    assert abs(lams.mean() - 0.5) < 0.005 and abs(lams.std() - 0.062) < 0.005
    # each sample is mixed with one partner: lam of itself, 1 - lam of the partner, inputs and
    # one-hot labels alike (distinct labels, so the soft targets name the partner)
    x4 = torch.randn(6, 2, dtype=torch.float64)
    xm, soft, lam = mixup_batch(x4, torch.arange(6), 6, 32.0, torch.Generator().manual_seed(3))
    other = soft * (1 - torch.eye(6, dtype=soft.dtype))
    partner = torch.where(other.sum(1) > 0, other.argmax(1), torch.arange(6))
    assert not torch.equal(partner, torch.arange(6))
    want = torch.where(partner == torch.arange(6), 1.0, lam).double()
    torch.testing.assert_close(soft.diagonal(), want)
    torch.testing.assert_close(xm, lam * x4 + (1 - lam) * x4[partner])
    m, ctx, (x, y, mx, my), lrs, state = _meta_method(
        "l2b", warmup_epochs=0, momentum=0.9, mixup_alpha=32.0
    )
    xm, soft, lam = mixup_batch(x, y, 3, 32.0, torch.Generator().manual_seed(5))
    assert 0.3 < lam < 0.7 and torch.allclose(soft.sum(1), torch.ones(6, dtype=torch.float64))
    g = reference_meta_grad(
        dict(m.model.named_parameters()), lrs, xm, soft, mx, my, reweight_label=True, **state
    )
    want = torch.clamp(-g, min=0) / (torch.clamp(-g, min=0).sum() + 1e-10)
    out = m(Batch(x, y, torch.arange(6)), ctx)
    torch.testing.assert_close(m.last_weights, want, rtol=1e-5, atol=1e-8)
    theta = dict(m.model.named_parameters())
    torch.testing.assert_close(out["loss"], (want * _rows(_mlp(theta, xm), soft, True)).sum())
    with pytest.raises(RegistryError, match="mixup_alpha"):
        _method("l2b", mixup_alpha=-1.0)


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
    assert summary.finished and summary.test_accuracy > 0.2


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
    with pytest.raises(RegistryError, match="between"):
        _method("l2b", between="old")


def test_softmax_weights_divide_by_the_temperature_by_hand():
    # -g / T = [0, ln 3] with T = 10: softmax [1/4, 3/4].
    grad = torch.tensor([[0.0, -10.0 * float(np.log(3.0))]])
    w = normalise_meta_weights(grad, "softmax", temperature=10.0)
    torch.testing.assert_close(w, torch.tensor([[0.25, 0.75]]))


def test_smaller_meta_batch_uses_its_first_rows():
    """meta_batch = m (a cost route, issue 15): the weights are the finite-difference weights of
    the meta loss on the meta batch's first m rows, not on all of them."""
    m, ctx, (x, y, mx, my), lrs, state = _meta_method(
        "l2b", momentum=0.9, warmup_epochs=0, meta_batch=4
    )
    theta = dict(m.model.named_parameters())
    g = reference_meta_grad(theta, lrs, x, y, mx[:4], my[:4], reweight_label=True, **state)
    want = torch.clamp(-g, min=0) / (torch.clamp(-g, min=0).sum() + 1e-10)
    m(Batch(x, y, torch.arange(6)), ctx)
    torch.testing.assert_close(m.last_weights, want, rtol=1e-5, atol=1e-8)
    g_all = reference_meta_grad(theta, lrs, x, y, mx, my, reweight_label=True, **state)
    assert not torch.allclose(g_all, g, rtol=1e-3)
