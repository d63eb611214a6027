"""DivideMix: the GMM co-divide, sharpening, co-refinement and co-guessing on hand-worked values,
the dominant MixMatch mixup, the class-balance penalty, the co-divide wiring (each network learns
from the other's split) and resume on a tiny digits run."""

import contextlib
import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisytail.methods.base import Batch, Context, TaskInfo
from noisytail.methods.dividemix import (
    class_balance_penalty,
    co_guess,
    co_refine,
    draw_labelled_meta,
    gmm_clean_probability,
    linear_rampup,
    mixmatch_mix,
    sharpen,
)
from noisytail.registry import METHODS, MODELS
from noisytail.train import fit

N, K = 32, 4


def test_gmm_calls_the_lower_mean_component_clean():
    rng = np.random.default_rng(0)
    clean = rng.normal(0.5, 0.1, 700)
    noisy = rng.normal(3.0, 0.4, 300)
    losses = np.concatenate([clean, noisy])
    p = gmm_clean_probability(losses)
    assert p.shape == (1000,)
    assert (p[:700] > 0.5).mean() > 0.99 and (p[700:] < 0.5).mean() > 0.99
    assert p[:700].mean() > 0.95 and p[700:].mean() < 0.05
    # min-max normalised first: an affine change of the losses changes nothing
    np.testing.assert_allclose(gmm_clean_probability(10 * losses + 3), p, atol=1e-6)


def test_sharpen_and_co_guess_hand_worked():
    p = torch.tensor([[0.6, 0.4], [0.5, 0.5]])
    # 0.6^2 / (0.36 + 0.16), 0.4^2 / 0.52
    torch.testing.assert_close(
        sharpen(p, 0.5), torch.tensor([[0.36 / 0.52, 0.16 / 0.52]] + [[0.5, 0.5]])
    )
    torch.testing.assert_close(sharpen(p, 1.0), p)
    # co-guessing: the mean of 4 predictions is [0.65, 0.35]; sharpened 0.4225 / 0.545
    probs = [torch.tensor([[a, 1 - a]]) for a in (0.5, 0.7, 0.9, 0.5)]
    torch.testing.assert_close(
        co_guess(probs, 0.5), torch.tensor([[0.4225 / 0.545, 0.1225 / 0.545]])
    )
    # co-refinement: w = 0.8, own mean [0.3, 0.7] -> [0.86, 0.14]; sharpened 0.7396 / 0.7592
    refined = co_refine(
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([0.8]),
        [torch.tensor([[0.2, 0.8]]), torch.tensor([[0.4, 0.6]])],
        0.5,
    )
    torch.testing.assert_close(refined, torch.tensor([[0.7396 / 0.7592, 0.0196 / 0.7592]]))


def test_mixmatch_mix_keeps_the_first_operand_dominant():
    x = torch.randn(16, 3)
    t = torch.softmax(torch.randn(16, 5), dim=1)
    lams = []
    for seed in range(50):
        mixed_x, mixed_t, lam, perm = mixmatch_mix(x, t, 4.0, torch.Generator().manual_seed(seed))
        lams.append(lam)
        assert 0.5 <= lam <= 1.0
        torch.testing.assert_close(mixed_x, lam * x + (1 - lam) * x[perm])
        torch.testing.assert_close(mixed_t, lam * t + (1 - lam) * t[perm])
        own = (mixed_x - x).norm(dim=1)
        partner = (mixed_x - x[perm]).norm(dim=1)
        assert bool((own <= partner + 1e-6).all())
    assert min(lams) < 0.7 and max(lams) > 0.75  # a Beta(4, 4) draw folded onto [0.5, 1]


