"""MOIT and MOIT+: the memory, per-epoch detection indexed by sample, the semi-supervised switch,
short runs on digits, and MOIT+ reading a MOIT run's clean mask."""

import contextlib
import json

import numpy as np
import pytest
import torch

from noisytail.config import ConfigError
from noisytail.data.prepare import prepare_data
from noisytail.methods.base import Batch, Context, TaskInfo
from noisytail.methods.moit import CrossBatchMemory
from noisytail.methods.moit_plus import MOITPlus
from noisytail.registry import METHODS, MODELS
from noisytail.train import fit

N, K = 64, 4


def build(name="moit", epochs=4, predict=None, **kw):
    torch.manual_seed(0)
    model = MODELS.build("small_cnn", num_classes=K, input_shape=(1, 8, 8), width=4)
    info = TaskInfo(K, np.full(K, N // K), N, (1, 8, 8), epochs, 4)
    method = METHODS.build(name, args=kw, model=model, info=info)
    opt = torch.optim.SGD(method.parameter_groups(), lr=0.1)
    ctx = Context(
        info=info,
        optimizer=opt,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
        meta_batches=None,
        predict_train=predict,
        autocast=contextlib.nullcontext,
    )
    return method, ctx


def make_batch(idx, labels, views=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(idx), 1, 8, 8, generator=g)
    parts = tuple(x + 0.1 * torch.randn(x.shape, generator=g) for _ in range(views)) + (x,)
    return Batch(parts, labels.clone(), idx.clone())


def test_memory_is_a_fifo_ring_buffer():
    mem = CrossBatchMemory(5, 2)
    feats = torch.arange(16.0).view(8, 2)
    mem.enqueue(feats[:3], torch.arange(3))
    assert len(mem) == 3 and mem.recent()[1].tolist() == [0, 1, 2]
    mem.enqueue(feats[3:7], torch.arange(3, 7))  # 7 written, capacity 5: 0 and 1 are gone
    z, y = mem.recent()
    assert len(mem) == 5 and y.tolist() == [2, 3, 4, 5, 6]
    assert torch.equal(z, feats[2:7])
    assert mem.recent(2)[1].tolist() == [5, 6]  # the newest, oldest first
    mem.enqueue(torch.zeros(9, 2), torch.arange(10, 19))  # more than fits: the newest 5
    assert mem.recent()[1].tolist() == [14, 15, 16, 17, 18]
    other = CrossBatchMemory(5, 2)
    other.load(mem.state())
    assert other.recent()[1].tolist() == [14, 15, 16, 17, 18] and other.ptr == mem.ptr


def test_memory_fills_every_step_and_is_used_from_its_start_epoch():
    method, ctx = build(xbm_per_class=2)  # capacity 2 * 4 * 2 = 16
    idx = torch.arange(8)
    batch = make_batch(idx, idx % K)
    ctx.epoch = 0
    no_mem = method(batch, ctx)["icl_loss"]
    assert len(method.memory) == 16  # 2B = 16 written, used from epoch 3 only
    ctx.epoch, ctx.generator = 3, torch.Generator().manual_seed(0)
    method.memory = CrossBatchMemory(16, 128)  # empty memory: the memory term repeats the batch's
    with_mem = method(batch, ctx)["icl_loss"]
    assert with_mem.item() == pytest.approx(2 * no_mem.item(), rel=1e-4)


def clustered(true, noisy_seed=0, flips=8):
    """Features that cluster by true class, and noisy labels with ``flips`` known flips."""
    g = torch.Generator().manual_seed(noisy_seed)
    feats = torch.eye(K)[true] * 3 + 0.3 * torch.randn(len(true), K, generator=g)
    noisy = true.clone()
    flipped = torch.randperm(len(true), generator=g)[:flips]
    noisy[flipped] = (true[flipped] + 1) % K
    return feats, noisy, flipped


def test_clean_mask_is_computed_each_epoch_and_indexed_by_sample():
    true = torch.arange(N) % K
    feats, noisy, flipped = clustered(true)
    calls = []

    def predict(fn):
        calls.append(1)
        return feats

    method, ctx = build(k=10, predict=predict)
    method.sample_labels.values[:] = noisy  # as if every batch had been seen
    ctx.epoch = 0
    method.on_epoch_start(ctx)  # detection starts at epoch 1
    assert not calls and method.sample_scores() is None
    ctx.epoch = 1
    method.on_epoch_start(ctx)
    assert calls and method.detected_epoch == 1
    flagged = set(np.flatnonzero(~method.clean.numpy()).tolist())
    assert set(flipped.tolist()) <= flagged  # every flip flagged
    scores = method.sample_scores()
    assert scores.shape == (N,)
    assert scores[flipped.numpy()].max() < np.delete(scores, flipped.numpy()).min()
    # next epoch, features where sample 0's neighbourhood says another class: recomputed
    feats[0] = torch.eye(K)[(int(noisy[0]) + 2) % K] * 3
    ctx.epoch = 2
    method.on_epoch_start(ctx)
    assert method.detected_epoch == 2 and not bool(method.agreement[0])
    assert method.d2[0].item() == pytest.approx(np.log(100.0), rel=1e-5)  # no neighbour agrees
    state = method.extra_state()
    other, _ = build(k=10)
    other.load_extra_state(state)
    assert torch.equal(other.clean, method.clean) and other.detected_epoch == 2


def test_unflagged_samples_get_zero_weight_in_the_labelled_term():
    method, ctx = build(switch_epoch=2)
    idx = torch.arange(20, 36)  # the batch's positions in the pool
    batch = make_batch(idx, idx % K)
    method.detected_epoch = 1

    def run(clean, epoch=2):
        method.clean[:] = clean
        method._clean_dev = None
        ctx.epoch, ctx.generator = epoch, torch.Generator().manual_seed(0)
        with torch.random.fork_rng():
            return method(batch, ctx)

    others_only = torch.ones(N, dtype=torch.bool)
    others_only[idx] = False  # only the batch's samples are unflagged... as non-clean
    out = run(others_only)
    assert out["labelled_loss"].item() == 0.0 and out["clean_fraction_batch"].item() == 0.0
    assert out["ce_loss"].item() > 0  # all from the pseudo-labels
    batch_only = ~others_only
    out = run(batch_only)  # every sample of the batch clean: no pseudo-label term
    assert out["labelled_loss"].item() == pytest.approx(out["ce_loss"].item(), rel=1e-6)
    before = run(batch_only, epoch=1)  # before the switch: plain mixup CE, same draws
    assert "labelled_loss" not in before
    assert before["ce_loss"].item() == pytest.approx(out["ce_loss"].item(), rel=1e-5)


def test_moit_on_digits_improves_over_its_first_epoch(tmp_path, digits_config):
    cfg = digits_config(
        "method.name=moit",
        "train.epochs=5",
        "noise.kind=symmetric",
        "noise.rate=0.3",
        "method.switch_epoch=3",
        "method.xbm_start_epoch=2",
    )
    summary = fit(cfg, tmp_path / "moit", write_report=False)
    rows = [json.loads(line) for line in (tmp_path / "moit" / "metrics.jsonl").open()]
    assert rows[-1]["test_accuracy"] > rows[0]["test_accuracy"] + 0.1
    assert summary.test_accuracy > 0.6
    assert "clean_fraction" in rows[-1] and "labelled_loss" in rows[-1]  # detection and switch ran
    # MOIT+ from that run: reads its clean mask; a different pool is refused
    plus = digits_config(
        "method.name=moit_plus",
        "train.epochs=2",
        "noise.kind=symmetric",
        "noise.rate=0.3",
        f"model.init={tmp_path / 'moit'}",
        f"method.clean_from={tmp_path / 'moit'}",
        "method.bootstrap_epoch=1",
        "train.lr=0.01",
    )
    summary = fit(plus, tmp_path / "plus", write_report=False)
    assert summary.test_accuracy > 0.6
    state = torch.load(tmp_path / "plus" / "checkpoints" / "last.pt", weights_only=False)
    assert state["extra"]["mask_source"] == "redetected"  # detection re-run on the final weights
    no_init = digits_config(
        "method.name=moit_plus",
        "train.epochs=1",
        "noise.kind=symmetric",
        "noise.rate=0.3",
        f"method.clean_from={tmp_path / 'moit'}",
    )
    with pytest.warns(UserWarning, match="model.init is not the MOIT run"):
        fit(no_init, tmp_path / "no_init", write_report=False)
    state = torch.load(tmp_path / "no_init" / "checkpoints" / "last.pt", weights_only=False)
    saved = torch.load(tmp_path / "moit" / "checkpoints" / "last.pt", weights_only=False)
    assert state["extra"]["mask_source"] == "saved"
    assert torch.equal(state["extra"]["clean"], saved["extra"]["clean"])
    other = digits_config(
        "method.name=moit_plus", "data.train_subset=500", f"method.clean_from={tmp_path / 'moit'}"
    )
    with pytest.raises(ConfigError, match="covers .* training samples"):
        fit(other, tmp_path / "bad", write_report=False)
    other = digits_config(
        "method.name=moit_plus",
        "noise.kind=symmetric",
        "noise.rate=0.3",
        "seed=5",
        "corruption_seed=7",
        f"method.clean_from={tmp_path / 'moit'}",
    )
    with pytest.raises(ConfigError, match="noisy labels differ"), pytest.warns(UserWarning):
        fit(other, tmp_path / "bad2", write_report=False)


def test_moit_plus_masks_unclean_samples_and_bootstraps(tmp_path):
    with pytest.warns(UserWarning, match="clean_from"):
        method, ctx = build("moit_plus", bootstrap_epoch=1)
    idx = torch.arange(16)
    batch = make_batch(idx, idx % K, views=1)
    method.clean[:8] = False
    ctx.epoch = 0
    out = method(batch, ctx)
    assert out["clean_fraction_batch"].item() == 0.5
    method.clean[:] = False
    method._clean_dev = None
    out = method(batch, ctx)
    assert out["loss"].item() == 0.0
    method.clean[:] = True
    method._clean_dev = None
    ctx.epoch = 1
    out = method(batch, ctx)
    assert "bootstrap_agreement" in out and torch.isfinite(out["loss"])
    with pytest.raises(ConfigError, match="not found"):
        build("moit_plus", clean_from=str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_moit_resumes_to_the_same_result(tmp_path, digits_config):
    args = [
        "method.name=moit",
        "noise.kind=symmetric",
        "noise.rate=0.3",
        "model.options.width=8",
        "train.batch_size=64",
        "method.switch_epoch=2",
        "method.xbm_start_epoch=1",
        "data.train_subset=600",
    ]
    whole = fit(digits_config(*args), tmp_path / "a", write_report=False)
    fit(digits_config(*args), tmp_path / "b", write_report=False, stop_after_epochs=2)
    resumed = fit(digits_config(*args), tmp_path / "b", resume=True, write_report=False)
    assert resumed.test_accuracy == whole.test_accuracy
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=False)["extra"]
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=False)["extra"]
    assert torch.equal(a["clean"], b["clean"]) and torch.equal(a["labels"], b["labels"])
    assert torch.equal(a["memory"]["feats"], b["memory"]["feats"])


@pytest.mark.parametrize("batches", ["clean", "masked"])
def test_moit_plus_batches_come_from_the_clean_samples_only(tmp_path, digits_config, batches):
    # A MOIT checkpoint whose mask keeps every third pool position; 1 epoch, batch 32.
    noise = ["noise.kind=symmetric", "noise.rate=0.3", "train.batch_size=32", "train.epochs=1"]
    n = len(prepare_data(digits_config(*noise)).corruption.train_idx)
    clean = torch.zeros(n, dtype=torch.bool)
    clean[::3] = True
    n_clean = int(clean.sum())
    torch.save(
        {"extra": {"clean": clean}, "config": {"method": {"name": "moit"}}, "method": {}},
        tmp_path / "moit.pt",
    )
    seen = []
    original = MOITPlus.training_step

    def spy(self, batch, ctx):
        seen.append(batch.idx.cpu().clone())
        return original(self, batch, ctx)

    cfg = digits_config(
        *noise,
        "method.name=moit_plus",
        f"method.clean_from={tmp_path / 'moit.pt'}",
        "method.redetect=false",
        f"method.batches={batches}",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MOITPlus, "training_step", spy)
        fit(cfg, tmp_path / "plus", write_report=False)
    flags = [clean[idx] for idx in seen]
    if batches == "clean":  # the official loader: full batches of clean samples
        assert len(seen) == n_clean // 32
        assert all(len(idx) == 32 and bool(f.all()) for idx, f in zip(seen, flags))
        assert len(torch.cat(seen).unique()) == len(torch.cat(seen))  # no repeat in an epoch
    else:  # the whole pool, noisy rows masked in the step: about 1/3 of each batch is clean
        assert len(seen) == n // 32
        assert 0.2 < float(torch.cat(flags).float().mean()) < 0.45


# --- properties that planted bugs slipped past (issue 13, item 10; see scripts/mutants.py)


def test_mixup_lambda_is_the_dominant_one():
    # lam = max(l, 1 - l) with l ~ Beta(1, 1) = U(0, 1): uniform on [0.5, 1], mean 0.75.
    from noisytail.methods.moit import draw_mixup

    g = torch.Generator().manual_seed(0)
    lams = np.array([draw_mixup(8, 1.0, g)[1] for _ in range(400)])
    assert lams.min() >= 0.5 and lams.max() <= 1.0
    assert abs(lams.mean() - 0.75) < 4 * (0.25 / np.sqrt(12)) / np.sqrt(400)
    perm, lam = draw_mixup(8, 0.0, g)
    assert lam == 1.0 and sorted(perm.tolist()) == list(range(8))


def test_memory_holds_unit_embeddings_of_both_views_with_the_anchors_labels():
    method, ctx = build()
    idx = torch.arange(8)
    labels = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    method(make_batch(idx, labels), ctx)
    z, y = method.memory.recent()
    assert y.tolist() == labels.repeat(2).tolist()
    torch.testing.assert_close(z.norm(dim=1), torch.ones(16))


def test_pseudo_label_term_is_ce_to_the_detached_prediction_of_the_plain_image():
    # No mixing (alpha = 0, so lam = 1) and no clean sample in the batch: the classification
    # loss is the soft CE of both views' logits to the softmax of the plain image, and no
    # gradient flows into that target.
    from noisytail.losses.classification import soft_target_ce

    method, ctx = build(switch_epoch=1, alpha=0.0)
    method.detected_epoch, ctx.epoch = 0, 1
    method.clean[:] = False
    batch = make_batch(torch.arange(8), torch.arange(8) % K)
    plain = batch.x[2].clone().requires_grad_()
    batch = Batch((batch.x[0], batch.x[1], plain), batch.labels, batch.idx)
    out = method(batch, ctx)
    with torch.no_grad():
        logits = torch.cat(
            [method.model(batch.x[0]), method.model(batch.x[1])]
        )  # one BN batch each
        target = torch.softmax(method.model(plain), dim=1).repeat(2, 1)
    assert out["labelled_loss"].item() == 0.0
    assert out["ce_loss"].item() == pytest.approx(soft_target_ce(logits, target).item(), rel=1e-5)
    out["loss"].backward()
    assert plain.grad is None or not plain.grad.any()


def test_sample_scores_by_hand():
    # 0.5 * clean + 0.5 * (1 - d2 / log 100): clean with no discrepancy 1, clean with half the
    # largest 0.75, flagged with none 0.5, flagged with the largest 0.
    from noisytail.methods.moit import D_MAX

    method, _ = build()
    method.detected_epoch = 1
    method.clean[:4] = torch.tensor([True, True, False, False])
    method.d2[:4] = torch.tensor([0.0, D_MAX / 2, 0.0, D_MAX])
    assert method.sample_scores()[:4].tolist() == pytest.approx([1.0, 0.75, 0.5, 0.0])


def test_a_k_the_pool_cannot_supply_is_refused():
    """k >= N would leave the kNN detection never running, MOIT silently without its switch."""
    with pytest.raises(ValueError, match="k=64 neighbours need more than 64"):
        build(k=N)
    build(k=N - 1)  # the largest usable k


@pytest.mark.parametrize("epoch", [0, 2])
def test_each_step_forwards_both_views_and_the_plain_image_in_train_mode(epoch):
    """The official step's three train-mode passes, before and after the switch: BatchNorm's
    running statistics move three times, the last time to the plain images' statistics."""
    method, ctx = build(switch_epoch=1)
    method.detected_epoch, ctx.epoch = 0, epoch
    conv, bn = method.model.body[0], method.model.body[1]  # small_cnn's first conv and its BN
    batch = make_batch(torch.arange(8), torch.arange(8) % K)
    bn.reset_running_stats()
    bn.momentum = 1.0  # the running statistics are those of the last pass
    method(batch, ctx)
    assert int(bn.num_batches_tracked) == 3
    with torch.no_grad():
        plain_mean = conv(batch.x[2]).mean(dim=(0, 2, 3))
    assert torch.allclose(bn.running_mean, plain_mean, atol=1e-6)


def test_moit_plus_forwards_the_plain_image_in_train_mode_before_bootstrapping():
    method, ctx = build("moit_plus", bootstrap_epoch=5)
    ctx.epoch = 0
    conv, bn = method.model.body[0], method.model.body[1]
    batch = make_batch(torch.arange(8), torch.arange(8) % K, views=1)
    bn.reset_running_stats()
    bn.momentum = 1.0
    method(batch, ctx)
    assert int(bn.num_batches_tracked) == 2
    with torch.no_grad():
        plain_mean = conv(batch.x[1]).mean(dim=(0, 2, 3))
    assert torch.allclose(bn.running_mean, plain_mean, atol=1e-6)
