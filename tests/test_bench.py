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


def test_variant_axis_bundles_overrides_and_labels_the_setting(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        "set: [data.name=digits]\nseeds: [0]\ngrid:\n  variant:\n"
        "    - {label: plain, set: [train.lr=0.1]}\n"
        "    - {label: clipped, set: [train.lr=0.2, train.grad_clip=0.5]}\n"
    )
    runs = plan(load_grid(path), tmp_path / "out")
    assert [r.label for r in runs] == ["variant=plain", "variant=clipped"]
    assert "train.grad_clip=0.5" in runs[1].overrides and "train.lr=0.2" in runs[1].overrides
    assert not any(o.startswith("variant") for o in runs[1].overrides)
    path.write_text("grid:\n  variant: [{set: [train.lr=0.1]}]\n")
    with pytest.raises(ConfigError, match="label"):
        load_grid(path)


def test_run_reference_orders_runs_and_passes_the_folder(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        "set: [data.name=digits, model.options.width=8, train.epochs=1, train.batch_size=64]\n"
        "seeds: [0]\njobs: 2\ngrid:\n"
        "  noise: [{kind: symmetric, rate: 0.2}, {kind: symmetric, rate: 0.4}]\n"
        "  variant:\n"
        "    - {label: finetune, set: ['model.init={run:scratch}', train.lr=0.01]}\n"
        "    - {label: scratch, set: [train.lr=0.1]}\n"
    )
    runs = plan(load_grid(path), tmp_path / "out")
    finetune = [r for r in runs if r.setting["variant"]["label"] == "finetune"]
    for run in finetune:
        (scratch,) = [
            r
            for r in runs
            if r.setting["variant"]["label"] == "scratch"
            and r.setting["noise"] == run.setting["noise"]
        ]
        assert run.needs == [scratch.out]
        assert f"model.init={scratch.out}" in run.overrides
    rows = run_grid(path, tmp_path / "out", echo=lambda *_: None)  # the dependants wait
    assert len(rows) == 4
    path.write_text("grid:\n  variant:\n    - {label: a, set: ['model.init={run:b}']}\n")
    with pytest.raises(ConfigError, match="names no variant"):
        plan(load_grid(path), tmp_path / "out2")
    path.write_text(  # a chain is refused whatever the order of the variants
        "grid:\n  variant:\n    - {label: a, set: ['model.init={run:b}']}\n"
        "    - {label: b, set: ['model.init={run:c}']}\n    - {label: c, set: [train.lr=0.1]}\n"
    )
    with pytest.raises(ConfigError, match="one level of reference only"):
        plan(load_grid(path), tmp_path / "out3")
