"""What the loop offers methods beyond the batch: training samples by pool position
(`Context.pool_batch`) and a restricted training pool (`Method.train_subset`)."""

import numpy as np
import torch

from noisytail.data.prepare import prepare_data
from noisytail.train import Run, setup_runtime


def test_pool_batch_serves_pool_positions_like_the_loader(tmp_path, digits_config):
    cfg = digits_config("method.name=mttv", "data.augment=simclr", "noise.kind=symmetric")
    prepared = prepare_data(cfg)
    run = Run(cfg, tmp_path, setup_runtime(cfg), prepared)
    idx = torch.tensor([5, 0, 5, len(prepared.train_labels) - 1])
    batch = run.ctx.pool_batch(idx, torch.Generator().manual_seed(0))
    aug, plain = batch.x  # MTTV with partners from the data set: (augmented, plain)
    assert torch.equal(plain, run.train_data.inputs(idx))
    assert not torch.equal(aug, plain)
    assert torch.equal(batch.idx, idx)
    assert batch.labels.tolist() == prepared.train_labels[idx.numpy()].tolist()  # noisy labels
    # the default generator is the context's (seeded per epoch by the loop)
    run.ctx.generator = torch.Generator().manual_seed(0)
    again = run.ctx.pool_batch(idx)
    assert torch.equal(again.x[0], aug)


def test_train_subset_restricts_the_loader(tmp_path, digits_config, monkeypatch):
    cfg = digits_config("method.name=erm", "train.batch_size=16")
    prepared = prepare_data(cfg)
    run = Run(cfg, tmp_path, setup_runtime(cfg), prepared)
    n = len(prepared.train_labels)
    assert len(run.loader) == n // 16
    keep = np.arange(0, n, 4)
    monkeypatch.setattr(run.method, "train_subset", lambda: keep)
    run.start()
    assert len(run.loader) == len(keep) // 16 == run.info.steps_per_epoch
    idx = torch.cat([b.idx for b in run.loader.epoch(0)])
    assert set(idx.tolist()) <= set(keep.tolist())


def test_a_value_reported_on_some_steps_is_averaged_over_those(tmp_path, digits_config):
    # a meta step every 2nd iteration reports its meta loss on those steps only: the epoch's
    # record is its mean over them, not diluted by the steps that did not report it
    cfg = digits_config("method.name=erm", "train.batch_size=16", "train.epochs=1")
    run = Run(cfg, tmp_path, setup_runtime(cfg), prepare_data(cfg))
    real = run.method.training_step
    calls = []

    def step(batch, ctx):
        out = real(batch, ctx)
        calls.append(1)
        return {**out, "sometimes": torch.tensor(3.0)} if len(calls) % 2 else out

    run.method.training_step = step
    run.train_epochs(None, None, progress=False)
    assert len(calls) >= 4
    assert run.history[-1]["sometimes"] == 3.0
