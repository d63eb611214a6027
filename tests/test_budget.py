"""noisytail.benchmarks.budget: gaps paired by seed, budget and curve, on a hand-made bench."""

import json

import pytest
import yaml

from noisytail.benchmarks.budget import gap_table, load_runs, paired_gaps, plot_gaps


def _bench(tmp_path, runs):
    """A bench folder with ``runs``: (method, seed, epochs, width, kind, accuracy)."""
    lines = []
    for i, (method, seed, epochs, width, kind, acc) in enumerate(runs):
        run = tmp_path / "runs" / f"r{i}"
        run.mkdir(parents=True)
        cfg = {"train": {"epochs": epochs}, "model": {"options": {"width": width}}}
        cfg["noise"] = {"kind": kind, "rate": 0.4}
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        row = {"method": method, "seed": seed, "run_dir": f"elsewhere/runs/r{i}"}
        lines.append(json.dumps({**row, "test_accuracy": acc}))
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_gaps_pair_method_and_baseline_by_seed_budget_and_curve(tmp_path):
    bench = _bench(
        tmp_path,
        [
            ("moit", 0, 20, 32, "symmetric", 0.70),
            ("erm (ce)", 0, 20, 32, "symmetric", 0.78),
            ("moit", 1, 20, 32, "symmetric", 0.74),
            ("erm (ce)", 1, 20, 32, "symmetric", 0.76),
            ("moit", 0, 150, 32, "symmetric", 0.85),
            ("erm (ce)", 0, 150, 32, "symmetric", 0.80),
            ("moit", 0, 20, 64, "symmetric", 0.72),  # no partner: left out
            ("erm (ce)", 0, 20, 32, "asymmetric", 0.70),
            ("moit", 0, 20, 32, "asymmetric", 0.71),
        ],
    )
    gaps = paired_gaps(load_runs([bench]), "moit", "erm (ce)")
    assert set(gaps) == {("symmetric", 32), ("asymmetric", 32)}
    assert gaps[("symmetric", 32)][20] == pytest.approx([-0.08, -0.02])
    assert gaps[("symmetric", 32)][150] == pytest.approx([0.05])
    assert gaps[("asymmetric", 32)][20] == pytest.approx([0.01])
    table = gap_table(gaps)
    assert "| symmetric | 32 | 20 | 2 | -5.00 ± 4.24 |" in table  # mean -5, std 6/sqrt(2)
    assert "| symmetric | 32 | 150 | 1 | +5.00 |" in table
    png = plot_gaps(gaps, tmp_path / "gap.png", title="moit − ce")
    assert png.stat().st_size > 1000


def test_missing_results_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.jsonl"):
        load_runs([tmp_path])
