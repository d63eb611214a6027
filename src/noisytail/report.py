"""Plots and the markdown report of a run folder, and mean ± std tables for a benchmark.

`write_report(run_dir)` reads what the training loop wrote (every file is optional; what is
missing is left out of the report) and writes next to it:

- ``learning_curves.png``: training loss, and test/validation accuracy per epoch;
- ``per_class_accuracy.png``: training samples per class (bars, log axis) and test accuracy per
  class (markers), head to tail, with the many/medium/few-shot bands;
- ``confusion_matrix.png``: row-normalised test confusion matrix;
- ``noise_transition.png``: realised transition from true to given training label (if noisy);
- ``report.md``: a plain-language summary, a metrics table, the per-class table, the plots and
  the resolved config.

Files read: ``summary.json``, ``metrics.jsonl`` (one JSON object per epoch), ``predictions.npz``
(``y_true [N]``, ``probs [N, K]``, ``train_class_counts [K]``, ``class_names [K]``),
``corruption.npz`` (``true_labels``, ``noisy_labels``, ``train_idx``) and ``config.yaml``.
Accuracies in these files are fractions in [0, 1]; the report shows percentages.

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend switch), so this module
is safe to import in notebooks and worker processes.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from noisytail.evaluate import classification_metrics

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
DATASET_NAMES = {
    "fashion_mnist": "Fashion-MNIST",
    "mnist": "MNIST",
    "digits": "scikit-learn digits",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
}


# ---------------------------------------------------------------- reading the run folder


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One dict per valid line; a truncated last line (a crashed run) is skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of an ``.npz``; object arrays (which need pickle) are skipped."""
    if not path.is_file():
        return None
    out = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            try:
                out[key] = data[key]
            except ValueError:
                continue
    return out


