"""Per-sample label-quality scores and flagging rules, as pure functions on arrays.

Conventions: ``labels [N]`` are the given (possibly wrong) labels, ``probs [N, K]`` predicted
probabilities (out-of-sample for the confident-learning rules), ``logits [N, K]`` raw model
outputs. *Quality* scores are higher for likely-clean samples; *suspicion* is higher for likely
mislabelled ones.

- Small loss: the per-sample cross-entropy under a model (Arazo et al. 2019; DivideMix).
- Loss trajectory: the mean loss of each sample over training epochs (``history [E, N]``).
- Confident learning (Northcutt, Jiang & Chuang, JAIR 2021, arXiv 1911.00068): per-class
  thresholds ``t_j`` = mean of ``p_j`` over the samples labelled ``j``; a sample is *confidently*
  of class ``j`` when ``p_j >= t_j`` (the largest such ``p_j`` when several pass). The confident
  joint counts (given label, confident class); its off-diagonal holds the label issues. Ranking by
  self-confidence ``p_y`` or the normalized margin ``(p_y - max_{j != y} p_j + 1) / 2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _np(x: Any, dtype: Any = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _check(probs: np.ndarray, labels: np.ndarray) -> None:
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(
            f"probs must be [N, K] and labels [N], got {probs.shape} and {labels.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]})")


# ---------------------------------------------------------------------------- loss-based scores


def per_sample_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``CE(logits_i, y_i)`` for every sample ``[N]`` (the small-loss suspicion)."""
    labels = torch.as_tensor(labels, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), labels, reduction="none")


def per_sample_nll(probs: Any, labels: Any, *, eps: float = 1e-12) -> np.ndarray:
    """``-log p_i[y_i]`` ``[N]`` from probabilities (the small-loss suspicion)."""
    p, y = _np(probs, np.float64), _np(labels, np.int64)
    _check(p, y)
    return -np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0))


def loss_trajectory(history: Any, *, start: int = 0) -> np.ndarray:
    """Mean per-sample loss over epochs ``start..E-1`` of ``history [E, N]`` (suspicion)."""
    h = _np(history, np.float64)
    if h.ndim != 2 or h.shape[0] == 0:
        raise ValueError(f"history must be [E, N] with E >= 1, got shape {h.shape}")
    if not 0 <= start < h.shape[0]:
        raise ValueError(f"start must lie in [0, {h.shape[0]}), got {start}")
    return h[start:].mean(axis=0)


