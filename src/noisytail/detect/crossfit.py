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
- `stack_weights`: the weights of a mixture of out-of-sample probability arrays (the kNN, the
  linear model and, for tables, a cross-fitted network: `noisytail.detect.detectors.AutoDetector`),
  chosen on a simplex grid by the held-out likelihood of the given labels (stacking: Smyth &
  Wolpert 1999, "Linearly combining density estimators via stacking"; Breiman 1996, "Stacked
  regressions"); `stack` applies them, with the class prior as an extra part whose weight is
  then dropped (it absorbs the likelihood a mixture gains by smoothing alone).

Inputs are centred on their column means before the cosine kNN (raw pixels are all positive,
so uncentred cosines crowd near 1).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import seeds
from ..evaluate import negative_log_likelihood
from ..neighbors import default_k, weighted_knn_scores

#: Default number of cross-fitting folds (cleanlab's and scikit-learn's default too).
DEFAULT_FOLDS = 5
#: Temperature of the similarity weights (Wu et al. 2018; MoCo's kNN monitor).
KNN_TEMPERATURE = 0.1
#: Images are area-pooled to at most this many pixels a side before the fast path. 16 (not 32)
#: gave both parts better flags and AUROC on the own-data detection benchmark's Fashion-MNIST
#: folder (BENCHMARKS.md) and makes the linear model 4x cheaper.
MAX_SIDE = 16
#: Inverse L2 strength of `linear_probs` (scikit-learn's ``C``, on the summed loss). Strong
#: regularisation: a model that cannot fit the wrong labels flags them. On the own-data
#: detection benchmark's data 0.01 and 0.03 were close and both beat 0.1 and 1 on the images;
#: with the stacked mixture 0.01 did better on breast-cancer at 0.4 (F1 0.623 against 0.602).
LINEAR_C = 0.01
#: Grid step of the stacking weights (`simplex_grid`): 21 mixtures of two parts, 231 of three.
STACK_STEP = 0.05
#: The first part's weights `stack_weight` tries (two parts: 0, 0.05, ..., 1).
STACK_WEIGHTS = np.linspace(0.0, 1.0, 21)
#: Floor of a probability in the held-out likelihoods (a kNN vote can give 0).
LIKELIHOOD_FLOOR = 1e-6


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
    c: float = LINEAR_C,
    max_iter: int = 200,
) -> np.ndarray:
    """Cross-fitted probabilities ``[N, K]`` of a logistic regression (L2, inverse strength
    ``c``) on the standardised ``features [N, D]``: fold ``f`` scored by the model fitted on
    the other folds. A class absent from a training fold gets probability 0 there.

    BLAS runs on one thread here: the products are small (``N`` in the thousands, ``D`` at most
    ``3 * MAX_SIDE**2`` for images), and on a loaded machine two spinning BLAS threads made the
    same fits 15x slower (Fashion-MNIST folder, 1,226 images: 92 s against 6 s)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

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
        with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit((x[rest] - mu) / sd, y[rest])
            probs[np.ix_(held, model.classes_)] = model.predict_proba((x[held] - mu) / sd)
    return probs


def simplex_grid(parts: int, step: float = STACK_STEP) -> np.ndarray:
    """Every weight vector ``[G, parts]`` with entries in ``0, step, ..., 1`` summing to 1, in
    lexicographic order of the first entries (``parts=2``: ``[[0, 1], [0.05, 0.95], ...]``)."""
    units = int(round(1 / step))
    if parts < 1 or not np.isclose(units * step, 1.0):
        raise ValueError(f"need parts >= 1 and 1 / step a whole number, got {parts}, {step}")
    rows = [c for c in itertools.product(range(units + 1), repeat=parts - 1) if sum(c) <= units]
    grid = np.array([list(c) + [units - sum(c)] for c in rows], dtype=np.float64)
    return grid / units


def stack_weights(parts: Sequence[Any], labels: Any, *, step: float = STACK_STEP) -> np.ndarray:
    """The weights ``w [P]`` of `simplex_grid` that maximise the mean log-likelihood of the given
    ``labels [N]`` under ``sum_i w_i * parts[i]`` (``P`` out-of-sample ``[N, K]`` probability
    arrays, so this is a held-out likelihood; module docstring). Ties go to the weights nearest
    the even mix. Probabilities are floored at `LIKELIHOOD_FLOOR`."""
    y = _as_numpy(labels, np.int64)
    rows = np.arange(len(y))
    given = np.stack([_as_numpy(p, np.float64)[rows, y] for p in parts], axis=1)  # [N, P]
    grid = simplex_grid(len(parts), step)
    ll = np.log(np.clip(given @ grid.T, LIKELIHOOD_FLOOR, None)).mean(0)  # [G]
    best = np.flatnonzero(ll >= ll.max() - 1e-12)
    spread = np.abs(grid[best] - 1.0 / len(parts)).sum(1)
    return grid[best[np.argmin(spread)]]


def held_out_log_likelihood(probs: Any, labels: Any) -> float:
    """Mean ``log p_y`` of the given ``labels [N]`` under out-of-sample ``probs [N, K]``
    (floored at `LIKELIHOOD_FLOOR`, as in `stack_weights`): minus
    `noisytail.evaluate.negative_log_likelihood`."""
    p, y = _as_numpy(probs, np.float64), _as_numpy(labels, np.int64)
    return -negative_log_likelihood(p, y, eps=LIKELIHOOD_FLOOR)


def best_by_likelihood(candidates: Sequence[Any], labels: Any) -> int:
    """Index of the out-of-sample ``[N, K]`` probability array among ``candidates`` with the
    highest `held_out_log_likelihood` of the given ``labels`` (ties: the first); e.g. a
    network's training budget chosen like early stopping on held-out data, with the noisy
    labels as the only labels there are."""
    ll = [held_out_log_likelihood(p, labels) for p in candidates]
    return int(np.argmax(ll))


def stack_weight(first: Any, second: Any, labels: Any) -> float:
    """`stack_weights` of two parts: the first one's weight, in `STACK_WEIGHTS` (the second
    one's is ``1 - w``)."""
    return float(stack_weights([first, second], labels)[0])