def _num(x: Any) -> float | None:
    """A finite float, or None."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _get(row: dict[str, Any], key: str) -> Any:
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


def _loss_name(s: dict[str, Any]) -> str | None:
    """The loss of a run: ``summary["loss"]`` or ``summary["method_args"]["loss"]`` (a name or a
    dict with ``name``)."""
    loss = s.get("loss") or (s.get("method_args") or {}).get("loss")
    if isinstance(loss, dict):
        loss = loss.get("name")
    return str(loss) if loss else None


def _pick(s: dict[str, Any], m: dict[str, Any] | None, key: str, mkey: str | None = None) -> Any:
    """``s[key]`` from the summary, else the value recomputed from predictions (``m[mkey]``)."""
    value = s.get(key)
    if value is None and m is not None:
        value = m.get(mkey or key)
    return value


def _pct(x: Any, digits: int = 1) -> str:
    f = _num(x)
    return "n/a" if f is None else f"{100 * f:.{digits}f} %"


def _rate(x: float) -> str:
    return f"{100 * x:.3g} %"


# ---------------------------------------------------------------- figures


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def _tick_step(k: int, fit: int = 40) -> int:
    return max(1, math.ceil(k / fit))


def _series(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray | None:
    vals = np.array([_num(r.get(key)) for r in rows], dtype=float)  # None -> nan
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
    epochs = np.array([_num(r.get("epoch")) for r in rows], dtype=float)
    marker = "o" if len(rows) <= 40 else None
    with matplotlib.rc_context(STYLE):
        fig = _figure(11, 4.2)
        ax_loss, ax_acc = fig.subplots(1, 2)
        loss = _series(rows, "train_loss")
        if loss is not None:
            ax_loss.plot(epochs, loss, marker=marker, ms=3, color="#444444")
        ax_loss.set(title="Training loss", xlabel="Epoch", ylabel="Loss (noisy labels)")
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
            ax.xaxis.get_major_locator().set_params(integer=True)
        if ax_acc.get_legend_handles_labels()[0]:  # below the panel, clear of the curves
            ax_acc.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, frameon=False)
        return _save(fig, path)


def plot_per_class_accuracy(
    per_class_acc: Sequence[float | None],
    train_counts: np.ndarray,
    class_names: Sequence[str],
    groups: Sequence[str],
    thresholds: dict[str, float],
    path: Path,
) -> Path:
    """Training count (bars, log axis) and test accuracy (markers) per class, head to tail."""
    k = len(train_counts)
    order = np.argsort(-np.asarray(train_counts), kind="stable")
    counts = np.asarray(train_counts, dtype=float)[order]
    acc = np.array([np.nan if per_class_acc[i] is None else per_class_acc[i] for i in order])
    names = [str(class_names[i]) for i in order]
    grp = [groups[i] for i in order]
    x = np.arange(k)
    with matplotlib.rc_context(STYLE):
        fig = _figure(min(18.0, max(8.0, 0.32 * k + 3)), 5.0)
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
        bars = ax.bar(x, np.maximum(counts, 0.8), color="#8c9fb8", width=0.7, zorder=2)
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
        return _save(fig, path)


def _plot_heatmap(
    matrix: np.ndarray, names: Sequence[str], title: str, xlabel: str, ylabel: str, path: Path
) -> Path:
    k = matrix.shape[0]
    size = min(16.0, max(5.5, 0.45 * k + 2.5))
    with matplotlib.rc_context(STYLE):
        fig = _figure(size + 1.2, size)
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
        return _save(fig, path)


def _row_normalise(counts: np.ndarray) -> np.ndarray:
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
    true, noisy = true[keep], noisy[keep]
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (true, noisy), 1)
    return _row_normalise(counts)


# ---------------------------------------------------------------- the report


def _noise_phrase(noise: Any, realised: float | None) -> str:
    if not isinstance(noise, dict):
        noise = {}
    kind = noise.get("kind")
    rate = _num(noise.get("rate"))
    if kind in (None, "none", "clean") or not rate:
        if realised:
            return f"label noise at a realised rate of {_rate(realised)}"
        return "clean training labels"
    text = f"{_rate(rate)} {str(kind).replace('_', ' ')} label noise"
    if realised is not None:
        text += f" (realised {_pct(realised)} of training labels wrong)"
    return text


def _summary_paragraph(s: dict[str, Any], m: dict[str, Any] | None, names, counts) -> str:
    dataset = DATASET_NAMES.get(str(s.get("dataset")), str(s.get("dataset", "this data set")))
    realised = _num(_get(s, "noise.realised_rate"))
    ratio = _num(s.get("imbalance_ratio"))
    imb = "balanced classes" if ratio is None or ratio <= 1 else f"imbalance ratio {ratio:g}"
    method = f"`{s['method']}`" if s.get("method") else "the model"
    if _loss_name(s):
        method += f" with the `{_loss_name(s)}` loss"
    detail = ", ".join(
        p
        for p in (
            f"`{s['model']}`" if s.get("model") else "",
            f"{s['epochs']} epochs" if s.get("epochs") is not None else "",
        )
        if p
    )
    acc = _pick(s, m, "test_accuracy", "accuracy")
    bal = _pick(s, m, "balanced_accuracy")
    text = [
        f"On {dataset} with {_noise_phrase(s.get('noise'), realised)} and {imb}, {method}"
        + (f" ({detail})" if detail else "")
        + f" reached **{_pct(acc)}** test accuracy at the last epoch"
        + f" and a balanced accuracy (mean per-class recall) of **{_pct(bal)}**."
    ]
    a, b = _num(acc), _num(bal)
    if a is not None and b is not None and a - b > 0.02:
        text.append(
            f"Accuracy exceeds balanced accuracy by {100 * (a - b):.1f} points: the frequent "
            "classes carry the headline number."
        )
    shots = [
        f"{g}-shot {_pct(_pick(s, m, f'{g}_shot_accuracy'))}"
        for g in ("many", "medium", "few")
        if _num(_pick(s, m, f"{g}_shot_accuracy")) is not None
    ]
    if shots:
        text.append("By class frequency: " + ", ".join(shots) + ".")
    if m is not None and len(counts) >= 2:
        acc_c = m["per_class_accuracy"]
        tested = [i for i in np.argsort(counts, kind="stable") if acc_c[i] is not None]
        n = min(3, len(tested) // 2)
        if n:
            rare = "; ".join(
                f"{names[i]}: {int(counts[i])} training samples, {_pct(acc_c[i])}"
                for i in tested[:n]
            )
            head = np.mean([acc_c[i] for i in tested[-n:]])
            text.append(
                f"The {n} rarest classes ({rare}) compare with a mean of {_pct(head)} "
                f"on the {n} most frequent."
            )
    balanced = s.get("select_metric") == "val_balanced_accuracy"
    metric = "balanced validation accuracy" if balanced else "validation accuracy"
    best = s.get("best_epoch")
    val = _num(s.get("best_val_balanced_accuracy" if balanced else "best_val_accuracy"))
    if best is not None and val is not None:
        text.append(
            f"Choosing the epoch by {metric} picks epoch {best} (validation "
            f"{_pct(val)}), where test accuracy is {_pct(s.get('test_accuracy_at_best_val'))}."
        )
    if _num(s.get("last5_test_accuracy_mean")) is not None:
        text.append(f"The mean over the last 5 epochs is {_pct(s['last5_test_accuracy_mean'])}.")
    ece = _num(_pick(s, m, "ece"))
    if ece is not None:
        text.append(
            f"Expected calibration error is {ece:.3f} (0 means confidences match accuracy)."
        )
    return " ".join(text)


def _metrics_table(s: dict[str, Any], m: dict[str, Any] | None) -> list[str]:
    def pick(key: str, mkey: str | None = None) -> Any:
        return _pick(s, m, key, mkey)

    def secs(x: Any) -> str:
        f = _num(x)
        return "n/a" if f is None else f"{f:.1f} s"

    def plain(x: Any, fmt: str = "{:g}") -> str:
        f = _num(x)
        return "n/a" if f is None else fmt.format(f)

    rows = [
        ("Test accuracy (last epoch)", _pct(pick("test_accuracy", "accuracy"), 2)),
        ("Balanced accuracy", _pct(pick("balanced_accuracy", "balanced_accuracy"), 2)),
        ("Many-shot accuracy", _pct(pick("many_shot_accuracy", "many_shot_accuracy"), 2)),
        ("Medium-shot accuracy", _pct(pick("medium_shot_accuracy", "medium_shot_accuracy"), 2)),
        ("Few-shot accuracy", _pct(pick("few_shot_accuracy", "few_shot_accuracy"), 2)),
        (
            "Best epoch by validation",
            str(s["best_epoch"]) if s.get("best_epoch") is not None else "n/a",
        ),
        ("Validation accuracy at best epoch", _pct(s.get("best_val_accuracy"), 2)),
        (
            "Balanced validation accuracy at best epoch",
            _pct(s.get("best_val_balanced_accuracy"), 2),
        ),
        ("Test accuracy at best-validation epoch", _pct(s.get("test_accuracy_at_best_val"), 2)),
        ("Mean test accuracy, last 5 epochs", _pct(s.get("last5_test_accuracy_mean"), 2)),
        ("Expected calibration error (15 bins)", plain(pick("ece", "ece"), "{:.4f}")),
        ("Test NLL", plain(pick("nll", "nll"), "{:.4f}")),
        (
            "Noise rate requested / realised",
            f"{_pct(_get(s, 'noise.rate'))} / {_pct(_get(s, 'noise.realised_rate'))}",
        ),
        ("Imbalance ratio", plain(s.get("imbalance_ratio"))),
        ("Epochs", plain(s.get("epochs"))),
        ("Training time", secs(s.get("train_seconds"))),
        ("Throughput", plain(s.get("images_per_second"), "{:,.0f} images/s")),
        ("Seed", str(s["seed"]) if s.get("seed") is not None else "n/a"),
    ]
    lines = ["| Metric | Value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return lines


def _thresholds_text(s: dict[str, Any], m: dict[str, Any] | None, counts, groups) -> str:
    t = s.get("shot_thresholds") or (m and m["shot_thresholds"])
    if isinstance(t, (list, tuple)) and len(t) >= 2:
        t = {"many": t[0], "few": t[1], "scale": t[2] if len(t) > 2 else 1.0}
    if not isinstance(t, dict) or _num(t.get("many")) is None:
        return ""
    text = (
        f"Shot groups count the training samples per class (by true class): many-shot "
        f"> {float(t['many']):g}, few-shot < {float(t['few']):g}, medium-shot in between"
    )
    scale = _num(t.get("scale"))
    if scale is not None and scale < 1:
        text += (
            f" (the usual 100 / 20 scaled by {scale:.3g}, because the largest class has only "
            f"{int(round(500 * scale))} samples)"
        )
    text += "."
    if groups is not None:
        n = {g: int(np.sum(np.asarray(groups) == g)) for g in ("many", "medium", "few")}
        text += f" Classes per group: {n['many']} many, {n['medium']} medium, {n['few']} few."
    return text


def write_report(run_dir: Path | str) -> Path:
    """Write the PNG plots and ``report.md`` into ``run_dir``; return the path of report.md."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    s = _read_json(run_dir / "summary.json") or {}
    rows = _read_jsonl(run_dir / "metrics.jsonl")
    pred = _read_npz(run_dir / "predictions.npz")
    corr = _read_npz(run_dir / "corruption.npz")
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else None

    m = counts = groups = None
    names: list[str] = []
    k = None
    if pred is not None and {"y_true", "probs", "train_class_counts"} <= pred.keys():
        counts = np.asarray(pred["train_class_counts"])
        m = classification_metrics(pred["y_true"], pred["probs"], counts)
        groups = m["shot_groups"]
        k = len(counts)
    if k is None and corr is not None and {"true_labels", "noisy_labels"} <= corr.keys():
        k = int(max(corr["true_labels"].max(), corr["noisy_labels"].max())) + 1
    if k is not None:
        given = pred.get("class_names") if pred is not None else None
        given = given if given is not None else s.get("class_names")
        names = [str(c) for c in given] if given is not None and len(given) == k else []
        names = names or [str(i) for i in range(k)]

    dataset = DATASET_NAMES.get(str(s.get("dataset")), s.get("dataset", run_dir.name))
    title = f"{s.get('method', 'Run')} on {dataset}"
    md = [f"# {title}", ""]
    if s or m:
        md += [_summary_paragraph(s, m, names, counts if counts is not None else []), ""]
        md += ["## Metrics", ""] + _metrics_table(s, m) + [""]
        t = _thresholds_text(s, m, counts, groups)
        if t:
            md += [t, ""]
    else:
        md += ["No `summary.json` or `predictions.npz` found: the run may not have finished.", ""]

    if rows:
        best = s.get("best_epoch")
        plot_learning_curves(rows, run_dir / "learning_curves.png", best_epoch=best)
        md += ["## Learning curves", "", "![Learning curves](learning_curves.png)", ""]
    if m is not None:
        thr = m["shot_thresholds"]
        plot_per_class_accuracy(
            m["per_class_accuracy"], counts, names, groups, thr, run_dir / "per_class_accuracy.png"
        )
        cm = _row_normalise(np.asarray(m["confusion_matrix"], dtype=float))
        _plot_heatmap(
            cm,
            names,
            "Test confusion matrix (each row sums to 1)",
            "Predicted class",
            "True class",
            run_dir / "confusion_matrix.png",
        )
        md += ["## Per-class accuracy", "", "![Per-class accuracy](per_class_accuracy.png)", ""]
        md += ["| Class | Training samples | Group | Test accuracy |", "|---|---|---|---|"]
        for i in np.argsort(-counts, kind="stable"):
            acc_i = _pct(m["per_class_accuracy"][i])
            md.append(f"| {names[i]} | {int(counts[i])} | {groups[i]} | {acc_i} |")
        md += ["", "## Confusion matrix", "", "![Confusion matrix](confusion_matrix.png)", ""]
    if corr is not None and k is not None and {"true_labels", "noisy_labels"} <= corr.keys():
        tm = noise_transition(corr, k)
        off = 1 - np.trace(tm) / max(1, np.count_nonzero(tm.sum(axis=1)))
        md += ["## Label noise", ""]
        if off > 0:
            realised = _num(_get(s, "noise.realised_rate"))
            _plot_heatmap(
                tm,
                names,
                "Realised noise transition on the training set"
                + (f" ({_pct(realised)} wrong)" if realised is not None else ""),
                "Given (noisy) label",
                "True label",
                run_dir / "noise_transition.png",
            )
            md += [
                "Row i shows where the training samples of true class i ended up after corruption.",
                "",
                "![Noise transition](noise_transition.png)",
                "",
            ]
        else:
            md += ["No training label was changed.", ""]
    if config is not None:
        md += ["## Configuration", "", "```yaml", config.rstrip(), "```", ""]
    out = run_dir / "report.md"
    out.write_text("\n".join(md))
    return out


