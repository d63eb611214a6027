import json

import pytest

from noisytail.bench import load_grid, plan, run_grid
from noisytail.config import ConfigError

GRID = """
name: tiny
set:
  - data.name=digits
  - model.options.width=8
  - train.epochs=2
  - train.batch_size=64
seeds: [0, 1]
jobs: 2
grid:
  noise: [{kind: symmetric, rate: 0.2}, {kind: symmetric, rate: 0.4}]
"""


def test_grid_runs_aggregates_and_skips_finished(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    out = tmp_path / "bench"
    rows = run_grid(path, out, echo=lambda *_: None)
    assert len(rows) == 4
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {(r["noise_rate"], r["seed"]) for r in lines} == {(0.2, 0), (0.2, 1), (0.4, 0), (0.4, 1)}
    table = (out / "results.md").read_text()
    assert "±" in table and "symmetric 0.2" in table
    assert (out / "results.csv").exists() and (out / "accuracy_vs_noise.png").exists()
    messages = []
    run_grid(path, out, echo=messages.append)
    assert "4 already done" in messages[0]


def test_bad_grid_is_refused_before_running(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("grid:\n  train.lrr: [0.1]\n")
    with pytest.raises(ConfigError, match="Did you mean 'lr'"):
        plan(load_grid(path), tmp_path / "out")
    path.write_text("set: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_grid(path)
    path.write_text("grids:\n  train.lr: [0.1]\n")
    with pytest.raises(ConfigError, match="Unknown grid keys"):
        load_grid(path)
