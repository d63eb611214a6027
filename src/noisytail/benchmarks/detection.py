"""Label-issue detection quality against cleanlab (issue 4): our detectors and cleanlab's
``find_label_issues`` on the same corrupted labels, the same backbone and the same epoch budget.

The driver is ``scripts/bench_detection.py`` (its options map onto `Setting` through
`setting_from_options`).

Needs the ``bench`` extra (``pip install -e '.[bench]'``: cleanlab; faiss-cpu optional). cleanlab is
imported only inside this module's functions, never by the rest of the package.

For every noise setting and seed, the data source (default ``fashion_mnist``) is sub-sampled
(stratified) and corrupted once by our seeded corruption; every detector sees those labels:

- **k-fold out-of-sample probabilities**, computed once (``--folds`` models of the backbone, each
  trained for ``--epochs`` on the other folds, by our ``confident_learning`` detector's own
  fold loop) and shared by
  - ``cleanlab``: ``cleanlab.filter.find_label_issues(labels, pred_probs)`` with its default
    ``filter_by="prune_by_noise_rate"`` (flags) and ``cleanlab.rank.get_label_quality_scores``
    (default ``self_confidence``; suspicion = 1 - quality, for the AUROC);
  - ``cleanlab (filter_by=confident_learning)``: the same with cleanlab's off-diagonal rule;
  - our ``confident_learning`` (``ConfidentLearningDetector.from_probs``), so that the comparison
    isolates the flagging/scoring rule;
- **one model trained on all noisy labels** for ``--epochs`` (the same budget), recording the
  per-epoch losses, shared by our ``knn`` (MOIT's two-pass vote on the model's features, with
  ``selection=agreement``, our default, and ``selection=balanced``, MOIT's), ``small_loss`` and
  ``loss_trajectory`` (both flagged by DivideMix's two-component GMM).

Metrics (``noisytail.detect.metrics``): precision, recall and F1 of the flags, AUROC of the
suspicion score, and wall seconds: "model" is the training the detector needs (the k-fold models
for cleanlab and confident learning, the single model for the others; shared, so not additive
across rows) and "own" the detector's work on top of it. Output: a Markdown table per noise setting
(mean ± sample std over seeds) on stdout and in ``OUT/table.md``, one JSON line per (noise, seed,
detector) in ``OUT/detection.jsonl``, each with the command line.

``--estimate`` times one (noise, seed) unit at 1 epoch and extrapolates the full run's wall time,
at the machine's current load and, rescaled by the measured training throughput against
``--reference-throughput`` (default: BENCHMARKS.md's 3,017 images/s for small_cnn width 16 on
the 2-core CPU machine), on an idle machine.
``--cost`` measures, on the same setting, MOIT's per-epoch detection (embedding the whole training
set, blocked kNN, two-pass vote and selection) against one ERM training epoch of the same model
(medians of 3 repetitions). ``--quick`` is a seconds-long smoke run.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisytail.config import Config, load_config
from noisytail.data.prepare import prepare_data
from noisytail.detect.detectors import (
    ConfidentLearningDetector,
    DetectionTask,
    DetectorOutput,
    KnnDetector,
    LossTrajectoryDetector,
    SmallLossDetector,
)
from noisytail.detect.exporters import json_default
from noisytail.detect.metrics import detection_metrics
from noisytail.detect.scores import per_sample_nll
from noisytail.runtime import setup_runtime

_log = logging.getLogger(__name__)

DETECTOR_ORDER = [
    "cleanlab",
    "cleanlab (filter_by=confident_learning)",
    "confident_learning",
    "knn (selection=agreement)",
    "knn (selection=balanced)",
    "small_loss",
    "loss_trajectory",
]


@dataclass
class Setting:
    """What one benchmark runs; `QUICK` and the defaults below are the two presets."""

    data: str = "fashion_mnist"
    noise: tuple[str, ...] = ("symmetric", "asymmetric")
    rate: float = 0.4
    seeds: tuple[int, ...] = (0, 1, 2)
    train_subset: int | None = 10_000
    epochs: int = 10
    folds: int = 4
    model: str = "small_cnn"
    width: int | None = 16
    batch_size: int = 128
    lr: float = 0.05
    augment: str = "crop_flip"
    device: str = "auto"
    extra: tuple[str, ...] = field(default_factory=tuple)  # further config overrides

    @property
    def units(self) -> int:
        return len(self.noise) * len(self.seeds)

    def describe(self) -> str:
        width = f" width {self.width}" if self.width is not None else ""
        subset = self.train_subset if self.train_subset is not None else "all"
        return (
            f"{self.data}, {subset} training images, {self.model}{width}, {self.epochs} epochs "
            f"(batch {self.batch_size}, lr {self.lr}, cosine, {self.augment}), {self.folds} folds, "
            f"noise {'/'.join(self.noise)} {self.rate:g}, seeds {list(self.seeds)}"
        )


#: Training images/s of small_cnn width 16 on the 2-core CPU machine (BENCHMARKS.md, 2026-11-23).
REFERENCE_THROUGHPUT = 3017

QUICK = {"train_subset": 2000, "epochs": 3, "folds": 2, "seeds": (0,), "width": 8}


def setting_from_options(quick: bool = False, **options: Any) -> Setting:
    """The `Setting` of a command line: the defaults (or `QUICK`) with every option that is not
    None. ``train_subset=0`` is the whole training split; a model other than small_cnn drops the
    preset ``width`` (small_cnn's option) unless one is given."""
    s = replace(Setting(), **QUICK) if quick else Setting()
    given = {k: v for k, v in options.items() if v is not None}
    s = replace(s, **given)
    if given.get("train_subset") == 0:
        s = replace(s, train_subset=None)
    if s.model != "small_cnn" and "width" not in given:
        s = replace(s, width=None)
    return s


def make_config(s: Setting, noise: str, seed: int, *, method: str = "erm") -> Config:
    overrides = [
        f"seed={seed}",
        f"data.name={s.data}",
        "data.val_fraction=0",
        f"data.augment={s.augment}",
        "imbalance.ratio=1",
        f"noise.kind={noise}",
        f"noise.rate={s.rate}",
        f"model.name={s.model}",
        f"method.name={method}",
        f"train.epochs={s.epochs}",
        f"train.batch_size={s.batch_size}",
        f"train.lr={s.lr}",
        "train.weight_decay=0.0005",
        "train.schedule=cosine",
        f"train.device={s.device}",
        "train.progress=false",
    ]
    if s.train_subset is not None:
        overrides.append(f"data.train_subset={s.train_subset}")
    if s.width is not None:
        overrides.append(f"model.options.width={s.width}")
    return load_config(None, overrides + list(s.extra))


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _cleanlab(labels: np.ndarray, probs: np.ndarray, filter_by: str) -> DetectorOutput:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    # n_jobs=1: our rules are single-process numpy too; the flags do not depend on n_jobs.
    flagged = find_label_issues(labels, probs, filter_by=filter_by, n_jobs=1)
    quality = get_label_quality_scores(labels, probs)
    return DetectorOutput(1.0 - quality, flagged, probs.argmax(1))


def run_unit(
    s: Setting, noise: str, seed: int, work_dir: Path, *, log: Callable[[str], None] = _log.info
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """All detectors on one (noise, seed): rows of metrics and the phase timings."""
    cfg = make_config(s, noise, seed)
    (prepared, rt), prep_s = _timed(lambda: (prepare_data(cfg), setup_runtime(cfg)))
    task = DetectionTask(cfg, prepared, rt, work_dir)
    corr = prepared.corruption
    is_noisy = corr.is_noisy()[corr.train_idx]
    labels = task.labels
    k = task.num_classes
    timings: dict[str, float] = {"prepare": prep_s}
    outputs: dict[str, tuple[DetectorOutput, float, float]] = {}  # name -> (out, model, own)

    cl = ConfidentLearningDetector(folds=s.folds)
    probs, kfold_s = _timed(lambda: cl.out_of_sample_probs(task))
    timings["kfold"] = kfold_s
    log(f"  {s.folds}-fold probabilities: {kfold_s:.1f} s")
    for name, filter_by in (
        ("cleanlab", "prune_by_noise_rate"),
        ("cleanlab (filter_by=confident_learning)", "confident_learning"),
    ):
        out, own = _timed(lambda fb=filter_by: _cleanlab(labels, probs, fb))
        outputs[name] = (out, kfold_s, own)
    out, own = _timed(lambda: cl.from_probs(probs, labels, k))
    outputs["confident_learning"] = (out, kfold_s, own)

    # One model on all the noisy labels, the same epochs; the loss recording timed apart.
    run = task.new_run()
    history: list[np.ndarray] = []
    record_s = 0.0

    def record(_: dict[str, Any]) -> None:
        nonlocal record_s
        start = time.perf_counter()
        history.append(per_sample_nll(task.pool_probs(run), labels))
        record_s += time.perf_counter() - start

    _, train_total = _timed(lambda: run.train_epochs(on_epoch=record, evaluate=False))
    train_s = train_total - record_s
    task.use_run(run, np.stack(history))
    timings.update(train=train_s, record=record_s)
    log(f"  full model: {train_s:.1f} s training + {record_s:.1f} s loss recording")
    for name, det, model_s in (
        ("knn (selection=agreement)", KnnDetector(selection="agreement"), train_s),
        ("knn (selection=balanced)", KnnDetector(selection="balanced"), train_s),
        ("small_loss", SmallLossDetector(), train_s),
        ("loss_trajectory", LossTrajectoryDetector(), train_s + record_s),
    ):
        out, own = _timed(lambda d=det: d.detect(task))
        outputs[name] = (out, model_s, own)

    rows = []
    true = corr.true_labels[corr.train_idx]
    oos_acc = float((probs.argmax(1) == true).mean())  # against the true labels
    for name in DETECTOR_ORDER:
        out, model_s, own = outputs[name]
        m = detection_metrics(is_noisy, out.flagged, out.suspicion)
        rows.append(
            {
                "noise": noise,
                "rate": s.rate,
                "seed": seed,
                "detector": name,
                **{
                    key: m[key]
                    for key in (
                        "precision",
                        "recall",
                        "f1",
                        "auroc",
                        "average_precision",
                        "n",
                        "n_noisy",
                        "n_flagged",
                        "flagged_fraction",
                        "noise_rate",
                    )
                },
                "model_seconds": model_s,
                "own_seconds": own,
                "seconds": model_s + own,
                "out_of_sample_true_accuracy": oos_acc,
                "info": out.info,
            }
        )
    timings["detectors"] = sum(own for _, _, own in outputs.values())
    timings["n"] = len(labels)
    return rows, timings


def run_benchmark(
    s: Setting,
    out_dir: str | Path | None = None,
    *,
    command: str | None = None,
    log: Callable[[str], None] = _log.info,
) -> list[dict[str, Any]]:
    """Every (noise, seed) unit of ``s``; rows (see `run_unit`) also appended to
    ``out_dir/detection.jsonl`` as they come, with ``command``."""
    out = Path(out_dir) if out_dir is not None else None
    jsonl = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        jsonl = out / "detection.jsonl"
        jsonl.write_text("")
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    done = 0
    with tempfile.TemporaryDirectory() as tmp:
        for noise in s.noise:
            for seed in s.seeds:
                log(f"[{done + 1}/{s.units}] {noise} {s.rate:g}, seed {seed}")
                unit_rows, _ = run_unit(s, noise, seed, Path(tmp), log=log)
                for row in unit_rows:
                    row["setting"] = asdict(s)
                    row["command"] = command
                rows.extend(unit_rows)
                if jsonl is not None:
                    with open(jsonl, "a") as f:
                        for row in unit_rows:
                            f.write(json.dumps(row, default=json_default) + "\n")
                done += 1
                elapsed = time.perf_counter() - start
                log(
                    f"  done in {elapsed / 60:.1f} min so far; projected total "
                    f"{elapsed / done * s.units / 60:.1f} min"
                )
    return rows


def _mean_std(values: list[float], fmt: str = "{:.3f}") -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return fmt.format(vals[0])
    return f"{fmt.format(statistics.fmean(vals))} ± {fmt.format(statistics.stdev(vals))}"


def summarise(rows: list[dict[str, Any]]) -> str:
    """One Markdown table per noise setting: mean ± sample std over seeds."""
    lines = []
    noises = list(dict.fromkeys((r["noise"], r["rate"]) for r in rows))
    for noise, rate in noises:
        sub = [r for r in rows if r["noise"] == noise and r["rate"] == rate]
        seeds = sorted({r["seed"] for r in sub})
        names = [d for d in DETECTOR_ORDER if any(r["detector"] == d for r in sub)]
        lines += [
            f"**{noise} {100 * rate:g} %** (seeds {seeds}; realised noise rate "
            f"{_mean_std([r['noise_rate'] for r in sub if r['detector'] == sub[0]['detector']])}"
            f", k-fold out-of-sample accuracy on the true labels "
            f"{_mean_std([r['out_of_sample_true_accuracy'] for r in sub][:: len(names)])})",
            "",
            "| detector | precision | recall | F1 | AUROC | flagged | seconds: model | own |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in names:
            rs = [r for r in sub if r["detector"] == name]

            def col(key: str, fmt: str = "{:.3f}", rs: list = rs) -> str:
                return _mean_std([r[key] for r in rs], fmt)

            lines.append(
                f"| {name} | {col('precision')} | {col('recall')} | {col('f1')} | "
                f"{col('auroc')} | {col('flagged_fraction', '{:.2f}')} | "
                f"{col('model_seconds', '{:.1f}')} | {col('own_seconds', '{:.2f}')} |"
            )
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ time estimate


def estimate(
    s: Setting,
    *,
    reference_throughput: float | None = None,
    log: Callable[[str], None] = _log.info,
) -> dict[str, float]:
    """Times one unit at 1 epoch and extrapolates to ``s``: the training phases (k-fold models
    with their predictions, the full model, the loss recording) scale with the epochs, data
    preparation and the detectors' own work do not. Counting the fold predictions once per
    epoch makes it a slight over-estimate. With ``reference_throughput`` (training images/s of
    the model on an idle machine, e.g. from scripts/bench_throughput.py), the wall time is also
    rescaled by the measured training throughput, for a machine shared with other work."""
    one = replace(s, epochs=1, seeds=s.seeds[:1], noise=s.noise[:1])
    with tempfile.TemporaryDirectory() as tmp:
        _, t = run_unit(one, one.noise[0], one.seeds[0], Path(tmp), log=log)
    per_epoch = t["kfold"] + t["train"] + t["record"]
    unit = s.epochs * per_epoch + t["prepare"] + t["detectors"]
    result = {**{f"{k}_1epoch_s": v for k, v in t.items() if k != "n"}, "unit_s": unit}
    result["total_s"] = unit * s.units
    n = t["n"]
    # image passes with gradient per epoch: the folds train on (folds - 1) / folds of the pool each
    result["train_images_per_epoch"] = n * (s.folds - 1) + n
    result["train_images_per_s"] = result["train_images_per_epoch"] / (t["kfold"] + t["train"])
    # On a busy machine every phase is slowed alike: rescale by the idle machine's throughput.
    if reference_throughput:
        slowdown = reference_throughput / result["train_images_per_s"]
        result["idle_total_s"] = result["total_s"] / slowdown
    return result


# ------------------------------------------------------------------------------ --cost


def cost(s: Setting, *, reps: int = 3, log: Callable[[str], None] = _log.info) -> dict[str, Any]:
    """MOIT's per-epoch detection (embed the whole training set with MOIT's 128-d projection,
    blocked kNN, two-pass vote, balanced selection: ``MoitMethod.detect``) against one ERM
    training epoch of the same backbone; medians of ``reps`` repetitions after one warm-up."""
    from noisytail.train import Run

    noise, seed = s.noise[0], s.seeds[0]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config(replace(s, epochs=reps + 1), noise, seed)  # a warm-up and reps
        prepared = prepare_data(cfg)
        erm = Run(cfg, Path(tmp), setup_runtime(cfg), prepared)
        epoch_times = [r["seconds"] for r in erm.train_epochs(evaluate=False)[1:]]
        mcfg = make_config(s, noise, seed, method="moit")
        moit = Run(mcfg, Path(tmp), setup_runtime(mcfg), prepared)
        method = moit.method
        feat_times, knn_times = [], []
        for rep in range(reps + 1):
            feats, tf = _timed(lambda: moit.ctx.predict_train(method.embed).cpu())
            _, tk = _timed(lambda f=feats: method.detect(f, 1))
            if rep > 0:
                feat_times.append(tf)
                knn_times.append(tk)
    det = [a + b for a, b in zip(feat_times, knn_times)]
    res = {
        "n": len(prepared.train_idx),
        "k": int(method.k),
        "feature_dim": int(feats.shape[1]),
        "erm_epoch_s": statistics.median(epoch_times),
        "features_s": statistics.median(feat_times),
        "knn_vote_s": statistics.median(knn_times),
        "detection_s": statistics.median(det),
    }
    res["ratio"] = res["detection_s"] / res["erm_epoch_s"]
    return res


def cost_table(s: Setting, c: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"MOIT detection per epoch vs one ERM epoch: {s.data}, {c['n']} training images, "
            f"{s.model}" + (f" width {s.width}" if s.width is not None else "") + f", "
            f"k={c['k']}, {c['feature_dim']}-d embedding, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; medians of 3",
            "",
            "| ERM epoch (s) | MOIT detection (s) | of which features | of which kNN + vote "
            "| ratio |",
            "|---|---|---|---|---|",
            f"| {c['erm_epoch_s']:.2f} | {c['detection_s']:.2f} | {c['features_s']:.2f} | "
            f"{c['knn_vote_s']:.2f} | {c['ratio']:.2f} |",
        ]
    )