def test_class_balance_penalty_hand_worked():
    # softmax rows [0.8, 0.2] and [0.6, 0.4]: mean [0.7, 0.3];
    # penalty = 0.5 log(0.5 / 0.7) + 0.5 log(0.5 / 0.3)
    logits = torch.log(torch.tensor([[0.8, 0.2], [0.6, 0.4]]))
    expected = 0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)
    assert abs(float(class_balance_penalty(logits)) - expected) < 1e-6
    balanced = torch.log(torch.tensor([[0.7, 0.3], [0.3, 0.7]]))
    assert abs(float(class_balance_penalty(balanced))) < 1e-6


def test_linear_rampup():
    assert linear_rampup(5.0, 10, 16) == 0.0
    assert linear_rampup(18.0, 10, 16) == 0.5
    assert linear_rampup(40.0, 10, 16) == 1.0


def _build(**kw):
    torch.manual_seed(0)
    model = MODELS.build("mlp", num_classes=K, input_shape=(6,), hidden=(8,))
    labels = np.arange(N) % K
    info = TaskInfo(K, np.bincount(labels, minlength=K), N, (6,), 4, 4, train_labels=labels)
    method = METHODS.build("dividemix", args={"warmup_epochs": 1, **kw}, model=model, info=info)
    x = torch.randn(N, 6, generator=torch.Generator().manual_seed(3))
    ctx = Context(
        info=info,
        optimizer=torch.optim.SGD(method.parameter_groups(), lr=0.1),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
        meta_batches=None,
        predict_train=lambda fn: fn(x),
        autocast=contextlib.nullcontext,
    )
    batch = Batch((x, x + 0.1), torch.as_tensor(labels), torch.arange(N))
    return method, ctx, batch


def test_second_network_is_distinct_and_trained():
    method, ctx, batch = _build()
    w1, w2 = method.model.body[1].weight, method.net2.body[1].weight
    assert not torch.equal(w1, w2)
    torch.testing.assert_close(w1.flatten().sort().values, w2.flatten().sort().values)
    ids = {id(p) for g in method.parameter_groups() for p in g["params"]}
    assert all(id(p) in ids for p in method.net2.parameters())
    assert any(k.startswith("net2.") for k in method.state_dict())
    # predict averages the two networks' logits
    x = batch.x[0]
    torch.testing.assert_close(method.predict(x), 0.5 * (method.model(x) + method.net2(x)))


def test_grad_clip_bounds_each_network_on_its_own():
    # as the official code's two optimisers: a large gradient in one network does not shrink
    # the other's step (a joint norm would clip both to about 0.25 / sqrt(2))
    from noisytail.optim import clip_gradients

    method, _, _ = _build()
    for p in method.model.parameters():
        p.grad = torch.full_like(p, 10.0)
    for p in method.net2.parameters():
        p.grad = torch.full_like(p, 1e-3)
    small = [p.grad.clone() for p in method.net2.parameters()]
    clip_gradients(method, 0.25)
    norm = torch.linalg.vector_norm(
        torch.cat([p.grad.flatten() for p in method.model.parameters()])
    )
    assert norm.item() == pytest.approx(0.25, rel=1e-4)
    assert all(torch.equal(p.grad, g) for p, g in zip(method.net2.parameters(), small))
    groups = method.clip_groups()
    assert sum(len(g) for g in groups) == len(list(method.parameters()))


def test_each_network_learns_from_the_other_networks_split():
    method, ctx, batch = _build()
    assert method.sample_scores() is None
    ctx.epoch = 1
    method.on_epoch_start(ctx)  # a real split from the two networks' losses
    assert method.split_epoch == 1 and method.sample_scores().shape == (N,)
    np.testing.assert_allclose(method.sample_scores(), method.prob.double().mean(0).numpy())
    # network 1 thinks everything is clean, network 2 thinks everything is noisy
    method.prob = torch.stack([torch.ones(N), torch.zeros(N)])
    method._dev = {}
    out = method.training_step(batch, ctx)
    assert float(out["labelled_fraction_batch_net1"]) == 0.0  # net 1 uses net 2's split
    assert float(out["labelled_fraction_batch_net2"]) == 1.0  # net 2 uses net 1's split
    assert float(out["labelled_loss_net1"]) == 0.0 and float(out["unlabelled_loss_net2"]) == 0.0
    out["loss"].backward()
    assert method.model.head.weight.grad is not None and method.net2.head.weight.grad is not None


