"""One training step (forward, cross-entropy, backward) and one inference forward of each image
model in NCHW and in channels-last (NHWC) layout, fp32 and bf16 autocast, interleaved in one
process: the figures behind ``train.channels_last``'s default (BENCHMARKS.md, "channels_last").

Usage: python scripts/bench_layout.py [--threads 2] [--repeats 7] [--device cpu]
Run it on a quiet machine. Prints one Markdown table: median milliseconds and NCHW / NHWC.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import noisytail.models  # noqa: F401  (registration)
from noisytail.registry import MODELS

CASES = [  # label, model name, options, input shape, batch
    ("small_cnn w16", "small_cnn", {"width": 16}, (1, 28, 28), 128),
    ("small_cnn w32", "small_cnn", {"width": 32}, (1, 28, 28), 128),
    ("small_cnn w64", "small_cnn", {"width": 64}, (1, 28, 28), 128),
    ("preact_resnet18", "preact_resnet18", {}, (3, 32, 32), 64),
]


def median_ms(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median wall time of each function, calling them round-robin (one warm-up call each)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(repeats):
        for k, f in fns.items():
            start = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - start)
    return {k: 1e3 * sorted(v)[len(v) // 2] for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(f"{args.device}, {args.threads} torch threads, median of {args.repeats}\n")
    print("| model | precision | step | NCHW ms | NHWC ms | NCHW / NHWC |")
    print("|---|---|---|---|---|---|")
    for label, name, options, shape, batch in CASES:
        torch.manual_seed(0)
        build = MODELS.get(name)
        nchw = build(num_classes=10, input_shape=shape, **options).to(dev)
        nhwc = build(num_classes=10, input_shape=shape, **options).to(dev)
        nhwc.load_state_dict(nchw.state_dict())
        nhwc = nhwc.to(memory_format=torch.channels_last)
        x = torch.randn(batch, *shape, device=dev)
        y = torch.randint(0, 10, (batch,), device=dev)
        fns: dict[str, Callable[[], None]] = {}
        for layout, model in (("nchw", nchw), ("nhwc", nhwc)):
            for precision in ("fp32", "bf16"):
                amp = precision == "bf16"

                def train(model=model, amp=amp, x=x, y=y) -> None:
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                        loss = F.cross_entropy(model(x).float(), y)
                    loss.backward()

                def infer(model=model, amp=amp, x=x) -> None:
                    with (
                        torch.no_grad(),
                        torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp),
                    ):
                        model(x)

                fns[f"{layout} {precision} train"] = train
                fns[f"{layout} {precision} inference"] = infer
        ms = median_ms(fns, args.repeats)
        for precision in ("fp32", "bf16"):
            for step in ("train", "inference"):
                a, b = ms[f"nchw {precision} {step}"], ms[f"nhwc {precision} {step}"]
                print(f"| {label} | {precision} | {step} | {a:.1f} | {b:.1f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
