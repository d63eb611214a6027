"""Checks that need a CUDA device (marker ``cuda``; skipped where none is visible, e.g. in CI).
``scripts/gpu_check.sh`` runs them on a machine with a GPU."""

import contextlib
import json

import numpy as np
import pytest
import torch

import noisytail.methods.moit as moit_module
from noisytail.config import load_config
from noisytail.methods.base import Context, TaskInfo
from noisytail.registry import METHODS, MODELS
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


def test_moit_detection_runs_on_the_gpu_and_flags_as_on_the_cpu(monkeypatch):
    """MOIT's per-epoch kNN search stays on the device of the features (no copy to the CPU) and
    flags the same samples there as on the CPU; the flags themselves are kept on the CPU."""
    n, k = 400, 4
    g = torch.Generator().manual_seed(0)
    true = torch.arange(n) % k
    feats = torch.eye(k)[true] * 3 + 0.3 * torch.randn(n, k, generator=g)
    noisy = true.clone()
    flipped = torch.arange(n)[(torch.arange(n) // k) % 10 == 0]  # 10 of each class's 100
    noisy[flipped] = (true[flipped] + 1) % k
    seen = []
    original = moit_module.moit_detect

    def spy(features, *args, **kwargs):
        seen.append(features.device.type)
        return original(features, *args, **kwargs)

    monkeypatch.setattr(moit_module, "moit_detect", spy)

    def detect_on(device):
        model = MODELS.build("small_cnn", num_classes=k, input_shape=(1, 8, 8), width=4)
        info = TaskInfo(k, np.full(k, n // k), n, (1, 8, 8), 2, 4)
        method = METHODS.build("moit", args={"k": 20}, model=model, info=info)
        ctx = Context(
            info=info,
            optimizer=torch.optim.SGD(method.parameters(), lr=0.1),
            device=torch.device(device),
            generator=torch.Generator().manual_seed(0),
            meta_batches=None,
            predict_train=lambda fn: feats.to(device),
            autocast=contextlib.nullcontext,
        )
        method.sample_labels.values[:] = noisy
        ctx.epoch = 1
        method.on_epoch_start(ctx)
        assert method.detected_epoch == 1 and method.clean.device.type == "cpu"
        return method.clean.clone(), method.d2.clone()

    clean_gpu, d2_gpu = detect_on("cuda")
    clean_cpu, d2_cpu = detect_on("cpu")
    assert seen == ["cuda", "cpu"]
    assert torch.equal(clean_gpu, clean_cpu)
    assert torch.allclose(d2_gpu, d2_cpu)
    assert not bool(clean_cpu[flipped].any())  # the flips are found
