"""MOIT's balanced selection under asymmetric noise: the lower median (``torch.median``, the
official rule, now `noisytail.neighbors.lower_median`) against the average of the two middle
counts rounded down (the rule noisytail used before issue 13).

Usage:
    python scripts/bench_moit_median.py [--part all|blobs|fmnist] [--rate 0.4] [--seeds 0 1 2]
        [--threads 2] [--out runs/bench-moit-median]

The data, the features and the clean-set figures: `noisytail.benchmarks.moit_median`. Rows go to
``OUT/results.jsonl`` and a Markdown table (mean +- std over seeds) to stdout and ``OUT/table.md``.
Not a test: its figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from noisytail.benchmarks.moit_median import blobs, fmnist, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["all", "blobs", "fmnist"], default="all")
    p.add_argument("--rate", type=float, default=0.4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per-class", type=int, default=5000)
    p.add_argument("--train-subset", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/bench-moit-median")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = ["blobs", "fmnist"] if args.part == "all" else [args.part]
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for part in parts:
        if part == "blobs":
            fn = partial(blobs, rate=args.rate, per_class=args.per_class)
        else:
            fn = partial(
                fmnist,
                rate=args.rate,
                train_subset=args.train_subset,
                epochs=args.epochs,
                threads=args.threads,
                work_dir=out / "unused",
            )
        name = (
            f"synthetic clusters, CIFAR-10 map, {args.rate:.0%}"
            if part == "blobs"
            else f"Fashion-MNIST ({args.train_subset}), its map, {args.rate:.0%}"
        )
        for seed in args.seeds:
            for r in fn(seed):
                rows.append({"part": name, "seed": seed, **r, "command": " ".join(sys.argv)})
    with open(out / "results.jsonl", "a") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    text = table(rows) + f"\nWall time {time.perf_counter() - start:.0f} s\n"
    (out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
