"""Diagnostics of a meta-reweighting bench (BENCHMARKS.md, issue 3): per setting, the last-epoch
noisy-label training accuracy, the epoch of peak test accuracy, and from each run's final
per-sample weights (``sample_weight`` in the checkpoint) the share of mislabelled and of clean
samples whose weight is about zero (<= 5 % of the mean), with their mean relative weights.

Usage: python scripts/analyse_meta_bench.py runs/bench-meta
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from noisytail.runfolder import METRICS_FILE, read_checkpoint, read_metrics
from noisytail.summary import SUMMARY_FILE, read_summary


def run_stats(run: Path) -> dict[str, float]:
    history = read_metrics(run / METRICS_FILE)
    summary = read_summary(run)
    peak = max(history, key=lambda r: r["test_accuracy"])
    out = {
        "test_accuracy": summary.test_accuracy,
        "noisy_label_train_accuracy": history[-1]["train_accuracy_noisy"],
        "peak_test_accuracy": peak["test_accuracy"],
        "peak_epoch": peak["epoch"],
        "wrong_label_share": summary.noise["realised_rate"],
    }
    state = read_checkpoint(run / "checkpoints" / "last.pt", "cpu", required=("method",))
    weights = state["method"].get("sample_weight") if isinstance(state["method"], dict) else None
    if weights is not None:
        corr = np.load(run / "corruption.npz")
        pool = corr["train_idx"]
        wrong = corr["noisy_labels"][pool] != corr["true_labels"][pool]
        w = weights.double().numpy()
        w = w / np.nanmean(w)
        out |= {
            "wrong_weight_zero": float(np.nanmean(w[wrong] <= 0.05)),
            "clean_weight_zero": float(np.nanmean(w[~wrong] <= 0.05)),
            "wrong_mean_weight": float(np.nanmean(w[wrong])),
            "clean_mean_weight": float(np.nanmean(w[~wrong])),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="the bench folder (with runs/)")
    args = parser.parse_args()
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for run in sorted((args.bench / "runs").iterdir()):
        if (run / SUMMARY_FILE).exists():
            groups[run.name.rsplit("-s", 1)[0]].append(run_stats(run))
    keys = [
        "test_accuracy",
        "noisy_label_train_accuracy",
        "peak_test_accuracy",
        "peak_epoch",
        "wrong_label_share",
        "wrong_weight_zero",
        "clean_weight_zero",
        "wrong_mean_weight",
        "clean_mean_weight",
    ]
    print("| setting | runs | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for name, rows in groups.items():
        cells = [
            f"{np.mean([r[k] for r in rows]):.3f}" if all(k in r for r in rows) else ""
            for k in keys
        ]
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
