"""How well a detector finds mislabelled training samples, measured against the true flags.

``is_noisy [N]`` is the truth (given label != true label), ``flagged [N]`` the detector's
decision, ``suspicion [N]`` an optional score where higher means more likely mislabelled. The
detector's *clean mask* is ``~flagged``; MOIT reports precision and recall of that mask, so they
are given too.

Empty denominators: precision with nothing flagged is 1 (no false alarm was raised), recall with
nothing noisy is 1 (nothing was missed), and F1 is 0 when precision + recall is 0. So a detector
that flags nothing scores P = 1, R = 0, F1 = 0 on noisy data and P = R = F1 = 1 on clean data.
The same rule applies to the clean-mask precision and recall.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def _bool(x: Any, name: str, n: int | None = None) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if n is not None and len(a) != n:
        raise ValueError(f"{name} has {len(a)} entries, expected {n}")
    return a.astype(bool)


def _ratio(num: int, den: int) -> float:
    return float(num / den) if den > 0 else 1.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def detection_metrics(is_noisy: Any, flagged: Any, suspicion: Any = None) -> dict[str, Any]:
    """Detection quality of ``flagged [N]`` (and ``suspicion [N]``) against ``is_noisy [N]``.

    Keys: ``precision``, ``recall``, ``f1`` and ``accuracy`` of the flags; ``clean_precision``
    and ``clean_recall`` of the clean mask ``~flagged``; ``auroc`` and ``average_precision`` of
    ``suspicion`` (None without a score or when all samples are noisy or all clean);
    ``n``, ``n_noisy``, ``n_flagged``, ``true_positives``, ``flagged_fraction``, ``noise_rate``.
    """
    truth = _bool(is_noisy, "is_noisy")
    n = len(truth)
    flags = _bool(flagged, "flagged", n)
    tp = int((truth & flags).sum())
    n_noisy, n_flagged = int(truth.sum()), int(flags.sum())
    n_clean, n_kept = n - n_noisy, n - n_flagged
    tn = int((~truth & ~flags).sum())
    precision, recall = _ratio(tp, n_flagged), _ratio(tp, n_noisy)
    out: dict[str, Any] = {
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "accuracy": float((truth == flags).mean()) if n else 1.0,
        "clean_precision": _ratio(tn, n_kept),
        "clean_recall": _ratio(tn, n_clean),
        "auroc": None,
        "average_precision": None,
        "n": n,
        "n_noisy": n_noisy,
        "n_flagged": n_flagged,
        "true_positives": tp,
        "flagged_fraction": float(n_flagged / n) if n else 0.0,
        "noise_rate": float(n_noisy / n) if n else 0.0,
    }
    if suspicion is not None:
        if hasattr(suspicion, "detach"):
            suspicion = suspicion.detach().cpu().numpy()
        score = np.asarray(suspicion, dtype=np.float64)
        if score.shape != (n,):
            raise ValueError(f"suspicion has shape {score.shape}, expected ({n},)")
        if not np.isfinite(score).all():
            raise ValueError("suspicion contains NaN or infinite values")
        if 0 < n_noisy < n:
            out["auroc"] = float(roc_auc_score(truth, score))
            out["average_precision"] = float(average_precision_score(truth, score))
    return out


def per_class_detection(
    is_noisy: Any, flagged: Any, labels: Any, num_classes: int
) -> list[dict[str, int]]:
    """Counts per *given* (noisy) label class, one dict per class ``0..K-1``.

    ``labels [N]`` are the labels the detector saw. Each dict has ``class``, ``n``, ``n_noisy``,
    ``n_flagged`` and ``true_positives`` (flagged and truly noisy).
    """
    truth = _bool(is_noisy, "is_noisy")
    n = len(truth)
    flags = _bool(flagged, "flagged", n)
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels).astype(np.int64)
    if y.shape != (n,):
        raise ValueError(f"labels has shape {y.shape}, expected ({n},)")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(y[mask], minlength=num_classes)

    total, noisy, flag, tp = (
        count(np.ones(n, bool)),
        count(truth),
        count(flags),
        count(truth & flags),
    )
    return [
        {
            "class": c,
            "n": int(total[c]),
            "n_noisy": int(noisy[c]),
            "n_flagged": int(flag[c]),
            "true_positives": int(tp[c]),
        }
        for c in range(num_classes)
    ]
