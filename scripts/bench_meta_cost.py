"""Seconds per training step of the meta-reweighting methods as a ratio to ERM's (same model, same
batch, one process): small_cnn on Fashion-MNIST, on the CPU and on a GPU when one is visible.

Usage: python scripts/bench_meta_cost.py [--steps 30] [--warmup 5] [--width 32] [--batch-size 128]
       [--no-variants] [--devices cpu,cuda]

Each method is built on the same seed (same initial model) and stepped exactly as the training
loop does (autocast, ``method(batch, ctx)``, backward, optional clip, SGD step) on a fixed training
batch and the cycled meta batches, round-robin with the other methods so that a drifting machine
load hits all alike. The step time is the median over ``--steps`` steps after ``--warmup`` untimed
ones (CUDA synchronised); the mean is printed too, because with ``meta_every=k`` the median is a
non-meta step and only the mean shows the amortised cost. The variants measure the cost-saving
options: the forward-mode meta-gradient (default) against the papers' double backward
(``meta_grad``), the meta step every k iterations (``meta_every``; skipped steps are plain CE)
and the head-only look-ahead (``lookahead=head``). Prints one Markdown table per device. Not a
test: its figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from noisytail.config import load_config
from noisytail.train import Run, prepare_data, setup_runtime

METHODS = [
    ("erm", {}),
    ("l2rw", {}),
    ("mwnet", {}),
    ("gdw", {"mode": "mwnet"}),
    ("l2b", {"warmup_epochs": 0}),
    ("gdw", {}),
]
VARIANTS = [
    ("l2rw", {"meta_grad": "double_backward"}),
    ("l2b", {"warmup_epochs": 0, "meta_grad": "double_backward"}),
    ("mwnet", {"meta_grad": "double_backward"}),
    ("gdw", {"meta_grad": "double_backward"}),
    ("l2b", {"warmup_epochs": 0, "meta_every": 4}),
    ("l2b", {"warmup_epochs": 0, "lookahead": "head"}),
    ("gdw", {"lookahead": "head"}),
]


def build(device: str, name: str, args: dict, width: int, batch_size: int, subset: int) -> Run:
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


def label(name: str, args: dict) -> str:
    shown = {k: v for k, v in args.items() if k != "warmup_epochs"}
    return name + (" (" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--subset", type=int, default=2000)
    parser.add_argument("--no-variants", action="store_true")
    parser.add_argument("--devices", default=None, help="comma-separated; default cpu (+cuda)")
    args = parser.parse_args()
    devices = (
        args.devices.split(",")
        if args.devices
        else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    todo = METHODS + ([] if args.no_variants else VARIANTS)
    for device in devices:
        machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads"
        if device.startswith("cuda"):
            machine = torch.cuda.get_device_name()
        print(
            f"\n**{device}** ({machine}); small_cnn width {args.width}, batch {args.batch_size}, "
            f"median of {args.steps} steps after {args.warmup} warm-up steps\n"
        )
        print("| method | median ms / step | ratio to ERM | mean ms / step | ratio (means) |")
        print("|---|---|---|---|---|")
        steppers = [
            Stepper(build(device, name, margs, args.width, args.batch_size, args.subset))
            for name, margs in todo
        ]
        # round-robin, so that a drifting machine load hits every method alike
        for i in range(args.warmup + args.steps):
            for s in steppers:
                s.step(record=i >= args.warmup)
        base_med = statistics.median(steppers[0].times)
        base_mean = statistics.fmean(steppers[0].times)
        for (name, margs), s in zip(todo, steppers):
            med, mean = statistics.median(s.times), statistics.fmean(s.times)
            print(
                f"| {label(name, margs)} | {1000 * med:.1f} | {med / base_med:.2f} | "
                f"{1000 * mean:.1f} | {mean / base_mean:.2f} |"
            )


if __name__ == "__main__":
    main()
