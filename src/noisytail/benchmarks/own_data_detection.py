"""Label issues in a user's own data (issue 10): ``noisytail detect`` with nothing but the data's
path, against cleanlab on the same files. The driver is ``scripts/bench_own_data.py``.

**Data sets**: `noisytail.benchmarks.own_data_sets` (`DATASETS`, `HELD_OUT`, `clean_data`).

**Noise**: the labels written into the folders / the CSV's ``label`` column are corrupted
class-conditionally by a random noise matrix of cleanlab's ``generate_noise_matrix_from_trace``
with trace ``K * (1 - level)`` (expected noise rate ``level``, `LEVELS`), one matrix and draw
per seed.

**Methods** (`METHODS`), each scored on every row:

- ``default``: ``noisytail detect`` through its library call with only the data's path (the
  settings chosen by `noisytail.defaults`), timed end to end (reading the files included);
- ``knn``, ``linear``, ``ensemble+cl``, ``ensemble+argmax``: the default detector's fast parts
  (with its flag rule, pruning by noise rate) and their stacked mixture under the two other
  flag rules, on the same inputs (`noisytail.detect.crossfit`: images pooled as the default
  pools them, table columns standardised as the CSV source does), to choose the default by
  measurement (on tables the default also stacks a third part, the network's probabilities
  that ``cleanlab+cnn`` uses: the mixture rows are then not the default's);
- ``fast``: the two fast parts stacked, flagged by the default's rule: the default on images,
  and on tables the default without its network part (``--arg network=never``), the default
  of the 2026-12-02 tables;
- ``cleanlab+lr``: ``cleanlab.filter.find_label_issues`` (its default ``prune_by_noise_rate``)
  on 5-fold ``cross_val_predict`` probabilities of a scikit-learn ``StandardScaler`` +
  ``LogisticRegression(max_iter=1000)`` on the inputs (pixels / columns); AUROC from
  ``cleanlab.rank.get_label_quality_scores`` (self-confidence);
- ``cleanlab+cnn``: the same on 5-fold out-of-sample probabilities of our network (the model and
  epochs `noisytail.defaults` chooses for the data: ``small_cnn`` for images, ``mlp`` for
  tables), trained by the ``confident_learning`` detector's fold loop: our CNN at the budget a
  user gets.

Metrics: F1 of the flags and AUROC of the suspicion against the true flips; wall seconds
(measured on a shared, loaded machine; ``threads`` caps PyTorch's and BLAS's threads for every
method alike). One JSON line per (data set, level, seed, method) in
``OUT/results.jsonl``; a finished line is never recomputed (resumable). Needs cleanlab.
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .own_data_sets import ALL_DATASETS, DATASETS, clean_data

_log = logging.getLogger(__name__)

LEVELS = (0.2, 0.4)
SEEDS = (0, 1, 2)
METHODS = (
    "default",
    "knn",
    "linear",
    "ensemble+cl",
    "ensemble+argmax",
    "fast",
    "cleanlab+lr",
    "cleanlab+cnn",
)
PARTS = ("knn", "linear", "ensemble+cl", "ensemble+argmax", "fast")
FOLDS = 5


def noisy_labels(y: np.ndarray, level: float, seed: int) -> np.ndarray:
    """Class-conditional noise from cleanlab's random noise matrix of trace ``K (1 - level)``."""
    from cleanlab.benchmarking.noise_generation import (
        generate_noise_matrix_from_trace,
        generate_noisy_labels,
    )

    k = int(y.max()) + 1
    py = np.bincount(y, minlength=k) / len(y)
    m = generate_noise_matrix_from_trace(
        k, k * (1 - level), py=py, valid_noise_matrix=True, seed=seed
    )
    np.random.seed(seed)  # generate_noisy_labels draws from numpy's global generator
    return np.asarray(generate_noisy_labels(y, m), dtype=np.int64)


def write_data(folder: Path, x: np.ndarray, labels: np.ndarray) -> tuple[list[str], Path]:
    """Images as ``folder/images/class_<label>/<i>.png`` (returns their paths in row order) or a
    table as ``folder/table.csv`` (``f0..``, ``label``); returns ``(paths, data path)``."""
    from PIL import Image

    if x.ndim == 3:
        root = folder / "images"
        paths = []
        for i, (img, c) in enumerate(zip(x, labels)):
            path = root / f"class_{c:02d}" / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path)
            paths.append(str(path))
        return paths, root
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "table.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"f{j}" for j in range(x.shape[1])] + ["label"])
        for row, c in zip(x, labels):
            w.writerow([f"{v:.6g}" for v in row] + [int(c)])
    return [], path


def overrides_for(data_path: Path) -> list[str]:
    """What a user types: the folder, or the CSV (``data.name=csv`` is then inferred)."""
    if data_path.is_dir():
        return ["data.name=image_folder", f"data.root={data_path}"]
    return [f"data.options.train_csv={data_path}"]


