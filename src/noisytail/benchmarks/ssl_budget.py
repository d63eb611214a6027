"""The self-supervised benchmark over a budget grid (issue 15, part 2): MTTV − SimCLR on the
linear probe and the two-stage recipe − the best loss from scratch, against the pre-training
budget (epochs) and the encoder's width.

A grid file (``configs/bench/budget_ssl_fmnist.yaml``)::

    name: budget_ssl_fmnist
    budgets: [20, 60, 150]     # pre-training epochs (SimCLR and MTTV; SslOptions.pretrain_epochs)
    widths: [16, 32, 64]       # small_cnn width (SslOptions.width)
    seeds: [0]                 # below the largest budget
    top_seeds: [0, 1, 2]       # at the largest budget
    options: {pool: 45000, methods: [simclr, mttv], losses: [cb_focal], ...}  # SslOptions fields

Each cell is one ordinary run of `noisytail.benchmarks.ssl` (``run_bench``, with its caching of
finished runs and resumption of an interrupted pre-training) in its own folder under ``OUT``:
``w<width>-scratch`` fine-tunes the ``scratch_losses`` from a random initialisation (they do not
depend on the pre-training budget, so they run once per width, with every seed of the grid), and
``w<width>-e<budget>`` pre-trains the ``methods``, probes them, and fine-tunes each seed's
``init_from`` encoder with the ``losses``. Each cell folder holds ``cell.json`` (its role and
options), which `noisytail.benchmarks.budget.load_ssl_runs` reads to pair the cells' rows. Cells
run width by width (the scratch cell first, then the budgets in increasing order), so a stopped
grid has whole widths; rerunning the same command continues it.
The driver: ``scripts/bench_ssl.py --grid <file> --out <folder>``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from noisytail.benchmarks.ssl import run_bench
from noisytail.benchmarks.ssl_options import SslOptions
from noisytail.config import ConfigError, read_yaml_file

_log = logging.getLogger(__name__)

CELL_FILE = "cell.json"
GRID_KEYS = {"name", "budgets", "widths", "seeds", "top_seeds", "options"}
#: SslOptions fields a cell sets itself; a grid's ``options`` may not name them.
CELL_FIELDS = {"part", "seeds", "out", "pretrain_epochs", "width"}


@dataclass(frozen=True)
class SslBudgetGrid:
    name: str
    budgets: tuple[int, ...]  # pre-training epochs, increasing
    widths: tuple[int, ...]
    seeds: tuple[int, ...]  # below the largest budget
    top_seeds: tuple[int, ...]  # at the largest budget
    options: SslOptions  # shared by every cell


@dataclass(frozen=True)
class Cell:
    role: str  # "scratch" | "pretrain"
    budget: int | None  # pre-training epochs (None for a scratch cell)
    width: int
    options: SslOptions  # what run_bench runs (out = the cell's folder)


def _ints(spec: dict[str, Any], key: str) -> tuple[int, ...]:
    values = spec.get(key)
    if not isinstance(values, list) or not values or not all(isinstance(v, int) for v in values):
        raise ConfigError(f"grid: '{key}' must be a non-empty list of integers, got {values!r}.")
    return tuple(values)


def load_ssl_grid(path: str | Path) -> SslBudgetGrid:
    """Read and check a grid file (``yaml.safe_load``); a clear `ConfigError` otherwise."""
    spec = read_yaml_file(path, "grid")
    unknown = set(spec) - GRID_KEYS
    if unknown:
        raise ConfigError(f"Unknown grid keys {sorted(unknown)}; allowed: {sorted(GRID_KEYS)}.")
    options = spec.get("options") or {}
    fields = {f.name for f in dataclasses.fields(SslOptions)} - CELL_FIELDS
    if not isinstance(options, dict) or set(options) - fields:
        bad = sorted(set(options) - fields) if isinstance(options, dict) else options
        raise ConfigError(f"grid: unknown or per-cell options {bad}; allowed: {sorted(fields)}.")
    opts = SslOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    return SslBudgetGrid(
        name=str(spec.get("name", Path(path).stem)),
        budgets=tuple(sorted(_ints(spec, "budgets"))),
        widths=_ints(spec, "widths"),
        seeds=_ints(spec, "seeds"),
        top_seeds=_ints(spec, "top_seeds"),
        options=opts,
    )


def cells(grid: SslBudgetGrid, out: str | Path, *, quick: bool = False) -> list[Cell]:
    """The grid's cells in running order (width by width: scratch, then increasing budgets);
    ``quick``: a smoke run, every cell with `SslOptions.shrunk`'s small pool and short runs (1
    pre-training epoch at every budget; the folders keep the grid's names) and the grid's losses."""
    out = Path(out)
    top = grid.budgets[-1]
    all_seeds = tuple(sorted(set(grid.seeds) | set(grid.top_seeds)))
    shared = grid.options.shrunk() if quick else grid.options
    losses, scratch_losses = grid.options.losses, grid.options.scratch_losses
    result = []
    for width in grid.widths:
        if scratch_losses:
            opts = replace(
                shared,
                part="finetune",
                width=width,
                seeds=all_seeds,
                losses=(),
                scratch_losses=scratch_losses,
                out=str(out / f"w{width}-scratch"),
            )
            result.append(Cell("scratch", None, width, opts))
        for budget in grid.budgets:
            opts = replace(
                shared,
                width=width,
                pretrain_epochs=1 if quick else budget,
                seeds=grid.top_seeds if budget == top else grid.seeds,
                losses=losses,
                scratch_losses=(),
                out=str(out / f"w{width}-e{budget}"),
            )
            result.append(Cell("pretrain", budget, width, opts))
    return result


def run_cell(cell: Cell) -> list[dict[str, Any]]:
    """Run (or finish) one cell: write its ``cell.json``, then the ssl benchmark's parts."""
    out = Path(cell.options.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"role": cell.role, "budget": cell.budget, "width": cell.width}
    record["options"] = dataclasses.asdict(cell.options)
    (out / CELL_FILE).write_text(json.dumps(record, indent=1))
    if cell.role == "scratch":
        return run_bench(cell.options)
    rows = run_bench(replace(cell.options, part="pretrain"))
    if cell.options.losses:
        rows += run_bench(replace(cell.options, part="finetune"))
    return rows


