"""Training throughput of every registered method: images per second of whole training epochs,
as the loop runs them (``Run.train_epoch``: the method's epoch-start work such as MOIT's kNN
detection included), in fp32 and in bf16.

The methods' phases are moved to the first epoch (``PHASE_ARGS``: no warm-up, MOIT's detection
and semi-supervised switch from epoch 1), epoch 0 is an untimed warm-up, and the figure is the
median over the timed epochs. ``scripts/bench_speed.py`` prints the table for BENCHMARKS.md and
``scripts/gpu_check.sh`` runs it on a GPU.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import noisytail.methods  # noqa: F401  (registration)
from noisytail.config import load_config
from noisytail.registry import METHODS

# Arguments that put each method in its steady state from epoch 1 (its costliest phase).
PHASE_ARGS: dict[str, dict[str, Any]] = {
    "l2b": {"warmup_epochs": 0},
    "l2rw": {"warmup_epochs": 0},
    "moit": {"xbm_start_epoch": 1, "detect_start_epoch": 1, "switch_epoch": 1},
    "moit_plus": {"bootstrap_epoch": 1},
    "dividemix": {"warmup_epochs": 0},
}


def method_overrides(name: str) -> list[str]:
    """``--set`` overrides that run method ``name`` in its steady state."""
    out = [f"method.name={name}"]
    out += [f"method.{k}={v}" for k, v in PHASE_ARGS.get(name, {}).items()]
    if METHODS.get(name).needs_meta:
        out.append("meta.per_class=20")
    if METHODS.get(name).self_supervised or name.startswith("moit"):
        out.append("data.augment=simclr")
    return out


def measure(
    method: str,
    *,
    base: list[str],
    precision: str,
    device: str = "cpu",
    epochs: int = 2,
) -> dict[str, Any]:
    """Median images/s of ``epochs`` timed epochs (after one untimed) of ``method`` on the set-up
    ``base`` (``--set`` overrides: data, model, batch size, ...) at ``precision``."""
    from noisytail.data.prepare import prepare_data
    from noisytail.runtime import setup_runtime
    from noisytail.train import Run

    cfg = load_config(
        None,
        [
            *base,
            *method_overrides(method),
            f"train.epochs={epochs + 1}",
            f"train.precision={precision}",
            f"train.device={device}",
            "train.progress=false",
        ],
    )
    rt = setup_runtime(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(cfg, Path(tmp), rt, prepare_data(cfg))
        records = run.train_epochs(epochs + 1, evaluate=False)
        images = records[0]["images"]
        rates = [r["images"] / r["seconds"] for r in records[1:]]
    return {
        "method": method,
        "precision": run.precision,
        "images_per_second": statistics.median(rates),
        "images_per_epoch": images,
    }


def speed_table(
    methods: list[str], *, base: list[str], precisions: list[str], device: str, epochs: int
) -> tuple[str, list[dict[str, Any]]]:
    """A Markdown table, one row per method: images/s at each precision, its cost per image as a
    multiple of ERM's, and the bf16 speed-up. Every method is measured at one precision before
    the next precision, in the order given."""
    rows: list[dict[str, Any]] = []
    for precision in precisions:
        for name in methods:
            rows.append(measure(name, base=base, precision=precision, device=device, epochs=epochs))
    rate = {(r["method"], r["precision"]): r["images_per_second"] for r in rows}
    head = ["method"] + [f"{p} images/s" for p in precisions]
    head += [f"{p} cost × ERM" for p in precisions if ("erm", p) in rate]
    if "fp32" in precisions and "bf16" in precisions:
        head.append("bf16 / fp32")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in methods:
        cells = [name] + [f"{rate[(name, p)]:.0f}" for p in precisions]
        cells += [
            f"{rate[('erm', p)] / rate[(name, p)]:.2f}" for p in precisions if ("erm", p) in rate
        ]
        if "fp32" in precisions and "bf16" in precisions:
            cells.append(f"{rate[(name, 'bf16')] / rate[(name, 'fp32')]:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), rows