# ---------------------------------------------------------------- benchmark tables


def _aggregate(
    rows: Iterable[dict[str, Any]], group_keys: Sequence[str], metric_keys: Sequence[str]
) -> list[tuple[tuple, int, dict[str, tuple[float | None, float | None, int]]]]:
    """Per group (in order of first appearance): key values, run count, and per metric
    (mean, sample std with ddof=1 or None for one value, number of values)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(_get(row, k) for k in group_keys), []).append(row)
    out = []
    for key, members in groups.items():
        stats = {}
        for mk in metric_keys:
            vals = np.array([v for v in (_num(_get(r, mk)) for r in members) if v is not None])
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
        return _get(r, kind_key) in clean_kinds or not _num(_get(r, rate_key))

    kinds = list(dict.fromkeys(str(_get(r, kind_key)) for r in rows if not is_clean(r)))
    if not kinds:
        kinds = ["clean"]
    lines = list(dict.fromkeys(tuple(_get(r, k) for k in line_keys) for r in rows))
    colours = matplotlib.colormaps["tab10"]
    with matplotlib.rc_context(STYLE):
        fig = _figure(max(5.5, 4.8 * len(kinds)), 4.3)
        axes = np.atleast_1d(fig.subplots(1, len(kinds), sharey=True))
        for ax, kind in zip(axes, kinds):
            rates: set[float] = set()
            for li, line in enumerate(lines):
                members = [
                    r
                    for r in rows
                    if tuple(_get(r, k) for k in line_keys) == line
                    and (is_clean(r) or str(_get(r, kind_key)) == kind)
                ]
                by_rate: dict[float, list[float]] = {}
                for r in members:
                    x = 0.0 if is_clean(r) else _num(_get(r, rate_key))
                    v = _num(_get(r, metric))
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
        return _save(fig, path)
