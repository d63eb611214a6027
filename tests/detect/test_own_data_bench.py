"""The own-data detection benchmark's pieces (noisytail.benchmarks.own_data_detection): the long
tail, the noise it asks cleanlab for, the files it writes and how rows are joined back."""

import csv
import json

import numpy as np
import pytest

from noisytail.benchmarks import own_data_detection as bench
from noisytail.benchmarks import own_data_sets as sets


def test_long_tail_counts():
    y = np.repeat(np.arange(4), 50)
    keep = sets.long_tail(y, 40, 8.0)
    # 40 * 8**(-c/3): 40, 20, 10, 5
    assert np.bincount(y[keep]).tolist() == [40, 20, 10, 5]
    assert np.all(np.diff(keep) > 0)
    # reversed: the last class is the head
    assert np.bincount(y[sets.long_tail(y, 40, 8.0, reverse=True)]).tolist() == [5, 10, 20, 40]


def test_held_out_tables_as_described():
    """The held-out tabular sets have the shapes the module docstring gives, and cls30's head
    class is about 10 times its tail (weights 10**(-c / 29))."""
    x, y = sets.clean_data("wine")
    assert x.shape == (178, 13) and np.bincount(y).tolist() == [59, 71, 48]
    x, y = sets.clean_data("cls30")
    counts = np.bincount(y)
    assert x.shape == (3000, 40) and len(counts) == 30
    assert 8 < counts[0] / counts[-1] < 12
    shapes = {"digits_table": (1797, 64, 10), "quantiles": (1200, 6, 6), "iris": (150, 4, 3)}
    shapes.update(clusters12=(1800, 20, 12), hastie=(1000, 10, 2), cls8=(1400, 16, 8))
    shapes.update(circles=(800, 6, 2), cls5=(900, 12, 5))
    for name, (n, d, k) in shapes.items():
        x, y = sets.clean_data(name)
        assert x.shape == (n, d) and np.unique(y).tolist() == list(range(k))
    assert set(sets.HELD_OUT).isdisjoint(sets.DATASETS)


def test_noise_rate_as_requested():
    pytest.importorskip("cleanlab")
    y = np.repeat(np.arange(5), 2000)
    for level in (0.2, 0.4):
        s = bench.noisy_labels(y, level, seed=1)
        assert abs((s != y).mean() - level) < 0.02
        assert not np.array_equal(s, bench.noisy_labels(y, level, seed=2))


def test_default_run_joins_rows_back(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = np.eye(3, 4)[y] * 5 + rng.normal(size=(60, 4))
    s = y.copy()
    s[[4, 30]] = [1, 2]
    paths, data = bench.write_data(tmp_path / "t", x, s)
    assert paths == [] and data.name == "table.csv"
    with open(data, newline="") as f:
        assert [int(r["label"]) for r in csv.DictReader(f)] == s.tolist()
    verdict = bench.run_default(data, paths, tmp_path / "out")
    assert np.flatnonzero(verdict["flagged"]).tolist() == [4, 30]
    m = bench.score(s != y, verdict)
    assert m["f1"] == 1.0 and m["auroc"] == 1.0


def test_summary_pairs_seeds_and_says_whether_both_references_are_beaten(tmp_path):
    def row(data, method, seed, f1, auroc, seconds=1.0):
        return {"data": data, "level": 0.2, "seed": seed, "method": method, "n": 100,
                "noise_rate": 0.2, "f1": f1, "auroc": auroc, "seconds": seconds}  # fmt: skip

    rows = [
        row("wine", "default", 0, 0.9, 0.99, 2.0),
        row("wine", "default", 1, 0.7, 0.97, 4.0),
        row("wine", "cleanlab+lr", 0, 0.6, 0.90),
        row("wine", "cleanlab+lr", 1, 0.6, 0.90),
        row("wine", "cleanlab+cnn", 0, 0.8, 0.98),
        row("wine", "cleanlab+cnn", 1, 0.75, 0.99),
        # iris: F1 level with the network reference in the mean: not beaten
        row("iris", "default", 0, 0.8, 0.99),
        row("iris", "cleanlab+lr", 0, 0.5, 0.9),
        row("iris", "cleanlab+cnn", 0, 0.8, 0.95),
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = bench.summary(results).splitlines()
    assert len(lines) == 4
    wine, iris = lines[2], lines[3]  # in the order of ALL_DATASETS: wine before iris
    # means: default 0.8 / 0.98, lr 0.6 / 0.9, cnn 0.775 / 0.985: AUROC not beaten
    assert wine.startswith("| wine (n=100) | 0.2 (0.20) | 0.800 / 0.9800 | 0.600 / 0.9000 | ")
    assert "| 0.775 / 0.9850 | 3.0 | 1.0 | 1.0 | 1/2, 1/2 | **no** |" in wine
    assert iris.endswith("| 0/1, 1/1 | **no** |")
    rows[6]["f1"] = 0.81
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert bench.summary(results).splitlines()[3].endswith("| 1/1, 1/1 | yes |")
