"""Seconds per training step of the meta-reweighting methods as a ratio to ERM's (same model, same
batch, one process): small_cnn on Fashion-MNIST, on the CPU and on a GPU when one is visible.

Usage: python scripts/bench_meta_cost.py [--steps 30] [--warmup 5] [--width 32] [--batch-size 128]
       [--no-variants] [--devices cpu,cuda] [--model mlp] [--precision fp32|bf16|auto]
       [--suite meta|routes|defaults|every|dividemix|gdw_between|first_order]

Each method is stepped exactly as the training loop steps it, round-robin with the others; the
median and the mean step time are printed as one Markdown table per device. What is measured and
how: `noisytail.benchmarks.meta_cost`. Not a test: its figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform

import torch

from noisytail.benchmarks.meta_cost import (
    DEFAULTS,
    DIVIDEMIX,
    EVERY,
    FIRST_ORDER,
    GDW_BETWEEN,
    METHODS,
    ROUTES,
    VARIANTS,
    measure,
    table,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--subset", type=int, default=2000)
    parser.add_argument("--no-variants", action="store_true")
    parser.add_argument("--devices", default=None, help="comma-separated; default cpu (+cuda)")
    parser.add_argument(
        "--suite",
        choices=["meta", "routes", "defaults", "every", "dividemix", "gdw_between", "first_order"],
        default="meta",
    )
    parser.add_argument("--model", choices=["small_cnn", "mlp"], default="small_cnn",
                        help="mlp: the meta benchmark's MLP 784-512-512-10")  # fmt: skip
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    args = parser.parse_args()
    extra = [f"train.precision={args.precision}"]
    if args.threads:
        extra.append(f"train.num_threads={args.threads}")
    if args.model == "mlp":
        extra += ["model.name=mlp", "model.options.hidden=[512, 512]", "data.augment=none"]
    devices = (
        args.devices.split(",")
        if args.devices
        else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    suites = {
        "routes": ROUTES,
        "defaults": DEFAULTS,
        "every": EVERY,
        "dividemix": DIVIDEMIX,
        "gdw_between": GDW_BETWEEN,
        "first_order": FIRST_ORDER,
    }
    todo = suites.get(args.suite, METHODS + ([] if args.no_variants else VARIANTS))
    for device in devices:
        threads = args.threads or torch.get_num_threads()
        machine = f"{platform.machine()}, {threads} torch threads"
        if device.startswith("cuda"):
            machine = torch.cuda.get_device_name()
        print(
            f"\n**{device}** ({machine}); {args.model} (width {args.width}), batch "
            f"{args.batch_size}, precision {args.precision}, "
            f"median of {args.steps} steps after {args.warmup} warm-up steps\n"
        )
        times, epoch_start = measure(
            device,
            todo,
            steps=args.steps,
            warmup=args.warmup,
            width=args.width,
            batch_size=args.batch_size,
            subset=args.subset,
            extra=tuple(extra),
        )
        print(table(todo, times, epoch_start))


if __name__ == "__main__":
    main()
