import json
from pathlib import Path

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
    # a damaged summary leaves that run out of the tables, not the grid's other runs
    from noisytail.bench import aggregate

    runs = plan(load_grid(path), out)
    (runs[0].out / "summary.json").write_text("{damaged")
    assert len(aggregate(load_grid(path), runs, out)) == 3


def test_results_follow_the_grid_as_runs_finish(tmp_path):
    # a grid that runs for hours has readable tables of the runs finished so far
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("jobs: 2", "jobs: 1"))
    out = tmp_path / "bench"
    seen = []

    def echo(message):
        if message.startswith("  done"):
            lines = (out / "results.jsonl").read_text().splitlines()
            seen.append(len(lines))

    run_grid(path, out, echo=echo)
    assert seen == [1, 2]


def test_the_plot_draws_each_setting_apart(tmp_path, monkeypatch):
    # two widths at one noise rate are two lines, not one point averaged over both
    import matplotlib.axes

    from noisytail.bench import aggregate

    path = tmp_path / "grid.yaml"
    text = GRID.replace("seeds: [0, 1]", "seeds: [0]").replace(
        "rate: 0.4}]", "rate: 0.4}]\n  model.options.width: [8, 4]"
    )
    path.write_text(text.replace("  - model.options.width=8\n", ""))
    out = tmp_path / "bench"
    run_grid(path, out, echo=lambda *_: None)
    drawn = []
    real = matplotlib.axes.Axes.errorbar

    def spy(self, x, y, *args, **kwargs):
        drawn.append((kwargs.get("label"), list(x), list(y)))
        return real(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    aggregate(load_grid(path), plan(load_grid(path), out), out)
    assert sorted(label for label, _, _ in drawn) == [
        "model.options.width=4",
        "model.options.width=8",
    ]
    assert all(x == [20.0, 40.0] for _, x, _ in drawn)


def test_seeds_run_only_those_and_the_tables_keep_every_finished_run(tmp_path):
    # a first seed now, the others later, into the same folder
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    out = tmp_path / "bench"
    messages = []
    rows = run_grid(path, out, seeds=[1], echo=messages.append)
    assert {r["seed"] for r in rows} == {1} and len(rows) == 2
    assert "2 runs of seeds [1], 0 already done" in messages[0]
    assert not any(r.out.exists() for r in plan(load_grid(path), out) if r.seed == 0)
    rows = run_grid(path, out, seeds=[0], echo=lambda *_: None)
    assert {(r["noise_rate"], r["seed"]) for r in rows} == {(0.2, 0), (0.2, 1), (0.4, 0), (0.4, 1)}


def test_threads_per_run_default_to_cores_over_jobs_and_can_be_set(tmp_path, monkeypatch):
    import noisytail.bench as bench

    path = tmp_path / "grid.yaml"
    path.write_text(GRID.replace("seeds: [0, 1]", "seeds: [0]"))
    threads = []
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 8)
    real = bench._command

    def spy(run, base, n):
        threads.append(n)
        return real(run, base, n)

    monkeypatch.setattr(bench, "_command", spy)
    run_grid(path, tmp_path / "a", echo=lambda *_: None)  # the grid's 2 jobs: 8 // 2
    run_grid(path, tmp_path / "b", jobs=1, threads=3, echo=lambda *_: None)
    assert threads == [4, 4, 3, 3]


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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seeds: 3\ngrid: {train.lr: [0.1]}\n", "seeds must be a list of integers >= 0"),
        ("seeds: [1.9]\ngrid: {train.lr: [0.1]}\n", "seeds must be a list of integers >= 0"),
        ("seeds: [0, 1, 1]\ngrid: {train.lr: [0.1]}\n", "repeat a seed"),
        ("jobs: two\ngrid: {train.lr: [0.1]}\n", "jobs must be an integer >= 1"),
        ("grid: {method.loss: [ce, gce, ce]}\n", "method.loss repeats a value"),
    ],
)
def test_a_grid_of_bad_values_is_one_line_error(tmp_path, text, message):
    path = tmp_path / "grid.yaml"
    path.write_text("set: [data.name=digits]\n" + text)
    with pytest.raises(ConfigError, match=message):
        plan(load_grid(path), tmp_path / "out")