def test_warmup_is_cross_entropy_of_both_networks():
    method, ctx, batch = _build()
    ctx.epoch = 0
    out = method.training_step(batch, ctx)
    y = batch.labels
    ce1 = torch.nn.functional.cross_entropy(method.model(batch.x[0]), y)
    ce2 = torch.nn.functional.cross_entropy(method.net2(batch.x[1]), y)
    torch.testing.assert_close(out["loss"], ce1 + ce2)


def _metrics(path):
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
    return rows


def test_resume_matches_uninterrupted(tmp_path, digits_config):
    cfg = digits_config(
        "method.name=dividemix",
        "method.warmup_epochs=1",
        "noise.kind=random_subset",
        "noise.rate=0.4",
        "train.epochs=3",
    )
    fit(cfg, tmp_path / "full", write_report=False)
    part = fit(cfg, tmp_path / "split", write_report=False, stop_after_epochs=2)
    assert not part.finished
    fit(cfg, tmp_path / "split", resume=True, write_report=False)
    full, split = _metrics(tmp_path / "full"), _metrics(tmp_path / "split")
    assert full == split
    assert "labelled_loss_net1" in full[-1] and "clean_fraction" in full[-1]


# --- the L2B plug-in (issue 16, item 2) -------------------------------------------------------


def _plugin(l2b_meta="clean"):
    """A DivideMix with the L2B plug-in after its split, every sample labelled with w = 1 (so the
    co-refined targets are the one-hot labels), and a momentum buffer in its optimizer."""
    method, _, batch = _build(l2b=True, l2b_meta=l2b_meta)
    meta = Batch(
        torch.randn(12, 6, generator=torch.Generator().manual_seed(5)),
        torch.arange(12) % K,
        torch.arange(12),
    )
    opt = torch.optim.SGD(method.parameter_groups(), lr=0.3, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(9)
    for p in method.parameters():
        opt.state[p]["momentum_buffer"] = 0.1 * torch.randn(p.shape, generator=gen)
    x = batch.x[0]
    ctx = Context(
        info=method.info,
        optimizer=opt,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
        meta_batches=lambda: meta,
        predict_train=lambda fn: fn(x),
        autocast=contextlib.nullcontext,
        pool_batch=lambda idx, g: Batch((x[idx], x[idx] + 0.1), batch.labels[idx], idx),
    )
    ctx.epoch = 1
    method.split_epoch = 1
    method.prob = torch.ones(2, N)
    method._dev = {}
    return method, ctx, batch, meta


def test_l2b_plugin_is_the_stand_alone_l2b_step_when_dividemix_loss_is_off():
    from noisytail.methods.l2b import L2B

    method, ctx, batch, meta = _plugin()
    twin = copy.deepcopy(method.model)
    net2_before = copy.deepcopy(method.net2.state_dict())
    # the stand-alone L2B on the same network, optimizer state, batch and meta batch: its batch
    # is DivideMix's unmixed one (both views), its labels the targets (one-hot here, as w = 1)
    opt = torch.optim.SGD(twin.parameters(), lr=0.3, momentum=0.9, weight_decay=5e-4)
    for p, q in zip(method.model.parameters(), twin.parameters()):
        opt.state[q]["momentum_buffer"] = ctx.optimizer.state[p]["momentum_buffer"].clone()
    l2b = L2B(twin, method.info, warmup_epochs=0, lookahead="all")
    ref_ctx = Context(
        info=method.info,
        optimizer=opt,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
        meta_batches=lambda: meta,
        predict_train=None,
        autocast=contextlib.nullcontext,
    )
    ref_ctx.epoch = 1
    views = torch.cat(list(batch.x))
    ref = l2b.training_step(Batch(views, batch.labels.repeat(2), batch.idx.repeat(2)), ref_ctx)
    opt.zero_grad()
    ref["loss"].backward()
    norm = torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.8)
    assert float(norm) > 0.8  # the clip binds: a plug-in without it would differ
    opt.step()

    method.training_step(batch, ctx)  # DivideMix's loss is computed but never stepped (off)
    out = method.after_step(batch, ctx)
    assert float(out["l2b_step"]) == 1.0
    for p, q in zip(method.model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q)
    for key, value in method.net2.state_dict().items():  # the second network is not touched
        torch.testing.assert_close(value, net2_before[key])


