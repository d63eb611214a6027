import numpy as np
import pytest
import torch

from noisytail.detect import detection_metrics
from noisytail.detect.knn import (
    balanced_selection,
    default_k,
    discrepancy,
    knn_cosine,
    knn_search,
    knn_vote,
    lower_median,
    moit_detect,
    moit_vote,
)


def brute_force(features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    f = torch.nn.functional.normalize(features.float(), dim=1)
    s = f @ f.T
    s.fill_diagonal_(-float("inf"))
    top = torch.topk(s, k, dim=1)
    return top.values, top.indices


@pytest.mark.parametrize("block_size", [1, 7, 64, 1000])
def test_blocked_equals_brute_force(block_size):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(203, 11, generator=g)
    sims, idx = knn_cosine(x, 9, block_size=block_size)
    ref_sims, ref_idx = brute_force(x, 9)
    assert torch.equal(idx, ref_idx)
    assert torch.allclose(sims, ref_sims, atol=1e-6)


def test_self_neighbour_excluded():
    # Every point is its own most similar point, and duplicates make the trap obvious.
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    x = torch.cat([x, x[:5]])  # rows 50..54 duplicate rows 0..4
    _, idx = knn_cosine(x, 10, block_size=8)
    rows = torch.arange(len(x))[:, None]
    assert not (idx == rows).any()
    for i in range(5):  # each duplicate finds its twin first, not itself
        assert idx[i, 0] == 50 + i and idx[50 + i, 0] == i
    # without exclusion the sample itself comes back (similarity 1)
    _, idx_self = knn_cosine(x, 1, exclude_self=False)
    assert (idx_self[5:50, 0] == torch.arange(5, 50)).all()  # rows 0..4 tie with twins


def test_k_checked():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="k=5"):
        knn_cosine(x, 5)  # only 4 others
    knn_cosine(x, 4)
    with pytest.raises(ValueError):
        knn_search(x, torch.randn(5, 2), 1)


def test_vote_and_discrepancy_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 1])
    neighbors = torch.tensor([[1, 2, 3], [0, 2, 3], [3, 4, 0], [2, 4, 1], [2, 3, 0]])
    q = knn_vote(neighbors, labels, 2)
    assert torch.allclose(q[0], torch.tensor([1 / 3, 2 / 3]))
    assert torch.allclose(q[2], torch.tensor([1 / 3, 2 / 3]))
    d = discrepancy(q, labels)
    assert d[0].item() == pytest.approx(-np.log(1 / 3))
    # clamp to [0.01, 0.99]: a unanimous vote gives -log 0.99, a zero vote -log 0.01
    q_hard = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    d_hard = discrepancy(q_hard, torch.tensor([0, 1]))
    assert d_hard.tolist() == pytest.approx([-np.log(0.99), -np.log(0.01)])


def test_second_pass_uses_corrected_labels():
    # Sample 0 (label 1) sits among label-0 samples; samples 1..3 vote with corrected labels.
    labels = torch.tensor([1, 0, 0, 0, 1])
    neighbors = torch.tensor([[1, 2], [2, 3], [1, 3], [1, 2], [0, 0]])
    v = moit_vote(neighbors, labels, 2)
    assert v.corrected.tolist() == [0, 0, 0, 0, 1]
    # pass 2, sample 4: its neighbour 0 now has corrected label 0, so it disagrees
    assert v.q1[4].tolist() == [0.0, 1.0] and v.q2[4].tolist() == [1.0, 0.0]
    assert v.agreement.tolist() == [False, True, True, True, False]


def test_selection_is_median_balanced_by_hand():
    # class 0: 5 samples, 2 agree; class 1: 4 samples, 4 agree; class 2: 8 samples, 6 agree.
    labels = np.array([0] * 5 + [1] * 4 + [2] * 8)
    agree = np.array([1, 1, 0, 0, 0] + [1, 1, 1, 1] + [1, 1, 1, 1, 1, 1, 0, 0], dtype=bool)
    score = np.array(
        [0.1, 0.2, 0.5, 0.3, 0.9] + [0.4, 0.1, 0.2, 0.3] + [0.8, 0.1, 0.7, 0.2, 0.6, 0.3, 0.9, 0.5]
    )
    clean = balanced_selection(agree, score, labels, 3)
    # median of (2, 4, 6) = 4 clean per class, the 4 smallest scores
    assert np.flatnonzero(clean[:5]).tolist() == [0, 1, 2, 3]  # all but the 0.9
    assert clean[5:9].all()  # class 1 has exactly 4
    assert np.flatnonzero(clean[9:]).tolist() == [1, 3, 5, 7]  # 0.1, 0.2, 0.3, 0.5
    assert np.bincount(labels[clean], minlength=3).tolist() == [4, 4, 4]
    # An empty class does not pull the median down.
    clean4 = balanced_selection(agree, score, labels, 5)
    assert clean4.sum() == 12


