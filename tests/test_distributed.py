"""Data-parallel training under torchrun: two CPU processes with the gloo backend."""

import json
import subprocess
import sys

import pytest
import torch

COMMON = ["data.name=digits", "train.batch_size=64", "train.progress=false", "train.num_threads=1"]


def _torchrun_train(out, *overrides):
    """``noisytail train`` in two gloo processes under torchrun; the run's summary."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "noisytail", "train"]
    for o in [*COMMON, *overrides]:
        cmd += ["--set", o]
    cmd += ["--out", str(out), "--no-report"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_process_ddp_run(tmp_path):
    out = tmp_path / "ddp"
    summary = _torchrun_train(
        out, "model.options.width=16", "train.epochs=3", "noise.kind=symmetric", "noise.rate=0.2"
    )
    assert summary["world_size"] == 2
    assert summary["test_accuracy"] > 0.5
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3  # written once, by rank 0
    # each epoch saw the whole pool once across the two ranks (global batch 64 = 2 x 32)
    assert rows[0]["images"] == (summary["num_train"] // 64) * 64


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_l2b_under_torchrun_keeps_every_ranks_sample_weights(tmp_path):
    """DDP copies rank 0's buffers to every rank at each forward: L2B's per-sample weights are
    gathered across ranks first, so the saved ones cover both ranks' samples, not rank 0's."""
    from noisytail.runfolder import read_checkpoint

    out = tmp_path / "ddp"
    summary = _torchrun_train(
        out,
        "model.options.width=8",
        "train.epochs=1",
        "method.name=l2b",
        "method.warmup_epochs=0",
        "meta.per_class=5",
    )
    weights = read_checkpoint(out / "checkpoints" / "last.pt")["method"]["sample_weight"]
    seen = int((~torch.isnan(weights)).sum())
    assert seen == (summary["num_train"] // 64) * 64  # every sample of the epoch, both ranks'


@pytest.mark.parametrize(
    ("device", "world", "local_rank", "expected"),
    [
        ("auto", 1, 0, "cuda:0"),
        ("cuda", 1, 0, "cuda:0"),
        ("cuda:1", 1, 0, "cuda:1"),
        ("cuda", 2, 1, "cuda:1"),
        ("cuda:0", 2, 1, "cuda:1"),  # under torchrun each rank takes its own GPU
    ],
)
def test_a_gpu_run_sets_an_indexed_device(monkeypatch, device, world, local_rank, expected):
    # torch.cuda.set_device refuses a bare "cuda": every single-process GPU run failed at start
    import torch

    from noisytail.config import load_config
    from noisytail.runtime import setup_runtime

    chosen = []

    def set_device(d):
        if isinstance(d, torch.device) and d.index is None:
            raise ValueError("Expected a torch.device with a specified index or an integer")
        chosen.append(str(d))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    rt = setup_runtime(load_config(None, [f"train.device={device}"]))
    assert str(rt.device) == expected and chosen == [expected]


@pytest.mark.parametrize(
    "method",
    [["method.name=mwnet"], ["method.name=gdw"], ["method.name=dividemix", "method.l2b=true"]],
    ids=["mwnet", "gdw", "dividemix+l2b"],
)
def test_a_method_stepping_outside_backward_is_refused_under_torchrun(
    tmp_path, digits_config, method
):
    # its own optimizer step (a weighting network, the L2B plug-in) is not averaged across ranks,
    # so the processes' copies would drift apart
    from noisytail.config import ConfigError
    from noisytail.data.prepare import prepare_data
    from noisytail.runtime import Runtime
    from noisytail.train import Run

    cfg = digits_config(
        *method, "meta.per_class=3", "method.l2b_meta=labelled" if "l2b" in method[-1] else "seed=0"
    )
    two = Runtime(torch.device("cpu"), 0, 2, 0)
    with pytest.raises(ConfigError, match="not averaged across torchrun's processes"):
        Run(cfg, tmp_path, two, prepare_data(cfg))


def test_a_global_batch_that_does_not_divide_by_the_processes_is_refused(tmp_path, digits_config):
    from noisytail.config import ConfigError
    from noisytail.data.prepare import prepare_data
    from noisytail.runtime import Runtime
    from noisytail.train import Run

    cfg = digits_config("train.batch_size=32")
    three = Runtime(torch.device("cpu"), 0, 3, 0)
    with pytest.raises(ConfigError, match="batch_size=32 .* must divide by the 3 processes"):
        Run(cfg, tmp_path, three, prepare_data(cfg))


def test_a_contrastive_method_under_torchrun_says_its_negatives_are_the_ranks(
    tmp_path, digits_config, caplog
):
    from noisytail.data.prepare import prepare_data
    from noisytail.runtime import Runtime
    from noisytail.train import Run

    cfg = digits_config("method.name=simclr", "data.augment=simclr", "train.batch_size=64")
    two = Runtime(torch.device("cpu"), 0, 2, 0)
    data = prepare_data(cfg)
    # no process group here: DDP's wrapping fails, after the warning
    with (
        caplog.at_level("WARNING", logger="noisytail.train"),
        pytest.raises(ValueError, match="process group"),
    ):
        Run(cfg, tmp_path, two, data)
    assert "contrasts each rank's slice of the batch only: 32 images, not 64" in caplog.text


SHARE_BATCHNORM = """
import json, sys, torch, torch.distributed as dist
from noisytail.runtime import Runtime
dist.init_process_group("gloo")
rank = dist.get_rank()
bn = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), torch.nn.BatchNorm2d(3))
torch.manual_seed(rank)  # each rank trains on its own slice: its own statistics
bn(torch.randn(8, 1, 4, 4) + rank)
before = bn[1].running_mean.tolist()
Runtime(torch.device("cpu"), rank, 2, rank).share_batchnorm(bn)
after = [bn[1].running_mean.tolist(), bn[1].running_var.tolist(), int(bn[1].num_batches_tracked)]
with open(sys.argv[1] + f"/rank{rank}.json", "w") as fh:
    json.dump({"before": before, "after": after}, fh)
dist.destroy_process_group()
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_every_rank_ends_an_epoch_with_rank_0s_batchnorm_statistics(tmp_path):
    """The work between epochs (evaluation, detection, co-divide) runs on every rank: with
    rank 0's statistics everywhere, every rank decides the same."""
    script = tmp_path / "share.py"
    script.write_text(SHARE_BATCHNORM)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*cmd, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["before"] != ranks[1]["before"]
    assert ranks[0]["after"] == ranks[1]["after"]
    assert ranks[0]["after"][0] == ranks[0]["before"]
