"""SimCLR and the k-view method: NT-Xent on the projection, online probe on detached features."""

import contextlib

import numpy as np
import pytest
import torch

from noisytail.data.views import multi_view
from noisytail.losses.contrastive import info_nce, nt_xent
from noisytail.methods.base import Batch, Context, TaskInfo
from noisytail.methods.simclr import encoder_parameters, knn_leave_one_out
from noisytail.registry import METHODS, MODELS


def setup(name, views=2, b=16, seed=0, train_labels=None, **kw):
    torch.manual_seed(seed)
    model = MODELS.build("small_cnn", num_classes=4, input_shape=(1, 8, 8), width=4)
    info = TaskInfo(4, np.array([8, 4, 2, 2]), 64, (1, 8, 8), 1, 4, train_labels=train_labels)
    method = METHODS.build(name, args=kw, model=model, info=info)
    opt = torch.optim.SGD(method.parameter_groups(), lr=0.1)
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
    labels = (torch.arange(b) % 4)[torch.randperm(b, generator=g)]  # every class at least twice
    batch = Batch(multi_view(x, views, g), labels, torch.arange(b))
    return method, opt, ctx, batch


def test_simclr_loss_is_nt_xent_on_the_projection():
    method, _, ctx, batch = setup("simclr")
    out = method(batch, ctx)
    with torch.no_grad():
        h = method.model.features(torch.cat(batch.x))
        z = method.projector(h)
    b = len(batch)
    assert out["ssl_loss"].item() == pytest.approx(nt_xent(z[:b], z[b:], 0.5).item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(
        out["ssl_loss"].item() + out["probe_loss"].item(), rel=1e-6
    )


def test_probe_sees_detached_features():
    method, _, ctx, batch = setup("simclr")
    last = [m for m in method.projector if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # zero projection: the SSL loss gives the encoder no gradient
        last.weight.zero_()
    method(batch, ctx)["loss"].backward()
    for p in encoder_parameters(method.model):
        assert p.grad is None or torch.all(p.grad == 0)
    assert method.model.head.weight.grad.abs().sum() > 0


def test_parameter_groups_cover_everything_once_and_scale_the_probe():
    method, _, _, _ = setup("simclr", probe_lr_scale=0.1)
    groups = method.parameter_groups()
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in method.parameters()}
    assert groups[1]["lr_scale"] == 0.1 and groups[1]["weight_decay"] == 0.0


def test_simclr_loss_falls_under_a_few_steps():
    method, opt, ctx, batch = setup("simclr", b=32)
    first = method(batch, ctx)["ssl_loss"].item()
    for _ in range(15):
        out = method(batch, ctx)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert method(batch, ctx)["ssl_loss"].item() < first


def test_multiview_uses_all_views_as_positives():
    method, _, ctx, batch = setup("multiview", views=4, num_views=4)
    out = method(batch, ctx)
    with torch.no_grad():
        z = method.projector(method.model.features(torch.cat(batch.x)))
    ids = torch.arange(len(batch)).repeat(4)
    assert out["ssl_loss"].item() == pytest.approx(info_nce(z, ids, temperature=0.5).item(), 1e-5)


def test_multiview_at_two_views_is_simclr():
    mv, _, ctx, batch = setup("multiview", views=4, num_views=2, seed=3)
    sc, _, _, _ = setup("simclr", seed=3)
    sc.load_state_dict(mv.state_dict())
    two = Batch(batch.x[:2], batch.labels, batch.idx)
    assert mv(batch, ctx)["ssl_loss"].item() == pytest.approx(
        sc(two, ctx)["ssl_loss"].item(), rel=1e-6
    )


def test_multiview_checks_the_number_of_views():
    with pytest.raises(ValueError, match="num_views"):
        setup("multiview", views=4, num_views=1)
    method, _, ctx, batch = setup("multiview", views=4, num_views=5)
    with pytest.raises(ValueError, match="batch holds 4 views"):
        method(batch, ctx)
    assert type(method).views_for({"num_views": 6}) == 6
    assert type(method).views_for({}) == 4


def test_knn_leave_one_out_excludes_self():
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert knn_leave_one_out(feats, labels, 2, k=1).tolist() == [0, 0, 1, 1]
    odd = torch.tensor([0, 1, 1, 1])  # sample 0's only close neighbour says 1
    assert knn_leave_one_out(feats, odd, 2, k=1)[0].item() == 1


def test_knn_monitor_logs_agreement_with_the_labels_seen():
    method, _, ctx, batch = setup("simclr", knn_every=1, knn_k=3)
    method(batch, ctx)  # remembers the labels of batch.idx
    feats = torch.nn.functional.one_hot(batch.labels, 4).float()  # features that match labels
    full = torch.zeros(method.info.num_train, 4)
    full[batch.idx] = feats
    ctx._predict_train = lambda fn: full
    ctx.epoch = 1
    method.on_epoch_start(ctx)
    out = method(batch, ctx)
    assert out["knn_train_agreement"].item() == pytest.approx(1.0)
    ctx.epoch = 0
    method.on_epoch_start(ctx)
    assert "knn_train_agreement" not in method(batch, ctx)


def test_simclr_uses_its_own_temperature():
    method, _, ctx, batch = setup("simclr", temperature=0.2)
    out = method(batch, ctx)
    with torch.no_grad():
        z = method.projector(method.model.features(torch.cat(batch.x)))
    b = len(batch)
    assert out["ssl_loss"].item() == pytest.approx(nt_xent(z[:b], z[b:], 0.2).item(), rel=1e-5)


def test_knn_votes_are_weighted_by_exp_similarity_over_t():
    # Row 0's three neighbours: one of class 1 at cosine 0.9, two of class 0 at 0.5. With t = 0.1
    # the votes are e^9 against 2 e^5: class 1; with t = 1, e^0.9 = 2.46 against 2 e^0.5 = 3.30.
    s = (1 - 0.25) ** 0.5
    feats = torch.tensor([[1.0, 0.0], [0.9, (1 - 0.81) ** 0.5], [0.5, s], [0.5, -s]])
    labels = torch.tensor([0, 1, 0, 0])
    assert knn_leave_one_out(feats, labels, 2, k=3, t=0.1)[0].item() == 1
    assert knn_leave_one_out(feats, labels, 2, k=3, t=1.0)[0].item() == 0


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_knn_leave_one_out_excludes_self_in_every_chunk(chunk):
    # Four tight pairs whose two members carry different labels: leaving a sample out, its
    # nearest neighbour is its partner, so every prediction is the other label.
    centres = torch.eye(4)
    feats = torch.cat([centres, centres + 0.01 * torch.ones(4, 4)])
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    pred = knn_leave_one_out(feats, labels, 2, k=1, chunk=chunk)
    assert pred.tolist() == (1 - labels).tolist()


def test_simclr_head_as_in_mttv_repo_has_no_batchnorm():
    method, _, ctx, batch = setup("simclr", head_bn=False, proj_hidden=512, loss_form="log_mean")
    layers = list(method.projector)
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Linear"]
    assert layers[0].out_features == 512 and layers[2].out_features == 128
    default, _, _, _ = setup("simclr")
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in default.projector)
    assert torch.isfinite(method(batch, ctx)["loss"])


