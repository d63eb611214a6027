"""Where MOIT's contrastive loss stands in finished runs: chance, floor, and what each run reached
(issue 15; `noisytail.benchmarks.icl_floor`).

Usage:
    python scripts/icl_floor.py runs/bench-budget-moit-clean/runs/*

Prints the chance value and the free-embedding floor of the logged ``icl_loss`` (batch plus memory
term) for MOIT's setting (10 classes, batch 128, memory 2,000), the value an ideal encoder of the
true classes gets under 0, 20 and 40 % symmetric label noise, then one Markdown row per MOIT run
folder: its noise, its last epoch's ``icl_loss``, the share of the way from chance to the floor,
the test accuracy of its classifier, and the weighted-kNN test accuracy of its projection (the
run's training labels vote). Not a test: its figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys

from noisytail.benchmarks.icl_floor import (
    icl_floor,
    icl_of_true_classes,
    icl_progress,
    read_moit_run,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="MOIT run folders")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--memory", type=int, default=2000, help="memory capacity (xbm_per_class*K*2)")
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args(argv)
    keys = args.memory - 2 * args.batch_size
    floors = {
        "no mixup, batch term": icl_floor(args.classes, args.batch_size, 0, alpha=0),
        "no mixup, with memory": icl_floor(args.classes, args.batch_size, keys, alpha=0),
        "mixup, batch term": icl_floor(args.classes, args.batch_size, 0, steps=args.steps),
        "mixup, with memory": icl_floor(args.classes, args.batch_size, keys, steps=args.steps),
    }
    print("| ICL | chance | floor (free embeddings) | Jensen bound, no mixup |")
    print("|---|---|---|---|")
    for name, f in floors.items():
        print(
            f"| {name} | {f['chance']:.2f} | {f['floor']:.2f} | {f['jensen_bound_no_mixup']:.2f} |"
        )
    ref = floors["mixup, with memory"]
    print()
    print("| an ideal encoder of the true classes (mixup, with memory) | ICL |")
    print("|---|---|")
    for rate in (0.0, 0.2, 0.4):
        value = icl_of_true_classes(args.classes, args.batch_size, keys, noise_rate=rate)
        print(f"| labels with {100 * rate:.0f} % symmetric flips | {value:.2f} |")
    print()
    print("| run | noise | epoch | icl_loss | chance to floor | test acc. | projection kNN acc. |")
    print("|---|---|---|---|---|---|---|")
    for run in args.runs:
        row = read_moit_run(run)
        share = icl_progress(row["icl_loss"], ref["chance"], ref["floor"])
        print(
            f"| {run} | {row['noise']} | {row['epoch']} | {row['icl_loss']:.2f} | "
            f"{100 * share:.0f} % | {100 * row['test_accuracy']:.1f} | "
            f"{100 * row['projection_knn_accuracy']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