def test_l2b_plugin_off_takes_no_step():
    method, ctx, batch, _ = _plugin()
    method.l2b = False
    before = copy.deepcopy(method.model.state_dict())
    method.training_step(batch, ctx)
    assert method.after_step(batch, ctx) == {}
    for key, value in method.model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_gmm_clean_meta_set_never_holds_a_sample_the_gmm_marked_noisy():
    gen = torch.Generator().manual_seed(1)
    prob = torch.rand(200, generator=gen)
    for n in (1, 16, 150):
        pos = draw_labelled_meta(prob, 0.5, n, gen)
        assert len(pos) == min(n, int((prob > 0.5).sum())) and len(set(pos.tolist())) == len(pos)
        assert bool((prob[pos] > 0.5).all())
    assert len(draw_labelled_meta(torch.zeros(5), 0.5, 4, gen)) == 0
    # through the method: network 1's meta set is its own labelled set, i.e. the samples that
    # network 2's GMM calls clean (prob[1]), never those it calls noisy (network 1's own GMM
    # disagrees on purpose)
    method, ctx, batch, _ = _plugin(l2b_meta="labelled")
    clean2 = torch.arange(N) % 3 == 0
    method.prob = torch.stack([(~clean2).float() * 0.9, clean2.float() * 0.8 + 0.1])
    method._dev = {}
    seen = set()
    for _ in range(5):
        method.training_step(batch, ctx)
        out = method.after_step(batch, ctx)
        assert float(out["l2b_step"]) == 1.0
        idx = method.last_meta_idx
        assert bool(clean2[idx].all()), "a sample the GMM marked noisy entered the meta set"
        seen |= set(idx.tolist())
    assert seen == set(clean2.nonzero().squeeze(1).tolist())  # every labelled sample is drawn
    # no labelled sample at all: no step, and the network is unchanged
    method.prob = torch.stack([torch.ones(N), torch.zeros(N)])
    method._dev = {}
    before = copy.deepcopy(method.model.state_dict())
    method.training_step(batch, ctx)
    assert float(method.after_step(batch, ctx)["l2b_step"]) == 0.0
    for key, value in method.model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_l2b_plugin_clean_needs_a_meta_set():
    method, ctx, _ = _build(l2b=True, l2b_meta="clean")
    from noisytail.errors import ConfigError

    try:
        method.on_train_start(ctx)
    except ConfigError as err:  # a one-line error of the CLI, exit code 2
        assert "meta set" in str(err)
    else:
        raise AssertionError("l2b_meta=clean without a meta set was accepted")


@pytest.mark.parametrize(
    "meta",
    [
        ["method.l2b_meta=labelled"],
        ["method.l2b_meta=clean", "meta.total=60", "meta.balanced=false", "meta.overlap=true"],
    ],
    ids=["labelled", "clean"],
)
def test_resume_matches_uninterrupted_with_the_l2b_plugin(tmp_path, digits_config, meta):
    cfg = digits_config(
        "method.name=dividemix",
        "method.warmup_epochs=1",
        "method.l2b=true",
        *meta,
        "noise.kind=random_subset",
        "noise.rate=0.4",
        "train.epochs=3",
        "data.train_subset=400",
        "train.num_threads=1",
    )
    fit(cfg, tmp_path / "full", write_report=False)
    part = fit(cfg, tmp_path / "split", write_report=False, stop_after_epochs=2)
    assert not part.finished
    fit(cfg, tmp_path / "split", resume=True, write_report=False)
    full, split = _metrics(tmp_path / "full"), _metrics(tmp_path / "split")
    assert full == split
    assert full[-1]["l2b_step"] == 1.0 and "l2b_alpha_mass" in full[-1]
    assert "l2b_step" not in full[0]  # warm-up: no plug-in step


