"""noisytail.benchmarks.ssl_budget: the self-supervised budget grid's file, cells and folders."""

import json

import pytest

from noisytail.benchmarks.ssl_budget import cells, load_ssl_grid, run_ssl_grid
from noisytail.config import ConfigError

GRID = """
name: g
budgets: [60, 20]
widths: [16, 32]
seeds: [0]
top_seeds: [0, 1, 2]
options: {pool: 45000, methods: [simclr, mttv], losses: [cb_focal], scratch_losses: [ce, cb_focal]}
"""


def test_cells_run_width_by_width_scratch_first_and_three_seeds_only_at_the_top(tmp_path):
    (tmp_path / "g.yaml").write_text(GRID)
    grid = load_ssl_grid(tmp_path / "g.yaml")
    got = [
        (c.role, c.width, c.budget, c.options.seeds, c.options.pretrain_epochs)
        for c in cells(grid, tmp_path)
    ]
    assert got == [
        ("scratch", 16, None, (0, 1, 2), 30),
        ("pretrain", 16, 20, (0,), 20),
        ("pretrain", 16, 60, (0, 1, 2), 60),
        ("scratch", 32, None, (0, 1, 2), 30),
        ("pretrain", 32, 20, (0,), 20),
        ("pretrain", 32, 60, (0, 1, 2), 60),
    ]
    for c in cells(grid, tmp_path):
        assert c.options.width == c.width and c.options.pool == 45000
        if c.role == "scratch":  # scratch losses only, no encoder
            assert (c.options.part, c.options.losses) == ("finetune", ())
            assert c.options.scratch_losses == ("ce", "cb_focal")
            assert c.options.out == str(tmp_path / f"w{c.width}-scratch")
        else:  # pre-training and two-stage fine-tuning; the scratch runs are not repeated
            assert c.options.scratch_losses == () and c.options.losses == ("cb_focal",)
            assert c.options.out == str(tmp_path / f"w{c.width}-e{c.budget}")
    # the smoke run (--quick): small pool and 1 epoch in every cell, each cell's losses as above
    quick = cells(grid, tmp_path, quick=True)
    assert [c.options.pretrain_epochs for c in quick if c.role == "pretrain"] == [1] * 4
    assert all(c.options.pool == 1500 and c.options.finetune_epochs == 2 for c in quick)
    assert [(c.options.losses, c.options.scratch_losses) for c in quick[:2]] == [
        ((), ("ce", "cb_focal")),
        (("cb_focal",), ()),
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (GRID.replace("pool: 45000", "pool: 45000, width: 8"), "per-cell options.*width"),
        (GRID.replace("pool: 45000", "pool: 45000, epochs: 8"), "unknown.*epochs"),
        (GRID + "jobs: 2\n", "Unknown grid keys"),
        (GRID.replace("budgets: [60, 20]", "budgets: []"), "'budgets' must be"),
    ],
)
def test_a_bad_grid_file_is_a_clear_config_error(tmp_path, text, match):
    (tmp_path / "g.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_ssl_grid(tmp_path / "g.yaml")


@pytest.mark.slow
def test_a_quick_grid_on_digits_runs_every_cell_and_its_gaps_pair(tmp_path):
    from noisytail.benchmarks.budget import load_ssl_runs, paired_gaps, two_stage_rows

    (tmp_path / "g.yaml").write_text(
        "budgets: [1, 2]\nwidths: [8]\nseeds: [0]\ntop_seeds: [0]\n"
        "options: {data: digits, ratio: 10, methods: [simclr, mttv], noise_rates: [0.4],"
        " losses: [ce], scratch_losses: [ce], probe_epochs: 2, probe_per_class: 10,"
        " finetune_epochs: 1, ssl_batch: 64}\n"
    )
    grid = load_ssl_grid(tmp_path / "g.yaml")
    run_ssl_grid(grid, tmp_path / "out", echo=lambda _: None)
    cell = json.loads((tmp_path / "out" / "w8-e2" / "cell.json").read_text())
    assert cell["options"]["pretrain_epochs"] == 2 and cell["role"] == "pretrain"
    rows = load_ssl_runs([tmp_path / "out"])
    probe = paired_gaps(
        rows, "mttv", "simclr", metric="probe_accuracy", curve_keys=["model.options.width"]
    )
    assert set(probe[(8,)]) == {1, 2}
    tuned, chosen = two_stage_rows(rows)
    gaps = paired_gaps(tuned, "two-stage", "scratch", curve_keys=["noise.rate"])
    assert set(gaps[(0.4,)]) == {1, 2} and chosen[("scratch", 0.4, 8, None)] == "ce"
    # no encoder was pre-trained for the scratch cell
    assert not (tmp_path / "out" / "w8-scratch" / "pretrain").exists()


def test_the_shipped_grid_loads_with_three_seeds_at_its_largest_budget(tmp_path):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "bench" / "budget_ssl_fmnist.yaml"
    grid = load_ssl_grid(path)
    top = [c for c in cells(grid, tmp_path) if c.budget == max(grid.budgets)]
    assert top and all(len(c.options.seeds) == 3 for c in top)
    assert grid.options.pool >= 45000  # at least 10,000 long-tailed training images (issue 15)
