"""noisytail.benchmarks.kept: a bench folder's results kept in the repository and brought back."""

import json
import runpy
import shutil
import subprocess
from pathlib import Path

import pytest

from noisytail.bench import run_grid
from noisytail.benchmarks import kept
from noisytail.benchmarks.budget import load_runs
from noisytail.benchmarks.kept import keep_results, kept_files, restore_results

GRID = """
name: tiny
set: [data.name=digits, model.options.width=8, train.epochs=2, train.batch_size=64]
seeds: [0]
jobs: 1
grid:
  noise: [{kind: symmetric, rate: 0.4}, {kind: pair, rate: 0.4}]
"""


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_results_and_small_encoders_are_kept_checkpoints_and_data_are_not(tmp_path, monkeypatch):
    monkeypatch.setattr(kept, "MAX_WEIGHT_BYTES", 100)
    src = _folder(
        tmp_path / "src",
        {
            "results.jsonl": b"{}\n",
            "results.md": b"| a |\n",
            "runs/r0/summary.json": b"{}",
            "runs/r0/config.yaml": b"a: 1\n",
            "runs/r0/metrics.jsonl": b"{}\n",
            "runs/r0/checkpoints/last.pt": b"x" * 10,
            "runs/r0/checkpoints/meta.json": b"{}",  # a run's training state, even if light
            "runs/r0/corruption.npz": b"x",
            "runs/r0/predictions.npz": b"x",
            "w16-e20/cell.json": b"{}",
            "w16-e20/pretrain/simclr-seed0/backbone.pt": b"x" * 100,
            "w64-e20/pretrain/simclr-seed0/backbone.pt": b"x" * 101,  # over the cap
            "w16-e20/pretrain/simclr-seed0/model.pt": b"x",
            # an unfinished run is kept whole, so that it resumes from its checkpoint
            "runs/r1/config.yaml": b"a: 1\n",
            "runs/r1/checkpoints/last.pt": b"x" * 200,
            "runs/r1/corruption.npz": b"x",
        },
    )
    assert [str(p) for p in kept_files(src)] == [
        "results.jsonl",
        "results.md",
        "runs/r0/config.yaml",
        "runs/r0/metrics.jsonl",
        "runs/r0/summary.json",
        "runs/r1/checkpoints/last.pt",
        "runs/r1/config.yaml",
        "runs/r1/corruption.npz",
        "w16-e20/cell.json",
        "w16-e20/pretrain/simclr-seed0/backbone.pt",
    ]
    dest = tmp_path / "kept"
    assert len(keep_results(src, dest)) == 10
    assert keep_results(src, dest) == []  # nothing new
    # run r1 finishes: the grid's results change, r1's checkpoint and corruption leave the copy
    (src / "runs/r1/summary.json").write_bytes(b"{}")
    (src / "results.jsonl").write_bytes(b"{}\n{}\n")
    assert [str(p) for p in keep_results(src, dest)] == ["results.jsonl", "runs/r1/summary.json"]
    assert (dest / "results.jsonl").read_bytes() == b"{}\n{}\n"
    assert sorted(str(p.relative_to(dest)) for p in (dest / "runs").rglob("*")) == [
        "runs/r0",
        "runs/r0/config.yaml",
        "runs/r0/metrics.jsonl",
        "runs/r0/summary.json",
        "runs/r1",
        "runs/r1/config.yaml",
        "runs/r1/summary.json",
    ]
    # a file the bench folder lacks (a fresh machine's, not restored) is never removed
    (src / "results.md").unlink()
    keep_results(src, dest)
    assert (dest / "results.md").is_file()


def test_a_kept_finished_run_is_not_replaced_by_a_rerun_in_progress(tmp_path):
    kept_dir = _folder(
        tmp_path / "kept",
        {"r/config.yaml": b"a: 1\n", "r/summary.json": b"{}", "r/metrics.jsonl": b"all\n"},
    )
    # a fresh machine ran the grid again without restoring: run r is part-way
    src = _folder(
        tmp_path / "src",
        {"r/config.yaml": b"a: 1\n", "r/metrics.jsonl": b"part\n", "r/checkpoints/last.pt": b"x"},
    )
    assert keep_results(src, kept_dir) == []
    assert (kept_dir / "r/metrics.jsonl").read_bytes() == b"all\n"
    assert not (kept_dir / "r/checkpoints").exists()


