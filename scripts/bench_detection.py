"""Label-issue detection quality against cleanlab (issue 4): our detectors and cleanlab's
``find_label_issues`` on the same corrupted labels, the same backbone and the same epoch budget.

Usage:
  python scripts/bench_detection.py [--seeds 0,1,2] [--noise symmetric,asymmetric] [--rate 0.4]
      [--train-subset 10000] [--epochs 10] [--folds 4] [--model small_cnn] [--width 16]
      [--out runs/bench-detection] [--quick] [--estimate [--reference-throughput R]] [--cost]

The benchmark itself (what it measures, how, and its output files) is
`noisytail.benchmarks.detection`; this script parses the options and prints. Needs the ``bench``
extra (``pip install -e '.[bench]'``: cleanlab).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from noisytail.benchmarks.detection import (
    REFERENCE_THROUGHPUT,
    Setting,
    cost,
    cost_table,
    estimate,
    run_benchmark,
    setting_from_options,
    summarise,
)

# ------------------------------------------------------------------------------ CLI


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_setting(args: argparse.Namespace) -> Setting:
    """The `Setting` of the command line (`setting_from_options`)."""
    return setting_from_options(
        args.quick,
        data=args.data,
        noise=tuple(args.noise.split(",")) if args.noise else None,
        rate=args.rate,
        seeds=_ints(args.seeds) if args.seeds else None,
        train_subset=args.train_subset,
        epochs=args.epochs,
        folds=args.folds,
        model=args.model,
        width=args.width,
        device=args.device,
        extra=tuple(args.set) or None,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="data source (default fashion_mnist)")
    parser.add_argument("--noise", help="comma-separated noise kinds (symmetric,asymmetric)")
    parser.add_argument("--rate", type=float, help="noise rate (0.4)")
    parser.add_argument("--seeds", help="comma-separated seeds (0,1,2)")
    parser.add_argument("--train-subset", type=int, help="training images, 0 = all (10000)")
    parser.add_argument("--epochs", type=int, help="epochs of every model (10)")
    parser.add_argument("--folds", type=int, help="cross-validation folds (4)")
    parser.add_argument("--model", help="backbone (small_cnn)")
    parser.add_argument("--width", type=int, help="small_cnn width (16)")
    parser.add_argument("--device", help="auto | cpu | cuda")
    parser.add_argument("--set", action="append", default=[], help="extra config override")
    parser.add_argument("--out", default=None, help="folder for detection.jsonl and table.md")
    parser.add_argument("--quick", action="store_true", help="tiny smoke settings (seconds)")
    parser.add_argument("--estimate", action="store_true", help="time 1 epoch, extrapolate")
    parser.add_argument("--cost", action="store_true", help="MOIT detection vs an ERM epoch")
    parser.add_argument(
        "--reference-throughput",
        type=float,
        help="--estimate: training images/s of the model on an idle machine (default for "
        f"small_cnn width 16 on fashion_mnist: {REFERENCE_THROUGHPUT:,}, BENCHMARKS.md)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    s = parse_setting(args)
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    print(f"command: {command}")
    print(f"setting: {s.describe()}")
    print(f"machine: torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.cost:
        c = cost(s, log=print)
        print(cost_table(s, c))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "cost.json").write_text(
                json.dumps({**c, "setting": asdict(s), "command": command}, indent=2)
            )
        return
    if args.estimate:
        ref = args.reference_throughput
        if ref is None and (s.data, s.model, s.width) == ("fashion_mnist", "small_cnn", 16):
            ref = REFERENCE_THROUGHPUT
        e = estimate(s, reference_throughput=ref)
        print(
            f"estimate: one unit at 1 epoch: k-fold {e['kfold_1epoch_s']:.1f} s, full model "
            f"{e['train_1epoch_s']:.1f} s + recording {e['record_1epoch_s']:.1f} s, detectors "
            f"{e['detectors_1epoch_s']:.1f} s, data {e['prepare_1epoch_s']:.1f} s"
        )
        print(
            f"estimate: {e['train_images_per_epoch']:,} training images per epoch and unit at "
            f"{e['train_images_per_s']:,.0f} images/s (k-fold and full model, predictions "
            "included; compare the unshared throughput in BENCHMARKS.md)"
        )
        print(
            f"estimate: {s.units} (noise, seed) units x {e['unit_s'] / 60:.1f} min = "
            f"{e['total_s'] / 60:.1f} min for the full run (wall time at this machine's "
            "current load)"
        )
        if "idle_total_s" in e:
            print(
                f"estimate: {e['idle_total_s'] / 60:.1f} min ({e['idle_total_s']:.0f} s) on an "
                f"idle machine training at {ref:,.0f} images/s (--reference-throughput)"
            )
        return
    rows = run_benchmark(s, args.out, command=command, log=print)
    table = summarise(rows)
    print()
    print(table)
    if args.out:
        (Path(args.out) / "table.md").write_text(
            f"command: `{command}`\n\nsetting: {s.describe()}\n\n{table}"
        )


if __name__ == "__main__":
    main()
