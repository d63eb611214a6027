"""The plots of a run folder's report (`noisytail.report`: learning curves, per-class accuracy
against training samples, confusion and realised noise-transition heat maps), and what the report
and the benchmark tables (`noisytail.benchmarks.tables`) share: the figure style, an Agg figure
and its saving, and the reading of one value out of a summary row.

Figures use matplotlib's Agg canvas directly (no pyplot, no global backend switch), so this module
is safe to import in notebooks and worker processes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from noisytail.data.noise import realised_transition

from .atomic import write_bytes

DPI = 120
STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
}
GROUP_COLOURS = {"many": "#dbe9f6", "medium": "#fdf1d8", "few": "#f9dcdc"}


def finite(x: Any) -> float | None:
    """A finite float, or None."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def lookup(row: dict[str, Any], key: str) -> Any:
    """``row[key]``; else a dotted path into nested dicts (``"noise.rate"`` -> ``row["noise"]
    ["rate"]``); else the flat spelling ``row["noise_rate"]``; else None."""
    if key in row:
        return row[key]
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return row.get(key.replace(".", "_"))
        value = value[part]
    return value


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure of ``width`` x ``height`` inches on its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path, **options: Any) -> Path:
    """``fig`` as a PNG (or the format ``path``'s suffix names) at ``path``, through the atomic
    writer (a symbolic link planted at ``path`` is replaced, not followed)."""
    buf = io.BytesIO()
    fmt = Path(path).suffix.lstrip(".") or "png"
    fig.savefig(buf, format=fmt, **{"dpi": DPI, "facecolor": "white", **options})
    write_bytes(buf.getvalue(), path)
    return Path(path)


def _tick_step(k: int, fit: int = 40) -> int:
    return max(1, math.ceil(k / fit))


