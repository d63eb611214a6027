"""Images per second of an ERM training epoch (small CNN, Fashion-MNIST), CPU and GPU if present.

Usage: python scripts/bench_throughput.py [--epochs 4] [--width 32] [--batch-size 128]
Prints one Markdown row per device with the median images/s over the timed epochs (the first
epoch is a warm-up and not counted) and the machine it ran on. Not a test: its figures go into
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform

import torch

from noisytail.speed import measure as measure_method


def measure(device: str, epochs: int, width: int, batch_size: int, subset: int) -> dict:
    """ERM's median images/s over ``epochs`` timed epochs (``noisytail.speed.measure``)."""
    r = measure_method(
        "erm",
        base=[
            "data.name=fashion_mnist",
            f"data.train_subset={subset}",
            "data.val_fraction=0",
            "model.name=small_cnn",
            f"model.options.width={width}",
            f"train.batch_size={batch_size}",
        ],
        precision="auto",
        device=device,
        epochs=epochs,
    )
    return {
        "device": device,
        "median_images_per_second": r["images_per_second"],
        "epochs_timed": epochs,
        "images_per_epoch": r["images_per_epoch"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--subset", type=int, default=10000)
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads"
    if torch.cuda.is_available():
        machine += f", {torch.cuda.get_device_name()}"
    print(
        f"| device | small_cnn width | batch | images/s (median, {args.epochs} epochs) | machine |"
    )
    print("|---|---|---|---|---|")
    for device in devices:
        r = measure(device, args.epochs, args.width, args.batch_size, args.subset)
        print(
            f"| {device} | {args.width} | {args.batch_size} | "
            f"{r['median_images_per_second']:.0f} | {machine} |"
        )


if __name__ == "__main__":
    main()