def test_two_settings_with_one_label_are_refused(tmp_path):
    # dict values are labelled by their values: these two would share one row of the tables
    path = tmp_path / "grid.yaml"
    path.write_text(
        "set: [data.name=digits]\ngrid:\n  method:\n"
        "    - {name: l2b, warmup_epochs: 4}\n    - {name: l2b, meta_every: 4}\n"
    )
    with pytest.raises(ConfigError, match="both labelled 'method=l2b 4'.*'variant' axis"):
        plan(load_grid(path), tmp_path / "out")


def test_a_noise_matrix_axis_gets_a_folder_name_that_fits(tmp_path):
    matrices = [[[0.8 if i == j else 0.2 / 9 for j in range(10)] for i in range(10)]]
    matrices.append([[0.6 if i == j else 0.4 / 9 for j in range(10)] for i in range(10)])
    path = tmp_path / "grid.yaml"
    axis = json.dumps([{"kind": "matrix", "matrix": m} for m in matrices])
    path.write_text(f"set: [data.name=digits]\ngrid:\n  noise: {axis}\n")
    runs = plan(load_grid(path), tmp_path / "out")
    assert len({r.out for r in runs}) == 2
    assert all(len(r.out.name) + len(".log") < 200 for r in runs)


def test_a_killed_bench_stops_its_runs(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from noisytail.bench import _exit_on_sigterm, _stop_runs

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    running = [(None, child, 0.0)]
    with pytest.raises(SystemExit), _exit_on_sigterm():
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # a plain kill of the bench
            raise AssertionError("SIGTERM did not unwind the bench")
        finally:
            _stop_runs(running)
    assert child.poll() is not None  # not left running into a folder a rerun takes over


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


def test_run_reference_orders_runs_and_passes_the_folder(tmp_path, monkeypatch):
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
    # the same grid under another spelling of --out finds every run again, the dependants too
    monkeypatch.chdir(tmp_path)
    again = plan(load_grid(path), Path("out"))
    assert sorted(r.out.name for r in again) == sorted(r.out.name for r in runs)
    path.write_text("grid:\n  variant:\n    - {label: a, set: ['model.init={run:b}']}\n")
    with pytest.raises(ConfigError, match="names no variant"):
        plan(load_grid(path), tmp_path / "out2")
    path.write_text(  # a chain is refused whatever the order of the variants
        "grid:\n  variant:\n    - {label: a, set: ['model.init={run:b}']}\n"
        "    - {label: b, set: ['model.init={run:c}']}\n    - {label: c, set: [train.lr=0.1]}\n"
    )
    with pytest.raises(ConfigError, match="one level of reference only"):
        plan(load_grid(path), tmp_path / "out3")


def test_run_folder_hash_follows_the_resolved_config(tmp_path):
    base = tmp_path / "base.yaml"
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "base: base.yaml\nset: [data.name=digits]\nseeds: [0, 1]\n"
        "grid:\n  noise: [{kind: symmetric, rate: 0.2}]\n"
    )

    def folders() -> list:
        return [r.out for r in plan(load_grid(grid), tmp_path / "out")]

    base.write_text("train:\n  lr: 0.1\n")
    first = folders()
    assert len(set(first)) == 2
    base.write_text("train:\n  lr: 0.2\n")  # an edit of the base file: other runs
    assert not set(folders()) & set(first)
    # settings that cannot change results, and the same value written another way: same runs
    base.write_text("train:\n  lr: 1e-1\n  progress: false\n  num_threads: 3\n")
    assert folders() == first
    grid.write_text(grid.read_text().replace("data.name=digits", "data.name=digits, train.lr=0.1"))
    base.write_text("train:\n  lr: 0.3\n")  # overridden by the grid: the resolved lr is 0.1
    assert folders() == first


