"""Out-of-sample class probabilities without deep training, as pure functions on arrays.

Each sample is scored by a model that did not see it:

- `knn_probs`: a similarity-weighted vote of the ``k`` nearest *other* samples (leave-one-out:
  the sample's own index is excluded), each neighbour adding ``exp((s - 1) / t)`` for its
  cosine similarity ``s`` (Wu et al. 2018, arXiv 1805.01978, eq. 5; `noisytail.neighbors`),
  normalised over the classes. The weights are continuous, so distinct inputs get distinct
  scores where an unweighted vote takes only ``k + 1`` values.
- `linear_probs`: a multinomial logistic regression (scikit-learn) on the standardised inputs,
  cross-fitted over ``folds`` stratified folds (`stratified_folds`): the samples of fold ``f``
  are scored by the model trained on the other folds.
- `input_features`: the inputs a data source gives, flattened into ``[N, D]`` float features,
  images first area-pooled to at most ``max_side`` pixels a side.

Inputs are centred on their column means before the cosine kNN (raw pixels are all positive,
so uncentred cosines crowd near 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import seeds
from ..neighbors import default_k, weighted_knn_scores

#: Default number of cross-fitting folds (cleanlab's and scikit-learn's default too).
DEFAULT_FOLDS = 5
#: Temperature of the similarity weights (Wu et al. 2018; MoCo's kNN monitor).
KNN_TEMPERATURE = 0.1
#: Images are area-pooled to at most this many pixels a side before the fast path.
MAX_SIDE = 32


def _as_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold id ``[N]`` in ``0..folds-1``: each class's members, shuffled, dealt round-robin
    (a class of ``n_c`` samples lands in ``min(n_c, folds)`` folds)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, seeds.DETECTION_FOLDS]))
    labels = _as_numpy(labels, np.int64)
    fold = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return fold


def input_features(x: Any, *, max_side: int = MAX_SIDE) -> torch.Tensor:
    """``x [N, C, H, W]`` images (any dtype) or ``[N, D]`` features as float32 ``[N, D']``;
    images larger than ``max_side`` a side are area-pooled to fit (aspect ratio kept)."""
    t = torch.as_tensor(x).float()
    if t.dim() == 4:
        h, w = t.shape[-2:]
        scale = max(h, w) / max_side
        if scale > 1:
            size = (max(1, round(h / scale)), max(1, round(w / scale)))
            t = F.adaptive_avg_pool2d(t, size)
    return t.reshape(t.shape[0], -1)


def knn_probs(
    features: Any,
    labels: Any,
    num_classes: int,
    *,
    k: int | None = None,
    t: float = KNN_TEMPERATURE,
    center: bool = True,
    block_size: int = 1024,
) -> np.ndarray:
    """Leave-one-out similarity-weighted kNN probabilities ``[N, K]`` (module docstring).

    ``features [N, D]``, ``labels [N]`` in ``0..num_classes-1``; ``k`` defaults to
    `noisytail.neighbors.default_k` of the class counts; ``center`` subtracts the column means.
    """
    x = torch.as_tensor(_as_numpy(features, np.float32))
    y = _as_numpy(labels, np.int64)
    n = x.shape[0]
    if k is None:
        k = default_k(np.bincount(y, minlength=num_classes))
    k = min(k, n - 1)
    if center:
        x = x - x.mean(0, keepdim=True)
    scores = weighted_knn_scores(
        x,
        x,
        torch.from_numpy(y),
        num_classes,
        k=k,
        t=t,
        query_ids=np.arange(n),
        block_size=block_size,
        backend="auto",
    ).double()
    total = scores.sum(1, keepdim=True)
    uniform = torch.full_like(scores, 1.0 / num_classes)
    probs = torch.where(total > 0, scores / total.clamp_min(1e-300), uniform)
    return probs.numpy()


def linear_probs(
    features: Any,
    labels: Any,
    num_classes: int,
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    c: float = 1.0,
    max_iter: int = 200,
) -> np.ndarray:
    """Cross-fitted probabilities ``[N, K]`` of a logistic regression (L2, inverse strength
    ``c``) on the standardised ``features [N, D]``: fold ``f`` scored by the model fitted on
    the other folds. A class absent from a training fold gets probability 0 there."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x = _as_numpy(features, np.float64)
    y = _as_numpy(labels, np.int64)
    fold = stratified_folds(y, folds, seed)
    probs = np.zeros((len(y), num_classes))
    for f in range(folds):
        held, rest = fold == f, fold != f
        if not held.any():
            continue
        mu, sd = x[rest].mean(0), x[rest].std(0)
        sd[sd == 0] = 1.0
        model = LogisticRegression(C=c, max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit((x[rest] - mu) / sd, y[rest])
        probs[np.ix_(held, model.classes_)] = model.predict_proba((x[held] - mu) / sd)
    return probs


#: What `fast_probs` combines: ``"ensemble"`` (the mean of both), ``"knn"`` or ``"linear"``.
FAST_MODELS = ("ensemble", "knn", "linear")


def fast_probs(
    features: Any,
    labels: Any,
    num_classes: int,
    *,
    model: str = "ensemble",
    k: int | None = None,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> np.ndarray:
    """The fast path's out-of-sample probabilities ``[N, K]``: `knn_probs`, `linear_probs` or
    (``"ensemble"``, the default chosen by the own-data detection benchmark) their mean."""
    if model not in FAST_MODELS:
        raise ValueError(f"model must be one of {FAST_MODELS}, got {model!r}")
    parts = []
    if model in ("ensemble", "knn"):
        parts.append(knn_probs(features, labels, num_classes, k=k))
    if model in ("ensemble", "linear"):
        parts.append(linear_probs(features, labels, num_classes, folds=folds, seed=seed))
    return np.mean(parts, axis=0)
