"""The benchmark harness: a grid of runs (axes x seeds), several at once, aggregated.

A grid file::

    name: losses_fmnist
    base: ../demo.yaml            # a run config (relative to this file), optional
    set: [train.epochs=20]        # overrides shared by every run
    seeds: [0, 1, 2]
    jobs: 2                       # runs at once (threads per run = cores / jobs)
    grid:                         # every combination of these axes is one setting
      method.loss: [ce, gce, sce]
      noise: [{kind: symmetric, rate: 0.4}, {kind: asymmetric, rate: 0.4}]

The axis named ``variant`` is special: each value is ``{label: <name>, set: [<overrides>]}``, a
bundle of overrides that vary together (e.g. a method and the gradient clipping its paper uses)::

      variant:
        - {label: erm, set: [method.name=erm]}
        - {label: l2b, set: [method.name=l2b, train.grad_clip=0.25]}

A variant's overrides may name another variant's run folder as ``{run:<label>}``: the run of that
variant with the same seed and the same values on the other axes. It runs after that one (e.g.
MOIT+ fine-tuning a finished MOIT run: ``model.init={run:moit}``, ``method.clean_from={run:moit}``).

Each run is a separate ``noisytail train`` process writing its own run folder under
``OUT/runs/``; a run whose ``summary.json`` exists is skipped, one with a checkpoint is resumed, so
an interrupted grid continues where it stopped. A run folder's name ends in a hash of the run's
*resolved* config (base file, shared and axis overrides, defaults; not the execution settings,
`noisytail.config.EXECUTION_ONLY`), so editing the base config makes a rerun redo the runs it
changes; an optional setting added to the toolkit since a run was made, left unset, does not
(`_hashed`), and neither does another ``--jobs`` (threads per run: float sums may then differ
in their last digits). Runs go seed by seed, so a grid stopped part-way has whole seeds.
One bench at a time owns ``OUT``: its runs and it hold an exclusive lock on ``OUT/.bench.lock``,
which names the owner (`noisytail.bench_lock`); a second bench on the same folder stops.
``OUT/results.jsonl`` holds one line per finished run, ``OUT/results.md`` / ``results.csv`` the mean
+- std over seeds, ``OUT/accuracy_vs_noise.png`` the plot; all are rewritten after each run
finishes, so a grid that runs for hours has its tables so far.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_text
from .bench_lock import HeldLock, folder_lock
from .build import checked_method, code_defaults
from .config import ConfigError, load_config, read_yaml_file, to_dict, without_execution_settings
from .data.types import DataError
from .summary import SUMMARY_FILE, RunSummary, read_summary

log = logging.getLogger(__name__)

VARIANT_AXIS = "variant"
_RUN_REF = re.compile(r"\{run:([^}]+)\}")
#: The longest setting part of a run folder's name (a file name holds 255 bytes).
MAX_SLUG = 120
GRID_KEYS = {"name", "base", "set", "seeds", "jobs", "grid", "metrics"}
#: The summary keys the results tables show by default (a grid's ``metrics`` replaces them).
DEFAULT_METRICS = [
    "test_accuracy",
    "balanced_accuracy",
    "few_shot_accuracy",
    "test_accuracy_at_best_val",
    "last5_test_accuracy_mean",
    "train_seconds",
]


@dataclass
class Grid:
    name: str
    base: str | None
    common: list[str]
    seeds: list[int]
    jobs: int
    axes: dict[str, list[Any]]
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))


@dataclass
class PlannedRun:
    setting: dict[str, Any]  # axis -> value
    seed: int
    overrides: list[str]
    out: Path
    needs: list[Path] = field(default_factory=list)  # run folders that must finish first

    @property
    def label(self) -> str:
        return _describe_setting(self.setting)

    @property
    def line_label(self) -> str:
        """The setting without its noise: one line of the accuracy-vs-noise plot."""
        kept = {k: v for k, v in self.setting.items() if k.split(".")[0] != "noise"}
        return _describe_setting(kept)


def _describe_setting(setting: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in setting.items())


def _short(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"label", "set"}:
        return str(value["label"])
    if isinstance(value, dict):
        return " ".join(f"{v}" for v in value.values())
    return str(value)


def load_grid(path: str | os.PathLike) -> Grid:
    path = Path(path)
    spec = read_yaml_file(path, "grid")
    unknown = set(spec) - GRID_KEYS
    if unknown:
        raise ConfigError(f"Unknown grid keys {sorted(unknown)}; allowed: {sorted(GRID_KEYS)}.")
    axes = spec.get("grid") or {}
    if not isinstance(axes, dict) or not all(isinstance(v, list) and v for v in axes.values()):
        raise ConfigError("grid: must map config keys to non-empty lists of values.")
    for value in axes.get(VARIANT_AXIS, []):
        if not (
            isinstance(value, dict)
            and set(value) == {"label", "set"}
            and isinstance(value["set"], list)
            and all(isinstance(o, str) and "=" in o for o in value["set"])
        ):
            raise ConfigError(
                f"grid: each '{VARIANT_AXIS}' value is {{label: <name>, set: [key=value, ...]}}, "
                f"got {value!r}."
            )
    for key, values in axes.items():
        spelt = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(spelt)) != len(spelt):
            raise ConfigError(f"grid: {key} repeats a value: each run would be counted twice.")
    base = spec.get("base")
    if base is not None:
        base = str((path.parent / base).resolve())
    seeds, jobs = spec.get("seeds", [0]), spec.get("jobs", 1)
    if not isinstance(seeds, list) or not all(_natural(s) for s in seeds) or not seeds:
        raise ConfigError(f"{path}: seeds must be a list of integers >= 0, got {seeds!r}.")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: seeds {seeds} repeat a seed: each run would be counted twice.")
    if not _natural(jobs) or jobs < 1:
        raise ConfigError(f"{path}: jobs must be an integer >= 1, got {jobs!r}.")
    return Grid(
        name=spec.get("name", path.stem),
        base=base,
        common=list(spec.get("set") or []),
        seeds=seeds,
        jobs=jobs,
        axes=axes,
        metrics=list(spec.get("metrics") or DEFAULT_METRICS),
    )


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def plan(grid: Grid, out: Path) -> list[PlannedRun]:
    """Every (setting, seed) with its overrides and run folder; configs are validated now.

    A run folder is ``<setting>-s<seed>-<hash of the resolved config>`` (`config_digest`). A run
    whose overrides name another run's folder (``{run:<label>}``) is hashed after that folder
    is known, so its hash follows the other run's config too.
    """
    runs = []
    keys = list(grid.axes)
    for values in itertools.product(*(grid.axes[k] for k in keys)):
        setting = dict(zip(keys, values))
        for seed in grid.seeds:
            overrides = list(grid.common)
            for k, v in setting.items():
                overrides += list(v["set"]) if k == VARIANT_AXIS else [f"{k}={json.dumps(v)}"]
            overrides.append(f"seed={seed}")
            slug = "-".join(_short(v).replace(" ", "_").replace("/", "_") for v in values)
            slug = slug[:MAX_SLUG]  # a noise matrix spelt out: the hash tells runs apart
            runs.append(PlannedRun(setting, seed, overrides, out / "runs" / f"{slug}-s{seed}"))
    labels: dict[str, dict[str, Any]] = {}
    for run in runs:  # the tables group runs by label: two settings must not share one
        if labels.setdefault(run.label, run.setting) != run.setting:
            raise ConfigError(
                f"grid: two settings are both labelled {run.label!r} in the tables; name them "
                f"with a '{VARIANT_AXIS}' axis ({{label: <name>, set: [key=value, ...]}})."
            )
    stems = {id(run): run.out for run in runs}
    direct = [run for run in runs if not any(_RUN_REF.search(o) for o in run.overrides)]
    for run in direct:  # first the runs that name no other run, then the ones that do
        run.out = _hashed(stems[id(run)], checked_method(load_config(grid.base, run.overrides)))
    for run in runs:
        if run in direct:
            continue
        run.overrides = [_resolve_run_refs(o, run, runs) for o in run.overrides]
        run.out = _hashed(stems[id(run)], checked_method(load_config(grid.base, run.overrides)))
    return runs


def config_digest(cfg: Any) -> str:
    """A short hash of a resolved `Config`, without its execution-only settings
    (`noisytail.config.EXECUTION_ONLY`), and of the defaults it leaves to the code
    (`noisytail.build.code_defaults`)."""
    values = without_execution_settings(to_dict(cfg))
    values["_code_defaults"] = code_defaults(cfg)
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _hashed(stem: Path, cfg: Any) -> Path:
    """``<stem>-<digest>``; or an existing sibling ``<stem>-*`` whose saved config is this one
    but for options added to the toolkit since and left unset (`_same_run_config`), so a new
    optional setting does not make a rerun redo a whole grid; a sibling that ran with other
    code defaults (its saved ``_provenance.code_defaults``) is not this run."""
    exact = stem.with_name(f"{stem.name}-{config_digest(cfg)}")
    if exact.exists() or not stem.parent.is_dir():
        return exact
    values = _hashable(to_dict(cfg))
    defaults, now = None, code_defaults(cfg)
    for sibling in sorted(stem.parent.glob(f"{glob.escape(stem.name)}-*")):
        saved = sibling / "config.yaml"
        if sibling.name.count("-") != stem.name.count("-") + 1 or not saved.is_file():
            continue
        if defaults is None:
            method = [f"method.name={json.dumps(values['method']['name'])}"]
            defaults = _hashable(to_dict(load_config(None, method)))
        saved_values = read_yaml_file(saved, "a run's config")
        ran_with = (saved_values.get("_provenance") or {}).get("code_defaults")
        if ran_with is not None and ran_with != now:
            continue  # a code default it took has changed since (a run before the record: kept)
        if _same_run_config(_hashable(saved_values), values, defaults):
            return sibling
    return exact


def _hashable(values: dict[str, Any]) -> dict[str, Any]:
    """A config dict without provenance and the execution-only settings."""
    return without_execution_settings({k: v for k, v in values.items() if not k.startswith("_")})


def _same_run_config(old: Any, new: Any, defaults: Any) -> bool:
    """True if ``old`` equals ``new`` except for keys that ``old`` lacks and ``new`` leaves
    unset (None, its default in ``defaults``: the default config for the same method). A new
    option with any other default may have changed what the run does (e.g. a new default
    route), so it makes another run."""
    if isinstance(old, dict) and isinstance(new, dict):
        defaults = defaults if isinstance(defaults, dict) else {}
        for key in old.keys() | new.keys():
            if key not in new:
                return False
            if key not in old:  # added since: only an unset option (None) keeps the old run
                if key not in defaults or new[key] is not None or defaults[key] is not None:
                    return False
            elif not _same_run_config(old[key], new[key], defaults.get(key)):
                return False
        return True
    return old == new or _same_folder(old, new)


def _same_folder(old: Any, new: Any) -> bool:
    """Two spellings of one existing folder (a ``{run:...}`` path under another ``--out``
    spelling: relative, absolute, through a link)."""
    if not (isinstance(old, str) and isinstance(new, str) and os.path.isdir(old)):
        return False
    return os.path.isdir(new) and os.path.samefile(old, new)


def _resolve_run_refs(override: str, run: PlannedRun, runs: list[PlannedRun]) -> str:
    """Replace each ``{run:<label>}`` with the folder of that variant's sibling run."""

    def folder(match: re.Match) -> str:
        label = match.group(1)
        for other in runs:
            variant = other.setting.get(VARIANT_AXIS)
            if (
                other.seed == run.seed
                and variant is not None
                and variant["label"] == label
                and all(v == run.setting[k] for k, v in other.setting.items() if k != VARIANT_AXIS)
            ):
                if other is run:
                    raise ConfigError(f"Variant {label!r} refers to its own run folder.")
                if any(_RUN_REF.search(o) for o in other.overrides) or other.needs:
                    raise ConfigError(
                        f"{run.label}: a {{run:...}} reference names a run that itself refers "
                        "to another run; one level of reference only."
                    )
                run.needs.append(other.out)
                return str(other.out)
        labels = sorted(
            {r.setting[VARIANT_AXIS]["label"] for r in runs if VARIANT_AXIS in r.setting}
        )
        raise ConfigError(f"{{run:{label}}} names no variant of the grid {labels}.")

    return _RUN_REF.sub(folder, override)


