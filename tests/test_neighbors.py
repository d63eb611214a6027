"""The one weighted kNN (`noisytail.neighbors.weighted_knn_scores`) against a brute-force numpy
reference, and its three users reading it (SimCLR's monitor, the probes' kNN, detect's old path)."""

import numpy as np
import pytest
import torch

from noisytail import neighbors
from noisytail.methods.simclr import knn_leave_one_out
from noisytail.probes import knn_predict


def reference_scores(queries, keys, key_labels, num_classes, k, t, exclude_self=False):
    """Full cosine matrix in float64, each row's top-k (itself excluded), weights exp(s / t)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    kk = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    sim = q @ kk.T
    if exclude_self:
        np.fill_diagonal(sim, -np.inf)
    out = np.zeros((len(q), num_classes))
    for i, row in enumerate(sim):
        for j in np.argsort(-row)[:k]:
            out[i, key_labels[j]] += np.exp(row[j] / t)
    return out


@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("block_size", [7, 1024])
def test_weighted_scores_match_a_brute_force_reference(exclude_self, block_size):
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((60, 5))
    labels = rng.integers(0, 4, 60)
    queries = keys if exclude_self else rng.standard_normal((25, 5))
    ids = torch.arange(60) if exclude_self else None
    got = neighbors.weighted_knn_scores(
        torch.tensor(queries, dtype=torch.float32),
        torch.tensor(keys, dtype=torch.float32),
        torch.tensor(labels),
        4,
        k=9,
        t=0.2,
        query_ids=ids,
        block_size=block_size,
    ).numpy()
    want = reference_scores(queries, keys, labels, 4, 9, 0.2, exclude_self)
    # weights exp((s - 1) / t): the reference's exp(s / t) times the constant exp(-1 / t)
    np.testing.assert_allclose(got, want * np.exp(-1 / 0.2), rtol=1e-4)


def test_k_is_clipped_and_no_neighbour_gives_zeros():
    one = torch.tensor([[1.0, 0.0]])
    scores = neighbors.weighted_knn_scores(one, one, torch.tensor([1]), 2, k=5, query_ids=[0])
    assert scores.tolist() == [[0.0, 0.0]]  # only itself, excluded
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    all_keys = neighbors.weighted_knn_scores(one, keys, torch.tensor([0, 1]), 2, k=50, t=1.0)
    assert all_keys[0].tolist() == pytest.approx([1.0, float(np.exp(-1.0))])  # s = 1 and 0
    with pytest.raises(ValueError, match="positive"):
        neighbors.weighted_knn_scores(one, keys, torch.tensor([0, 1]), 2, t=0.0)


def test_the_users_read_the_one_knn():
    rng = np.random.default_rng(1)
    feats = torch.tensor(rng.standard_normal((40, 6)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(0, 3, 40))
    loo = neighbors.weighted_knn_scores(feats, feats, labels, 3, k=7, query_ids=torch.arange(40))
    assert torch.equal(knn_leave_one_out(feats, labels, 3, k=7), loo.argmax(1))
    test = feats[:10] + 0.1
    scores = neighbors.weighted_knn_scores(test, feats, labels, 3, k=7)
    torch.testing.assert_close(
        knn_predict(feats, labels, test, k=7, num_classes=3), scores / scores.sum(1, keepdim=True)
    )
    from noisytail.detect import knn

    assert knn is neighbors  # the old path is the same module, not a copy
