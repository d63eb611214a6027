"""The gap between a method and its baseline against the training budget (issue 15, part 2), from
the runs of one or more ``noisytail bench`` folders (``OUT/results.jsonl``).

Each run's budget (``train.epochs``) and the other axes a curve is drawn for (by default the noise
kind and the model's width, ``model.options.width``) are read from the run folder's saved
``config.yaml`` (`load_runs`); a gap is the method's metric minus the baseline's on the same seed
and the same setting (`paired_gaps`); `gap_table` gives the mean ± std over seeds per budget and
`plot_gaps` one line per curve; `epoch_curves`, `epoch_table` and `plot_epoch_curves` follow
the method and its baseline epoch by epoch through the largest budget (does the baseline peak and
fall, and from which epoch does the method stay ahead). The driver: ``scripts/plot_budget.py``.

The self-supervised budget grid (`noisytail.benchmarks.ssl_budget`) is read by `load_ssl_runs`
into the same rows, so the same pairing gives MTTV − SimCLR on the linear probe (``part``
"pretrain", metric ``probe_accuracy``, curve: the width) and, through `two_stage_rows`, the
two-stage recipe − the best loss from scratch (``part`` "finetune", ``test_accuracy``, curve: the
noise rate and the width).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import yaml

from noisytail.figures import STYLE, lookup, new_figure, save_figure
from noisytail.runfolder import METRICS_FILE, comparable_config, config_difference, read_metrics

#: The run's config keys that name a curve (besides the budget), by default.
CURVE_KEYS = ("noise.kind", "model.options.width")
BUDGET_KEY = "train.epochs"
#: The curves of the self-supervised grid: MTTV − SimCLR, two-stage − scratch.
PROBE_CURVE_KEYS = ("model.options.width",)
TWO_STAGE_CURVE_KEYS = ("noise.rate", "model.options.width")
TWO_STAGE, SCRATCH = "two-stage", "scratch"


def load_runs(bench_dirs: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every run line of each folder's ``results.jsonl``, with ``config``: the run's saved
    ``config.yaml`` (its folder under ``<bench>/runs/``, found by name), read with
    ``yaml.safe_load``. A line whose run folder is gone is left out."""
    rows = []
    for bench in map(Path, bench_dirs):
        results = bench / "results.jsonl"
        if not results.is_file():
            raise FileNotFoundError(f"{results} does not exist: run the bench first.")
        for line in results.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            folder = bench / "runs" / Path(row["run_dir"]).name
            config = folder / "config.yaml"
            if config.is_file():
                config_values = yaml.safe_load(config.read_text())
                rows.append({**row, "config": config_values, "folder": str(folder)})
    return rows


def _row_key(row: dict[str, Any]) -> tuple:
    """What makes a row of the ssl benchmark one run (its results.jsonl repeats a run's row at
    every invocation that covers it)."""
    if row["part"] == "finetune":
        return ("finetune", row["noise_rate"], row["init"], row["loss"], row["seed"])
    return (row["part"], row.get("method"), row["seed"])


