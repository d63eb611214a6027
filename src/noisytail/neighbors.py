"""The k nearest neighbours by cosine similarity, and the votes built on them: the one kNN of
noisytail. It sits below ``methods/``, ``detect/`` and the encoder evaluation, which all use it.

1. `knn_search` / `knn_cosine`: the k nearest neighbours by cosine similarity, computed in blocks
   of queries against all keys (memory ``block_size x N``, never ``N x N``), each sample's own
   index excluded (the official MOIT code's self-neighbour bug, fixed in its issue #5, is not
   reproduced: exclusion is by index, not by position in the block). Two backends: ``"torch"``
   (exact, blocked matrix products, on the features' device) and ``"faiss"`` (exact flat
   inner-product index of the optional ``faiss`` package, CPU, searched in the same blocks);
   ``"auto"`` takes faiss only when it is importable, the features are on the CPU and there are
   more than `FAISS_AUTO_MIN_KEYS` keys. faiss is never a dependency of the package.
2. `weighted_knn_scores`: the weighted vote of Wu et al. 2018 (arXiv 1805.01978, eq. 5 / MoCo's
   kNN monitor): each of the top-``k`` neighbours adds ``exp((s - 1) / t)`` to its label's score
   (``exp(s / t)`` scaled by the constant ``exp(-1 / t)``: the same ranking, no overflow for a
   small ``t``). Used by the SimCLR monitor and the encoder evaluation's kNN classifier.
3. MOIT's kNN label-noise detection (Ortego et al., CVPR 2021, arXiv 2012.04462), used by the
   MOIT/MOIT+ methods and by the ``knn`` detector:

   - `moit_vote`: the *unweighted* vote of the neighbours' labels gives a class distribution
     ``q1``; corrected labels ``argmax q1``; discrepancy ``d1 = -log clamp(q1[y], 0.01, 0.99)``.
     A second vote over the neighbours' *corrected* labels gives ``q2``, ``d2`` and the
     agreement ``argmax q2 == y``.
   - `balanced_selection`: per-class median-balanced clean set. The agreements are counted per
     (given) class; ``m`` = the *lower* median of those counts over the non-empty classes (for
     an even number of classes the smaller of the two middle counts, as ``torch.median`` in the
     official code; not their average); in each class the ``m`` samples with the smallest
     ``d2`` are clean (all of them if the class has ``m`` or fewer). The rest are flagged. The
     official code takes the median over all K classes, empty ones included; we skip empty
     classes.

How k scales (`default_k`): MOIT uses k = 250 on CIFAR (5 000 images per class), i.e. 5 % of a
class. For other sizes we take 5 % of the median class size, at least 10 and at most 250 (and
always fewer than the number of other samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: MOIT's clamp of the kNN class probabilities before ``-log``.
Q_CLAMP = (0.01, 0.99)

#: ``backend="auto"`` switches to faiss above this many keys (when faiss is importable).
FAISS_AUTO_MIN_KEYS = 200_000

BACKENDS = ("auto", "torch", "faiss")


def default_k(class_counts: np.ndarray | list[int], *, k_max: int = 250, k_min: int = 10) -> int:
    """k for a training set with these per-class counts: 5 % of the median non-empty class,
    clipped to ``[k_min, k_max]`` and to ``N - 1`` (CIFAR-10: 5 000 per class -> 250)."""
    counts = np.asarray(class_counts, dtype=np.int64)
    n = int(counts.sum())
    if n < 2:
        raise ValueError(f"kNN detection needs at least 2 samples, got {n}.")
    nonempty = counts[counts > 0]
    k = int(round(0.05 * float(np.median(nonempty))))
    return int(max(1, min(max(k, k_min), k_max, n - 1)))


def _numpy(x: torch.Tensor | np.ndarray, dtype: type | np.dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def faiss_available() -> bool:
    """True when the optional ``faiss`` package (e.g. ``pip install faiss-cpu``) imports."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, n_keys: int, device: torch.device | str = "cpu") -> str:
    """The backend ``knn_search`` uses: ``"torch"`` or ``"faiss"`` (see the module docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "faiss":
        if not faiss_available():
            raise ImportError("backend='faiss' needs the faiss package: pip install faiss-cpu")
        return "faiss"
    if backend == "auto":
        on_cpu = torch.device(device).type == "cpu"
        if on_cpu and n_keys > FAISS_AUTO_MIN_KEYS and faiss_available():
            return "faiss"
    return "torch"


def _block_scores(q_block: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Similarities ``[B, Nk]`` of one block of queries: the only similarity matrix the torch
    backend materialises (a separate function so that tests can check its size)."""
    return q_block @ keys.T


