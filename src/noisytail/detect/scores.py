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
- Prune by noise rate (the same paper, Sec. 3.2, "PBNR"; cleanlab's default
  ``find_label_issues``): the confident joint calibrated to the given labels' counts (Sec. 3.1)
  estimates how many samples labelled ``i`` truly belong to ``j``; of the samples labelled ``i``,
  that many with the largest margin ``p_j - p_i`` are flagged, then any whose most probable class
  is the given one is kept (`noise_rate_flags`).
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
    """For each sample, its confident class ``[N]`` as cleanlab counts it: the one class with
    ``p_j >= t_j`` (less 1e-6), or the argmax of ``p`` when several pass; ``-1`` when none does.
    (The paper's Eq. 1 takes the largest passing ``p_j``; the two differ when the argmax class
    is below its threshold and two others pass.)"""
    p, y = _np(probs, np.float64), _np(labels, np.int64)
    _check(p, y)
    t = class_thresholds(p, y, p.shape[1]) if thresholds is None else _np(thresholds, np.float64)
    passes = p >= t[None, :] - 1e-6
    n_pass = passes.sum(axis=1)
    guess = np.where(n_pass > 1, p.argmax(axis=1), passes.argmax(axis=1))
    return np.where(n_pass > 0, guess, -1)


def disagrees(probs: Any, labels: Any) -> np.ndarray:
    """``[N]`` bool: the most probable class is not the given label, a tie going to the label
    (cleanlab adds 1e-6 to the label's probability before its argmax)."""
    p, y = _np(probs, np.float64), _np(labels, np.int64)
    bonus = p.copy()
    bonus[np.arange(len(y)), y] += 1e-6
    return bonus.argmax(axis=1) != y


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
        flagged &= disagrees(p, y)
    return flagged, guess


def round_keeping_sum(values: Any) -> np.ndarray:
    """``values [K]`` rounded to integers whose sum is the rounded sum of ``values``: the
    entries whose rounding moved them furthest the wrong way are stepped by one."""
    v = _np(values, np.float64)
    ints = np.round(v)
    target = np.round(v.sum())
    while abs(ints.sum() - target) > 1e-6:
        step = 1.0 if target > ints.sum() else -1.0
        n = min(int(abs(target - ints.sum())), len(v))
        ints[np.argsort(v - ints)[:: -1 if step > 0 else 1][:n]] += step
    return ints.astype(np.int64)


def calibrated_confident_joint(probs: Any, labels: Any) -> np.ndarray:
    """The confident joint ``[K, K]`` (rows: given label) calibrated as Northcutt et al. 2021,
    Sec. 3.1: each row scaled to its label's count, the whole to ``N``, rounded keeping each row's
    total. As cleanlab counts it: a sample confident of several classes counts for its argmax,
    and each diagonal entry is at least 1 before the calibration."""
    p, y = _np(probs, np.float64), _np(labels, np.int64)
    _check(p, y)
    k = p.shape[1]
    guess = confident_classes(p, y)
    keep = guess >= 0
    guess = np.maximum(guess, 0)
    joint = np.zeros((k, k), dtype=np.int64, order="F")  # laid out as cleanlab's
    np.add.at(joint, (y, guess), keep.astype(np.int64))  # unconfident samples add 0
    np.fill_diagonal(joint, np.maximum(joint.diagonal(), 1))
    counts = np.bincount(y, minlength=k)
    # cleanlab's order of operations (on the transpose), so that exact ties in the rounding
    # fall the same way
    scaled = (joint.T / np.maximum(joint.sum(axis=1), 1e-300) * counts).T
    scaled = scaled / max(np.sum(scaled), 1e-300) * counts.sum()
    return np.stack([round_keeping_sum(row) for row in scaled])


def noise_rate_flags(probs: Any, labels: Any) -> np.ndarray:
    """Label issues by pruning by noise rate (module docstring) ``[N]`` bool.

    ``n[i, j]`` (`calibrated_confident_joint`, each class keeping at least one sample as
    cleanlab does) samples labelled ``i`` with the largest ``p_j - p_i`` are flagged for each
    ``j != i``; a sample whose argmax is its label (ties to the label) is never flagged, nor
    a sample of a class with a single member."""
    p, y = _np(probs, np.float64), _np(labels, np.int64)
    k = p.shape[1]
    prune = calibrated_confident_joint(p, y).T.astype(np.float64)  # [true j, given i]
    diag = prune.diagonal().copy()
    raised = np.maximum(diag, 1.0)
    nonzero = np.maximum(np.count_nonzero(prune, axis=0) - 1.0, 1.0)
    prune = np.clip(prune - (raised - diag) / nonzero, 0.0, None)
    np.fill_diagonal(prune, raised)
    prune = np.floor(prune)  # cleanlab truncates these counts
    flagged = np.zeros(len(y), dtype=bool)
    for i in range(k):
        members = np.flatnonzero(y == i)
        if len(members) <= 1:
            continue
        for j in range(k):
            n = int(prune[j, i])
            if j != i and n > 0:
                margin = p[members, j] - p[members, i]
                flagged[members[np.argsort(-margin, kind="stable")[:n]]] = True
    return flagged & disagrees(p, y)


# ------------------------------------------------------------------------------ ranking, verdict

#: Flag rules of `verdict_from_probs`.
FLAG_RULES = ("noise_rate", "confident_learning", "argmax")


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
    margin``; ``flag``: ``"noise_rate"`` (`noise_rate_flags`), ``"confident_learning"``
    (`confident_learning_flags`, with the argmax disagreeing) or ``"argmax"`` (the most probable
    class is not the given one). ``suggested`` is the confident class of a sample that confident
    learning flags, else the argmax.
    """
    if flag not in FLAG_RULES:
        raise ValueError(f"flag must be one of {FLAG_RULES}, got {flag!r}")
    p, y = _np(probs, np.float64), _np(labels, np.int64)
    _check(p, y)
    cl_flags, guess = confident_learning_flags(p, y)
    argmax = p.argmax(axis=1)
    if flag == "noise_rate":
        flagged = noise_rate_flags(p, y)
    else:
        flagged = cl_flags if flag == "confident_learning" else argmax != y
    suggested = np.where(cl_flags, guess, argmax)
    return 1.0 - self_confidence(p, y), 1.0 - normalized_margin(p, y), flagged, suggested