def load_ssl_runs(grid_dirs: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The rows of every cell of one or more ssl budget grids (``OUT/*/cell.json``, see
    `noisytail.benchmarks.ssl_budget`), the last row of each run (`_row_key`), with ``config``:
    the cell's pre-training epochs as ``train.epochs`` (the budget), its ``model.options.width``,
    pool (``data.train_subset``) and, for fine-tuning rows, ``noise.rate``. A scratch cell's rows
    have ``train.epochs`` None: `two_stage_rows` pairs them with every budget."""
    from noisytail.benchmarks.ssl_budget import CELL_FILE

    rows = []
    for grid in map(Path, grid_dirs):
        cell_files = sorted(grid.glob(f"*/{CELL_FILE}"))
        if not cell_files:
            raise FileNotFoundError(
                f"{grid} holds no */{CELL_FILE}: run the ssl budget grid first."
            )
        for cell_file in cell_files:
            cell = json.loads(cell_file.read_text())
            results = cell_file.parent / "results.jsonl"
            if not results.is_file():
                continue
            latest = {}
            for line in results.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    if row["part"] in ("pretrain", "finetune"):
                        latest[_row_key(row)] = row
            opts = cell["options"]
            budget = opts["pretrain_epochs"] if cell["role"] == "pretrain" else None
            for row in latest.values():
                config = {
                    "train": {"epochs": budget},
                    "model": {"options": {"width": opts["width"]}},
                    "data": {"train_subset": opts["pool"]},
                    "noise": {"rate": row.get("noise_rate")},
                }
                rows.append({**row, "role": cell["role"], "config": config})
    return rows


def _best_loss(rows: Sequence[dict[str, Any]], metric: str) -> str | None:
    """The loss of the highest mean ``metric`` over its rows' seeds."""
    by_loss: dict[str, list[float]] = {}
    for r in rows:
        if r.get(metric) is not None:
            by_loss.setdefault(r["loss"], []).append(float(r[metric]))
    return max(by_loss, key=lambda k: statistics.fmean(by_loss[k])) if by_loss else None


def two_stage_rows(
    rows: Sequence[dict[str, Any]], *, metric: str = "test_accuracy"
) -> tuple[list[dict[str, Any]], dict[tuple, str]]:
    """Rows for `paired_gaps` (method ``TWO_STAGE`` against ``SCRATCH``) from `load_ssl_runs`'s
    fine-tuning rows: at each budget, noise rate and width, the two-stage runs (pre-trained init)
    of the loss with the best mean ``metric`` over their seeds, and the scratch runs of the best
    loss from scratch at that noise rate and width (scratch runs do not depend on the
    pre-training budget: one set serves every budget of the width). Also returns the chosen
    losses, ``{(method, noise rate, width, budget or None): loss}``."""
    two_stage: dict[tuple, list[dict]] = {}
    scratch: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["part"] != "finetune":
            continue
        width = lookup(r["config"], "model.options.width")
        if r["init"] == "scratch":
            scratch.setdefault((r["noise_rate"], width), []).append(r)
        else:
            budget = lookup(r["config"], BUDGET_KEY)
            two_stage.setdefault((r["noise_rate"], width, budget), []).append(r)
    out: list[dict[str, Any]] = []
    chosen: dict[tuple, str] = {}
    for (rate, width, budget), group in sorted(two_stage.items(), key=repr):
        base = scratch.get((rate, width), [])
        best, best_scratch = _best_loss(group, metric), _best_loss(base, metric)
        if best is None or best_scratch is None:
            continue
        chosen[(TWO_STAGE, rate, width, budget)] = best
        chosen[(SCRATCH, rate, width, None)] = best_scratch
        for method, picked in (
            (TWO_STAGE, [r for r in group if r["loss"] == best]),
            (SCRATCH, [r for r in base if r["loss"] == best_scratch]),
        ):
            for r in picked:
                config = {**r["config"], "train": {"epochs": budget}}
                out.append({**r, "method": method, "config": config})
    return out, chosen


def _curve_and_budget(row: dict[str, Any], curve_keys: Sequence[str]) -> tuple[tuple, int]:
    """A run row's curve (the values of ``curve_keys`` in its config) and budget (epochs)."""
    cfg = row["config"]
    return tuple(lookup(cfg, k) for k in curve_keys), int(lookup(cfg, BUDGET_KEY))


def _claim(claimed: dict[tuple, dict[str, Any]], key: tuple, row: dict[str, Any]) -> None:
    """Refuse (`ValueError`) a second run of the same method, curve, budget and seed whose setting
    differs from the first's: it would silently replace it, and a gap could pair a method with
    a baseline of another setting."""
    setting = comparable_config(row["config"], also=("seed", BUDGET_KEY))
    first = claimed.setdefault((*key, row["method"]), setting)
    if first != setting:
        raise ValueError(
            f"two {row['method']!r} runs at {key} differ in more than the seed and budget "
            f"({config_difference(first, setting)}): add that key to the curve keys (--curve)."
        )


def paired_gaps(
    rows: Sequence[dict[str, Any]],
    method: str,
    baseline: str,
    *,
    metric: str = "test_accuracy",
    curve_keys: Sequence[str] = CURVE_KEYS,
) -> dict[tuple, dict[int, list[float]]]:
    """``{curve: {budget: [gap per seed]}}`` with ``gap = metric(method) − metric(baseline)`` on
    the same seed, budget and curve (``curve``: the values of ``curve_keys`` in the run config).
    Runs are told apart by their ``method`` field (`noisytail.bench`'s label, e.g. ``"moit"``,
    ``"erm (ce)"``); a run without its partner is left out; two runs of one method in one cell
    that differ in another setting are refused (`_claim`)."""
    cells: dict[tuple, dict[str, float]] = {}
    claimed: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        if row.get("method") not in (method, baseline) or row.get(metric) is None:
            continue
        key = (*_curve_and_budget(row, curve_keys), row["seed"])
        _claim(claimed, key, row)
        cells.setdefault(key, {})[row["method"]] = float(row[metric])
    out: dict[tuple, dict[int, list[float]]] = {}
    for (curve, budget, _seed), pair in sorted(cells.items(), key=lambda kv: repr(kv[0])):
        if method in pair and baseline in pair:
            out.setdefault(curve, {}).setdefault(budget, []).append(pair[method] - pair[baseline])
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def gap_table(
    gaps: dict[tuple, dict[int, list[float]]],
    curve_keys: Sequence[str] = CURVE_KEYS,
    scale: float = 100.0,
) -> str:
    """Markdown: one row per curve and budget, the gap's mean ± std over seeds (points, ×
    ``scale``) and the seed count."""
    head = "| " + " | ".join(curve_keys) + " | epochs | seeds | gap (points) |"
    lines = [head, "|" + "---|" * (len(curve_keys) + 3)]
    for curve in sorted(gaps, key=repr):
        for budget in sorted(gaps[curve]):
            mean, std = _mean_std(gaps[curve][budget])
            cell = f"{scale * mean:+.2f}" + ("" if std is None else f" ± {scale * std:.2f}")
            values = " | ".join(str(v) for v in curve)
            lines.append(f"| {values} | {budget} | {len(gaps[curve][budget])} | {cell} |")
    return "\n".join(lines)


def _gap_line(ax: Any, per_budget: dict[int, list[float]], scale: float, **style: Any) -> Any:
    """Draw one curve's mean gap per budget with the std over seeds as error bars; its line."""
    budgets = sorted(per_budget)
    stats = [_mean_std(per_budget[b]) for b in budgets]
    means = [scale * m for m, _ in stats]
    errors = [scale * (s or 0.0) for _, s in stats]
    return ax.errorbar(budgets, means, yerr=errors, capsize=3, **style).lines[0]


def plot_gaps(
    gaps: dict[tuple, dict[int, list[float]]],
    path: str | Path,
    *,
    title: str = "",
    curve_keys: Sequence[str] = CURVE_KEYS,
    scale: float = 100.0,
    xlabel: str = "training budget (epochs)",
    dashed: dict[tuple, dict[int, list[float]]] | None = None,
    dashed_label: str = "",
) -> Path:
    """Gap (points) against the budget (epochs, log axis), one line per curve, the std over
    seeds as error bars; the zero line marks where the method overtakes its baseline.
    ``dashed``: a second set of gaps of the same curves (e.g. at the epoch a noisy validation
    split chooses), drawn dashed in each curve's colour and named ``dashed_label``."""
    with matplotlib.rc_context(STYLE):
        fig = new_figure(6.0, 4.2)
        ax = fig.add_subplot()
        ax.axhline(0.0, color="black", linewidth=0.8)
        for curve in sorted(gaps, key=repr):
            name = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(curve_keys, curve))
            line = _gap_line(ax, gaps[curve], scale, label=name, marker="o")
            if dashed and curve in dashed:
                _gap_line(
                    ax,
                    dashed[curve],
                    scale,
                    label=f"{name} ({dashed_label})" if dashed_label else name,
                    marker="s",
                    linestyle="--",
                    color=line.get_color(),
                )
        ax.set_xscale("log")
        ticks = sorted({b for per in [*gaps.values(), *(dashed or {}).values()] for b in per})
        ax.set_xticks(ticks, [str(b) for b in ticks])  # the budgets run, not powers of ten
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel(xlabel)
        ax.set_ylabel("gap: method − baseline (points)")
        if title:
            ax.set_title(title)
        ax.legend(fontsize="small")
        return save_figure(fig, Path(path))


def _per_epoch(folder: str | Path, metric: str) -> dict[int, float]:
    """``{epoch: metric}`` of a run folder's ``metrics.jsonl`` (epochs without it left out)."""
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the run folder is incomplete.")
    records = read_metrics(path)
    return {
        int(r["epoch"]): float(r[metric])
        for r in records
        if r.get(metric) is not None and "epoch" in r
    }


def epoch_curves(
    rows: Sequence[dict[str, Any]],
    method: str,
    baseline: str,
    *,
    metric: str = "test_accuracy",
    curve_keys: Sequence[str] = CURVE_KEYS,
) -> dict[tuple, tuple[int, dict[str, list[dict[int, float]]]]]:
    """Per curve, its largest budget and the per-epoch ``metric`` of the method's and the
    baseline's runs at that budget, one ``{epoch: value}`` per seed that has both, read from each
    run's ``metrics.jsonl`` (the rows of `load_runs`): ``{curve: (budget, {label: [...]})}``.
    Where in one long schedule the method passes its baseline, and whether the baseline peaks
    and falls (memorises)."""
    runs: dict[tuple, dict[int, dict[int, dict[str, str]]]] = {}
    claimed: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        if row.get("method") not in (method, baseline) or "folder" not in row:
            continue
        curve, budget = _curve_and_budget(row, curve_keys)
        _claim(claimed, (curve, budget, row["seed"]), row)
        runs.setdefault(curve, {}).setdefault(budget, {}).setdefault(row["seed"], {})[
            row["method"]
        ] = row["folder"]
    out = {}
    for curve, by_budget in sorted(runs.items(), key=lambda kv: repr(kv[0])):
        paired = {b: s for b, s in by_budget.items() if any(len(p) == 2 for p in s.values())}
        if not paired:
            continue
        budget = max(paired)
        seeds = [p for _, p in sorted(paired[budget].items()) if len(p) == 2]
        out[curve] = (
            budget,
            {who: [_per_epoch(p[who], metric) for p in seeds] for who in (method, baseline)},
        )
    return out


def _seed_mean(per_seed: list[dict[int, float]]) -> dict[int, float]:
    """The mean over seeds at each epoch every seed reached, in epoch order."""
    epochs = sorted(set.intersection(*(set(d) for d in per_seed)))
    return {e: statistics.fmean(d[e] for d in per_seed) for e in epochs}


def epoch_table(
    curves: dict[tuple, tuple[int, dict[str, list[dict[int, float]]]]],
    curve_keys: Sequence[str] = CURVE_KEYS,
    scale: float = 100.0,
) -> str:
    """Markdown: per curve and run (seed mean), the best epoch's value, the last epoch's, and
    the first epoch from which the method stays at or above the baseline (``never``)."""
    head = "| " + " | ".join(curve_keys) + " | epochs | seeds | run | best (epoch) | last |"
    lines = [head, "|" + "---|" * (len(curve_keys) + 5)]
    for curve, (budget, by_run) in curves.items():
        values = " | ".join(str(v) for v in curve)
        means = {who: _seed_mean(per_seed) for who, per_seed in by_run.items()}
        for who, mean in means.items():
            best = max(mean, key=mean.get)
            last = mean[max(mean)]
            lines.append(
                f"| {values} | {budget} | {len(by_run[who])} | {who} | "
                f"{scale * mean[best]:.2f} ({best}) | {scale * last:.2f} |"
            )
        method, baseline = list(means)
        since = None  # the start of the run of epochs, up to the last, with the method ahead
        for e in sorted(set(means[method]) & set(means[baseline]), reverse=True):
            if means[method][e] < means[baseline][e]:
                break
            since = e
        lines.append(
            f"| {values} | {budget} | | {method} ≥ {baseline} from epoch | "
            f"{since if since is not None else 'never'} | |"
        )
    return "\n".join(lines)


def plot_epoch_curves(
    curves: dict[tuple, tuple[int, dict[str, list[dict[int, float]]]]],
    path: str | Path,
    *,
    curve_keys: Sequence[str] = CURVE_KEYS,
    scale: float = 100.0,
    ylabel: str = "test accuracy (%)",
) -> Path:
    """One panel per curve: the method's and the baseline's metric per epoch of the largest
    budget (mean over seeds, the seeds' range shaded)."""
    with matplotlib.rc_context(STYLE):
        fig = new_figure(4.2 * len(curves), 3.6)
        axes = fig.subplots(1, len(curves), squeeze=False)[0]
        for ax, (curve, (budget, by_run)) in zip(axes, curves.items()):
            for who, per_seed in by_run.items():
                mean = _seed_mean(per_seed)
                epochs = list(mean)
                seeds = f"{len(per_seed)} seed" + ("s" if len(per_seed) > 1 else "")
                label = f"{who} ({seeds})"
                (line,) = ax.plot(epochs, [scale * m for m in mean.values()], label=label)
                if len(per_seed) > 1:
                    values = [[scale * d[e] for e in epochs] for d in per_seed]
                    low = [min(col) for col in zip(*values)]
                    high = [max(col) for col in zip(*values)]
                    ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2)
            name = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(curve_keys, curve))
            ax.set_title(f"{name}, {budget} epochs", fontsize="small")
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize="small")
        return save_figure(fig, Path(path))
