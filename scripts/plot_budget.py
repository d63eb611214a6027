"""The gap between a method and its baseline against the training budget, from bench folders:
a Markdown table (mean ± std over seeds) and a plot (issue 15, part 2).

Usage: python scripts/plot_budget.py runs/bench-budget-moit runs/bench-budget-moit-e150
       [--method moit] [--baseline "erm (ce)"] [--metric test_accuracy] [--out gap.png]

What is paired and how: `noisytail.benchmarks.budget`. Not a test: its figures go into
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse

from noisytail.benchmarks.budget import gap_table, load_runs, paired_gaps, plot_gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", nargs="+", help="noisytail bench output folders")
    parser.add_argument("--method", default="moit")
    parser.add_argument("--baseline", default="erm (ce)")
    parser.add_argument("--metric", default="test_accuracy")
    parser.add_argument("--out", default="gap_vs_budget.png")
    args = parser.parse_args()
    gaps = paired_gaps(load_runs(args.bench), args.method, args.baseline, metric=args.metric)
    if not gaps:
        raise SystemExit(f"error: no seed has both {args.method!r} and {args.baseline!r} runs.")
    print(gap_table(gaps))
    title = f"{args.method} − {args.baseline} ({args.metric})"
    print(f"\nplot: {plot_gaps(gaps, args.out, title=title)}")


if __name__ == "__main__":
    main()
