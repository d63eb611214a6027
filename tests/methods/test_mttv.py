"""MTTV: which view goes through which encoder, where partners come from, the EMA rule, and the
loss on hand-built embeddings. The encoders are replaced by lookup tables keyed by an image id
(the constant pixel value of the image), so every expected value is written down by hand."""

import contextlib
import math

import numpy as np
import pytest
import torch

import noisytail.methods.mttv as mttv_module
from noisytail.methods.base import Batch, Context, TaskInfo
from noisytail.registry import METHODS, MODELS

N_POOL = 64


def build(seed=0, **kw):
    torch.manual_seed(seed)
    model = MODELS.build("small_cnn", num_classes=4, input_shape=(1, 8, 8), width=4)
    info = TaskInfo(4, np.array([16, 16, 16, 16]), N_POOL, (1, 8, 8), 1, 4)
    return METHODS.build("mttv", args=kw, model=model, info=info)


def image(ids, offset):
    """Images ``[B, 1, 8, 8]`` whose every pixel is ``offset + id``: the id travels with it."""
    ids = torch.as_tensor(ids, dtype=torch.float32)
    return (offset + ids).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()


# View types, told apart by the offset of the pixel value.
XA, XN, XA2, YA, YN = 100.0, 200.0, 300.0, 400.0, 500.0


def fake_pool_batch(calls):
    """A Context.pool_batch that records the positions asked for and returns the partners'
    (augmented, plain) views with their ids, and labels = id % 4."""

    def pool_batch(idx, generator):
        calls.append(idx.clone())
        return Batch((image(idx, YA), image(idx, YN)), idx % 4, idx)

    return pool_batch


def context(method, calls=None, seed=0, lr=0.5):
    opt = torch.optim.SGD(method.parameter_groups(), lr=lr, momentum=0.9)
    ctx = Context(
        info=method.info,
        optimizer=opt,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(seed),
        meta_batches=None,
        predict_train=None,
        autocast=contextlib.nullcontext,
        pool_batch=fake_pool_batch(calls if calls is not None else []),
    )
    return opt, ctx


def anchor_batch(ids, partner="dataset"):
    ids = torch.as_tensor(ids)
    if partner == "dataset":
        views = (image(ids, XA), image(ids, XN))
    else:
        views = (image(ids, XA), image(ids, XA2), image(ids, XN))
    return Batch(views, ids % 4, ids)


def patch_encoders(method, q_table, k_table):
    """``q``/``k`` become lookups ``table[pixel value]`` (a dict of value -> 1-D tensor); features
    are zeros of the right width (the probe still runs)."""
    d = method.model.feature_dim

    def lookup(table, x):
        keys = x[:, 0, 0, 0].tolist()
        return torch.stack([table[k] for k in keys])

    method._q = lambda x: (torch.zeros(len(x), d), lookup(q_table, x))
    method._k = lambda x: lookup(k_table, x)


def capture_loss(monkeypatch):
    seen = {}

    def fake(u, v, **kw):
        seen.update(u=u.detach().clone(), v=v.detach().clone(), **kw)
        return u.sum() * 0.0

    monkeypatch.setattr(mttv_module, "mttv_loss", fake)
    return seen


# --------------------------------------------------------------------------------- wiring


def test_views_for_the_partner_draw():
    assert METHODS.get("mttv").views_for({}) == 1  # dataset draw: (xa, xn) from the loader
    assert METHODS.get("mttv").views_for({"partner": "dataset"}) == 1
    assert METHODS.get("mttv").views_for({"partner": "batch"}) == 2  # (a1, a2, plain)


def test_fused_embeddings_with_partners_from_the_data_set(monkeypatch):
    # q and k send image value c to c * e_q and c * e_k; u = q(xn) + q(ya), v = k(xa) + k(yn).
    method = build()
    calls = []
    _, ctx = context(method, calls)
    anchors = [3, 7, 11]
    e_q, e_k = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    values = [off + i for off in (XA, XN, YA, YN) for i in range(N_POOL)]
    patch_encoders(method, {c: c * e_q for c in values}, {c: c * e_k for c in values})
    seen = capture_loss(monkeypatch)
    method.training_step(anchor_batch(anchors), ctx)
    (partners,) = calls
    assert partners.shape == (3,) and partners.dtype == torch.long
    for i, (a, p) in enumerate(zip(anchors, partners.tolist())):
        assert seen["u"][i].tolist() == [(XN + a) + (YA + p), 0.0]  # q(xn) + q(ya)
        assert seen["v"][i].tolist() == [0.0, (XA + a) + (YN + p)]  # k(xa) + k(yn)
    assert seen["form"] == "clean" and seen["temperature"] == 0.3