def test_run_made_before_a_new_setting_existed_is_still_found(tmp_path):
    """A run folder whose saved config lacks an option added to the toolkit since (left unset,
    None) is the same run; one whose saved config differs in a value, or lacks a setting whose
    default is a value, is not."""
    import yaml

    from noisytail.config import dump_config, load_config

    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "set: [data.name=digits]\nseeds: [0]\ngrid:\n  noise: [{kind: symmetric, rate: 0.2}]\n"
    )
    [run] = plan(load_grid(grid), tmp_path / "out")
    old = run.out.with_name(run.out.name.rsplit("-", 1)[0] + "-0123456789")
    old.mkdir(parents=True)
    dump_config(load_config(None, run.overrides), old / "config.yaml")
    values = yaml.safe_load((old / "config.yaml").read_text())
    del values["meta"]["file"]  # made before meta.file existed
    values["train"]["progress"] = not values["train"]["progress"]  # unhashed
    (old / "config.yaml").write_text(yaml.safe_dump(values))
    [again] = plan(load_grid(grid), tmp_path / "out")
    assert again.out == old
    values["train"]["lr"] = values["train"]["lr"] * 2  # a real difference: another run
    (old / "config.yaml").write_text(yaml.safe_dump(values))
    [other] = plan(load_grid(grid), tmp_path / "out")
    assert other.out == run.out != old
    values["train"]["lr"] = values["train"]["lr"] / 2
    (old / "config.yaml").write_text(yaml.safe_dump(values))
    assert plan(load_grid(grid), tmp_path / "out")[0].out == old
    # a key the old run lacks, at a default other than None (e.g. a new default route): the
    # old run may have done something else, so another run
    del values["train"]["lr"]
    (old / "config.yaml").write_text(yaml.safe_dump(values))
    assert plan(load_grid(grid), tmp_path / "out")[0].out == run.out
    # a key the old run lacks, set by the grid away from its default: another run
    grid.write_text(
        grid.read_text().replace("[data.name=digits]", "[data.name=digits, train.lr=0.03]")
    )
    (old / "config.yaml").write_text(yaml.safe_dump(values))
    assert plan(load_grid(grid), tmp_path / "out")[0].out.name.endswith("-0123456789") is False


def test_a_default_changed_in_the_code_is_another_run(tmp_path, monkeypatch):
    """A run's folder follows the defaults its config leaves to the code (a method's default
    route): a run made under other code defaults, as its saved config records them, is not found
    again; a run from before that record existed still is, when its config matches."""
    import yaml

    from noisytail import bench as bench_mod
    from noisytail.build import code_defaults
    from noisytail.config import load_config

    path = tmp_path / "grid.yaml"
    path.write_text(
        "set: [data.name=digits, model.options.width=8, train.epochs=1, method.name=l2b,"
        " meta.per_class=5]\nseeds: [0]\njobs: 1\ngrid:\n  noise: [{kind: symmetric, rate: 0.2}]\n"
    )
    out = tmp_path / "out"
    [run] = plan(load_grid(path), out)
    run_grid(path, out, echo=lambda *_: None)
    saved = yaml.safe_load((run.out / "config.yaml").read_text())
    now = code_defaults(load_config(None, run.overrides))
    assert saved["_provenance"]["code_defaults"] == now
    assert now["method"]["lookahead"] == "head"  # l2b's default route, left to the code
    assert plan(load_grid(path), out)[0].out == run.out

    changed = {**now, "method": {**now["method"], "lookahead": "all"}}
    monkeypatch.setattr(bench_mod, "code_defaults", lambda cfg: changed)
    [after] = plan(load_grid(path), out)
    assert after.out != run.out and after.out.parent == run.out.parent  # not the stale run
    del saved["_provenance"]["code_defaults"]  # a run made before the record: found again
    (run.out / "config.yaml").write_text(yaml.safe_dump(saved))
    assert plan(load_grid(path), out)[0].out == run.out


def test_run_reference_hash_follows_the_referenced_run(tmp_path):
    path = tmp_path / "grid.yaml"
    text = (
        "set: [data.name=digits]\nseeds: [0]\ngrid:\n  variant:\n"
        "    - {label: finetune, set: ['model.init={run:scratch}']}\n"
        "    - {label: scratch, set: [train.lr=LR]}\n"
    )
    path.write_text(text.replace("LR", "0.1"))
    a = {r.label: r.out for r in plan(load_grid(path), tmp_path / "out")}
    path.write_text(text.replace("LR", "0.2"))
    b = {r.label: r.out for r in plan(load_grid(path), tmp_path / "out")}
    assert a["variant=scratch"] != b["variant=scratch"]
    assert a["variant=finetune"] != b["variant=finetune"]  # it starts from another run


