"""Evaluation metrics on plain arrays: accuracy, balanced and per-class accuracy,
many/medium/few-shot accuracy, expected calibration error, confusion matrix, NLL.

Every function takes numpy arrays (CPU torch tensors are accepted too) and returns plain Python
values, so results go straight into ``summary.json``. Accuracies are fractions in [0, 1].

Shot groups follow the long-tail convention of Liu et al. 2019 (OLTR, ImageNet-LT): a class is
*many-shot* with more than 100 training samples, *few-shot* with fewer than 20, *medium-shot*
otherwise. Those numbers assume a largest class of at least 500 samples; on smaller data sets both
thresholds are multiplied by ``n_max / 500`` (see `shot_thresholds`). Groups are always computed
from the counts of the labels the model was trained on, never from the test set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MANY_SHOT = 100
FEW_SHOT = 20
SHOT_REFERENCE_MAX = 500
#: Equal-width confidence bins of `expected_calibration_error` (Guo et al. 2017 use 15).
ECE_BINS = 15


def _np(x: Any) -> np.ndarray:
    """A numpy view of an array-like or a (possibly GPU) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _labels(y: Any, num_classes: int | None = None) -> np.ndarray:
    y = _np(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    y = y.astype(np.int64)
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    return y


def _probs(probs: Any, n: int) -> np.ndarray:
    p = _np(probs).astype(np.float64)
    if p.ndim != 2 or p.shape[0] != n:
        raise ValueError(f"probs must have shape [N={n}, K], got {p.shape}")
    return p


def shot_thresholds(train_class_counts: Any) -> tuple[float, float, float]:
    """Many/few-shot thresholds for training counts ``[K]``.

    Returns ``(many_threshold, few_threshold, scale)``: a class is many-shot if its count is
    ``> many_threshold`` and few-shot if ``< few_threshold``. ``scale`` is 1 when the largest class
    has at least 500 samples (thresholds 100 and 20), else ``n_max / 500``, so that a data set with
    at most 180 samples per class gets thresholds 36 and 7.2.
    """
    counts = _np(train_class_counts).astype(np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"train_class_counts must be a non-empty 1-D array, got {counts.shape}")
    n_max = float(counts.max())
    if n_max <= 0:
        raise ValueError("train_class_counts are all zero: no training samples")
    scale = 1.0 if n_max >= SHOT_REFERENCE_MAX else n_max / SHOT_REFERENCE_MAX
    return MANY_SHOT * scale, FEW_SHOT * scale, scale


def shot_groups(train_class_counts: Any, many_threshold: float, few_threshold: float) -> np.ndarray:
    """Group of each class, ``[K]`` array of ``"many"``, ``"medium"`` or ``"few"``."""
    counts = _np(train_class_counts).astype(np.float64)
    if few_threshold > many_threshold:
        raise ValueError(f"few_threshold {few_threshold} exceeds many_threshold {many_threshold}")
    groups = np.full(counts.shape, "medium", dtype=object)
    groups[counts > many_threshold] = "many"
    groups[counts < few_threshold] = "few"
    return groups.astype(str)


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """``[K, K]`` int64 counts; row = true class, column = predicted class."""
    t = _labels(y_true, num_classes)
    p = _labels(y_pred, num_classes)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in length")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def expected_calibration_error(probs: Any, y_true: Any, n_bins: int = ECE_BINS) -> float:
    """ECE of Guo et al. 2017 with ``n_bins`` equal-width confidence bins.

    ``probs [N, K]``, ``y_true [N]``. Confidence is the top probability; bin b holds confidences
    in ``(b/n_bins, (b+1)/n_bins]`` (zero goes to the first bin). ECE is the sample-weighted mean
    of ``|accuracy - mean confidence|`` over non-empty bins.
    """
    y = _labels(y_true)
    p = _probs(probs, len(y))
    if len(y) == 0:
        return 0.0
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.bincount(bins, weights=correct - conf, minlength=n_bins)  # sum(acc - conf) per bin
    return float(np.abs(gap[count > 0]).sum() / len(y))


def negative_log_likelihood(probs: Any, y_true: Any, eps: float = 1e-12) -> float:
    """Mean ``-log p[y]`` over ``probs [N, K]``; probabilities are clipped at ``eps``."""
    y = _labels(y_true)
    p = _probs(probs, len(y))
    if len(y) == 0:
        return 0.0
    return float(-np.log(np.clip(p[np.arange(len(y)), y], eps, None)).mean())


def per_class_accuracy(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Recall of each class, ``[K]`` float; NaN where a class has no test sample."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def _mean_or_none(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def epoch_metrics(
    test_labels: Any,
    test_probs: Any,
    train_class_counts: Any,
    val_labels: Any = None,
    val_probs: Any = None,
) -> dict[str, float]:
    """The metrics of one epoch's record in ``metrics.jsonl``.

    ``test_accuracy`` and ``test_balanced_accuracy`` of ``test_probs [N_test, K]`` against the
    true ``test_labels [N_test]``; with ``val_probs [N_val, K]``, ``val_accuracy`` and
    ``val_balanced_accuracy`` (mean recall over the classes present) against ``val_labels
    [N_val]``, which are the noisy labels (the loop never sees the true ones).
    """
    out: dict[str, float] = {}
    if val_probs is not None:
        val_labels, pred = _np(val_labels), _np(val_probs).argmax(1)
        out["val_accuracy"] = float((pred == val_labels).mean())
        recall = per_class_accuracy(val_labels, pred, _np(val_probs).shape[1])
        out["val_balanced_accuracy"] = float(np.nanmean(recall))
    test_labels = _np(test_labels)
    out["test_accuracy"] = float((_np(test_probs).argmax(1) == test_labels).mean())
    metrics = classification_metrics(test_labels, test_probs, train_class_counts)
    out["test_balanced_accuracy"] = metrics["balanced_accuracy"]
    return out


def classification_metrics(y_true: Any, probs: Any, train_class_counts: Any) -> dict[str, Any]:
    """All test metrics of one model, as a JSON-serialisable dict.

    ``y_true [N]`` true test labels, ``probs [N, K]`` predicted probabilities,
    ``train_class_counts [K]`` training samples per class (of the labels trained on).

    Keys: ``accuracy``; ``balanced_accuracy`` (mean recall over classes present in the test set,
    as sklearn's ``balanced_accuracy_score``); ``per_class_accuracy`` (list, None for classes
    absent from the test set); ``many_shot_accuracy``, ``medium_shot_accuracy``,
    ``few_shot_accuracy`` (mean per-class accuracy within the group, None if the group has no
    tested class); ``shot_thresholds`` ({many, few, scale}); ``shot_groups`` (list);
    ``ece``; ``nll``; ``confusion_matrix`` (list of lists, rows = true); ``num_test``.
    """
    y = _labels(y_true)
    p = _probs(probs, len(y))
    counts = _np(train_class_counts)
    k = p.shape[1]
    if counts.shape != (k,):
        raise ValueError(f"train_class_counts has shape {counts.shape}, expected ({k},)")
    y = _labels(y, k)
    pred = p.argmax(axis=1)
    cm = confusion_matrix(y, pred, k)
    acc_c = per_class_accuracy(y, pred, k)
    many_t, few_t, scale = shot_thresholds(counts)
    groups = shot_groups(counts, many_t, few_t)
    out: dict[str, Any] = {
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "balanced_accuracy": _mean_or_none(acc_c),
        "per_class_accuracy": [None if np.isnan(a) else float(a) for a in acc_c],
    }
    for g in ("many", "medium", "few"):
        out[f"{g}_shot_accuracy"] = _mean_or_none(acc_c[groups == g])
    out["shot_thresholds"] = {"many": many_t, "few": few_t, "scale": scale}
    out["shot_groups"] = groups.tolist()
    out["ece"] = expected_calibration_error(p, y)
    out["nll"] = negative_log_likelihood(p, y)
    out["confusion_matrix"] = cm.tolist()
    out["num_test"] = len(y)
    return out