def test_simclr_log_mean_loss_by_hand():
    # Embeddings [a0, b0, a1, b1] (pairs by id) with cosines given by GRAM; t = 1. Per anchor,
    # P = e^{s_pos} / sum_{j != a} e^{s_aj}; log_mean = -log(mean P), mean_log = mean(-log P).
    gram = torch.tensor(
        [
            [1.0, 0.6, 0.05, 0.2],
            [0.6, 1.0, 0.5, 0.45],
            [0.05, 0.5, 1.0, 0.7],
            [0.2, 0.45, 0.7, 1.0],
        ],
        dtype=torch.float64,
    )
    z = torch.linalg.cholesky(gram).float()
    ids = torch.tensor([0, 0, 1, 1])
    e = np.exp
    p = [
        e(0.6) / (e(0.6) + e(0.05) + e(0.2)),
        e(0.6) / (e(0.6) + e(0.5) + e(0.45)),
        e(0.7) / (e(0.7) + e(0.05) + e(0.5)),
        e(0.7) / (e(0.7) + e(0.2) + e(0.45)),
    ]
    got = info_nce(z, ids, temperature=1.0, reduction="log_mean").item()
    assert got == pytest.approx(-np.log(np.mean(p)), rel=1e-5)
    assert info_nce(z, ids, temperature=1.0).item() == pytest.approx(-np.mean(np.log(p)), rel=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        info_nce(z, ids, reduction="mean")


@pytest.mark.parametrize("name", ["simclr", "mttv"])
def test_knn_monitor_runs_before_any_batch_when_the_loop_gives_the_labels(name):
    """A resumed run builds a fresh method and starts at a monitor epoch: with the noisy labels
    given up front (`TaskInfo.train_labels`) it logs what the uninterrupted run logs."""
    labels = np.arange(64) % 4
    method, _, ctx, _ = setup(name, train_labels=labels, knn_every=1, knn_k=3)
    ctx._predict_train = lambda fn: torch.nn.functional.one_hot(torch.as_tensor(labels), 4).float()
    ctx.epoch = 1
    method.on_epoch_start(ctx)
    assert method._knn_value == pytest.approx(1.0)
