"""Images/s of every registered method in fp32 and bf16 (``noisytail.speed``): the table in
BENCHMARKS.md.

Usage: python scripts/bench_speed.py [--device cpu] [--methods erm l2b ...] [--data fmnist|cifar]
       [--width 16] [--subset 4000] [--epochs 2] [--precisions fp32 bf16]
       [--layouts contiguous channels_last] [--json OUT]
``--data cifar`` uses random CIFAR-shaped tensors (``random_images``), for machines without CIFAR.
Run it on a quiet machine: it times whole epochs.
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

import noisytail.methods  # noqa: F401  (registration)
from noisytail.registry import METHODS
from noisytail.speed import LAYOUTS, speed_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--data", choices=("fmnist", "cifar"), default="fmnist")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--subset", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument(
        "--layouts",
        nargs="+",
        choices=LAYOUTS,
        default=["channels_last"],
        help="layouts of images and conv weights (train.channels_last)",
    )
    parser.add_argument("--json", default=None, help="also write the raw rows here")
    args = parser.parse_args()
    if args.data == "fmnist":
        data = ["data.name=fashion_mnist", f"data.train_subset={args.subset}"]
    else:
        data = ["data.name=random_images", f"data.options.num_train={args.subset}"]
    base = [
        *data,
        "data.val_fraction=0",
        "noise.kind=symmetric",
        "noise.rate=0.4",
        f"model.name={args.model}",
        f"train.batch_size={args.batch_size}",
    ]
    if args.model == "small_cnn":
        base.append(f"model.options.width={args.width}")
    methods = args.methods or ["erm"] + [m for m in METHODS.names() if m != "erm"]
    if "erm" not in methods:
        methods = ["erm", *methods]
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads"
    if args.device.startswith("cuda"):
        tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
        machine += (
            f", {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}"
            f", fp32 convolutions {'may use TF32' if tf32 else 'in full fp32'}"
        )
    model = f"{args.model} (width {args.width})" if args.model == "small_cnn" else args.model
    data = "random CIFAR-shaped tensors" if args.data == "cifar" else "Fashion-MNIST"
    header = (
        f"{model}, {data} ({args.subset} images), batch {args.batch_size}, torch "
        f"{torch.__version__}, Python {platform.python_version()}, {machine}"
    )
    print(header, flush=True)

    def progress(row: dict) -> None:  # each row as it is measured: a cut-short run keeps them
        print("row:", json.dumps(row), flush=True)

    table, rows = speed_table(
        methods,
        base=base,
        precisions=args.precisions,
        device=args.device,
        epochs=args.epochs,
        layouts=args.layouts,
        on_row=progress,
    )
    print(header)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