def test_l2b_plugin_takes_network_1s_co_refined_targets():
    from noisytail.methods.l2b import l2b_step

    method, ctx, batch, meta = _plugin()
    # net 1 learns from net 2's split (w = prob[1] = 0.7); net 2 from net 1's (0.9): the
    # plug-in's soft targets are net 1's co-refined labels, sharpen(w y + (1 - w) p1, T)
    method.prob = torch.stack([torch.full((N,), 0.9), torch.full((N,), 0.7)])
    method._dev = {}
    twin = copy.deepcopy(method.model)
    opt = torch.optim.SGD(twin.parameters(), lr=0.3, momentum=0.9, weight_decay=5e-4)
    for p, q in zip(method.model.parameters(), twin.parameters()):
        opt.state[q]["momentum_buffer"] = ctx.optimizer.state[p]["momentum_buffer"].clone()
    with torch.no_grad():
        own = [torch.softmax(twin(v), 1) for v in batch.x]
    targets = co_refine(F.one_hot(batch.labels, K).float(), torch.full((N,), 0.7), own, 0.5)
    l2b_step(twin, opt, torch.cat(list(batch.x)), targets.repeat(2, 1), meta.x, meta.labels)
    method.training_step(batch, ctx)
    method.after_step(batch, ctx)
    for p, q in zip(method.model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize(
    "staged", ["train.freeze_backbone_epochs=1", "train.backbone_lr_scale=0.1"]
)
def test_freezing_or_scaling_the_first_networks_backbone_only_is_refused(
    tmp_path, digits_config, staged
):
    """The loop's freeze and backbone learning rate know `model` only: DivideMix's second
    network (and its L2B plug-in step) would train as if they were not set."""
    from noisytail.errors import ConfigError

    cfg = digits_config("method.name=dividemix", "method.warmup_epochs=1", staged)
    with pytest.raises(ConfigError, match="trains 2 networks"):
        fit(cfg, tmp_path / "run", write_report=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_l2b_plugin_meta_batch_size():
    """``l2b_meta_batch=5``: a clean meta batch gives its first 5 rows (the step equals the one on
    a 5-row meta batch, and differs from the whole one's); a labelled draw holds 5 samples."""
    stepped = []
    for size, rows in ((5, 12), (0, 5), (0, 12)):
        method, ctx, batch, meta = _plugin()
        method.l2b_meta_batch = size
        ctx._meta_batches = lambda m=meta, r=rows: Batch(m.x[:r], m.labels[:r], m.idx[:r])
        method.training_step(batch, ctx)
        assert float(method.after_step(batch, ctx)["l2b_step"]) == 1.0
        stepped.append([p.detach().clone() for p in method.model.parameters()])
    for p, q in zip(stepped[0], stepped[1]):
        torch.testing.assert_close(p, q)
    assert any(not torch.allclose(p, q) for p, q in zip(stepped[0], stepped[2]))
    method, ctx, batch, _ = _plugin(l2b_meta="labelled")
    method.l2b_meta_batch = 5
    method.training_step(batch, ctx)
    method.after_step(batch, ctx)
    assert len(method.last_meta_idx) == 5
    with pytest.raises(ValueError, match="l2b_meta_batch must be >= 0"):
        _build(l2b=True, l2b_meta_batch=-1)