def test_fused_embeddings_with_partners_from_the_batch(monkeypatch):
    method = build(partner="batch")
    calls = []
    _, ctx = context(method, calls)
    anchors = [0, 1, 2, 3, 4]
    e_q, e_k = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    values = [off + i for off in (XA, XA2, XN) for i in range(N_POOL)]
    patch_encoders(method, {c: c * e_q for c in values}, {c: c * e_k for c in values})
    seen = capture_loss(monkeypatch)
    method.training_step(anchor_batch(anchors, "batch"), ctx)
    assert calls == []  # no sample from outside the batch
    q_partner = seen["u"][:, 0] - (XN + torch.tensor(anchors))  # = XA2 + partner
    k_partner = seen["v"][:, 1] - (XA + torch.tensor(anchors))  # = XN + partner
    p_from_u, p_from_v = (q_partner - XA2).long(), (k_partner - XN).long()
    assert torch.equal(p_from_u, p_from_v)  # the same partner in u and v
    assert sorted(p_from_u.tolist()) == anchors  # a permutation of the batch
    assert all(p != a for p, a in zip(p_from_u.tolist(), anchors))  # never the anchor itself


def test_partners_from_the_data_set_are_uniform_over_the_pool():
    # B = 16 of N = 64: a partner falls in its own batch with probability B/N = 0.25 and is the
    # anchor itself with probability 1/N (the official random.randint over the data set).
    method = build()
    calls = []
    _, ctx = context(method, calls, seed=1)
    e = torch.ones(2)
    values = [off + i for off in (XA, XN, YA, YN) for i in range(N_POOL)]
    patch_encoders(method, {c: e for c in values}, {c: e for c in values})
    g = torch.Generator().manual_seed(2)
    in_batch = self_hits = total = 0
    for _ in range(300):
        ids = torch.randperm(N_POOL, generator=g)[:16]
        calls.clear()
        method.draw_partners(anchor_batch(ids), ctx)
        (p,) = calls
        in_batch += int(torch.isin(p, ids).sum())
        self_hits += int((p == ids).sum())
        total += len(ids)
    assert in_batch / total == pytest.approx(16 / 64, abs=0.03)  # 4 800 draws: sd 0.006
    assert self_hits / total == pytest.approx(1 / 64, abs=0.008)
    assert self_hits > 0  # the anchor itself is not excluded


def test_loss_on_hand_built_embeddings(monkeypatch):
    # q(xn), k(xa) give the 4 rows [u0, v0, u1, v1] with every pair at cosine 0.8; q(ya) and k(yn)
    # are zero. t = 1: clean form r = 1/3 -> log 3; compat (official) -> log(3 - e^0.2).
    rows = torch.cat([math.sqrt(0.8) * torch.ones(4, 1), math.sqrt(0.2) * torch.eye(4)], dim=1)
    zero = torch.zeros(5)
    for kw, expected in (
        ({}, math.log(3)),
        ({"compat": True}, math.log(3 - math.exp(0.2))),
        ({"loss_form": "official"}, math.log(3 - math.exp(0.2))),
        ({"loss_form": "mean_log"}, math.log(3)),
    ):
        method = build(temperature=1.0, **kw)
        _, ctx = context(method)
        q_table = {XN + 0: rows[0], XN + 1: rows[2]}
        k_table = {XA + 0: rows[1], XA + 1: rows[3]}
        q_table.update({YA + i: zero for i in range(N_POOL)})
        k_table.update({YN + i: zero for i in range(N_POOL)})
        patch_encoders(method, q_table, k_table)
        out = method.training_step(anchor_batch([0, 1]), ctx)
        assert out["ssl_loss"].item() == pytest.approx(expected, rel=1e-5), kw
        assert out["filtered_fraction"].item() == pytest.approx(4 / 16)  # only the self terms


