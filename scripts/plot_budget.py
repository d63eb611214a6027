"""The gap between a method and its baseline against the training budget, from bench folders:
a Markdown table (mean ± std over seeds) and a plot (issue 15, part 2).

Usage:
    python scripts/plot_budget.py runs/bench-budget-moit runs/bench-budget-moit-e150
        [--method moit] [--baseline "erm (ce)"] [--metric test_accuracy] [--out gap.png]
        [--curve noise.kind model.name]   # the curves' config keys (default: by --kind)
        [--epochs-out epochs.png]         # bench folders: per epoch of the largest budget
        [--dashed-metric test_accuracy_at_best_val]  # a second gap, drawn dashed
    python scripts/plot_budget.py runs/bench-budget-ssl --kind mttv       # MTTV − SimCLR, probe
    python scripts/plot_budget.py runs/bench-budget-ssl --kind two-stage  # − best scratch loss

``--kind bench`` (the default) reads ``noisytail bench`` folders; ``mttv`` and ``two-stage`` read
the folders of ``scripts/bench_ssl.py --grid`` (`noisytail.benchmarks.ssl_budget`). What is
paired and how: `noisytail.benchmarks.budget`. Not a test: its figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse

from noisytail.benchmarks.budget import (
    CURVE_KEYS,
    PROBE_CURVE_KEYS,
    SCRATCH,
    TWO_STAGE,
    TWO_STAGE_CURVE_KEYS,
    epoch_curves,
    epoch_table,
    gap_table,
    load_runs,
    load_ssl_runs,
    paired_gaps,
    plot_epoch_curves,
    plot_gaps,
    two_stage_rows,
)

#: Per kind: method, baseline, metric and curve keys by default.
KINDS = {
    "bench": ("moit", "erm (ce)", "test_accuracy", CURVE_KEYS),
    "mttv": ("mttv", "simclr", "probe_accuracy", PROBE_CURVE_KEYS),
    "two-stage": (TWO_STAGE, SCRATCH, "test_accuracy", TWO_STAGE_CURVE_KEYS),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", nargs="+", help="bench output folders")
    parser.add_argument("--kind", choices=sorted(KINDS), default="bench")
    parser.add_argument("--method", help="default: by --kind (moit, mttv, two-stage)")
    parser.add_argument("--baseline", help="default: by --kind (erm (ce), simclr, scratch)")
    parser.add_argument("--metric", help="default: test_accuracy (probe_accuracy for mttv)")
    parser.add_argument(
        "--curve", nargs="+", help="config keys naming a curve (default: by --kind)"
    )
    parser.add_argument(
        "--dashed-metric",
        help="a second metric's gaps, printed and drawn dashed (e.g. test_accuracy_at_best_val: "
        "the test accuracy at the epoch the noisy validation split chooses)",
    )
    parser.add_argument("--out", default="gap_vs_budget.png")
    parser.add_argument(
        "--epochs-out",
        help="bench folders: also plot method and baseline per epoch of the largest budget",
    )
    args = parser.parse_args(argv)
    if args.epochs_out and args.kind != "bench":
        parser.error("--epochs-out reads noisytail bench folders (--kind bench)")
    method, baseline, metric, curve_keys = KINDS[args.kind]
    method, baseline = args.method or method, args.baseline or baseline
    metric, curve_keys = args.metric or metric, tuple(args.curve or curve_keys)
    chosen: dict = {}
    if args.kind == "bench":
        rows = load_runs(args.bench)
    else:
        rows = load_ssl_runs(args.bench)
        if args.kind == "two-stage":
            rows, chosen = two_stage_rows(rows, metric=metric)
    gaps = paired_gaps(rows, method, baseline, metric=metric, curve_keys=curve_keys)
    if not gaps:
        raise SystemExit(f"error: no seed has both {method!r} and {baseline!r} runs.")
    print(gap_table(gaps, curve_keys))
    for (who, rate, width, budget), loss in sorted(chosen.items(), key=repr):
        at = "" if budget is None else f", {budget} epochs"
        print(f"- {who}: best loss {loss} (noise {rate}, width {width}{at})")
    dashed = None
    if args.dashed_metric:
        dashed = paired_gaps(
            rows, method, baseline, metric=args.dashed_metric, curve_keys=curve_keys
        )
        print(f"\n{args.dashed_metric}:\n" + gap_table(dashed, curve_keys))
    title = f"{method} − {baseline} ({metric})"
    if args.dashed_metric:
        title += f"\ndashed: {args.dashed_metric}"
    budget = "training" if args.kind == "bench" else "pre-training"
    png = plot_gaps(
        gaps,
        args.out,
        title=title,
        curve_keys=curve_keys,
        xlabel=f"{budget} budget (epochs)",
        dashed=dashed,
        dashed_label=args.dashed_metric or "",
    )
    print(f"\nplot: {png}")
    if args.epochs_out:
        curves = epoch_curves(rows, method, baseline, metric=metric, curve_keys=curve_keys)
        print("\n" + epoch_table(curves, curve_keys))
        print(f"\nplot: {plot_epoch_curves(curves, args.epochs_out, curve_keys=curve_keys)}")


if __name__ == "__main__":
    main()