def two_component_flags(
    suspicion: Any, *, threshold: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """DivideMix's rule: a two-component 1-D Gaussian mixture on the min-max normalised scores.

    Returns ``(flagged [N] bool, p_high [N])`` where ``p_high`` is the posterior of the
    component with the larger mean and a sample is flagged when ``p_high > threshold``.
    """
    from sklearn.mixture import GaussianMixture

    s = _np(suspicion, np.float64).reshape(-1)
    if len(s) < 2 or np.ptp(s) == 0:
        return np.zeros(len(s), dtype=bool), np.zeros(len(s))
    x = ((s - s.min()) / np.ptp(s))[:, None]
    gmm = GaussianMixture(2, max_iter=20, tol=1e-2, reg_covar=5e-4, random_state=seed).fit(x)
    high = int(np.argmax(gmm.means_.reshape(-1)))
    p_high = gmm.predict_proba(x)[:, high]
    return p_high > threshold, p_high


# ------------------------------------------------------------------- confident-learning scores


def self_confidence(probs: Any, labels: Any) -> np.ndarray:
    """``p_i[y_i]`` ``[N]`` (label quality: higher = more likely clean)."""
    p, y = _np(probs, np.float64), _np(labels, np.int64)
    _check(p, y)
    return p[np.arange(len(y)), y]


def normalized_margin(probs: Any, labels: Any) -> np.ndarray:
    """``(p_y - max_{j != y} p_j + 1) / 2`` in [0, 1] (label quality, higher = cleaner)."""
    p, y = _np(probs, np.float64), _np(labels, np.int64)
    _check(p, y)
    rows = np.arange(len(y))
    own = p[rows, y]
    others = p.copy()
    others[rows, y] = -np.inf
    return (own - others.max(axis=1) + 1.0) / 2.0


def class_thresholds(probs: Any, labels: Any, num_classes: int | None = None) -> np.ndarray:
    """``t_j`` = mean of ``p_j`` over the samples labelled ``j`` ``[K]`` (``inf`` for a class
    with no samples, so that no sample is confidently of it)."""
    p, y = _np(probs, np.float64), _np(labels, np.int64)
    _check(p, y)
    k = p.shape[1] if num_classes is None else num_classes
    counts = np.bincount(y, minlength=k)
    sums = np.zeros(k)
    np.add.at(sums, y, p[np.arange(len(y)), y])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def confident_classes(probs: Any, labels: Any, thresholds: Any = None) -> np.ndarray:
    """For each sample, the class ``j`` with ``p_j >= t_j`` and the largest ``p_j``; ``-1`` when
    no class passes its threshold ``[N]``."""
    p, y = _np(probs, np.float64), _np(labels, np.int64)
    _check(p, y)
    t = class_thresholds(p, y) if thresholds is None else _np(thresholds, np.float64)
    passes = p >= t[None, :] - 1e-12
    masked = np.where(passes, p, -np.inf)
    guess = masked.argmax(axis=1)
    return np.where(passes.any(axis=1), guess, -1)


def confident_joint(probs: Any, labels: Any, num_classes: int | None = None) -> np.ndarray:
    """Counts ``C[i, j]`` of samples labelled ``i`` that are confidently of class ``j``."""
    p, y = _np(probs, np.float64), _np(labels, np.int64)
    k = p.shape[1] if num_classes is None else num_classes
    guess = confident_classes(p, y, class_thresholds(p, y, k))
    keep = guess >= 0
    joint = np.zeros((k, k), dtype=np.int64)
    np.add.at(joint, (y[keep], guess[keep]), 1)
    return joint


def confident_learning_flags(
    probs: Any, labels: Any, *, require_disagreement: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Label issues by confident learning: the off-diagonal of the confident joint.

    A sample is flagged when it is confidently of a class other than its label and, with
    ``require_disagreement`` (as cleanlab does), the model's argmax also differs from the label.
    Returns ``(flagged [N] bool, confident class [N], -1 where none)``.
    """
    p, y = _np(probs, np.float64), _np(labels, np.int64)
    guess = confident_classes(p, y)
    flagged = (guess >= 0) & (guess != y)
    if require_disagreement:
        flagged &= p.argmax(axis=1) != y
    return flagged, guess


# ------------------------------------------------------------------------------ ranking, verdict

#: Flag rules of `verdict_from_probs`.
FLAG_RULES = ("confident_learning", "argmax")


def ranking(suspicion: Any, tiebreak: Any = None) -> np.ndarray:
    """Positions ``[N]`` most suspect first: by ``suspicion`` (descending), then ``tiebreak``
    (descending, optional), then position."""
    s = _np(suspicion, np.float64)
    keys = [np.arange(len(s))]
    if tiebreak is not None:
        keys.append(-_np(tiebreak, np.float64))
    keys.append(-s)
    return np.lexsort(keys)


def verdict_from_probs(
    probs: Any, labels: Any, *, flag: str = "confident_learning"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From out-of-sample ``probs [N, K]`` and given ``labels [N]``: ``(suspicion, tiebreak,
    flagged, suggested)``, each ``[N]``.

    ``suspicion = 1 - p_y`` (one minus the self-confidence), ``tiebreak = 1 - normalized
    margin``; ``flag``: ``"confident_learning"`` (`confident_learning_flags`, with the argmax
    disagreeing) or ``"argmax"`` (the most probable class is not the given one). ``suggested``
    is the confident class of a flagged sample, else the argmax.
    """
    if flag not in FLAG_RULES:
        raise ValueError(f"flag must be one of {FLAG_RULES}, got {flag!r}")
    p, y = _np(probs, np.float64), _np(labels, np.int64)
    _check(p, y)
    cl_flags, guess = confident_learning_flags(p, y)
    argmax = p.argmax(axis=1)
    flagged = cl_flags if flag == "confident_learning" else argmax != y
    suggested = np.where(cl_flags, guess, argmax)
    return 1.0 - self_confidence(p, y), 1.0 - normalized_margin(p, y), flagged, suggested
