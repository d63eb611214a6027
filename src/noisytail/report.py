"""Plots and the markdown report of a run folder (the tables of a benchmark over many runs are
`noisytail.benchmarks.tables`).

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

Plots use matplotlib's Agg canvas directly (`noisytail.figures`), so this module is safe to import
in notebooks and worker processes.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from noisytail.data.fingerprint import CORRUPTION_FILE
from noisytail.data.types import DataError
from noisytail.errors import short_error
from noisytail.evaluate import (
    ECE_BINS,
    FEW_SHOT,
    MANY_SHOT,
    SHOT_REFERENCE_MAX,
    classification_metrics,
)
from noisytail.figures import (
    finite,
    lookup,
    noise_transition,
    plot_heatmap,
    plot_learning_curves,
    plot_per_class_accuracy,
    row_normalise,
)
from noisytail.runfolder import CONFIG_FILE, METRICS_FILE, read_metrics, write_text
from noisytail.summary import PREDICTIONS_FILE, SUMMARY_FILE, read_summary

#: What `write_report` writes into a run folder.
LEARNING_CURVES = "learning_curves.png"
PER_CLASS = "per_class_accuracy.png"
CONFUSION = "confusion_matrix.png"
TRANSITION = "noise_transition.png"
REPORT_FILE = "report.md"
REPORT_FILES = (REPORT_FILE, LEARNING_CURVES, PER_CLASS, CONFUSION, TRANSITION)


def _dataset_name(name: Any, default: str) -> str:
    """How the report names data source ``name``: the display name the source declares
    (`noisytail.data.source_info`), ``name`` itself for an unknown one, ``default`` for none."""
    from noisytail.data.sources import display_name

    return default if name is None else display_name(str(name))


# ---------------------------------------------------------------- reading the run folder


def _read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of an ``.npz``; object arrays (which need pickle) are skipped; a damaged file
    is a `DataError` naming it."""
    if not path.is_file():
        return None
    out = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                try:
                    out[key] = data[key]
                except ValueError:
                    continue
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: cannot be read ({short_error(err)}).") from None
    return out


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


def _epochs(n: Any) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _last_n(s: dict[str, Any]) -> str:
    """The span of ``last5_test_accuracy_mean``: the last 5 epochs, or all of a shorter run."""
    n = s.get("epochs")
    return _epochs(min(5, int(n))) if isinstance(n, int) else "5 epochs"


def _md_cell(text: str) -> str:
    """``text`` safe inside a markdown table cell (a ``|`` would split it)."""
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _pct(x: Any, digits: int = 1) -> str:
    f = finite(x)
    return "n/a" if f is None else f"{100 * f:.{digits}f} %"


def _rate(x: float) -> str:
    return f"{100 * x:.3g} %"


# ---------------------------------------------------------------- the report


def _noise_phrase(noise: Any, realised: float | None) -> str:
    if not isinstance(noise, dict):
        noise = {}
    kind = noise.get("kind")
    rate = finite(noise.get("rate"))
    if kind in (None, "none", "clean") and noise.get("unverified"):
        return "its labels as given (how many are wrong is not known)"
    if kind in (None, "none", "clean") or not rate:
        if realised:
            return f"label noise at a realised rate of {_rate(realised)}"
        return "clean training labels"
    text = f"{_rate(rate)} {str(kind).replace('_', ' ')} label noise"
    if realised is not None:
        text += f" (realised {_pct(realised)} of training labels wrong)"
    return text


#: A training set whose largest class is at most this many times its smallest reads "balanced".
BALANCED = 1.1


def _validated(s: dict[str, Any]) -> bool:
    """Whether the run chose its best epoch on a validation split (without one, the loop's
    "best" is simply the last epoch)."""
    return s.get("best_epoch") is not None and (
        finite(s.get("best_val_accuracy")) is not None
        or finite(s.get("best_val_balanced_accuracy")) is not None
    )