def test_even_class_count_takes_the_lower_median_as_torch_median():
    # 4 classes of 6 samples; agreements per class 1, 2, 4, 6. The official code's torch.median
    # gives the lower middle count, 2; the average of the middle ones (3) would keep 3 per class.
    labels = np.repeat(np.arange(4), 6)
    agree = np.zeros(24, dtype=bool)
    for c, n in enumerate([1, 2, 4, 6]):
        agree[6 * c : 6 * c + n] = True
    score = np.tile(np.arange(6.0)[::-1], 4)  # the last sample of each class scores lowest
    clean = balanced_selection(agree, score, labels, 4)
    assert np.bincount(labels[clean], minlength=4).tolist() == [2, 2, 2, 2]
    assert np.flatnonzero(clean[:6]).tolist() == [4, 5]  # the two smallest scores
    assert float(torch.median(torch.tensor([1.0, 2.0, 4.0, 6.0]))) == 2.0  # the rule we follow
    assert lower_median(np.array([6, 1, 4, 2])) == 2
    assert lower_median(np.array([5, 1, 3])) == 3


def test_default_k():
    assert default_k([5000] * 10) == 250
    assert default_k([1000] * 10) == 50
    assert default_k([16, 16]) == 10
    assert default_k([3, 3]) == 5
    assert default_k([50000] * 2) == 250


