"""Mean ± std tables and the accuracy-against-noise plot of a benchmark grid's runs
(``noisytail bench``: `noisytail.bench.aggregate`). Rows are run summaries or flat rows; keys may
be dotted paths into nested dicts (`noisytail.figures.lookup`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from noisytail.figures import STYLE, finite, lookup, new_figure, save_figure


def _aggregate(
    rows: Iterable[dict[str, Any]], group_keys: Sequence[str], metric_keys: Sequence[str]
) -> list[tuple[tuple, int, dict[str, tuple[float | None, float | None, int]]]]:
    """Per group (in order of first appearance): key values, run count, and per metric
    (mean, sample std with ddof=1 or None for one value, number of values)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(lookup(row, k) for k in group_keys), []).append(row)
    out = []
    for key, members in groups.items():
        stats = {}
        for mk in metric_keys:
            vals = np.array([v for v in (finite(lookup(r, mk)) for r in members) if v is not None])
            mean = float(vals.mean()) if vals.size else None
            std = float(vals.std(ddof=1)) if vals.size > 1 else None
            stats[mk] = (mean, std, int(vals.size))
        out.append((key, len(members), stats))
    return out


def render_bench_tables(
    rows: Sequence[dict[str, Any]],
    group_keys: Sequence[str],
    metric_keys: Sequence[str],
    *,
    percent_keys: Iterable[str] | None = None,
) -> tuple[str, str]:
    """Mean ± std over the runs (seeds) of each group, as ``(markdown, csv)``.

    ``rows`` are run summaries; keys may be dotted paths into nested dicts (``"noise.rate"``).
    Runs sharing the values of ``group_keys`` form a group, in order of first appearance. The std
    is the sample standard deviation (ddof = 1); a single run has none (markdown shows the mean
    alone, the CSV an empty cell). Missing or None metric values are skipped.
    The markdown shows ``percent_keys`` (default: metrics whose name contains "accuracy") in
    percent with two decimals; the CSV keeps raw values, with columns
    ``*group_keys, runs, <metric>_mean, <metric>_std, <metric>_n``.
    """
    pct = (
        set(percent_keys)
        if percent_keys is not None
        else {k for k in metric_keys if "accuracy" in k}
    )
    agg = _aggregate(rows, group_keys, metric_keys)

    def cell(mk: str, mean: float | None, std: float | None) -> str:
        if mean is None:
            return "n/a"
        f = 100.0 if mk in pct else 1.0
        fmt = "{:.2f}" if mk in pct or abs(mean) >= 1 else "{:.4f}"
        text = fmt.format(f * mean)
        return text if std is None else f"{text} ± {fmt.format(f * std)}"

    heads = list(group_keys) + ["runs"] + [f"{k} (%)" if k in pct else k for k in metric_keys]
    md = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for key, n, stats in agg:
        cells = ["" if v is None else str(v) for v in key] + [str(n)]
        cells += [cell(mk, *stats[mk][:2]) for mk in metric_keys]
        md.append("| " + " | ".join(cells) + " |")

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        list(group_keys)
        + ["runs"]
        + [f"{k}_{s}" for k in metric_keys for s in ("mean", "std", "n")]
    )
    for key, n, stats in agg:
        vals: list[Any] = ["" if v is None else v for v in key] + [n]
        for mk in metric_keys:
            mean, std, cnt = stats[mk]
            vals += [
                repr(mean) if mean is not None else "",
                repr(std) if std is not None else "",
                cnt,
            ]
        writer.writerow(vals)
    return "\n".join(md) + "\n", buf.getvalue()


def plot_accuracy_vs_noise(
    rows: Sequence[dict[str, Any]],
    path: Path | str,
    *,
    metric: str = "test_accuracy",
    line_keys: Sequence[str] = ("method",),
    kind_key: str = "noise.kind",
    rate_key: str = "noise.rate",
) -> Path:
    """Mean ``metric`` (%) against noise rate, one line per ``line_keys`` value, std error bars
    over seeds, one panel per noise kind. Clean runs (rate 0 or kind none) appear at x = 0 in
    every panel."""
    path = Path(path)
    clean_kinds = (None, "none", "clean")

    def is_clean(r: dict[str, Any]) -> bool:
        return lookup(r, kind_key) in clean_kinds or not finite(lookup(r, rate_key))

    kinds = list(dict.fromkeys(str(lookup(r, kind_key)) for r in rows if not is_clean(r)))
    if not kinds:
        kinds = ["clean"]
    lines = list(dict.fromkeys(tuple(lookup(r, k) for k in line_keys) for r in rows))
    colours = matplotlib.colormaps["tab10"]
    with matplotlib.rc_context(STYLE):
        fig = new_figure(max(5.5, 4.8 * len(kinds)), 4.3)
        axes = np.atleast_1d(fig.subplots(1, len(kinds), sharey=True))
        for ax, kind in zip(axes, kinds):
            rates: set[float] = set()
            for li, line in enumerate(lines):
                members = [
                    r
                    for r in rows
                    if tuple(lookup(r, k) for k in line_keys) == line
                    and (is_clean(r) or str(lookup(r, kind_key)) == kind)
                ]
                by_rate: dict[float, list[float]] = {}
                for r in members:
                    x = 0.0 if is_clean(r) else finite(lookup(r, rate_key))
                    v = finite(lookup(r, metric))
                    if x is not None and v is not None:
                        by_rate.setdefault(x, []).append(v)
                pts = [
                    (x, float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
                    for x, v in sorted(by_rate.items())
                ]
                if not pts:
                    continue
                x, y, e = (np.array(v, dtype=float) for v in zip(*pts))
                ax.errorbar(
                    100 * x,
                    100 * y,
                    yerr=100 * e,
                    marker="o",
                    ms=5,
                    capsize=3,
                    color=colours(li % 10),
                    label=" / ".join(str(v) for v in line),
                )
                rates.update(100 * x)
            if rates:  # tick exactly the rates of the grid
                ax.set_xticks(sorted(rates), [f"{r:g}" for r in sorted(rates)])
            title = "clean labels" if kind == "clean" else f"{kind.replace('_', ' ')} noise"
            ax.set(title=title, xlabel="Noise rate (%)")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"{metric.replace('_', ' ')} (%), mean ± std")
        legend: dict[str, Any] = {}  # one entry per line, whichever panel drew it
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(label, handle)
        if legend:
            fig.legend(legend.values(), legend.keys(), loc="outside right upper", frameon=False)
        return save_figure(fig, path)