def _faiss_search(
    q: torch.Tensor, kk: torch.Tensor, k: int, ids: torch.Tensor | None, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` by inner product with a faiss flat index, queries in blocks; with ``ids``
    one extra neighbour is fetched and each query's own index dropped (else the last one)."""
    import faiss

    index = faiss.IndexFlatIP(kk.shape[1])
    index.add(np.ascontiguousarray(kk.detach().cpu().numpy(), dtype=np.float32))
    queries = np.ascontiguousarray(q.detach().cpu().numpy(), dtype=np.float32)
    own = None if ids is None else ids.cpu().numpy()
    fetch = k + (1 if own is not None else 0)
    sims, idx = [], []
    for start in range(0, len(queries), block_size):
        stop = min(start + block_size, len(queries))
        d, i = index.search(queries[start:stop], fetch)
        if own is not None:
            drop = i == own[start:stop, None]
            drop[~drop.any(axis=1), -1] = True  # the query was not among them: drop the last
            keep = ~drop
            d, i = d[keep].reshape(-1, k), i[keep].reshape(-1, k)
        sims.append(torch.from_numpy(np.ascontiguousarray(d)))
        idx.append(torch.from_numpy(np.ascontiguousarray(i, dtype=np.int64)))
    return torch.cat(sims).to(q.device), torch.cat(idx).to(q.device)


@torch.no_grad()
def knn_search(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    *,
    query_ids: torch.Tensor | np.ndarray | None = None,
    block_size: int = 1024,
    normalize: bool = True,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` keys for every query by cosine similarity (dot product if not ``normalize``).

    ``queries [Nq, D]``, ``keys [Nk, D]``; ``query_ids [Nq]`` (optional) is the key index of each
    query, which is excluded from its own neighbours. Works in blocks of ``block_size`` queries,
    so memory is ``block_size x Nk`` (plus the inputs and the ``[Nq, k]`` result). ``backend``:
    ``"auto"``, ``"torch"`` or ``"faiss"`` (`resolve_backend`). Returns
    ``(similarities [Nq, k], indices [Nq, k])``, most similar first, on the queries' device.
    """
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(
            f"queries and keys must be [N, D] with the same D, got {tuple(queries.shape)} and "
            f"{tuple(keys.shape)}"
        )
    n_keys = keys.shape[0]
    available = n_keys - (1 if query_ids is not None else 0)
    if not 1 <= k <= available:
        raise ValueError(
            f"k={k} must lie in [1, {available}] ({n_keys} keys"
            + (", the sample itself excluded)" if query_ids is not None else ")")
        )
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    q = queries.float()
    kk = keys.float().to(q.device)
    if normalize:
        q = F.normalize(q, dim=1)
        kk = F.normalize(kk, dim=1)
    ids = None
    if query_ids is not None:
        ids = torch.as_tensor(_numpy(query_ids, np.int64), device=q.device)
        if ids.shape != (q.shape[0],):
            raise ValueError(f"query_ids must have shape ({q.shape[0]},), got {tuple(ids.shape)}")
    if q.shape[0] and resolve_backend(backend, n_keys, q.device) == "faiss":
        return _faiss_search(q, kk, k, ids, block_size)
    sims, idx = [], []
    for start in range(0, q.shape[0], block_size):
        stop = min(start + block_size, q.shape[0])
        s = _block_scores(q[start:stop], kk)  # [B, Nk]
        if ids is not None:
            s[torch.arange(stop - start, device=q.device), ids[start:stop]] = -float("inf")
        top = torch.topk(s, k, dim=1)
        sims.append(top.values)
        idx.append(top.indices)
    if not sims:
        empty = q.new_zeros((0, k))
        return empty, empty.long()
    return torch.cat(sims), torch.cat(idx)


def knn_cosine(
    features: torch.Tensor,
    k: int,
    *,
    exclude_self: bool = True,
    block_size: int = 1024,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest neighbours of every row of ``features [N, D]`` among all rows, by
    cosine similarity, the row itself excluded (by index). Returns ``(sims, indices)``."""
    ids = torch.arange(features.shape[0]) if exclude_self else None
    return knn_search(features, features, k, query_ids=ids, block_size=block_size, backend=backend)


@torch.no_grad()
def weighted_knn_scores(
    queries: torch.Tensor,
    keys: torch.Tensor,
    key_labels: torch.Tensor,
    num_classes: int,
    *,
    k: int = 200,
    t: float = 0.1,
    query_ids: torch.Tensor | np.ndarray | None = None,
    block_size: int = 1024,
    backend: str = "torch",
) -> torch.Tensor:
    """Weighted-kNN class scores ``[Nq, K]`` (Wu et al. 2018, eq. 5; MoCo's monitor: k=200,
    t=0.1): the top-``k`` keys of each query by cosine similarity ``s`` (`knn_search`, the query
    itself excluded by ``query_ids``), each adding ``exp((s - 1) / t)`` to the score of its label
    ``key_labels [Nk]``. ``k`` is clipped to ``[1, keys available]``; with no key available the
    scores are 0. Scores are not normalised (divide by their row sum for probabilities)."""
    if t <= 0:
        raise ValueError(f"kNN temperature t must be positive, got {t}")
    available = keys.shape[0] - (1 if query_ids is not None else 0)
    if available < 1:
        return torch.zeros(queries.shape[0], num_classes, device=queries.device)
    k = max(1, min(k, available))
    sims, idx = knn_search(
        queries, keys, k, query_ids=query_ids, block_size=block_size, backend=backend
    )
    labels = torch.as_tensor(key_labels, dtype=torch.long).to(idx.device)
    w = torch.exp((sims - 1.0) / t)  # shifted by the largest possible s: same ranking
    scores = torch.zeros(idx.shape[0], num_classes, device=idx.device)
    return scores.scatter_add_(1, labels[idx], w)


def knn_vote(neighbors: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Unweighted vote: ``q [N, K]``, the fraction of each row's neighbours with each label."""
    labels = torch.as_tensor(labels, dtype=torch.long, device=neighbors.device)
    votes = labels[neighbors]  # [N, k]
    q = torch.zeros(neighbors.shape[0], num_classes, device=neighbors.device)
    q.scatter_add_(1, votes, torch.ones_like(votes, dtype=q.dtype))
    return q / max(1, neighbors.shape[1])


def discrepancy(
    q: torch.Tensor, labels: torch.Tensor, clamp: tuple[float, float] = Q_CLAMP
) -> torch.Tensor:
    """``-log clamp(q[i, y_i], lo, hi)``: how much the neighbourhood disagrees with label ``y``."""
    labels = torch.as_tensor(labels, dtype=torch.long, device=q.device)
    return -torch.log(q.clamp(*clamp).gather(1, labels[:, None]).squeeze(1))


@dataclass
class KnnVote:
    """The two-pass MOIT vote. All tensors are ``[N]`` or ``[N, K]`` on the CPU."""

    neighbors: torch.Tensor  # [N, k] indices
    q1: torch.Tensor  # [N, K] vote of the given labels
    corrected: torch.Tensor  # [N] argmax q1
    d1: torch.Tensor  # [N]
    q2: torch.Tensor  # [N, K] vote of the corrected labels
    d2: torch.Tensor  # [N]
    agreement: torch.Tensor  # [N] bool: argmax q2 == given label

    @property
    def suggested(self) -> torch.Tensor:
        """The label the neighbourhood suggests: ``argmax q2``."""
        return self.q2.argmax(1)


def moit_vote(
    neighbors: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    num_classes: int,
    *,
    clamp: tuple[float, float] = Q_CLAMP,
) -> KnnVote:
    """MOIT's two-pass vote over fixed ``neighbors [N, k]`` (see the module docstring)."""
    neighbors = neighbors.cpu()
    y = torch.from_numpy(_numpy(labels, np.int64))
    if y.shape != (neighbors.shape[0],):
        raise ValueError(f"labels must have shape ({neighbors.shape[0]},), got {tuple(y.shape)}")
    q1 = knn_vote(neighbors, y, num_classes)
    corrected = q1.argmax(1)
    q2 = knn_vote(neighbors, corrected, num_classes)
    return KnnVote(
        neighbors=neighbors,
        q1=q1,
        corrected=corrected,
        d1=discrepancy(q1, y, clamp),
        q2=q2,
        d2=discrepancy(q2, y, clamp),
        agreement=q2.argmax(1) == y,
    )


def lower_median(values: np.ndarray) -> int:
    """The lower median of integer ``values`` (``torch.median``'s rule): the middle value of the
    sorted values, the smaller of the two middle ones for an even count."""
    v = np.sort(np.asarray(values, dtype=np.int64))
    if v.size == 0:
        raise ValueError("lower_median of an empty array")
    return int(v[(v.size - 1) // 2])


def balanced_selection(
    agreement: torch.Tensor | np.ndarray,
    score: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    num_classes: int,
) -> np.ndarray:
    """MOIT's median-balanced clean mask ``[N]`` (bool, True = clean).

    ``m`` = the lower median (`lower_median`) over the non-empty classes of the number of
    agreeing samples; in each class the ``m`` samples with the smallest ``score`` (the
    discrepancy ``d2``; ties by index) are clean, or all of the class if it has at most ``m``
    samples.
    """
    agree = _numpy(agreement, bool)
    s = _numpy(score, np.float64)
    y = _numpy(labels, np.int64)
    if not (agree.shape == s.shape == y.shape) or agree.ndim != 1:
        raise ValueError("agreement, score and labels must be 1-D arrays of the same length")
    counts = np.bincount(y, minlength=num_classes)
    agreeing = np.bincount(y[agree], minlength=num_classes)
    present = counts > 0
    clean = np.zeros(len(y), dtype=bool)
    if not present.any():
        return clean
    m = lower_median(agreeing[present])
    for c in np.flatnonzero(present):
        members = np.flatnonzero(y == c)
        order = members[np.argsort(s[members], kind="stable")]
        clean[order[:m]] = True
    return clean


@dataclass
class KnnDetection:
    """What `moit_detect` returns: the vote plus the clean mask and a suspicion score."""

    vote: KnnVote
    clean: np.ndarray  # [N] bool
    k: int

    @property
    def flagged(self) -> np.ndarray:
        return ~self.clean

    @property
    def suspicion(self) -> np.ndarray:
        """``d2`` plus a tie-break by ``d1`` (1e-3 of it): higher = more likely mislabelled."""
        return (self.vote.d2 + 1e-3 * self.vote.d1).numpy().astype(np.float64)


def moit_detect(
    features: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    num_classes: int,
    *,
    k: int | None = None,
    selection: str = "balanced",
    block_size: int = 1024,
    backend: str = "auto",
) -> KnnDetection:
    """MOIT's detector on ``features [N, D]`` with the given ``labels [N]``.

    ``k`` defaults to `default_k`. ``selection``: ``"balanced"`` (MOIT's per-class median
    selection) or ``"agreement"`` (clean = the second vote agrees with the label). ``backend``
    of the neighbour search: see `knn_search`.
    """
    y = _numpy(labels, np.int64)
    if k is None:
        k = default_k(np.bincount(y, minlength=num_classes))
    _, neighbors = knn_cosine(features, k, block_size=block_size, backend=backend)
    vote = moit_vote(neighbors, y, num_classes)
    if selection == "balanced":
        clean = balanced_selection(vote.agreement, vote.d2, y, num_classes)
    elif selection == "agreement":
        clean = vote.agreement.numpy().copy()
    else:
        raise ValueError(f"selection must be 'balanced' or 'agreement', got {selection!r}")
    return KnnDetection(vote=vote, clean=clean, k=k)