def _imbalance(s: dict[str, Any], counts: Any) -> str | None:
    """How the summary paragraph describes the training set's class sizes: the realised
    imbalance ratio (the summary's, else max / min of the class counts ``[K]`` the report read,
    over the classes that have samples) and the classes without a training sample; None when
    nothing is known (the ratio the config asked for is not what the data has)."""
    counts = np.asarray(counts if counts is not None else [], dtype=np.float64)
    ratio = finite(s.get("realised_imbalance_ratio"))
    if ratio is None and (counts > 0).any():
        ratio = float(counts.max() / counts[counts > 0].min())
    empty = int(np.sum(counts == 0))
    if ratio is None:
        return None
    text = (
        "balanced classes"
        if ratio <= BALANCED and not empty
        else f"an imbalance ratio of {ratio:.3g} (largest class / smallest)"
    )
    if empty:
        text += f", {empty} of {counts.size} classes having no training sample"
    return text


def _summary_paragraph(s: dict[str, Any], m: dict[str, Any] | None, names, counts) -> str:
    dataset = _dataset_name(s.get("dataset"), "this data set")
    realised = finite(lookup(s, "noise.realised_rate"))
    imb = _imbalance(s, counts)
    method = f"`{s['method']}`" if s.get("method") else "the model"
    if _loss_name(s):
        method += f" with the `{_loss_name(s)}` loss"
    detail = ", ".join(
        p
        for p in (
            f"`{s['model']}`" if s.get("model") else "",
            _epochs(s.get("epochs")) if s.get("epochs") is not None else "",
        )
        if p
    )
    acc = _pick(s, m, "test_accuracy", "accuracy")
    bal = _pick(s, m, "balanced_accuracy")
    text = [
        f"On {dataset} with {_noise_phrase(s.get('noise'), realised)}"
        + (f" and {imb}" if imb else "")
        + f", {method}"
        + (f" ({detail})" if detail else "")
        + f" reached **{_pct(acc)}** test accuracy at the last epoch"
        + f" and a balanced accuracy (mean per-class recall) of **{_pct(bal)}**."
    ]
    a, b = finite(acc), finite(bal)
    if a is not None and b is not None and a - b > 0.02:
        text.append(
            f"Accuracy exceeds balanced accuracy by {100 * (a - b):.1f} points: the frequent "
            "classes carry the headline number."
        )
    shots = [
        f"{g}-shot {_pct(_pick(s, m, f'{g}_shot_accuracy'))}"
        for g in ("many", "medium", "few")
        if finite(_pick(s, m, f"{g}_shot_accuracy")) is not None
    ]
    if shots:
        text.append("By class frequency: " + ", ".join(shots) + ".")
    if m is not None and len(counts) >= 2:
        acc_c = m["per_class_accuracy"]
        tested = [i for i in np.argsort(counts, kind="stable") if acc_c[i] is not None]
        n = min(3, len(tested) // 2)
        if n and counts[tested[n - 1]] < counts[tested[-n]]:  # the two ends differ in size
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
    val = finite(s.get("best_val_balanced_accuracy" if balanced else "best_val_accuracy"))
    if best is not None and val is not None:
        text.append(
            f"Choosing the epoch by {metric} picks epoch {best} (validation "
            f"{_pct(val)}), where test accuracy is {_pct(s.get('test_accuracy_at_best_val'))}."
        )
    if finite(s.get("last5_test_accuracy_mean")) is not None:
        text.append(
            f"The mean over the last {_last_n(s)} is {_pct(s['last5_test_accuracy_mean'])}."
        )
    ece = finite(_pick(s, m, "ece"))
    if ece is not None:
        text.append(
            f"Expected calibration error is {ece:.3f} (0 means confidences match accuracy)."
        )
    return " ".join(text)


def _metrics_table(s: dict[str, Any], m: dict[str, Any] | None) -> list[str]:
    def pick(key: str, mkey: str | None = None) -> Any:
        return _pick(s, m, key, mkey)

    def secs(x: Any) -> str:
        f = finite(x)
        return "n/a" if f is None else f"{f:.1f} s"

    def plain(x: Any, fmt: str = "{:g}") -> str:
        f = finite(x)
        return "n/a" if f is None else fmt.format(f)

    rows = [
        ("Test accuracy (last epoch)", _pct(pick("test_accuracy", "accuracy"), 2)),
        ("Balanced accuracy", _pct(pick("balanced_accuracy", "balanced_accuracy"), 2)),
        ("Many-shot accuracy", _pct(pick("many_shot_accuracy", "many_shot_accuracy"), 2)),
        ("Medium-shot accuracy", _pct(pick("medium_shot_accuracy", "medium_shot_accuracy"), 2)),
        ("Few-shot accuracy", _pct(pick("few_shot_accuracy", "few_shot_accuracy"), 2)),
        (
            "Best epoch by validation",
            str(s["best_epoch"]) if _validated(s) else "n/a (no validation split)",
        ),
        ("Validation accuracy at best epoch", _pct(s.get("best_val_accuracy"), 2)),
        (
            "Balanced validation accuracy at best epoch",
            _pct(s.get("best_val_balanced_accuracy"), 2),
        ),
        (
            "Test accuracy at best-validation epoch",
            _pct(s.get("test_accuracy_at_best_val") if _validated(s) else None, 2),
        ),
        (f"Mean test accuracy, last {_last_n(s)}", _pct(s.get("last5_test_accuracy_mean"), 2)),
        (f"Expected calibration error ({ECE_BINS} bins)", plain(pick("ece", "ece"), "{:.4f}")),
        ("Test NLL", plain(pick("nll", "nll"), "{:.4f}")),
        (
            "Noise rate requested / realised",
            f"{_pct(lookup(s, 'noise.rate'))} / {_pct(lookup(s, 'noise.realised_rate'))}",
        ),
        (
            "Imbalance ratio requested / realised",
            plain(s.get("imbalance_ratio"))
            + f" / {plain(s.get('realised_imbalance_ratio'), '{:.3g}')}",
        ),
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
    if not isinstance(t, dict) or finite(t.get("many")) is None:
        return ""
    by = "by given label" if lookup(s, "noise.unverified") else "by true class"
    text = (
        f"Shot groups count the training samples per class ({by}): many-shot "
        f"> {float(t['many']):g}, few-shot < {float(t['few']):g}, medium-shot in between"
    )
    scale = finite(t.get("scale"))
    if scale is not None and scale < 1:
        text += (
            f" (the usual {MANY_SHOT} / {FEW_SHOT} scaled by {scale:.3g}, because the largest "
            f"class has only {int(round(SHOT_REFERENCE_MAX * scale))} samples)"
        )
    text += "."
    if groups is not None:
        n = {g: int(np.sum(np.asarray(groups) == g)) for g in ("many", "medium", "few")}
        text += f" Classes per group: {n['many']} many, {n['medium']} medium, {n['few']} few."
    return text


def write_report(run_dir: Path | str) -> Path:
    """Write the PNG plots and ``report.md`` into ``run_dir``; return the path of report.md. A
    folder holding none of a run's files (``summary.json``, ``metrics.jsonl``,
    ``predictions.npz``) is refused (`DataError`): nothing of another kind is overwritten."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    if not any((run_dir / f).is_file() for f in (SUMMARY_FILE, METRICS_FILE, PREDICTIONS_FILE)):
        what = "a detection folder" if (run_dir / "detection.json").is_file() else "not a run"
        raise DataError(
            f"{run_dir} holds no {SUMMARY_FILE}, {METRICS_FILE} or {PREDICTIONS_FILE}: {what}, "
            "nothing to report."
        )
    summary = read_summary(run_dir)
    s = summary.to_dict() if summary is not None else {}
    rows = read_metrics(run_dir / METRICS_FILE)
    pred = _read_npz(run_dir / PREDICTIONS_FILE)
    corr = _read_npz(run_dir / CORRUPTION_FILE)
    config_path = run_dir / CONFIG_FILE
    config = (
        config_path.read_text(encoding="utf-8", errors="replace") if config_path.is_file() else None
    )

    m = counts = groups = None
    names: list[str] = []
    k = None
    if pred is not None and {"y_true", "probs", "train_class_counts"} <= pred.keys():
        counts = np.asarray(pred["train_class_counts"])
        m = classification_metrics(pred["y_true"], pred["probs"], counts)
        groups = m["shot_groups"]
        k = len(counts)
    if k is None and corr is not None and {"true_labels", "noisy_labels"} <= corr.keys():
        k = (
            int(corr["num_classes"])
            if "num_classes" in corr
            else int(max(corr["true_labels"].max(), corr["noisy_labels"].max())) + 1
        )
    if k is not None:
        given = pred.get("class_names") if pred is not None else None
        given = given if given is not None else s.get("class_names")
        names = [str(c) for c in given] if given is not None and len(given) == k else []
        names = names or [str(i) for i in range(k)]

    dataset = _dataset_name(s.get("dataset"), run_dir.name)
    title = f"{s.get('method', 'Run')} on {dataset}"
    md = [f"# {title}", ""]
    if s or m:
        md += [_summary_paragraph(s, m, names, counts if counts is not None else []), ""]
        md += ["## Metrics", ""] + _metrics_table(s, m) + [""]
        t = _thresholds_text(s, m, counts, groups)
        if t:
            md += [t, ""]
    else:
        md += [f"No `{SUMMARY_FILE}` or `{PREDICTIONS_FILE}`: the run has not finished.", ""]

    if rows:
        best = s.get("best_epoch") if _validated(s) else None
        plot_learning_curves(rows, run_dir / LEARNING_CURVES, best_epoch=best)
        md += ["## Learning curves", "", f"![Learning curves]({LEARNING_CURVES})", ""]
    if m is not None:
        thr = m["shot_thresholds"]
        plot_per_class_accuracy(
            m["per_class_accuracy"], counts, names, groups, thr, run_dir / PER_CLASS
        )
        cm = row_normalise(np.asarray(m["confusion_matrix"], dtype=float))
        untested = int(np.sum(cm.sum(axis=1) == 0))
        plot_heatmap(
            cm,
            names,
            "Test confusion matrix (each row sums to 1"
            + (f"; {untested} classes not in the test set)" if untested else ")"),
            "Predicted class",
            "True class",
            run_dir / CONFUSION,
        )
        md += ["## Per-class accuracy", "", f"![Per-class accuracy]({PER_CLASS})", ""]
        md += ["| Class | Training samples | Group | Test accuracy |", "|---|---|---|---|"]
        for i in np.argsort(-counts, kind="stable"):
            acc_i = _pct(m["per_class_accuracy"][i])
            md.append(f"| {_md_cell(names[i])} | {int(counts[i])} | {groups[i]} | {acc_i} |")
        md += ["", "## Confusion matrix", "", f"![Confusion matrix]({CONFUSION})", ""]
    if corr is not None and k is not None and {"true_labels", "noisy_labels"} <= corr.keys():
        tm = noise_transition(corr, k)
        off = 1 - np.trace(tm) / max(1, np.count_nonzero(tm.sum(axis=1)))
        md += ["## Label noise", ""]
        if off > 0:
            realised = finite(lookup(s, "noise.realised_rate"))
            plot_heatmap(
                tm,
                names,
                "Realised noise transition on the training set"
                + (f" ({_pct(realised)} wrong)" if realised is not None else ""),
                "Given (noisy) label",
                "True label",
                run_dir / TRANSITION,
            )
            md += [
                "Row i shows where the training samples of true class i ended up after corruption.",
                "",
                f"![Noise transition]({TRANSITION})",
                "",
            ]
        elif lookup(s, "noise.unverified"):
            md += [
                "No synthetic noise was added: the training labels are used as given, and how "
                "many of them are wrong is not known.",
                "",
            ]
        else:
            md += ["No training label was changed.", ""]
    if config is not None:
        md += ["## Configuration", "", "```yaml", config.rstrip(), "```", ""]
    return write_text("\n".join(md), run_dir / REPORT_FILE)