def _series(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray | None:
    vals = np.array([finite(r.get(key)) for r in rows], dtype=float)  # None -> nan
    return vals if np.isfinite(vals).any() else None


def accuracy_curves(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """``(key, label, colour, line style)`` of the accuracy curves to draw from per-epoch
    ``rows``. On a balanced test set test accuracy equals balanced test accuracy: one curve,
    labelled so, instead of one hiding the other."""
    curves = [
        ("test_accuracy", "test accuracy", "#1f77b4", "-"),
        ("test_balanced_accuracy", "test balanced accuracy", "#2ca02c", "-"),
        ("val_accuracy", "validation accuracy (noisy)", "#ff7f0e", "--"),
        ("val_balanced_accuracy", "validation balanced accuracy (noisy)", "#9467bd", "--"),
        ("train_accuracy_noisy", "train accuracy on noisy labels", "#7f7f7f", ":"),
    ]
    series = {key: _series(rows, key) for key, *_ in curves}
    test, test_bal = series["test_accuracy"], series["test_balanced_accuracy"]
    same = test is not None and test_bal is not None and np.allclose(test, test_bal)
    if same:
        curves[0] = ("test_accuracy", "test accuracy (= balanced)", "#1f77b4", "-")
        del curves[1]
    return [c for c in curves if series[c[0]] is not None]


def plot_learning_curves(
    rows: Sequence[dict[str, Any]], path: Path, best_epoch: int | None = None
) -> Path:
    """Two panels from per-epoch ``rows``: training loss, and accuracies (%) per epoch."""
    epochs = np.array([finite(r.get("epoch")) for r in rows], dtype=float)
    marker = "o" if len(rows) <= 40 else None
    with matplotlib.rc_context(STYLE):
        fig = new_figure(11, 4.2)
        ax_loss, ax_acc = fig.subplots(1, 2)
        loss = _series(rows, "train_loss")
        if loss is not None:
            ax_loss.plot(epochs, loss, marker=marker, ms=3, color="#444444")
        ax_loss.set(title="Training loss", xlabel="Epoch", ylabel="Training objective")
        for key, label, colour, ls in accuracy_curves(rows):
            ax_acc.plot(
                epochs,
                100 * _series(rows, key),
                ls=ls,
                marker=marker,
                ms=3,
                color=colour,
                label=label,
            )
        if best_epoch is not None:
            ax_acc.axvline(best_epoch, color="#d62728", lw=1, ls="--", label="best by validation")
        ax_acc.set(title="Accuracy", xlabel="Epoch", ylabel="Accuracy (%)")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if ax_acc.get_legend_handles_labels()[0]:  # below the panel, clear of the curves
            ax_acc.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, frameon=False)
        return save_figure(fig, path)


def plot_per_class_accuracy(
    per_class_acc: Sequence[float | None],
    train_counts: np.ndarray,
    class_names: Sequence[str],
    groups: Sequence[str],
    thresholds: dict[str, float],
    path: Path,
) -> Path:
    """Training count (bars, log axis) and test accuracy (markers) per class, head to tail:
    ``per_class_acc [K]`` (None for a class not in the test set), ``train_counts [K]``,
    ``class_names [K]``, ``groups [K]`` ('many' / 'medium' / 'few'), ``thresholds`` with
    ``many`` and ``few``."""
    k = len(train_counts)
    order = np.argsort(-np.asarray(train_counts), kind="stable")
    counts = np.asarray(train_counts, dtype=float)[order]
    acc = np.array([np.nan if per_class_acc[i] is None else per_class_acc[i] for i in order])
    names = [str(class_names[i]) for i in order]
    grp = [groups[i] for i in order]
    x = np.arange(k)
    with matplotlib.rc_context(STYLE):
        fig = new_figure(min(18.0, max(8.0, 0.32 * k + 3)), 5.0)
        ax = fig.subplots()
        start = 0
        for i in range(1, k + 1):  # shade contiguous runs of the same group
            if i == k or grp[i] != grp[start]:
                g = grp[start]
                ax.axvspan(start - 0.5, i - 0.5, color=GROUP_COLOURS.get(g, "#eeeeee"), zorder=0)
                label = {
                    "many": f"many (> {thresholds['many']:g})",
                    "few": f"few (< {thresholds['few']:g})",
                }
                ax.text(
                    (start + i - 1) / 2,
                    1.01,
                    label.get(g, g),
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="bottom",
                    fontsize=10,
                )
                start = i
        # a class without training samples gets no bar (a log axis has no 0), but a "0" label
        bars = ax.bar(x, np.where(counts > 0, counts, np.nan), color="#8c9fb8", width=0.7, zorder=2)
        for i in np.flatnonzero(counts == 0):
            ax.text(i, 0.01, "0", transform=ax.get_xaxis_transform(), ha="center", va="bottom")
        ax.set_yscale("log")
        ax.set_ylabel("Training samples (log scale)")
        ax.set_xlim(-0.5, k - 0.5)
        step = _tick_step(k)
        ax.set_xticks(
            x[::step], names[::step], rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center"
        )
        ax.set_xlabel("Class (sorted by training samples)")
        ax2 = ax.twinx()
        (line,) = ax2.plot(x, 100 * acc, "o-", color="#d62728", ms=5, lw=1.5, zorder=3)
        ax2.set_ylim(0, 105)
        ax2.set_ylabel("Test accuracy (%)", color="#d62728")
        ax2.tick_params(axis="y", colors="#d62728")
        fig.legend(
            [bars, line],
            ["training samples (left axis)", "test accuracy (right axis)"],
            loc="outside lower center",
            ncols=2,
            frameon=False,
        )
        ax.set_title("Per-class test accuracy against training samples", pad=20)
        return save_figure(fig, path)


def plot_heatmap(
    matrix: np.ndarray, names: Sequence[str], title: str, xlabel: str, ylabel: str, path: Path
) -> Path:
    """``matrix [K, K]`` in [0, 1] as a heat map with class ``names`` on both axes (values
    written in the cells up to 15 classes)."""
    k = matrix.shape[0]
    size = min(16.0, max(5.5, 0.45 * k + 2.5))
    with matplotlib.rc_context(STYLE):
        fig = new_figure(size + 1.2, size)
        ax = fig.subplots()
        im = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        step = _tick_step(k)
        ticks = np.arange(0, k, step)
        labels = [str(names[i]) for i in ticks]
        ax.set_xticks(ticks, labels, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
        ax.set_yticks(ticks, labels)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if k <= 15:
            for i in range(k):
                for j in range(k):
                    v = matrix[i, j]
                    if v >= 0.005:
                        colour = "white" if v > 0.55 else "black"
                        ax.text(
                            j, i, f"{v:.2f}", ha="center", va="center", fontsize=9, color=colour
                        )
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Fraction of the row")
        return save_figure(fig, path)


def row_normalise(counts: np.ndarray) -> np.ndarray:
    """Each row of ``counts [K, K]`` divided by its sum; an empty row stays zero."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)


def noise_transition(corruption: dict[str, np.ndarray], num_classes: int) -> np.ndarray:
    """Realised ``[K, K]`` row-normalised matrix P(given label = j | true label = i) over the
    training samples. ``true_labels``/``noisy_labels [N]`` cover the whole pool and are indexed
    by ``train_idx`` (when ``train_idx`` does not fit, the arrays are taken as already indexed);
    labels of -1 (samples in no split) are ignored."""
    true = np.asarray(corruption["true_labels"], dtype=np.int64)
    noisy = np.asarray(corruption["noisy_labels"], dtype=np.int64)
    idx = corruption.get("train_idx")
    if idx is not None and len(idx) and int(np.max(idx)) < len(true):
        true, noisy = true[idx], noisy[idx]
    keep = (true >= 0) & (noisy >= 0)  # -1 marks samples in no split
    return realised_transition(true[keep], noisy[keep], num_classes)
