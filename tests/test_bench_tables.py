"""The benchmark tables of a grid's runs (noisytail.benchmarks.tables): mean ± sample std per
group, hand-worked, and the accuracy-against-noise plot."""

import csv
import io

import numpy as np
import pytest

from noisytail.benchmarks.tables import plot_accuracy_vs_noise, render_bench_tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000


BENCH = [
    {"method": "erm", "noise": {"kind": "sym", "rate": 0.2}, "seed": 0, "test_accuracy": 0.80},
    {"method": "erm", "noise": {"kind": "sym", "rate": 0.2}, "seed": 1, "test_accuracy": 0.84},
    {"method": "erm", "noise": {"kind": "sym", "rate": 0.2}, "seed": 2, "test_accuracy": 0.82},
    {"method": "gce", "noise": {"kind": "sym", "rate": 0.2}, "seed": 0, "test_accuracy": 0.90},
    {"method": "erm", "noise": {"kind": "none", "rate": 0.0}, "seed": 0, "test_accuracy": 0.95},
    {"method": "erm", "noise": {"kind": "asym", "rate": 0.4}, "seed": 0, "test_accuracy": 0.70},
    {"method": "erm", "noise": {"kind": "asym", "rate": 0.4}, "seed": 1, "test_accuracy": None},
]


def test_render_bench_tables_mean_and_std():
    md, text = render_bench_tables(BENCH, ["method", "noise.kind", "noise.rate"], ["test_accuracy"])
    lines = md.splitlines()
    assert lines[0] == "| method | noise.kind | noise.rate | runs | test_accuracy (%) |"
    # mean 0.82, sample std of (0.80, 0.84, 0.82) = 0.02
    assert lines[2] == "| erm | sym | 0.2 | 3 | 82.00 ± 2.00 |"
    assert lines[3] == "| gce | sym | 0.2 | 1 | 90.00 |"  # one run: no std
    assert lines[5] == "| erm | asym | 0.4 | 2 | 70.00 |"  # None skipped
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["runs"] == "3" and rows[0]["test_accuracy_n"] == "3"
    assert float(rows[0]["test_accuracy_mean"]) == pytest.approx(0.82)
    assert float(rows[0]["test_accuracy_std"]) == pytest.approx(0.02)
    assert rows[1]["test_accuracy_std"] == ""


def test_render_bench_tables_non_percent_metric():
    rows = [{"m": "a", "train_seconds": 10.0}, {"m": "a", "train_seconds": 14.0}]
    md, _ = render_bench_tables(rows, ["m"], ["train_seconds"])
    assert md.splitlines()[2] == f"| a | 2 | 12.00 ± {np.std([10, 14], ddof=1):.2f} |"


def test_plot_accuracy_vs_noise(tmp_path):
    path = plot_accuracy_vs_noise(BENCH, tmp_path / "acc_vs_noise.png")
    assert_png(path)
    # The bench writes flat keys (noise_kind, noise_rate); the same defaults find them.
    flat = [
        {"method": r["method"], "noise_kind": r["noise"]["kind"], "noise_rate": r["noise"]["rate"]}
        | {"test_accuracy": r["test_accuracy"]}
        for r in BENCH
    ]
    assert_png(plot_accuracy_vs_noise(flat, tmp_path / "flat.png"))
    md, _ = render_bench_tables(flat, ["method", "noise.kind"], ["test_accuracy"])
    assert md.splitlines()[2] == "| erm | sym | 3 | 82.00 ± 2.00 |"