def run_ssl_grid(
    grid: SslBudgetGrid,
    out: str | Path,
    *,
    quick: bool = False,
    echo: Callable[[str], Any] | None = None,
) -> list[dict[str, Any]]:
    """Run every cell of the grid in order; returns every row. ``echo`` gets a progress line per
    cell (default: this module's logger)."""
    echo = echo or _log.info
    todo = cells(grid, out, quick=quick)
    rows = []
    for i, cell in enumerate(todo, 1):
        what = "scratch losses" if cell.role == "scratch" else f"{cell.budget} epochs"
        echo(
            f"{grid.name}: cell {i}/{len(todo)}: width {cell.width}, {what}, seeds "
            f"{list(cell.options.seeds)} -> {cell.options.out}"
        )
        rows += run_cell(cell)
    return rows


def estimate_grid(grid: SslBudgetGrid, steps: int = 4) -> tuple[list[dict[str, Any]], str]:
    """Each cell's wall time in one process, extrapolated from ``steps`` timed steps (and one
    timed evaluation) of one epoch of each kind of run per width, here and now
    (`noisytail.benchmarks.ssl.estimate_parts`): returns the rows and a Markdown table."""
    from noisytail.benchmarks.ssl import estimate_parts
    from noisytail.benchmarks.ssl_options import pretrain_epochs

    rows: list[dict[str, Any]] = []
    for width in grid.widths:
        base = replace(grid.options, width=width, seeds=(0,))
        pre = estimate_parts(replace(base, part="pretrain", pretrain_epochs=1), steps)
        epoch = {p["part"].removeprefix("pre-train "): p["seconds"] for p in pre}
        probes = epoch.pop("probes")  # every encoder's probe and the random one, one seed
        tune = estimate_parts(
            replace(base, part="finetune", losses=(), scratch_losses=("ce",), finetune_epochs=1),
            steps,
        )
        tune_epoch = tune[0]["seconds"] / len(base.noise_rates)  # one run, one epoch
        per_run = base.finetune_epochs * tune_epoch
        for cell in cells(grid, "."):
            if cell.width != width:
                continue
            o = cell.options
            if cell.role == "scratch":
                secs = len(o.seeds) * len(o.noise_rates) * len(o.scratch_losses) * per_run
            else:
                pre_s = sum(epoch[m] * pretrain_epochs(o, m) for m in o.methods)
                tuned = len(o.noise_rates) * len(o.losses) * per_run
                secs = len(o.seeds) * (pre_s + probes + tuned)
            rows.append(
                {
                    "cell": Path(o.out).name,
                    "seeds": len(o.seeds),
                    "epoch_seconds": {**epoch, "fine-tune": tune_epoch},
                    "seconds": secs,
                }
            )
    lines = ["| cell | seeds | s / epoch (measured) | est. h, one process |", "|---|---|---|---|"]
    for r in rows:
        per = ", ".join(f"{k} {v:.1f}" for k, v in r["epoch_seconds"].items())
        lines.append(f"| {r['cell']} | {r['seeds']} | {per} | {r['seconds'] / 3600:.2f} |")
    total = sum(r["seconds"] for r in rows)
    lines.append(f"\nEstimated total: {total / 3600:.1f} h in one process.")
    return rows, "\n".join(lines)
