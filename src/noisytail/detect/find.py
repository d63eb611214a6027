"""``noisytail.find_label_issues``: label issues from arrays, in the shape cleanlab users know.

- ``pred_probs`` only: the verdict comes from those out-of-sample probabilities.
- ``features`` only: the fast parts of ``noisytail detect``'s default detector (``auto``):
  a leave-one-out similarity-weighted kNN vote and a cross-fitted logistic regression on the
  features, mixed by held-out likelihood (`noisytail.detect.crossfit.fast_probs`; on a CSV,
  ``detect`` also stacks a cross-fitted network, which arrays alone do not define).
- both: the mean of the kNN vote on ``features`` and the given ``pred_probs``.

Suspicion is ``1 - p_y`` of those probabilities, ties broken by the normalized margin, then by
position; flags by pruning by noise rate, as cleanlab's ``find_label_issues`` does
(`noisytail.detect.scores.verdict_from_probs`). The rule
and the measurements behind it are in BENCHMARKS.md ("Label issues in your own data").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.checks import check_present_fold_sizes
from . import crossfit as cf
from . import scores as sc

#: How far a row of ``pred_probs`` may sum from 1 (float32 softmax outputs pass).
PROBS_ATOL = 1e-3


@dataclass
class LabelIssues:
    """The verdict on ``N`` samples; every array is ``[N]`` in the input order except ``ranked``
    and ``probs``."""

    ranked: np.ndarray  # [N] indices, most suspect first
    scores: np.ndarray  # [N] suspicion in [0, 1]: higher = more likely mislabelled
    flagged: np.ndarray  # [N] bool
    suggested: np.ndarray  # [N] the label the detector would give
    probs: np.ndarray  # [N, K] the out-of-sample probabilities the verdict comes from
    signals: tuple[str, ...]  # what was combined: "knn", "linear", "pred_probs"

    @property
    def issues(self) -> np.ndarray:
        """Indices of the flagged samples, most suspect first."""
        return self.ranked[self.flagged[self.ranked]]

    @property
    def label_quality(self) -> np.ndarray:
        """``1 - scores`` ``[N]`` (cleanlab's convention: higher = more likely correct)."""
        return 1.0 - self.scores


def _array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a numpy array or torch tensor: {e}") from e
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{name} must hold numbers, got dtype {a.dtype}.")
    return a


def check_labels(labels: Any) -> np.ndarray:
    """``labels`` as int64 ``[N]``: 1-D, integer dtype, >= 0, at least two classes."""
    if not isinstance(labels, torch.Tensor):
        labels = np.asarray(labels)  # once: `_array` takes it as it is
        if labels.dtype.kind in "USO":
            raise ValueError(  # as cleanlab: pred_probs' columns follow the encoded classes
                "labels must be integers 0..K-1, got class names: encode them first, e.g. with "
                "sklearn.preprocessing.LabelEncoder, whose classes_ order pred_probs' columns."
            )
    y = _array(labels, "labels")
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D [N], got shape {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"labels must be integers 0..K-1, got dtype {y.dtype} (encode class names first, "
            "e.g. with sklearn.preprocessing.LabelEncoder)."
        )
    if len(y) < 2:
        raise ValueError(f"labels must hold at least 2 samples, got {len(y)}.")
    if y.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(y.min())}.")
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"labels hold a single class ({int(y[0])}): label issues need at least 2 classes."
        )
    return y.astype(np.int64)


def check_pred_probs(pred_probs: Any, n: int, num_labels: int) -> np.ndarray:
    """``pred_probs`` as float64 ``[N, K]``: finite, non-negative, rows summing to 1, ``K``
    above every label."""
    p = _array(pred_probs, "pred_probs")
    if p.ndim != 2:
        raise ValueError(f"pred_probs must be 2-D [N, K], got shape {p.shape}.")
    if p.shape[0] != n:
        raise ValueError(f"pred_probs has {p.shape[0]} rows, expected one per label ({n}).")
    if p.shape[1] < num_labels:
        raise ValueError(
            f"pred_probs has {p.shape[1]} columns, but the labels go up to {num_labels - 1}: "
            f"expected at least {num_labels} columns (one per class)."
        )
    p = p.astype(np.float64)
    if not np.isfinite(p).all():
        row = int(np.flatnonzero(~np.isfinite(p).all(axis=1))[0])
        raise ValueError(f"pred_probs holds NaN or infinite values (first in row {row}).")
    if (p < 0).any():
        raise ValueError("pred_probs holds negative values: expected probabilities in [0, 1].")
    sums = p.sum(axis=1)
    bad = np.abs(sums - 1.0) > PROBS_ATOL
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"pred_probs row {row} sums to {sums[row]:.6g}, expected 1 (rows must be "
            "probabilities, e.g. a softmax, not logits)."
        )
    return p


