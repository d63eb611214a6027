"""What DivideMix's GMM split put on its labelled side in a finished bench folder (issue 16).

Usage:
    python scripts/analyse_dividemix_split.py runs/bench-dividemix

Reads every finished DivideMix-family run (`noisytail.benchmarks.dividemix_split`) and prints two
Markdown tables, mean +- std over seeds: the split's quality at the last epoch, and per class the
labelled samples and the test recall. Not a test: its figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict

import numpy as np

from noisytail.benchmarks.dividemix_split import read_bench


def _fmt(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    v = [scale * x for x in values]
    s = f"{statistics.mean(v):.{digits}f}"
    return s + (f" ± {statistics.stdev(v):.{digits}f}" if len(v) > 1 else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bench_dir")
    args = p.parse_args(argv)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in read_bench(args.bench_dir):
        groups[(row["setting"], row["variant"])].append(row)
    print(
        "| setting | variant | seeds | labelled % | noise in labelled % | clean recall % | AUROC |"
    )
    print("|---|---|---|---|---|---|---|")
    for (setting, variant), rows in sorted(groups.items()):
        seeds = ",".join(str(r["seed"]) for r in sorted(rows, key=lambda r: r["seed"]))
        cells = [_fmt([r[k] for r in rows]) for k in ("labelled", "noise_in_labelled")]
        cells += [_fmt([r["clean_recall"] for r in rows]), _fmt([r["auroc"] for r in rows], 1, 3)]
        print(f"| {setting} | {variant} | {seeds} | " + " | ".join(cells) + " |")
    print("\nPer class (mean over seeds): labelled samples per given class / test recall %")
    print("\n| setting | variant | " + " | ".join(f"class {k}" for k in range(10)) + " |")
    print("|---|---|" + "---|" * 10)
    for (setting, variant), rows in sorted(groups.items()):
        lab = np.mean([r["labelled_per_class"] for r in rows], 0)
        rec = np.mean([r["test_per_class"] for r in rows], 0)
        cells = [f"{n:.0f} / {100 * a:.0f}" for n, a in zip(lab, rec)]
        print(f"| {setting} | {variant} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
