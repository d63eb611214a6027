"""Checks that need a CUDA device (marker ``cuda``; skipped where none is visible, e.g. in CI).
``scripts/gpu_check.sh`` runs them on a machine with a GPU."""

import json

import pytest
import torch

from noisytail.config import load_config
from noisytail.train import fit

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

BASE = [
    "data.name=random_images",
    "data.options.num_train=512",
    "data.options.num_test=128",
    "noise.kind=symmetric",
    "noise.rate=0.4",
    "model.name=preact_resnet18",
    "train.epochs=2",
    "train.batch_size=128",
    "train.device=cuda",
    "train.progress=false",
]


@pytest.mark.parametrize(
    "method",
    [
        ["method.name=erm"],
        ["method.name=l2b", "method.warmup_epochs=0", "meta.per_class=5"],
        ["method.name=moit", "method.detect_start_epoch=1", "data.augment=simclr"],
    ],
    ids=["erm", "l2b", "moit"],
)
def test_a_method_trains_on_the_gpu_in_bf16(tmp_path, method):
    summary = fit(load_config(None, BASE + method), tmp_path / "run", write_report=False)
    assert summary.device.startswith("cuda") and summary.precision == "bf16"
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["train_loss"])) for r in rows)


def test_resume_on_the_gpu_continues_where_it_stopped(tmp_path):
    """GPU kernels need not be bit-deterministic, so the resumed run is compared with a tolerance;
    the CPU tests check bit-identity."""
    cfg = load_config(None, BASE + ["train.epochs=3"])
    fit(cfg, tmp_path / "full", write_report=False)
    fit(cfg, tmp_path / "part", write_report=False, stop_after_epochs=2)
    fit(cfg, tmp_path / "part", resume=True, write_report=False)

    def losses(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [(r["epoch"], r["train_loss"]) for r in map(json.loads, lines)]

    full, part = losses("full"), losses("part")
    assert [e for e, _ in part] == [1, 2, 3]
    assert [v for _, v in part] == pytest.approx([v for _, v in full], rel=0.05)
