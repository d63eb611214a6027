"""noisytail.benchmarks.budget: gaps paired by seed, budget and curve, on a hand-made bench."""

import json
import runpy
from pathlib import Path

import pytest
import yaml

from noisytail.benchmarks import budget
from noisytail.benchmarks.budget import (
    PROBE_CURVE_KEYS,
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


def _bench(tmp_path, runs):
    """A bench folder with ``runs``: (method, seed, epochs, width, kind, accuracy[, rate])."""
    lines = []
    for i, (method, seed, epochs, width, kind, acc, *rate) in enumerate(runs):
        run = tmp_path / "runs" / f"r{i}"
        run.mkdir(parents=True)
        cfg = {"train": {"epochs": epochs}, "model": {"options": {"width": width}}}
        cfg["noise"] = {"kind": kind, "rate": rate[0] if rate else 0.4}
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


def test_runs_of_one_cell_in_two_settings_are_refused(tmp_path):
    # two noise rates under one curve (kind, width): the later row would replace the earlier,
    # and the method could be paired with the baseline of the other rate
    rows = load_runs(
        [
            _bench(
                tmp_path,
                [
                    ("moit", 0, 20, 32, "symmetric", 0.70, 0.2),
                    ("erm (ce)", 0, 20, 32, "symmetric", 0.78, 0.4),
                    ("moit", 0, 20, 32, "symmetric", 0.60, 0.4),
                    ("erm (ce)", 0, 20, 32, "symmetric", 0.65, 0.2),
                ],
            )
        ]
    )
    for pairing in (paired_gaps, epoch_curves):
        with pytest.raises(ValueError, match=r"noise.rate: 0.2 -> 0.4.*\(--curve\)"):
            pairing(rows, "moit", "erm (ce)")
    gaps = paired_gaps(rows, "moit", "erm (ce)", curve_keys=("noise.kind", "noise.rate"))
    assert gaps[("symmetric", 0.2)][20] == pytest.approx([0.70 - 0.65])
    assert gaps[("symmetric", 0.4)][20] == pytest.approx([0.60 - 0.78])


def test_missing_results_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.jsonl"):
        load_runs([tmp_path])


# --- the self-supervised budget grid (noisytail.benchmarks.ssl_budget's folders) ---------------


def _ssl_cell(grid, name, role, width, epochs, rows):
    """A cell folder as `ssl_budget.run_cell` leaves it: cell.json and results.jsonl."""
    cell = grid / name
    cell.mkdir(parents=True)
    options = {"pretrain_epochs": epochs, "width": width, "pool": 45000}
    record = {"role": role, "budget": epochs if role == "pretrain" else None, "width": width}
    (cell / "cell.json").write_text(json.dumps({**record, "options": options}))
    (cell / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _probe(method, seed, acc):
    return {"part": "pretrain", "method": method, "seed": seed, "probe_accuracy": acc}


def _tune(init, loss, seed, acc, rate=0.4):
    row = {"part": "finetune", "init": init, "loss": loss, "seed": seed, "noise_rate": rate}
    return {**row, "test_accuracy": acc}


def test_mttv_and_simclr_pair_by_seed_budget_and_width(tmp_path):
    _ssl_cell(
        tmp_path,
        "w16-e20",
        "pretrain",
        16,
        20,
        [
            _probe("simclr", 0, 0.50),  # an earlier invocation's row of the same run: replaced
            _probe("random", 0, 0.60),
            _probe("mttv", 0, 0.66),
            _probe("simclr", 0, 0.70),
        ],
    )
    _ssl_cell(
        tmp_path,
        "w16-e150",
        "pretrain",
        16,
        150,
        [
            _probe("simclr", 0, 0.75),
            _probe("mttv", 0, 0.78),
            _probe("simclr", 1, 0.74),
            _probe("mttv", 1, 0.79),
            {"part": "pretrain", "method": "mttv", "seed": 2, "error": "nan"},  # failed: no pair
            _probe("simclr", 2, 0.70),
            {"part": "cost", "method": "mttv", "images_per_second": 1.0},  # not a run of the grid
        ],
    )
    _ssl_cell(tmp_path, "w32-e20", "pretrain", 32, 20, [_probe("simclr", 0, 0.7)])  # no partner
    rows = load_ssl_runs([tmp_path])
    gaps = paired_gaps(rows, "mttv", "simclr", metric="probe_accuracy", curve_keys=PROBE_CURVE_KEYS)
    assert set(gaps) == {(16,)}
    assert gaps[(16,)][20] == pytest.approx([-0.04])
    assert sorted(gaps[(16,)][150]) == pytest.approx([0.03, 0.05])
    assert "| 16 | 150 | 2 | +4.00 ± 1.41 |" in gap_table(gaps, PROBE_CURVE_KEYS)


def test_two_stage_pairs_its_best_loss_with_the_best_scratch_loss_at_every_budget(tmp_path):
    scratch = [
        _tune("scratch", "ce", 0, 0.50),
        _tune("scratch", "ce", 1, 0.70),  # ce: mean 0.60
        _tune("scratch", "cb_focal", 0, 0.58),
        _tune("scratch", "cb_focal", 1, 0.64),  # cb_focal: mean 0.61, the best from scratch
        _tune("scratch", "ce", 0, 0.30, rate=0.2),  # another noise rate: its own best (ce)
    ]
    _ssl_cell(tmp_path, "w16-scratch", "scratch", 16, 30, scratch)
    _ssl_cell(
        tmp_path,
        "w16-e20",
        "pretrain",
        16,
        20,
        [
            _tune("simclr", "cb_focal", 0, 0.55),
            _tune("simclr", "logit_adjustment", 0, 0.57),  # the best two-stage loss at 20
            _probe("simclr", 0, 0.7),
        ],
    )
    _ssl_cell(
        tmp_path,
        "w16-e150",
        "pretrain",
        16,
        150,
        [
            _tune("simclr", "cb_focal", 0, 0.66),
            _tune("simclr", "cb_focal", 1, 0.66),  # mean 0.66, the best at 150
            _tune("simclr", "logit_adjustment", 0, 0.70),
            _tune("simclr", "logit_adjustment", 1, 0.50),  # mean 0.60
            _tune("simclr", "cb_focal", 0, 0.40, rate=0.2),
        ],
    )
    rows, chosen = two_stage_rows(load_ssl_runs([tmp_path]))
    assert chosen[("scratch", 0.4, 16, None)] == "cb_focal"
    assert chosen[("two-stage", 0.4, 16, 20)] == "logit_adjustment"
    assert chosen[("two-stage", 0.4, 16, 150)] == "cb_focal"
    gaps = paired_gaps(
        rows, "two-stage", "scratch", metric="test_accuracy", curve_keys=TWO_STAGE_CURVE_KEYS
    )
    assert set(gaps) == {(0.4, 16), (0.2, 16)}
    # the scratch runs (budget-free) serve both budgets, paired by seed
    assert gaps[(0.4, 16)][20] == pytest.approx([0.57 - 0.58])
    assert sorted(gaps[(0.4, 16)][150]) == pytest.approx([0.66 - 0.64, 0.66 - 0.58])
    assert gaps[(0.2, 16)] == {150: pytest.approx([0.10])}


def test_plot_budget_prints_the_ssl_gaps(tmp_path, capsys):
    _ssl_cell(tmp_path, "w16-e20", "pretrain", 16, 20, [_probe("simclr", 0, 0.7)])
    _ssl_cell(tmp_path, "w16-e60", "pretrain", 16, 60, [_probe("mttv", 0, 0.8)])
    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "plot_budget.py"))
    with pytest.raises(SystemExit, match="no seed has both 'mttv' and 'simclr'"):
        script["main"]([str(tmp_path), "--kind", "mttv", "--out", str(tmp_path / "g.png")])
    _ssl_cell(tmp_path, "w16-e150", "pretrain", 16, 150, [_probe("simclr", 0, 0.7)])
    (tmp_path / "w16-e150" / "results.jsonl").write_text(
        json.dumps(_probe("simclr", 0, 0.7)) + "\n" + json.dumps(_probe("mttv", 0, 0.65)) + "\n"
    )
    script["main"]([str(tmp_path), "--kind", "mttv", "--out", str(tmp_path / "g.png")])
    printed = capsys.readouterr().out
    assert "| model.options.width | epochs | seeds | gap (points) |" in printed
    assert "| 16 | 150 | 1 | -5.00 |" in printed
    assert (tmp_path / "g.png").stat().st_size > 1000