def stack(parts: Mapping[str, Any], labels: Any) -> tuple[np.ndarray, dict[str, float]]:
    """The mixture ``[N, K]`` of the named out-of-sample ``parts`` (each ``[N, K]``), and its
    weights by name (a single part: itself, weight 1).

    The weights are `stack_weights` over the parts **plus the class prior** (the given labels'
    frequencies, the same row for every sample), whose weight is then dropped and the others
    renormalised. A mixture gains likelihood by smoothing an overconfident part, and without
    the prior a part that ranks at chance (a linear model on nested shells) got up to 0.6 of the
    weight for that alone, diluting the one informative part (BENCHMARKS.md, own data: the
    prior absorbs the smoothing). When the prior alone is best, the weights without it."""
    names = list(parts)
    arrays = [_as_numpy(parts[n], np.float64) for n in names]
    if len(arrays) == 1:
        return arrays[0], {names[0]: 1.0}
    y = _as_numpy(labels, np.int64)
    prior = np.bincount(y, minlength=arrays[0].shape[1]) / len(y)
    w = stack_weights([*arrays, np.broadcast_to(prior, arrays[0].shape)], y)[:-1]
    w = w / w.sum() if w.sum() > 0 else stack_weights(arrays, y)
    probs = sum(wi * p for wi, p in zip(w, arrays))
    return probs, {n: float(wi) for n, wi in zip(names, w)}


#: What `fast_parts` gives: ``"ensemble"`` (both parts, for `stack`), ``"knn"`` or
#: ``"linear"``.
FAST_MODELS = ("ensemble", "knn", "linear")


def fast_parts(
    features: Any,
    labels: Any,
    num_classes: int,
    *,
    model: str = "ensemble",
    k: int | None = None,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The fast path's out-of-sample probabilities ``[N, K]`` by part: ``{"knn": `knn_probs`,
    "linear": `linear_probs`}`` for ``"ensemble"``, one of them for ``"knn"`` / ``"linear"``."""
    if model not in FAST_MODELS:
        raise ValueError(f"model must be one of {FAST_MODELS}, got {model!r}")
    parts = {}
    if model in ("ensemble", "knn"):
        parts["knn"] = knn_probs(features, labels, num_classes, k=k)
    if model in ("ensemble", "linear"):
        parts["linear"] = linear_probs(features, labels, num_classes, folds=folds, seed=seed)
    return parts


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
    """`fast_parts` mixed by `stack` (``"ensemble"``: the kNN vote and the linear model weighted
    by held-out likelihood; the default detector's mixture on images), ``[N, K]``."""
    parts = fast_parts(features, labels, num_classes, model=model, k=k, folds=folds, seed=seed)
    return stack(parts, labels)[0]