def user_config(data_path: Path, detector: str | None = None) -> Any:
    """The config ``noisytail detect [--detector DETECTOR]`` builds from the path alone (the
    model and epochs chosen from the data when the detector trains a network there)."""
    from noisytail.config import load_config
    from noisytail.defaults import apply_defaults
    from noisytail.detect import task

    overrides = overrides_for(data_path) + ["train.progress=false"]
    training = task.detector_trains_network(detector, None)
    share, scope = task.detector_fold_share(detector, None), task.whole_data_config
    cfg = load_config(None, overrides)
    return apply_defaults(
        cfg, None, overrides, lambda _: None, training=training, fold_share=share, scope=scope
    )


def run_default(data_path: Path, paths: list[str], out: Path) -> dict[str, Any]:
    """``noisytail detect`` with nothing but the path: suspicion and flags in row order."""
    from noisytail.detect.task import detect_label_issues

    start = time.perf_counter()
    detect_label_issues(user_config(data_path), out)
    seconds = time.perf_counter() - start
    with open(out / "label_issues.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    where = {p: i for i, p in enumerate(paths)}
    at = [where[r["path"]] if paths else int(r["row"]) for r in rows]
    score, flags = np.zeros(len(rows)), np.zeros(len(rows), dtype=bool)
    score[at] = [float(r["score"]) for r in rows]
    flags[at] = [r["flagged"] == "1" for r in rows]
    return {"suspicion": score, "flagged": flags, "seconds": seconds}


def cleanlab_verdict(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    flags = find_label_issues(labels, probs)
    return {"suspicion": 1 - get_label_quality_scores(labels, probs), "flagged": flags}


def run_cleanlab_lr(x: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    flat = x.reshape(len(x), -1).astype(np.float64)
    probs = cross_val_predict(model, flat, labels, cv=cv, method="predict_proba")
    return {**cleanlab_verdict(labels, probs), "seconds": time.perf_counter() - start}


def run_cleanlab_cnn(data_path: Path, paths: list[str], work: Path) -> dict[str, Any]:
    """cleanlab on the k-fold probabilities of our network (the user's defaults)."""
    from noisytail.config import validate
    from noisytail.data.prepare import prepare_data
    from noisytail.detect.base import DetectionTask
    from noisytail.detect.detectors import ConfidentLearningDetector
    from noisytail.detect.task import whole_data_config
    from noisytail.train import setup_runtime

    start = time.perf_counter()
    cfg = whole_data_config(user_config(data_path, detector="confident_learning"))
    validate(cfg)
    prepared = prepare_data(cfg)
    task = DetectionTask(cfg, prepared, setup_runtime(cfg), work)
    probs = ConfidentLearningDetector(folds=FOLDS).out_of_sample_probs(task)
    if paths:  # pool order is the source's (sorted paths): back to row order
        where = {p: i for i, p in enumerate(paths)}
        at = np.array([where[p] for p in prepared.bundle.train.paths])
        ordered = np.empty_like(probs)
        ordered[at] = probs
        probs = ordered
    labels = np.empty(len(probs), dtype=np.int64)
    labels[at if paths else np.arange(len(probs))] = task.labels
    return {**cleanlab_verdict(labels, probs), "seconds": time.perf_counter() - start}


def run_parts(x: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, Any]]:
    """The default detector's parts and its other flag rule, on the same inputs."""
    from noisytail.detect import crossfit as cf
    from noisytail.detect.scores import verdict_from_probs

    if x.ndim == 2:  # the CSV source standardises the feature columns
        sd = x.std(0)
        x = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
    feats = cf.input_features(x[:, None] if x.ndim == 3 else x)
    k = int(labels.max()) + 1
    out = {}
    for name, model, flag in [
        ("knn", "knn", "noise_rate"),
        ("linear", "linear", "noise_rate"),
        ("ensemble+cl", "ensemble", "confident_learning"),
        ("ensemble+argmax", "ensemble", "argmax"),
        ("fast", "ensemble", "noise_rate"),
    ]:
        start = time.perf_counter()
        probs = cf.fast_probs(feats, labels, k, model=model, folds=FOLDS)
        suspicion, _, flagged, _ = verdict_from_probs(probs, labels, flag=flag)
        out[name] = {
            "suspicion": suspicion,
            "flagged": flagged,
            "seconds": time.perf_counter() - start,
        }
    return out


def score(truth: np.ndarray, verdict: dict[str, Any]) -> dict[str, Any]:
    from noisytail.detect.metrics import detection_metrics

    m = detection_metrics(truth, verdict["flagged"], verdict["suspicion"])
    keys = ("f1", "auroc", "precision", "recall", "n_flagged")
    return {**{k: m[k] for k in keys}, "seconds": round(float(verdict["seconds"]), 2)}


def done_keys(results: Path) -> set[tuple]:
    if not results.exists():
        return set()
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {(r["data"], r["level"], r["seed"], r["method"]) for r in rows}


def run_benchmark(
    out: Path,
    *,
    datasets: tuple[str, ...] = DATASETS,
    levels: tuple[float, ...] = LEVELS,
    seeds: tuple[int, ...] = SEEDS,
    methods: tuple[str, ...] = METHODS,
    threads: int | None = None,
    log: Callable[[str], None] = _log.info,
) -> Path:
    """Every (data set, level, seed, method) not yet in ``out/results.jsonl``; returns it.
    ``threads``: PyTorch's and the BLAS libraries' thread count for the whole run."""
    if threads is not None:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(threads)
        threadpool_limits(threads)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    for name in datasets:
        x, y = clean_data(name)
        for level in levels:
            for seed in seeds:
                todo = [m for m in methods if (name, level, seed, m) not in done_keys(results)]
                if not todo:
                    continue
                s = noisy_labels(y, level, seed)
                unit = out / "work" / f"{name}-{level}-{seed}"
                paths, data_path = write_data(unit / "data", x, s)
                parts = run_parts(x, s) if set(PARTS) & set(todo) else {}
                for method in todo:
                    if method == "default":
                        verdict = run_default(data_path, paths, unit / "detect")
                    elif method == "cleanlab+lr":
                        verdict = run_cleanlab_lr(x, s, seed)
                    elif method == "cleanlab+cnn":
                        verdict = run_cleanlab_cnn(data_path, paths, unit / "cnn")
                    else:
                        verdict = parts[method]
                    row = {
                        "data": name,
                        "level": level,
                        "seed": seed,
                        "method": method,
                        "n": len(s),
                        "noise_rate": float((s != y).mean()),
                        **score(s != y, verdict),
                    }
                    with open(results, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    log(json.dumps(row))
    return results


def _ms(values: list[float], fmt: str) -> str:
    if len(values) < 2:
        return fmt.format(values[0]) if values else "-"
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def table(results: Path) -> str:
    """Markdown: per data set and level, each method's F1, AUROC and seconds (mean ± sample std
    over seeds) and how many seeds ran."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    lines = [
        "| data | noise: level (measured) | method | F1 | AUROC | seconds | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ALL_DATASETS:
        for level in LEVELS:
            for method in METHODS:
                rs = [
                    r for r in rows if (r["data"], r["level"], r["method"]) == (name, level, method)
                ]
                if not rs:
                    continue
                rate = statistics.mean(r["noise_rate"] for r in rs)
                lines.append(
                    f"| {name} (n={rs[0]['n']}) | {level} ({rate:.2f}) | {method} | "
                    f"{_ms([r['f1'] for r in rs], '{:.3f}')} | "
                    f"{_ms([r['auroc'] for r in rs], '{:.3f}')} | "
                    f"{_ms([r['seconds'] for r in rs], '{:.1f}')} | {len(rs)} |"
                )
    return "\n".join(lines)


def summary(results: Path, reference: str = "cleanlab+cnn", other: str = "cleanlab+lr") -> str:
    """Markdown, one row per data set and level: the default's mean F1 / AUROC beside both
    references', mean seconds, the seeds where the default beats ``reference`` (paired by
    seed) and whether its means beat both references on both metrics (the issue's goal)."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    out = [
        f"| data | level (measured) | default F1 / AUROC | {other} | {reference} | default s | "
        f"{other} s | {reference} s | seeds beating {reference} (F1, AUROC) | beats both |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ALL_DATASETS:
        for level in LEVELS:
            by = {
                m: sorted(
                    (r for r in rows if (r["data"], r["level"], r["method"]) == (name, level, m)),
                    key=lambda r: r["seed"],
                )
                for m in ("default", other, reference)
            }
            if not all(by.values()):
                continue
            mean = {m: {k: statistics.mean(r[k] for r in rs) for k in ("f1", "auroc", "seconds")}
                    for m, rs in by.items()}  # fmt: skip
            wins = [
                sum(a[k] > b[k] for a, b in zip(by["default"], by[reference]))
                for k in ("f1", "auroc")
            ]
            both = all(
                mean["default"][k] > max(mean[other][k], mean[reference][k])
                for k in ("f1", "auroc")
            )
            rate = statistics.mean(r["noise_rate"] for r in by["default"])
            cells = [
                f"{mean[m]['f1']:.3f} / {mean[m]['auroc']:.4f}"
                for m in ("default", other, reference)
            ]
            secs = [f"{mean[m]['seconds']:.1f}" for m in ("default", other, reference)]
            n, verdict = len(by["default"]), "yes" if both else "**no**"
            head = f"| {name} (n={by['default'][0]['n']}) | {level} ({rate:.2f}) | "
            tail = f"{wins[0]}/{n}, {wins[1]}/{n} | {verdict} |"
            out.append(head + " | ".join(cells + secs) + " | " + tail)
    return "\n".join(out)