def test_plot_budget_draws_the_curves_it_is_asked_for(tmp_path, capsys):
    bench = _bench(
        tmp_path,
        [("moit", 0, 20, 32, "symmetric", 0.70), ("erm (ce)", 0, 20, 32, "symmetric", 0.78)],
    )
    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "plot_budget.py"))
    script["main"]([str(bench), "--curve", "noise.kind", "--out", str(tmp_path / "g.png")])
    assert "| noise.kind | epochs | seeds | gap (points) |" in capsys.readouterr().out


def _epochs(bench, index, values):
    """Write run ``r{index}``'s metrics.jsonl: test accuracy ``values[e - 1]`` at epoch e."""
    lines = [json.dumps({"epoch": e, "test_accuracy": v}) for e, v in enumerate(values, 1)]
    (bench / "runs" / f"r{index}" / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_epoch_curves_take_the_largest_budget_and_pair_seeds(tmp_path, capsys):
    bench = _bench(
        tmp_path,
        [
            ("moit", 0, 3, 32, "symmetric", 0.70),
            ("erm (ce)", 0, 3, 32, "symmetric", 0.78),
            ("moit", 0, 4, 32, "symmetric", 0.75),
            ("erm (ce)", 0, 4, 32, "symmetric", 0.74),
            ("moit", 1, 4, 32, "symmetric", 0.77),
            ("erm (ce)", 1, 4, 32, "symmetric", 0.70),
            ("moit", 2, 4, 32, "symmetric", 0.90),  # no partner: left out
        ],
    )
    _epochs(bench, 0, [0.1, 0.2, 0.7])
    _epochs(bench, 1, [0.2, 0.3, 0.78])
    _epochs(bench, 2, [0.70, 0.60, 0.60, 0.75])  # seed 0 moit: ahead at epoch 1, then behind
    _epochs(bench, 3, [0.60, 0.80, 0.76, 0.74])  # seed 0 ce: peaks at 2, falls
    _epochs(bench, 4, [0.52, 0.70, 0.76, 0.77])  # seed 1 moit
    _epochs(bench, 5, [0.58, 0.78, 0.74, 0.70])  # seed 1 ce
    _epochs(bench, 6, [0.9, 0.9, 0.9, 0.9])
    curves = epoch_curves(load_runs([bench]), "moit", "erm (ce)")
    budget, by_run = curves[("symmetric", 32)]
    assert budget == 4 and [len(v) for v in by_run.values()] == [2, 2]
    table = epoch_table(curves)
    # seed means: moit 0.61 0.65 0.68 0.76; ce 0.59 0.79 0.75 0.72
    assert "| symmetric | 32 | 4 | 2 | moit | 76.00 (4) | 76.00 |" in table
    assert "| symmetric | 32 | 4 | 2 | erm (ce) | 79.00 (2) | 72.00 |" in table
    assert "moit ≥ erm (ce) from epoch | 4 |" in table
    assert plot_epoch_curves(curves, tmp_path / "e.png").stat().st_size > 1000
    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "plot_budget.py"))
    script["main"](
        [str(bench), "--out", str(tmp_path / "g.png"), "--epochs-out", str(tmp_path / "x.png")]
    )
    assert "erm (ce) | 79.00 (2)" in capsys.readouterr().out and (tmp_path / "x.png").exists()