def check_features(features: Any, n: int) -> np.ndarray:
    """``features`` as float32 ``[N, D]`` (``[N, ...]`` flattened; images ``[N, C, H, W]``
    area-pooled as in `crossfit.input_features`): finite numbers, one row per label."""
    x = _array(features, "features")
    if x.ndim < 2:
        raise ValueError(f"features must be [N, D] (or [N, C, H, W] images), got {x.shape}.")
    if x.shape[0] != n:
        raise ValueError(f"features has {x.shape[0]} rows, expected one per label ({n}).")
    if x.size == 0:
        raise ValueError(f"features has no columns: shape {x.shape}.")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x.reshape(n, -1)).all(axis=1))[0])
        raise ValueError(f"features hold NaN or infinite values (first in row {row}).")
    return cf.input_features(x.astype(np.float32)).numpy()


def find_label_issues(
    labels: Any,
    *,
    pred_probs: Any = None,
    features: Any = None,
    k: int | None = None,
    folds: int = cf.DEFAULT_FOLDS,
    flag: str = "noise_rate",
    seed: int = 0,
) -> tuple[np.ndarray, LabelIssues]:
    """Rank ``labels [N]`` (ints ``0..K-1``) most likely wrong first (module docstring).

    ``pred_probs [N, K]``: out-of-sample class probabilities (e.g. from cross-validation);
    ``features [N, D]`` or images ``[N, C, H, W]``: inputs or embeddings. numpy or torch. ``k``:
    neighbours of the kNN vote (default `noisytail.neighbors.default_k`); ``folds``: cross-fitting
    folds of the linear model; ``flag``: ``"noise_rate"``, ``"confident_learning"`` or
    ``"argmax"`` (`noisytail.detect.scores.verdict_from_probs`). The defaults
    are ``noisytail detect``'s. Returns ``(ranked indices [N], LabelIssues)``; bad input raises
    `ValueError` naming what is wrong and what was expected.
    """
    if pred_probs is None and features is None:
        raise ValueError("find_label_issues needs pred_probs, features, or both.")
    y = check_labels(labels)
    n = len(y)
    if flag not in sc.FLAG_RULES:
        raise ValueError(f"flag must be one of {sc.FLAG_RULES}, got {flag!r}.")
    if k is not None and not 1 <= k < n:
        raise ValueError(f"k must lie in [1, {n - 1}] (the other samples), got {k}.")
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}.")
    p = None if pred_probs is None else check_pred_probs(pred_probs, n, int(y.max()) + 1)
    num_classes = p.shape[1] if p is not None else int(y.max()) + 1
    parts: list[np.ndarray] = []
    signals: list[str] = []
    if features is not None:
        x = check_features(features, n)
        if p is None:
            check_present_fold_sizes(y, folds, fix="pass fewer folds, or pred_probs")
            parts.append(
                cf.fast_probs(x, y, num_classes, model="ensemble", k=k, folds=folds, seed=seed)
            )
            signals += ["knn", "linear"]
        else:
            parts.append(cf.knn_probs(x, y, num_classes, k=k))
            signals.append("knn")
    if p is not None:
        parts.append(p)
        signals.append("pred_probs")
    probs = np.mean(parts, axis=0)
    suspicion, tiebreak, flagged, suggested = sc.verdict_from_probs(probs, y, flag=flag)
    ranked = sc.ranking(suspicion, tiebreak)
    return ranked, LabelIssues(ranked, suspicion, flagged, suggested, probs, tuple(signals))