def gaussian_blobs(n_per_class=150, k=4, dim=16, flip=0.25, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 4.0
    true = np.repeat(np.arange(k), n_per_class)
    x = centres[true] + rng.normal(size=(len(true), dim))
    noisy = true.copy()
    flip_idx = rng.choice(len(true), int(flip * len(true)), replace=False)
    noisy[flip_idx] = (true[flip_idx] + rng.integers(1, k, len(flip_idx))) % k
    return torch.tensor(x, dtype=torch.float32), true, noisy


@pytest.mark.parametrize("flip", [0.2, 0.3])
def test_finds_known_flips_on_blobs(flip):
    x, true, noisy = gaussian_blobs(flip=flip)
    det = moit_detect(x, noisy, 4, block_size=100)
    m = detection_metrics(noisy != true, det.flagged, det.suspicion)
    assert m["precision"] > 0.9 and m["recall"] > 0.9, m
    assert m["auroc"] > 0.95
    # the suggested labels are the true ones for the flagged samples
    assert (det.vote.suggested.numpy()[det.flagged] == true[det.flagged]).mean() > 0.9


def test_agreement_beats_balanced_selection_on_long_tailed_blobs():
    rng = np.random.default_rng(3)
    sizes = [300, 60, 20]
    true = np.repeat(np.arange(3), sizes)
    x = torch.tensor(np.eye(3, 8)[true] * 6 + rng.normal(size=(len(true), 8)), dtype=torch.float32)
    noisy = true.copy()
    flips = rng.choice(len(true), len(true) // 5, replace=False)
    noisy[flips] = (true[flips] + 1) % 3
    truth = noisy != true
    agree = detection_metrics(truth, moit_detect(x, noisy, 3, k=10, selection="agreement").flagged)
    balanced = detection_metrics(truth, moit_detect(x, noisy, 3, k=10).flagged)
    # the median-balanced rule keeps only ~median-count samples of the head class
    assert agree["precision"] > 0.9 and agree["recall"] > 0.9
    assert balanced["precision"] < agree["precision"] - 0.2


# --------------------------------------------------------------------------- backends and memory


def test_faiss_and_torch_backends_agree():
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 16, generator=g)
    x = torch.cat([x, x[:4]])  # duplicates: the self-exclusion must be by index for both

    def same(a, b):  # same neighbour sets; a duplicate may stand for its twin in a tie
        a, b = torch.where(a >= 300, a - 300, a), torch.where(b >= 300, b - 300, b)
        return torch.equal(a.sort(1).values, b.sort(1).values)

    for block_size in (7, 1024):
        s_t, i_t = knn_cosine(x, 12, block_size=block_size, backend="torch")
        s_f, i_f = knn_cosine(x, 12, block_size=block_size, backend="faiss")
        assert torch.allclose(s_t, s_f, atol=1e-5)
        assert not (i_f == torch.arange(len(x))[:, None]).any()
        assert same(i_t, i_f)  # the order may differ only between (near-)equal similarities
    _, i_t = knn_cosine(x, 5, exclude_self=False, backend="torch")
    _, i_f = knn_cosine(x, 5, exclude_self=False, backend="faiss")
    assert same(i_t, i_f)


def test_faiss_detection_matches_torch():
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(4)
    centres = torch.randn(3, 8, generator=g) * 4
    y = torch.arange(150) % 3
    x = centres[y] + torch.randn(150, 8, generator=g)
    a = moit_detect(x, y.numpy(), 3, k=10, backend="torch")
    b = moit_detect(x, y.numpy(), 3, k=10, backend="faiss")
    assert np.array_equal(a.clean, b.clean)
    assert np.allclose(a.suspicion, b.suspicion)


def test_backend_choice(monkeypatch):
    from noisytail.detect import knn as knn_lib

    assert knn_lib.resolve_backend("torch", 10**7) == "torch"
    assert knn_lib.resolve_backend("auto", 1000) == "torch"  # small: torch even with faiss
    monkeypatch.setattr(knn_lib, "faiss_available", lambda: False)
    assert knn_lib.resolve_backend("auto", 10**7) == "torch"  # never a hard dependency
    with pytest.raises(ImportError, match="faiss-cpu"):
        knn_lib.resolve_backend("faiss", 10)
    monkeypatch.setattr(knn_lib, "faiss_available", lambda: True)
    assert knn_lib.resolve_backend("auto", knn_lib.FAISS_AUTO_MIN_KEYS + 1) == "faiss"
    assert knn_lib.resolve_backend("auto", knn_lib.FAISS_AUTO_MIN_KEYS + 1, "cuda") == "torch"
    with pytest.raises(ValueError, match="backend"):
        knn_cosine(torch.randn(5, 2), 2, backend="annoy")


@pytest.mark.parametrize("block_size", [1, 16, 100, 5000])
def test_torch_backend_similarity_block_is_bounded(monkeypatch, block_size):
    """The torch backend never builds more than ``block_size x N`` similarities at once: every
    similarity matrix goes through ``_block_scores``, which is checked here."""
    from noisytail.detect import knn as knn_lib

    n = 257
    shapes = []
    real = knn_lib._block_scores

    def spy(q_block, keys):
        out = real(q_block, keys)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(knn_lib, "_block_scores", spy)
    matmuls = []
    real_matmul = torch.Tensor.__matmul__

    def no_square(a, b):  # any other product inside the search must not be N x N either
        out = real_matmul(a, b)
        matmuls.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", no_square)
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(5))
    _, idx = knn_cosine(x, 5, block_size=block_size, backend="torch")
    assert idx.shape == (n, 5)
    assert sum(s[0] for s in shapes) == n  # every query scored once
    assert all(s[0] <= min(block_size, n) and s[1] == n for s in shapes)
    assert all(m[0] * m[1] <= min(block_size, n) * n for m in matmuls)
    assert len(shapes) == -(-n // block_size)


def test_knn_detector_backend_argument(monkeypatch):
    from noisytail.config import ConfigError
    from noisytail.detect import knn as knn_lib
    from noisytail.detect.detectors import KnnDetector

    with pytest.raises(ConfigError, match="backend"):
        KnnDetector(backend="annoy")
    monkeypatch.setattr(knn_lib, "faiss_available", lambda: False)
    with pytest.raises(ConfigError, match="faiss-cpu"):
        KnnDetector(backend="faiss")
    assert KnnDetector().args()["backend"] == "auto"