def _command(run: PlannedRun, base: str | None, threads: int) -> list[str]:
    cmd = [sys.executable, "-m", "noisytail", "train"]
    if base:
        cmd.append(base)
    for o in run.overrides + ["train.progress=false", f"train.num_threads={threads}"]:
        cmd += ["--set", o]
    cmd += ["--out", str(run.out), "--no-report"]
    if (run.out / "checkpoints" / "last.pt").exists():
        cmd.append("--resume")
    elif run.out.exists():  # started but no checkpoint yet: start again
        import shutil

        shutil.rmtree(run.out)
    return cmd


def run_grid(
    grid_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    jobs: int | None = None,
    threads: int | None = None,
    seeds: list[int] | None = None,
    echo: Any = None,
) -> list[dict[str, Any]]:
    """Run (or finish) the runs of the grid, then aggregate; returns the result rows. Progress
    lines go to ``echo`` (default: this module's logger at INFO; the CLI passes click.echo).

    ``jobs``: runs at once (default: the grid's ``jobs``); ``threads``: torch threads per run
    (default: cores / jobs; set it when another bench shares the cores); ``seeds``: run only
    these of the grid's seeds (e.g. a first seed now, the others later). The tables always
    aggregate every finished run of the grid."""
    echo = log.info if echo is None else echo
    grid = load_grid(grid_path)
    unknown = sorted(set(seeds or []) - set(grid.seeds))
    if unknown:
        raise ConfigError(f"seeds {unknown} are not in the grid's seeds {grid.seeds}.")
    if (jobs is not None and jobs < 1) or (threads is not None and threads < 1):
        raise ConfigError(f"jobs and threads must be at least 1, got {jobs} and {threads}.")
    out = Path(out)
    runs = plan(grid, out)
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, echo) as lock, _exit_on_sigterm():
        return _run_locked(grid, runs, out, jobs, echo, threads=threads, seeds=seeds, lock=lock)


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """A plain ``kill`` of the bench unwinds it like Ctrl-C (`_run_locked` then stops its runs):
    runs left alive would go on writing into folders that a rerun takes over."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_runs(running: list[tuple[PlannedRun, subprocess.Popen, float]]) -> None:
    """Terminate the runs still going (each resumes from its last checkpoint next time)."""
    for _, proc, _ in running:
        if proc.poll() is None:
            proc.terminate()
    for _, proc, _ in running:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_run(command: list[str], log_path: Path, lock: HeldLock | None) -> subprocess.Popen:
    """Start one run, its output appended to ``log_path`` (a relaunch keeps the reason an earlier
    attempt failed), holding the bench's ``lock`` too: runs left going by a killed bench keep
    the folder from the next bench."""
    with open(log_path, "a") as log:
        fds = () if lock is None else (lock.fd,)
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, pass_fds=fds)


def _run_locked(
    grid: Grid,
    runs: list[PlannedRun],
    out: Path,
    jobs: int | None,
    echo: Any,
    *,
    threads: int | None = None,
    seeds: list[int] | None = None,
    lock: HeldLock | None = None,
) -> list[dict[str, Any]]:
    jobs = max(1, jobs or grid.jobs)
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    chosen = [r for r in runs if seeds is None or r.seed in seeds]
    todo = [r for r in chosen if not (r.out / SUMMARY_FILE).exists()]
    todo.sort(key=lambda r: grid.seeds.index(r.seed))  # seed-major: partial grids have whole seeds
    which = "" if seeds is None else f" of seeds {sorted(set(seeds))}"
    echo(
        f"{grid.name}: {len(chosen)} runs{which}, {len(chosen) - len(todo)} already done, "
        f"{jobs} at a time"
    )
    running: list[tuple[PlannedRun, subprocess.Popen, float]] = []
    failures = []
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    try:
        while todo or running:
            while todo and len(running) < jobs:
                failed = {r.out for r in failures}
                for run in [r for r in todo if failed.intersection(r.needs)]:
                    todo.remove(run)
                    failures.append(run)
                    echo(f"  SKIPPED {run.label} seed={run.seed}: a run it needs failed")
                ready = [r for r in todo if all((p / SUMMARY_FILE).exists() for p in r.needs)]
                if not ready:
                    break
                run = ready[0]
                todo.remove(run)
                command = _command(run, grid.base, threads)
                proc = start_run(command, logs / f"{run.out.name}.log", lock)
                running.append((run, proc, time.perf_counter()))
            time.sleep(0.5)
            for item in list(running):
                run, proc, started = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                took = time.perf_counter() - started
                if proc.returncode == 0 and (run.out / SUMMARY_FILE).exists():  # else stopped
                    aggregate(grid, runs, out)  # the tables follow the grid as runs finish
                    echo(f"  done   {run.label} seed={run.seed} ({took:.0f}s)")
                else:
                    failures.append(run)
                    echo(f"  FAILED {run.label} seed={run.seed}: see {logs}/{run.out.name}.log")
    finally:
        _stop_runs(running)
    rows = aggregate(grid, runs, out)
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(runs)} runs failed; rerun the same command to retry."
        )
    return rows


def aggregate(grid: Grid, runs: list[PlannedRun], out: Path) -> list[dict[str, Any]]:
    """Write results.jsonl, results.md, results.csv (each replaced atomically) and the
    accuracy-vs-noise plot, from the runs finished so far (called after each run, so a long
    grid's tables are readable while it runs)."""
    from .benchmarks.tables import plot_accuracy_vs_noise, render_bench_tables

    rows = []
    for run in runs:
        try:
            summary = read_summary(run.out)
        except DataError as err:  # one damaged run does not stop the grid and its tables
            log.warning("left out of the tables: %s", err)
            continue
        if summary is None:
            continue
        values, label, noise = summary.to_dict(), _method_label(summary), summary.noise
        row = {"setting": run.label, "seed": run.seed, "run_dir": str(run.out)}
        row.update({k: values.get(k) for k in grid.metrics})  # the grid names its metrics
        row.update(method=label, line=run.line_label or label, noise_kind=noise.get("kind"))
        row.update(noise_rate=noise.get("rate"), realised_noise_rate=noise.get("realised_rate"))
        row["imbalance_ratio"] = summary.imbalance_ratio
        rows.append(row)
    write_text("".join(json.dumps(row) + "\n" for row in rows), out / "results.jsonl")
    if rows:
        markdown, csv_text = render_bench_tables(rows, ["setting"], grid.metrics)
        write_text(f"# {grid.name}\n\n{markdown}\n", out / "results.md")
        write_text(csv_text, out / "results.csv")
        # one line per setting but its noise: settings are never averaged into one point
        plot_accuracy_vs_noise(rows, out / "accuracy_vs_noise.png", line_keys=("line",))
    return rows


def _method_label(summary: RunSummary) -> str:
    loss = (summary.method_args or {}).get("loss")
    if isinstance(loss, dict):
        loss = loss.get("name")
    return summary.method + (f" ({loss})" if loss else "")
