"""What DivideMix's co-divide put on its labelled side, measured against the true labels.

DivideMix (Li, Socher, Hoi, ICLR 2020, Sec. 3.1) fits a two-component GMM to each network's
per-sample losses and trains the other network on the samples whose clean probability exceeds
``p_threshold`` as labelled data, the rest as unlabelled. L2B's plug-in without clean data
(``l2b_meta=labelled``) uses that labelled side as its meta set. This module reads the split of
a finished run folder (the last epoch's clean probabilities, saved in the checkpoint's method
state, and the corruption saved with the run) and reports, per run:

- ``labelled``: fraction of the training samples on the labelled side (mean over the networks);
- ``noise_in_labelled``: fraction of those whose given label is wrong (1 - precision);
- ``clean_recall``: fraction of the correctly labelled samples that are on the labelled side;
- ``auroc``: the clean probability (mean of the networks) as a score of "label correct";
- ``labelled_per_class``: ``[K]`` labelled samples per *given* class;
- ``test_per_class``: ``[K]`` test recall per class from ``predictions.npz``.

The driver is ``scripts/analyse_dividemix_split.py``; its figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from noisytail.checkpoint_file import read_checkpoint
from noisytail.evaluate import per_class_accuracy
from noisytail.runfolder import checkpoint_path

RUN_NAME = re.compile(r"(?P<setting>[a-z0-9]+)-(?P<variant>.+)-s(?P<seed>\d+)-[0-9a-f]{10}$")


def split_quality(
    prob: np.ndarray, given: np.ndarray, true: np.ndarray, num_classes: int, threshold: float = 0.5
) -> dict[str, Any]:
    """The labelled side ``prob > threshold`` against the truth.

    ``prob``: ``[networks, N]`` or ``[N]`` clean probabilities; ``given``, ``true``: ``[N]`` int
    labels. Fractions are means over the networks (each network's split is one labelled set).
    """
    prob = np.atleast_2d(np.asarray(prob, dtype=float))
    given = np.asarray(given)
    true = np.asarray(true)
    if prob.shape[1] != len(given) or len(given) != len(true):
        raise ValueError(f"prob {prob.shape}, given {given.shape} and true {true.shape} disagree")
    clean = given == true
    labelled = prob > threshold  # [networks, N]
    noise_in = [1.0 - clean[side].mean() if side.any() else float("nan") for side in labelled]
    recall = [side[clean].mean() if clean.any() else float("nan") for side in labelled]
    per_class = np.stack([np.bincount(given[side], minlength=num_classes) for side in labelled])
    both = clean.any() and (~clean).any()
    return {
        "labelled": float(labelled.mean()),
        "noise_in_labelled": float(np.mean(noise_in)),
        "clean_recall": float(np.mean(recall)),
        "auroc": float(roc_auc_score(clean, prob.mean(0))) if both else float("nan"),
        "labelled_per_class": per_class.mean(0),
    }


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """One DivideMix-family run folder: its split quality and per-class test recall.

    Needs ``checkpoints/last.pt`` (method state ``prob``: ``[2, N_train]``), ``corruption.npz``
    (``true_labels``, ``noisy_labels`` over the pool, ``train_idx``) and ``predictions.npz``.
    """
    run_dir = Path(run_dir)
    state = read_checkpoint(checkpoint_path(run_dir), what="dividemix split")
    corruption = np.load(run_dir / "corruption.npz")
    train = corruption["train_idx"]
    k = int(corruption["num_classes"])
    prob = state["extra"]["prob"].double().numpy()
    threshold = float(state["config"]["method"].get("p_threshold", 0.5))
    out = split_quality(
        prob, corruption["noisy_labels"][train], corruption["true_labels"][train], k, threshold
    )
    out["split_epoch"] = int(state["extra"]["split_epoch"])
    pred = np.load(run_dir / "predictions.npz")
    y_true, y_pred = pred["y_true"], pred["probs"].argmax(1)
    out["test_per_class"] = per_class_accuracy(y_true, y_pred, k)
    out["test_accuracy"] = float((y_pred == y_true).mean())
    return out


def read_bench(bench_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished DivideMix-family run of a bench folder (``<out>/runs/<label>-s<seed>-<hash>``
    with a label ``<setting>-<variant>``), one record each with ``setting``, ``variant``,
    ``seed``."""
    rows = []
    for run in sorted(Path(bench_dir, "runs").iterdir()):
        m = RUN_NAME.match(run.name)
        if not m or "dividemix" not in m["variant"] or not (run / "predictions.npz").exists():
            continue
        row = read_run(run)
        row.update(setting=m["setting"], variant=m["variant"], seed=int(m["seed"]))
        rows.append(row)
    return rows
