"""Seconds per training step of the meta-reweighting methods as a ratio to ERM's (same model, same
batch, one process): small_cnn on Fashion-MNIST (the driver: ``scripts/bench_meta_cost.py``).

Each method is built on the same seed (same initial model) and stepped exactly as the training
loop does (autocast, ``method(batch, ctx)``, backward, optional clip, SGD step) on a fixed training
batch and the cycled meta batches, round-robin with the other methods so that a drifting machine
load hits all alike. The step time is the median over ``steps`` steps after ``warmup`` untimed
ones (CUDA synchronised); the mean is reported too, because with ``meta_every=k`` the median is a
non-meta step and only the mean shows the amortised cost. The `VARIANTS` measure the cost-saving
options: the forward-mode meta-gradient (default) against the papers' double backward
(``meta_grad``), the meta step every k iterations (``meta_every``; skipped steps are plain CE)
and the head-only look-ahead (``lookahead=head``).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from noisytail.config import load_config
from noisytail.data.prepare import prepare_data
from noisytail.train import Run, setup_runtime

#: (method name, method options): the methods whose step cost is compared with ERM's (the first).
METHODS: list[tuple[str, dict[str, Any]]] = [
    ("erm", {}),
    ("l2rw", {}),
    ("mwnet", {}),
    ("gdw", {"mode": "mwnet"}),
    ("l2b", {"warmup_epochs": 0}),
    ("gdw", {}),
]
#: The cost-saving options, measured on top of `METHODS`.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("l2rw", {"meta_grad": "double_backward"}),
    ("l2b", {"warmup_epochs": 0, "meta_grad": "double_backward"}),
    ("mwnet", {"meta_grad": "double_backward"}),
    ("gdw", {"meta_grad": "double_backward"}),
    ("l2b", {"warmup_epochs": 0, "meta_every": 4}),
    ("l2b", {"warmup_epochs": 0, "lookahead": "head"}),
    ("gdw", {"lookahead": "head"}),
]


def build(
    device: str, name: str, args: dict[str, Any], width: int, batch_size: int, subset: int
) -> Run:
    """The run of method ``name`` with options ``args`` on the benchmark's data and model."""
    overrides = [
        "data.name=fashion_mnist",
        f"data.train_subset={subset}",
        "data.val_fraction=0",
        "meta.per_class=20",
        "noise.kind=uniform",
        "noise.rate=0.4",
        "model.name=small_cnn",
        f"model.options.width={width}",
        f"train.batch_size={batch_size}",
        "train.epochs=1",
        f"train.device={device}",
        "train.progress=false",
        f"method.name={name}",
    ] + [f"method.{k}={v}" for k, v in args.items()]
    cfg = load_config(None, overrides)
    return Run(cfg, Path(tempfile.mkdtemp()), setup_runtime(cfg), prepare_data(cfg))


class Stepper:
    """One method's run, stepped exactly as the loop steps it, on the run's first batch."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.batch = next(iter(run.loader.epoch(0)))
        self.cuda = run.rt.device.type == "cuda"
        self.times: list[float] = []
        self.i = 0
        run.method.train()

    def step(self, record: bool) -> None:
        run, ctx = self.run, self.run.ctx
        ctx.step = self.i
        self.i += 1
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with run.autocast():
            out = run.engine(self.batch, ctx)
        run.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        if run.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(run.method.parameters(), run.cfg.train.grad_clip)
        run.optimizer.step()
        if self.cuda:
            torch.cuda.synchronize()
        if record:
            self.times.append(time.perf_counter() - start)


def label(name: str, args: dict[str, Any]) -> str:
    shown = {k: v for k, v in args.items() if k != "warmup_epochs"}
    return name + (" (" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else "")


def measure(
    device: str,
    todo: list[tuple[str, dict[str, Any]]],
    *,
    steps: int,
    warmup: int,
    width: int,
    batch_size: int,
    subset: int,
) -> list[list[float]]:
    """Seconds of each of ``steps`` timed steps (after ``warmup`` untimed ones) of every method
    of ``todo`` on ``device``, stepped round-robin; one list per entry of ``todo``."""
    steppers = [Stepper(build(device, n, a, width, batch_size, subset)) for n, a in todo]
    for i in range(warmup + steps):  # round-robin: a drifting load hits every method alike
        for s in steppers:
            s.step(record=i >= warmup)
    return [s.times for s in steppers]


def table(todo: list[tuple[str, dict[str, Any]]], times: list[list[float]]) -> str:
    """Markdown rows: median and mean ms per step of each method, as ratios to the first (ERM)."""
    lines = [
        "| method | median ms / step | ratio to ERM | mean ms / step | ratio (means) |",
        "|---|---|---|---|---|",
    ]
    base_med, base_mean = statistics.median(times[0]), statistics.fmean(times[0])
    for (name, margs), t in zip(todo, times):
        med, mean = statistics.median(t), statistics.fmean(t)
        lines.append(
            f"| {label(name, margs)} | {1000 * med:.1f} | {med / base_med:.2f} | "
            f"{1000 * mean:.1f} | {mean / base_mean:.2f} |"
        )
    return "\n".join(lines)
