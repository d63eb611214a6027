"""NoisyTailClassifier inside cleanlab's CleanLearning, against CleanLearning(LogisticRegression())
and noisytail's own training loop, on long-tailed Fashion-MNIST with label noise (issue 11).

Usage:
    nice -n 10 python scripts/bench_sklearn.py [--seeds 0 1 2] [--epochs N] [--threads 1]
        [--out runs/bench-sklearn]

``--epochs`` overrides the classifier's budget (default: its own choice, ``epochs="auto"``).

The contenders and data: `noisytail.benchmarks.sklearn_api`. Rows go to ``OUT/results.jsonl``
(a rerun skips the rows already there) and the Markdown table to stdout and ``OUT/table.md``.
Needs cleanlab (the bench extra). Not a test: its figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from noisytail.benchmarks.sklearn_api import CONTENDERS, Setting, run_bench, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--train-subset", type=int, default=Setting.train_subset)
    p.add_argument("--imbalance", type=float, default=Setting.imbalance)
    p.add_argument("--noise", default=Setting.noise)
    p.add_argument("--rate", type=float, default=Setting.rate)
    p.add_argument("--epochs", type=int, default=Setting.epochs, help="default: the classifier's")
    p.add_argument("--folds", type=int, default=Setting.folds)
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    p.add_argument("--threads", type=int, default=2, help="PyTorch's and BLAS's threads")
    p.add_argument("--out", default="runs/bench-sklearn")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # BLAS too: spinning threads under load cost the logreg most
    settings = [
        Setting(
            train_subset=args.train_subset,
            imbalance=args.imbalance,
            noise=args.noise,
            rate=args.rate,
            epochs=args.epochs,
            folds=args.folds,
            seed=seed,
        )
        for seed in args.seeds
    ]
    out = Path(args.out)
    rows = run_bench(settings, args.contenders, out, log=lambda m: print(m, flush=True))
    text = table(rows)
    (out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