def test_folder_lock_is_exclusive_and_names_its_holder(tmp_path):
    import os
    import socket

    from noisytail.bench_lock import LOCK_FILE, BenchBusyError, folder_lock

    with folder_lock(tmp_path, echo=lambda *_: None) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        holder = f"pid {os.getpid()} on {socket.gethostname()}"
        second = folder_lock(tmp_path, echo=lambda *_: None)
        with pytest.raises(BenchBusyError, match=holder):
            second.__enter__()
    assert not (tmp_path / LOCK_FILE).exists()  # released and removed
    with folder_lock(tmp_path, echo=lambda *_: None):  # free again
        pass


def test_folder_lock_takes_over_a_dead_holder(tmp_path):
    from noisytail.bench_lock import LOCK_FILE, folder_lock

    stale = {"pid": 999999, "host": "elsewhere", "started": "2024-01-01 00:00:00"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(stale))  # a file nobody holds a lock on
    said = []
    with folder_lock(tmp_path, echo=said.append):
        pass
    assert len(said) == 1 and "no longer running" in said[0] and "pid 999999" in said[0]


BENCH_FOLDER = Path(__file__).resolve().parents[1] / "configs" / "bench"
# The `noisytail bench` grids (the self-supervised budget grid has its own format and test).
BENCH_CONFIGS = [
    p for p in sorted(BENCH_FOLDER.glob("*.yaml")) if "\ngrid:" in p.read_text(encoding="utf-8")
]


@pytest.mark.parametrize("path", BENCH_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_grid_plans(path, tmp_path):
    """Each grid under configs/bench loads and every run's config validates, before any run."""
    runs = plan(load_grid(path), tmp_path)
    assert runs and len({r.out.name for r in runs}) == len(runs)


@pytest.mark.parametrize("budget", ["_e150", ""])
def test_the_width_32_grid_is_part_of_the_full_grid(tmp_path, budget):
    """Run into one folder, the width-32 file's runs are the full grid's own (same folders)."""
    part = plan(load_grid(BENCH_FOLDER / f"budget_moit_fmnist{budget}_w32.yaml"), tmp_path)
    full = plan(load_grid(BENCH_FOLDER / f"budget_moit_fmnist{budget}.yaml"), tmp_path)
    names = {r.out.name for r in full}
    assert {r.out.name for r in part} <= names and len(part) == len(full) // 2


def test_runs_left_by_a_killed_bench_keep_its_folder(tmp_path):
    # a bench killed without unwinding (kill -9, the OOM killer) leaves its runs going: they hold
    # the lock, so the next bench does not resume or delete their folders under them
    import os
    import signal
    import subprocess
    import sys
    import time

    from noisytail.bench_lock import BenchBusyError, folder_lock

    bench = f"""
import os, sys
from pathlib import Path
from noisytail.bench import start_run
from noisytail.bench_lock import folder_lock
with folder_lock(Path({str(tmp_path)!r}), echo=print) as lock:
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    run = start_run(sleep, Path({str(tmp_path / "run.log")!r}), lock)
    print(run.pid, flush=True)
    os._exit(0)  # killed: nothing unwinds
"""
    done = subprocess.run([sys.executable, "-c", bench], capture_output=True, text=True, check=True)
    orphan = int(done.stdout.split()[-1])
    try:
        with pytest.raises(BenchBusyError, match="that bench has ended, but runs it started"):
            folder_lock(tmp_path, echo=lambda *_: None).__enter__()
    finally:
        os.kill(orphan, signal.SIGKILL)
    said = []
    for _ in range(100):  # the orphan's end frees the folder
        try:
            with folder_lock(tmp_path, echo=said.append):
                break
        except BenchBusyError:
            time.sleep(0.1)
    assert said and "no longer running" in said[0]


@pytest.mark.parametrize(
    "axis, message",
    [
        ("method.los: [ce, sce]", "method 'erm' has no argument 'los'"),
        ("method.loss: [ce, sec]", "Unknown loss 'sec'"),
    ],
)
def test_a_typo_in_an_axis_stops_the_grid_before_any_run(tmp_path, axis, message):
    # a bad method argument or loss of one setting is found before earlier settings are paid for
    from click.testing import CliRunner

    from noisytail.cli import main

    path = tmp_path / "grid.yaml"
    path.write_text(GRID.replace("grid:\n", f"grid:\n  {axis}\n"))
    result = CliRunner().invoke(main, ["bench", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out" / "runs").exists()
