"""MOIT's balanced selection under asymmetric noise: the lower median (``torch.median``, the
official rule, now `noisytail.neighbors.lower_median`) against the average of the two middle
counts rounded down (the rule noisytail used before issue 13).

The driver is ``scripts/bench_moit_median.py`` (flags ``--rate``, ``--per-class``,
``--train-subset``, ``--epochs``: the parameters of the same names below).

Parts:
- ``blobs``: well-separated synthetic clusters, 10 classes x ``per_class`` (5,000, CIFAR-10's
  size) in 64 dimensions, noisy labels from the CIFAR-10 semantic map (9->1, 2->0, 4->7, 3<->5),
  each sample of a source class flipped with probability ``rate`` (MOIT's convention), k = 250.
  Under this map 5 classes lose samples and 5 do not, so the two middle agreement counts are far
  apart and the two rules differ the most.
- ``fmnist``: Fashion-MNIST, a stratified subset of ``train_subset`` images with its semantic
  map (T-shirt<->Shirt, Pullover<->Coat, Sandal->Sneaker) at ``rate``; features of a small CNN
  (width 16) trained with CE on the noisy labels for ``epochs`` epochs (crop + flip, SGD lr
  0.05, cosine), k = the default (5 % of the median class).

Both rules see the same neighbours and votes (one `moit_vote` per setting). Reported for the
clean set MOIT keeps: its size, how many noisy samples it holds, its precision (fraction truly
clean) and recall (fraction of the truly clean samples kept); and the precision / recall of the
flags as noise detection (`table`: mean +- std over seeds).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisytail.config import load_config
from noisytail.data.noise import CIFAR10_ASYMMETRIC_MAP, apply_transition_matrix, asymmetric_matrix
from noisytail.data.prepare import prepare_data
from noisytail.detect.metrics import detection_metrics
from noisytail.neighbors import balanced_selection, default_k, knn_cosine, moit_vote
from noisytail.runtime import setup_runtime
from noisytail.train import Run


def old_rule_selection(
    agreement: np.ndarray, score: np.ndarray, labels: np.ndarray, num_classes: int
) -> np.ndarray:
    """The pre-issue-13 rule: ``m = floor(np.median(counts))`` (the average of the two middle
    counts for an even number of classes), else the same per-class selection."""
    counts = np.bincount(labels, minlength=num_classes)
    agreeing = np.bincount(labels[agreement], minlength=num_classes)
    present = counts > 0
    m = int(np.floor(np.median(agreeing[present])))
    clean = np.zeros(len(labels), dtype=bool)
    for c in np.flatnonzero(present):
        members = np.flatnonzero(labels == c)
        clean[members[np.argsort(score[members], kind="stable")][:m]] = True
    return clean


def compare(
    features: torch.Tensor, true: np.ndarray, noisy: np.ndarray, k: int, num_classes: int
) -> list[dict[str, Any]]:
    _, neighbors = knn_cosine(features, k, backend="torch")
    vote = moit_vote(neighbors, noisy, num_classes)
    agree, d2 = vote.agreement.numpy(), vote.d2.numpy().astype(np.float64)
    is_noisy = noisy != true
    counts = np.bincount(noisy[agree], minlength=num_classes)
    rows = []
    for rule, clean in (
        (
            "average of the middle two, floored (before)",
            old_rule_selection(agree, d2, noisy, num_classes),
        ),
        ("lower median, torch.median (after)", balanced_selection(agree, d2, noisy, num_classes)),
    ):
        m = detection_metrics(is_noisy, ~clean)
        rows.append(
            {
                "rule": rule,
                "k": k,
                "agreeing_per_class": counts.tolist(),
                "clean_kept": int(clean.sum()),
                "noisy_in_clean": int((clean & is_noisy).sum()),
                "clean_precision": m["clean_precision"],
                "clean_recall": m["clean_recall"],
                "flag_precision": m["precision"],
                "flag_recall": m["recall"],
                "realised_noise": float(is_noisy.mean()),
            }
        )
    return rows


def blobs(seed: int, *, rate: float, per_class: int) -> list[dict[str, Any]]:
    """Both rules on well-separated synthetic clusters (10 classes x ``per_class``, 64-d, k = 250)
    with CIFAR-10's semantic noise map at ``rate``."""
    rng = np.random.default_rng(seed)
    k_cls, dim = 10, 64
    true = np.repeat(np.arange(k_cls), per_class)
    centres = np.eye(k_cls, dim) * 4.0
    x = centres[true] + rng.normal(size=(len(true), dim))
    matrix = asymmetric_matrix(k_cls, rate, CIFAR10_ASYMMETRIC_MAP)
    noisy = apply_transition_matrix(true, matrix, rng)
    return compare(torch.tensor(x, dtype=torch.float32), true, noisy, 250, k_cls)


def fmnist(
    seed: int, *, rate: float, train_subset: int, epochs: int, threads: int, work_dir: Path
) -> list[dict[str, Any]]:
    """Both rules on the features of a small CNN trained with CE on ``train_subset``
    Fashion-MNIST images with their semantic noise map at ``rate``; k = `default_k`."""
    cfg = load_config(
        None,
        [
            f"seed={seed}",
            "data.name=fashion_mnist",
            f"data.train_subset={train_subset}",
            "data.test_subset=1000",
            "data.val_fraction=0",
            "data.augment=crop_flip",
            "noise.kind=asymmetric",
            f"noise.rate={rate}",
            "model.name=small_cnn",
            "model.options.width=16",
            "method.name=erm",
            f"train.epochs={epochs}",
            "train.lr=0.05",
            "train.schedule=cosine",
            "train.batch_size=128",
            "train.device=cpu",
            "train.progress=false",
            f"train.num_threads={threads}",
        ],
    )
    prepared = prepare_data(cfg)
    run = Run(cfg, work_dir, setup_runtime(cfg), prepared)
    run.train_epochs(evaluate=False)  # in memory: no run folder is written
    feats = run.ctx.predict_train(lambda x: run.method.model.features(x).flatten(1)).float()
    corr = prepared.corruption
    true = corr.true_labels[corr.train_idx]
    noisy = prepared.train_labels
    nc = prepared.bundle.num_classes
    return compare(feats, true, noisy, default_k(np.bincount(noisy, minlength=nc)), nc)


METRICS = ("clean_precision", "clean_recall", "flag_precision", "flag_recall")


def _cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    v = [x * scale for x in values]
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{statistics.mean(v):.{digits}f} ± {statistics.stdev(v):.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| data | rule | clean kept | noisy in clean set | clean precision | clean recall "
        "| flag precision | flag recall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["part"], r["rule"]) for r in rows}, key=lambda t: (t[0], "after" in t[1]))
    for part, rule in keys:
        g = [r for r in rows if r["part"] == part and r["rule"] == rule]
        cells = [
            _cell([r["clean_kept"] for r in g], 1, 0),
            _cell([r["noisy_in_clean"] for r in g], 1, 0),
            *(_cell([r[key] for r in g]) for key in METRICS),
        ]
        lines.append(f"| {part} | {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
