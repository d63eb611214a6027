"""The gap between a method and its baseline against the training budget (issue 15, part 2), from
the runs of one or more ``noisytail bench`` folders (``OUT/results.jsonl``).

Each run's budget (``train.epochs``) and the other axes a curve is drawn for (by default the noise
kind and the model's width, ``model.options.width``) are read from the run folder's saved
``config.yaml`` (`load_runs`); a gap is the method's metric minus the baseline's on the same seed
and the same setting (`paired_gaps`); `gap_table` gives the mean ± std over seeds per budget and
`plot_gaps` one line per curve. The driver: ``scripts/plot_budget.py``.
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

#: The run's config keys that name a curve (besides the budget), by default.
CURVE_KEYS = ("noise.kind", "model.options.width")
BUDGET_KEY = "train.epochs"


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
            config = bench / "runs" / Path(row["run_dir"]).name / "config.yaml"
            if config.is_file():
                rows.append({**row, "config": yaml.safe_load(config.read_text())})
    return rows


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
    ``"erm (ce)"``); a run without its partner is left out."""
    cells: dict[tuple, dict[str, float]] = {}
    for row in rows:
        if row["method"] not in (method, baseline) or row.get(metric) is None:
            continue
        cfg = row["config"]
        curve = tuple(lookup(cfg, k) for k in curve_keys)
        key = (curve, int(lookup(cfg, BUDGET_KEY)), row["seed"])
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


def plot_gaps(
    gaps: dict[tuple, dict[int, list[float]]],
    path: str | Path,
    *,
    title: str = "",
    curve_keys: Sequence[str] = CURVE_KEYS,
    scale: float = 100.0,
) -> Path:
    """Gap (points) against the budget (epochs, log axis), one line per curve, the std over
    seeds as error bars; the zero line marks where the method overtakes its baseline."""
    with matplotlib.rc_context(STYLE):
        fig = new_figure(6.0, 4.2)
        ax = fig.add_subplot()
        ax.axhline(0.0, color="black", linewidth=0.8)
        for curve in sorted(gaps, key=repr):
            budgets = sorted(gaps[curve])
            stats = [_mean_std(gaps[curve][b]) for b in budgets]
            ax.errorbar(
                budgets,
                [scale * m for m, _ in stats],
                yerr=[scale * (s or 0.0) for _, s in stats],
                marker="o",
                capsize=3,
                label=", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(curve_keys, curve)),
            )
        ax.set_xscale("log")
        ax.set_xlabel("training budget (epochs)")
        ax.set_ylabel("gap: method − baseline (points)")
        if title:
            ax.set_title(title)
        ax.legend(fontsize="small")
        return save_figure(fig, Path(path))
