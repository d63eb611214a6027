"""Seconds per training step of the meta-reweighting methods as a ratio to ERM's (same model, same
batch, one process): small_cnn on Fashion-MNIST, on the CPU and on a GPU when one is visible.

Usage: python scripts/bench_meta_cost.py [--steps 30] [--warmup 5] [--width 32] [--batch-size 128]
       [--no-variants] [--devices cpu,cuda]

Each method is stepped exactly as the training loop steps it, round-robin with the others; the
median and the mean step time are printed as one Markdown table per device. What is measured and
how: `noisytail.benchmarks.meta_cost`. Not a test: its figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform

import torch

from noisytail.benchmarks.meta_cost import METHODS, VARIANTS, measure, table


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
        times = measure(
            device,
            todo,
            steps=args.steps,
            warmup=args.warmup,
            width=args.width,
            batch_size=args.batch_size,
            subset=args.subset,
        )
        print(table(todo, times))


if __name__ == "__main__":
    main()
