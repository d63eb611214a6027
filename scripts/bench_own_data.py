"""Label issues in a user's own data (issue 10): ``noisytail detect`` with nothing but the data's
path against cleanlab (a logistic regression's and our CNN's cross-validated probabilities) on
long-tailed PNG folders and CSVs with class-conditional noise. The logic is in
`noisytail.benchmarks.own_data_detection` (its docstring describes data, noise and methods).

    nice -n 10 .venv/bin/python scripts/bench_own_data.py --out runs/bench_own_data --threads 1

The held-out data sets (never used to choose the default's settings):

    nice -n 10 .venv/bin/python scripts/bench_own_data.py --out runs/bench-own-data-heldout \
        --threads 1 --data wine cls30 fmnist_test

wine and cls30 then served to design the default's network part for tables; the tables held
out from that design:

    nice -n 10 .venv/bin/python scripts/bench_own_data.py --out runs/bench-own-data-heldout2 \
        --threads 1 --data digits_table quantiles iris clusters12 \
        --methods default knn linear fast cleanlab+lr cleanlab+cnn

The small tables held out from the design of the longer network budget (5 seeds):

    nice -n 10 .venv/bin/python scripts/bench_own_data.py --out runs/bench-own-data-heldout3 \
        --threads 1 --data cls_small quantiles_small blobs_small --seeds 0 1 2 3 4 \
        --methods default cleanlab+lr cleanlab+cnn

Resumable: rerun the same command to finish what is missing. Needs cleanlab (the test extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from noisytail.benchmarks import own_data_detection as bench
from noisytail.benchmarks import own_data_sets as sets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench_own_data"))
    p.add_argument(
        "--data",
        nargs="+",
        default=list(sets.DATASETS),
        choices=sets.ALL_DATASETS,
        help="Data sets (default: those the default detector was tuned on; held out: "
        + ", ".join(sets.HELD_OUT)
        + ").",
    )
    p.add_argument("--levels", nargs="+", type=float, default=list(bench.LEVELS))
    p.add_argument("--seeds", nargs="+", type=int, default=list(bench.SEEDS))
    p.add_argument("--methods", nargs="+", default=list(bench.METHODS), choices=bench.METHODS)
    p.add_argument("--threads", type=int, default=None, help="PyTorch and BLAS threads.")
    p.add_argument("--table", action="store_true", help="Only print the table of what ran.")
    p.add_argument(
        "--summary",
        action="store_true",
        help="Print the default against both references, one row a data set and level.",
    )
    args = p.parse_args()
    results = args.out / "results.jsonl"
    if not (args.table or args.summary):
        results = bench.run_benchmark(
            args.out,
            datasets=tuple(args.data),
            levels=tuple(args.levels),
            seeds=tuple(args.seeds),
            methods=tuple(args.methods),
            threads=args.threads,
            log=print,
        )
    table = bench.summary(results) if args.summary else bench.table(results)
    (args.out / ("summary.md" if args.summary else "table.md")).write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