def test_compat_with_another_loss_form_is_an_error():
    with pytest.raises(ValueError, match="compat"):
        build(compat=True, loss_form="mean_log")
    with pytest.raises(ValueError, match="partner"):
        build(partner="queue")


# ------------------------------------------------------------------------------ momentum


def snapshot(params):
    return [p.detach().clone() for p in params]


def real_step(method, opt, ctx, batch):
    out = method.training_step(batch, ctx)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    return out


def test_momentum_encoder_is_not_optimised():
    method = build()
    opt, _ = context(method)
    optimised = {id(p) for g in opt.param_groups for p in g["params"]}
    momentum = method._momentum_params()
    assert momentum and all(not p.requires_grad for p in momentum)
    assert not optimised & {id(p) for p in momentum}
    assert {id(p) for p in method._online_params()} <= optimised


def random_batch(b=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, 8, 8, generator=g)
    return Batch(
        (x + 0.1 * torch.randn(x.shape, generator=g), x), torch.arange(b) % 4, torch.arange(b)
    )


def random_pool_batch(idx, generator):
    x = torch.randn(len(idx), 1, 8, 8, generator=generator)
    return Batch((x + 0.1, x), idx % 4, idx)


def test_ema_moves_by_the_stated_rule():
    method = build(momentum=0.9)
    opt, ctx = context(method)
    ctx._pool_batch = random_pool_batch
    batch = random_batch()
    for _ in range(2):  # two real steps so that q and k differ
        real_step(method, opt, ctx, batch)
    k_old = snapshot(method._momentum_params())
    q_now = snapshot(method._online_params())
    assert any(not torch.allclose(a, b) for a, b in zip(k_old, q_now))
    method.training_step(batch, ctx)  # the update happens at the start of the step
    for k_new, k0, q in zip(method._momentum_params(), k_old, q_now):
        assert torch.allclose(k_new, 0.9 * k0 + 0.1 * q, atol=1e-6)


def test_first_step_keeps_k_equal_to_q():
    method = build()
    _, ctx = context(method)
    ctx._pool_batch = random_pool_batch
    method.training_step(random_batch(), ctx)
    for k, q in zip(method._momentum_params(), method._online_params()):
        assert torch.allclose(k, q, atol=1e-7)  # 0.9 q + 0.1 q, up to rounding


def test_no_gradient_reaches_the_momentum_encoder():
    method = build()
    _, ctx = context(method)
    ctx._pool_batch = random_pool_batch
    method.training_step(random_batch(), ctx)["loss"].backward()
    assert all(p.grad is None for p in method._momentum_params())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method._online_params())


@pytest.mark.parametrize("fusion", ["sum", "concat"])
@pytest.mark.parametrize("partner", ["dataset", "batch"])
def test_training_is_finite(fusion, partner):
    method = build(fusion=fusion, partner=partner)
    opt, ctx = context(method)
    ctx._pool_batch = random_pool_batch
    batch = random_batch()
    if partner == "batch":
        a, plain = batch.x
        batch = Batch((a, a + 0.1, plain), batch.labels, batch.idx)
    for _ in range(3):
        out = real_step(method, opt, ctx, batch)
        assert torch.isfinite(out["loss"])


def test_probe_learns_the_partners_features_with_the_partners_labels(monkeypatch):
    # Anchors 0..3 (labels id % 4), partners drawn from the pool with their own labels: the probe
    # gets the anchors' plain-view features with the anchors' labels, then the partners'
    # augmented-view features with the partners' labels.
    calls, seen = [], {}
    method = build()
    _, ctx = context(method, calls)

    def probe(model, feats, labels):
        seen["labels"] = labels.clone()
        return feats.sum() * 0.0, torch.tensor(0.0)

    monkeypatch.setattr(mttv_module, "probe_step", probe)
    method(anchor_batch([0, 1, 2, 3]), ctx)
    partners = calls[0]
    assert seen["labels"].tolist() == [0, 1, 2, 3] + (partners % 4).tolist()
    assert (partners % 4).tolist() != [0, 1, 2, 3]  # the two label lists differ here
