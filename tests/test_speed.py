"""The speed table's machinery (not its figures: those go into BENCHMARKS.md), the random-images
source it runs on where no data set is present, and how ``train.precision=auto`` resolves."""

from functools import reduce
from pathlib import Path

import numpy as np
import pytest
import torch

import noisytail.runtime as runtime_mod
import noisytail.train as train_mod
from noisytail.config import load_config, parse_override
from noisytail.data.sources import load_dataset
from noisytail.data.types import DataError
from noisytail.runtime import resolve_channels_last, resolve_precision
from noisytail.speed import STABILITY_ARGS, method_overrides, speed_table

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "data.name=random_images",
    "data.options.num_train=400",
    "data.options.num_test=20",
    "data.options.image_size=8",
    "data.val_fraction=0",
    "model.name=small_cnn",
    "model.options.width=4",
    "train.batch_size=32",
]


def test_random_images_are_seeded_shaped_and_cover_every_class():
    a = load_dataset("random_images", options={"num_train": 50, "num_test": 12, "seed": 3})
    b = load_dataset("random_images", options={"num_train": 50, "num_test": 12, "seed": 3})
    c = load_dataset("random_images", options={"num_train": 50, "num_test": 12, "seed": 4})
    x = a.train.images.get(np.arange(50))
    assert x.shape == (50, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x, b.train.images.get(np.arange(50)))
    assert not torch.equal(x, c.train.images.get(np.arange(50)))
    assert set(a.train.labels) == set(range(10)) and set(a.test.labels) == set(range(10))
    with pytest.raises(DataError, match="one image per class"):
        load_dataset("random_images", options={"num_train": 5, "num_test": 12})


def test_speed_table_rows_and_cost_ratios():
    seen = []  # each row as it is measured: a run cut short by a time limit keeps them
    table, rows = speed_table(
        ["erm", "l2b"], base=TINY, precisions=["fp32"], device="cpu", epochs=1, on_row=seen.append
    )
    assert seen == rows
    rate = {r["method"]: r["images_per_second"] for r in rows}
    assert all(r > 0 for r in rate.values()) and {r["precision"] for r in rows} == {"fp32"}
    lines = table.splitlines()
    assert lines[0] == "| method | fp32 images/s | fp32 cost × ERM |"
    erm_row, l2b_row = lines[2].split(" | "), lines[3].split(" | ")
    assert erm_row[-1].rstrip(" |") == "1.00"
    assert float(l2b_row[-1].rstrip(" |")) == pytest.approx(rate["erm"] / rate["l2b"], abs=0.006)


def test_speed_table_with_two_layouts_names_both_and_the_speed_up():
    table, rows = speed_table(
        ["erm"],
        base=TINY,
        precisions=["fp32"],
        device="cpu",
        epochs=1,
        layouts=["contiguous", "channels_last"],
    )
    assert [r["layout"] for r in rows] == ["contiguous", "channels_last"]
    rate = {r["layout"]: r["images_per_second"] for r in rows}
    head = table.splitlines()[0]
    assert head == (
        "| method | fp32 NCHW images/s | fp32 NHWC images/s | fp32 NCHW cost × ERM | "
        "fp32 NHWC cost × ERM | fp32 NHWC / fp32 NCHW |"
    )
    speed_up = float(table.splitlines()[2].split(" | ")[-1].rstrip(" |"))
    assert speed_up == pytest.approx(rate["channels_last"] / rate["contiguous"], abs=0.006)


def test_method_overrides_put_phases_first_and_give_meta_methods_a_meta_set():
    assert method_overrides("l2b") == [
        "method.name=l2b",
        "method.warmup_epochs=0",
        "train.grad_clip=0.25",
        "meta.per_class=20",
    ]
    assert "data.augment=simclr" in method_overrides("simclr")
    assert method_overrides("erm") == ["method.name=erm"]


@pytest.mark.parametrize("name", sorted(STABILITY_ARGS))
def test_stability_settings_are_those_the_method_presets_ship(name):
    preset = load_config(REPO / "configs" / "methods" / f"{name}.yaml")
    ours = load_config(None, STABILITY_ARGS[name])
    for override in STABILITY_ARGS[name]:
        keys, _ = parse_override(override)
        assert reduce(getattr, keys, ours) == reduce(getattr, keys, preset), override


def test_precision_auto_follows_the_hardware(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision(gpu, "auto") == "bf16"
    assert resolve_precision(cpu, "fp32") == "fp32" and resolve_precision(gpu, "fp32") == "fp32"
    monkeypatch.setattr(runtime_mod, "cpu_has_bf16", lambda: True)
    assert resolve_precision(cpu, "auto") == "bf16"
    monkeypatch.setattr(runtime_mod, "cpu_has_bf16", lambda: False)
    assert resolve_precision(cpu, "auto") == "fp32"
    assert resolve_precision(cpu, "bf16") == "bf16"  # asked for: emulated, but honoured


def test_the_summary_records_the_precision_run(tmp_path, digits_config):
    summary = train_mod.fit(
        digits_config("train.epochs=1", "train.precision=fp32"), tmp_path / "r", write_report=False
    )
    assert summary.precision == "fp32"


def test_channels_last_defaults_on_for_images_on_cpu_and_gpu():
    cpu, gpu, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert resolve_channels_last(cpu, None, True) and resolve_channels_last(gpu, None, True)
    assert not resolve_channels_last(mps, None, True)
    assert not resolve_channels_last(cpu, None, False)  # tables, features: no layout to choose
    assert not resolve_channels_last(cpu, True, False)
    assert not resolve_channels_last(cpu, False, True) and resolve_channels_last(mps, True, True)


@pytest.mark.parametrize("method", ["erm", "l2b"])
def test_channels_last_changes_the_layout_not_the_run(tmp_path, digits_config, method):
    """The same seed in both layouts: the summary says which layout ran, and a few steps give
    the same model (fp32; NHWC kernels sum in another order, so equal to rounding, not bit for
    bit; rounding grows chaotically over many steps, hence three steps)."""
    extra = ["train.precision=fp32", f"method.name={method}", "meta.per_class=3"]
    extra += ["data.train_subset=120", "train.batch_size=32", "method.warmup_epochs=0"]
    if method == "erm":
        extra.pop()
    results = {}
    for flag in ("true", "false"):
        cfg = digits_config("train.epochs=1", f"train.channels_last={flag}", *extra)
        summary = train_mod.fit(cfg, tmp_path / flag, write_report=False)
        assert summary.channels_last is (flag == "true")
        results[flag] = np.load(tmp_path / flag / "predictions.npz")["probs"]
    np.testing.assert_allclose(results["true"], results["false"], atol=1e-4)
    assert np.abs(results["true"] - results["false"]).max() > 0  # the layouts did differ


def test_a_channels_last_run_has_nhwc_conv_weights(digits_config):
    from noisytail.data.prepare import prepare_data
    from noisytail.runtime import setup_runtime

    for flag, nhwc in (("true", True), ("false", False)):
        cfg = digits_config(f"train.channels_last={flag}")
        run = train_mod.Run(cfg, None, setup_runtime(cfg), prepare_data(cfg))
        conv = run.method.model.body[3].weight  # [16, 16, 3, 3]: the layouts differ
        assert conv.is_contiguous(memory_format=torch.channels_last) is nhwc
        assert conv.is_contiguous() is not nhwc


def test_gpu_check_refuses_in_one_line_without_a_gpu():
    import os
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: scripts/gpu_check.sh would run in full")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        ["bash", str(root / "scripts" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["gpu_check: no CUDA device is visible"]
