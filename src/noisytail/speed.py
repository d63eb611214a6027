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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import noisytail.methods  # noqa: F401  (registration)
from noisytail.config import load_config
from noisytail.registry import METHODS

#: Memory layouts of image batches and convolution weights (``train.channels_last``).
LAYOUTS = ("contiguous", "channels_last")
#: Short names for the table's columns.
LAYOUT_NAMES = {"contiguous": "NCHW", "channels_last": "NHWC"}

# Arguments that put each method in its steady state from epoch 1 (its costliest phase).
PHASE_ARGS: dict[str, dict[str, Any]] = {
    "l2b": {"warmup_epochs": 0},
    "l2rw": {"warmup_epochs": 0},
    "moit": {"xbm_start_epoch": 1, "detect_start_epoch": 1, "switch_epoch": 1},
    "moit_plus": {"bootstrap_epoch": 1},
    "dividemix": {"warmup_epochs": 0},
}

# Settings a method needs to stay finite, as its preset (configs/methods/<name>.yaml) ships them:
# L2B's and L2RW's gradient-norm clip, the L2B paper's CIFAR-10 value. Without it L2B's normalised
# weights can put a whole step on a few samples; on random CIFAR-shaped data (PreAct ResNet-18,
# batch 256, bf16, H200) its loss became NaN within the first epoch.
STABILITY_ARGS: dict[str, list[str]] = {
    "l2b": ["train.grad_clip=0.25"],
    "l2rw": ["train.grad_clip=0.25"],
}


def method_overrides(name: str) -> list[str]:
    """``--set`` overrides that run method ``name`` in its steady state (``PHASE_ARGS``) with the
    settings that keep it finite (``STABILITY_ARGS``)."""
    out = [f"method.name={name}"]
    out += [f"method.{k}={v}" for k, v in PHASE_ARGS.get(name, {}).items()]
    out += STABILITY_ARGS.get(name, [])
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
    layout: str = "channels_last",
) -> dict[str, Any]:
    """Median images/s of ``epochs`` timed epochs (after one untimed) of ``method`` on the set-up
    ``base`` (``--set`` overrides: data, model, batch size, ...) at ``precision``, with images
    and convolution weights in ``layout`` (``channels_last`` or ``contiguous``, i.e. NCHW)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
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
            f"train.channels_last={layout == 'channels_last'}",
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
        "layout": "channels_last" if run.channels_last else "contiguous",
        "images_per_second": statistics.median(rates),
        "images_per_epoch": images,
    }


def speed_table(
    methods: list[str],
    *,
    base: list[str],
    precisions: list[str],
    device: str,
    epochs: int,
    layouts: tuple[str, ...] | list[str] = ("channels_last",),
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """A Markdown table, one row per method: images/s at each precision (and layout, when more
    than one is given), the cost per image as a multiple of ERM's in each, and the speed-up of
    the last setting over the first. Every method is measured in one setting before the next,
    in the order given (precision, then layout); ``on_row`` gets each measurement as it comes
    (a run cut short by a time limit still has those)."""
    settings = [(p, lay) for p in precisions for lay in layouts]
    rows: list[dict[str, Any]] = []
    for precision, layout in settings:
        for name in methods:
            rows.append(
                measure(
                    name,
                    base=base,
                    precision=precision,
                    device=device,
                    epochs=epochs,
                    layout=layout,
                )
            )
            if on_row is not None:
                on_row(rows[-1])
    rate = {(r["method"], r["precision"], r["layout"]): r["images_per_second"] for r in rows}

    def label(setting: tuple[str, str]) -> str:
        p, lay = setting
        return f"{p} {LAYOUT_NAMES[lay]}" if len(layouts) > 1 else p

    head = ["method"] + [f"{label(s)} images/s" for s in settings]
    head += [f"{label(s)} cost × ERM" for s in settings if ("erm", *s) in rate]
    if len(settings) > 1:
        head.append(f"{label(settings[-1])} / {label(settings[0])}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in methods:
        cells = [name] + [f"{rate[(name, *s)]:.0f}" for s in settings]
        cells += [
            f"{rate[('erm', *s)] / rate[(name, *s)]:.2f}" for s in settings if ("erm", *s) in rate
        ]
        if len(settings) > 1:
            cells.append(f"{rate[(name, *settings[-1])] / rate[(name, *settings[0])]:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), rows