def test_a_second_metric_is_drawn_dashed_in_its_curves_colour(tmp_path, monkeypatch, capsys):
    bench = _bench(
        tmp_path,
        [
            ("moit", 0, 20, 32, "symmetric", 0.70),
            ("erm (ce)", 0, 20, 32, "symmetric", 0.78),
            ("moit", 0, 150, 32, "symmetric", 0.85),
            ("erm (ce)", 0, 150, 32, "symmetric", 0.80),
            ("moit", 0, 150, 32, "asymmetric", 0.82),
            ("erm (ce)", 0, 150, 32, "asymmetric", 0.78),
        ],
    )
    results = bench / "results.jsonl"  # early-stopped: moit's last - 0.01, the baseline's - 0.03
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    for i, row in enumerate(rows):
        row["test_accuracy_at_best_val"] = row["test_accuracy"] - (0.03 if i % 2 else 0.01)
    results.write_text("\n".join(map(json.dumps, rows)) + "\n")
    figures = []
    monkeypatch.setattr(budget, "save_figure", lambda fig, path: figures.append(fig) or path)
    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "plot_budget.py"))
    script["main"]([str(bench), "--dashed-metric", "test_accuracy_at_best_val", "--out", "g.png"])
    printed = capsys.readouterr().out
    # method - 0.01, baseline - 0.03: every dashed gap is the solid one + 2 points
    assert "| symmetric | 32 | 150 | 1 | +5.00 |" in printed
    assert "test_accuracy_at_best_val:\n" in printed
    assert "| symmetric | 32 | 150 | 1 | +7.00 |" in printed
    (ax,) = figures[0].axes
    lines = {bars.get_label(): bars.lines[0] for bars in ax.containers}  # errorbar: label, line
    solid = lines["kind=symmetric, width=32"]
    dashed = lines["kind=symmetric, width=32 (test_accuracy_at_best_val)"]
    assert dashed.get_linestyle() == "--" and solid.get_linestyle() == "-"
    assert dashed.get_color() == solid.get_color()
    assert list(dashed.get_ydata()) == pytest.approx([-6.0, 7.0])
    assert list(solid.get_ydata()) == pytest.approx([-8.0, 5.0])
    other = lines["kind=asymmetric, width=32 (test_accuracy_at_best_val)"]
    assert other.get_color() != solid.get_color()