def test_an_unfinished_run_over_the_cap_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(kept, "MAX_RUN_BYTES", 100)
    src = _folder(tmp_path, {"r/config.yaml": b"a: 1\n", "r/checkpoints/last.pt": b"x" * 100})
    assert [str(p) for p in kept_files(src)] == ["r/config.yaml"]


def test_restore_fills_what_is_missing_and_overwrites_nothing(tmp_path):
    kept_dir = _folder(tmp_path / "kept", {"a/summary.json": b"kept", "b/summary.json": b"kept"})
    out = _folder(tmp_path / "out", {"a/summary.json": b"mine"})
    assert [str(p) for p in restore_results(kept_dir, out)] == ["b/summary.json"]
    assert (out / "a/summary.json").read_bytes() == b"mine"
    assert (out / "b/summary.json").read_bytes() == b"kept"


def test_a_kept_grid_reads_like_the_original_and_a_restored_one_reruns_nothing(tmp_path):
    (tmp_path / "grid.yaml").write_text(GRID)
    out = tmp_path / "runs" / "bench"
    run_grid(tmp_path / "grid.yaml", out, echo=lambda *_: None)
    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "keep_results.py"))
    dest = tmp_path / "benchmarks" / "bench"
    assert script["main"]([str(out), "--to", str(dest)]) == 0
    # the readers of scripts/plot_budget.py see the same runs in the kept folder
    place = ("run_dir", "folder")
    strip = [{k: v for k, v in r.items() if k not in place} for r in load_runs([out])]
    kept = load_runs([dest])
    assert [{k: v for k, v in r.items() if k not in place} for r in kept] == strip
    for row in kept:  # and their epochs (plot_budget --epochs-out)
        metrics = Path(row["folder"]) / "metrics.jsonl"
        assert (
            metrics.read_bytes() == (out / "runs" / metrics.parent.name / metrics.name).read_bytes()
        )
    assert not list(dest.rglob("*.pt"))
    # a fresh machine: the kept folder restored, the grid rerun trains nothing
    fresh = tmp_path / "fresh" / "bench"
    assert script["main"](["--restore", str(dest), str(fresh)]) == 0
    messages = []
    run_grid(tmp_path / "grid.yaml", fresh, echo=messages.append)
    assert "2 already done" in messages[0]


def test_an_unfinished_run_kept_and_restored_resumes_from_its_checkpoint(tmp_path):
    (tmp_path / "grid.yaml").write_text(GRID)
    out = tmp_path / "runs" / "bench"
    run_grid(tmp_path / "grid.yaml", out, echo=lambda *_: None)
    run = next((out / "runs").iterdir())
    (run / "summary.json").unlink()  # as if stopped after its last checkpoint
    history = (run / "metrics.jsonl").read_text()  # with each epoch's measured seconds
    dest = tmp_path / "benchmarks" / "bench"
    keep_results(out, dest)
    assert (dest / "runs" / run.name / "checkpoints" / "last.pt").is_file()
    kept_predictions = (dest / "runs").glob("*/predictions.npz")
    assert [p.parent.name for p in kept_predictions] == [run.name]  # the finished run's stay
    fresh = tmp_path / "fresh" / "bench"
    restore_results(dest, fresh)
    messages = []
    run_grid(tmp_path / "grid.yaml", fresh, echo=messages.append)
    assert "1 already done" in messages[0]
    # resumed, not trained again: the history (timings included) is the checkpoint's
    assert (fresh / "runs" / run.name / "metrics.jsonl").read_text() == history
    assert (fresh / "runs" / run.name / "summary.json").is_file()
    lines = [json.loads(x) for x in (fresh / "results.jsonl").read_text().splitlines()]
    assert sorted(r["noise_kind"] for r in lines) == ["pair", "symmetric"]


def test_what_is_kept_under_benchmarks_is_not_git_ignored():
    """A `noisytail bench` folder keeps its runs under ``runs/``: the repository's ignore rules
    must leave them (and their checkpoints) addable under benchmarks/, or a kept grid loses its
    run folders at the commit."""
    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [
        "benchmarks/grid/results.md",
        "benchmarks/grid/runs/a-s0-0123456789/summary.json",
        "benchmarks/grid/runs/a-s0-0123456789/checkpoints/last.pt",
    ]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths], cwd=root, capture_output=True, text=True
    ).stdout.split()
    assert ignored == []
    top = subprocess.run(
        ["git", "check-ignore", "--no-index", "runs/x/summary.json"], cwd=root, capture_output=True
    )
    assert top.returncode == 0  # the working runs/ folder itself stays ignored
