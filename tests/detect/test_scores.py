import warnings

import numpy as np
import pytest
import torch

from noisytail.detect import scores as sc

# Worked by hand (K = 3). Thresholds t_j = mean p_j over the samples labelled j:
#   t0 = (0.9 + 0.7 + 0.2) / 3 = 0.6,  t1 = (0.8 + 0.6) / 2 = 0.7,  t2 = 0.8.
LABELS = np.array([0, 0, 0, 1, 1, 2])
PROBS = np.array(
    [
        [0.9, 0.05, 0.05],  # confidently 0 (0.9 >= 0.6)
        [0.7, 0.2, 0.1],  # confidently 0
        [0.2, 0.7, 0.1],  # labelled 0 but confidently 1 (0.7 >= t1 = 0.7): an issue
        [0.1, 0.8, 0.1],  # confidently 1
        [0.3, 0.6, 0.1],  # no class passes its threshold (0.3 < 0.6, 0.6 < 0.7, 0.1 < 0.8)
        [0.1, 0.1, 0.8],  # confidently 2 (0.8 >= 0.8)
    ]
)


def test_thresholds_by_hand():
    assert sc.class_thresholds(PROBS, LABELS).tolist() == pytest.approx([0.6, 0.7, 0.8])
    # a class nobody carries gets an unreachable threshold
    t = sc.class_thresholds(PROBS[:, :2][[0, 1, 3]], np.array([0, 0, 1]), num_classes=3)
    assert t[2] == np.inf


def test_confident_joint_and_flags_by_hand():
    assert sc.confident_classes(PROBS, LABELS).tolist() == [0, 0, 1, 1, -1, 2]
    joint = sc.confident_joint(PROBS, LABELS)
    assert joint.tolist() == [[2, 1, 0], [0, 1, 0], [0, 0, 1]]
    flagged, guess = sc.confident_learning_flags(PROBS, LABELS)
    assert flagged.tolist() == [False, False, True, False, False, False]
    assert guess[2] == 1


def test_require_disagreement_by_hand():
    # t0 = (0.9 + 0.58) / 2 = 0.74, t1 = (0.45 + 0.45 + 0.3) / 3 = 0.4.
    labels = np.array([0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.58, 0.42], [0.55, 0.45], [0.55, 0.45], [0.7, 0.3]])
    # sample 1 (labelled 0): p0 = 0.58 < 0.74 but p1 = 0.42 >= 0.4 -> confidently 1,
    # yet its argmax is its own label, so cleanlab's rule keeps it.
    assert sc.confident_classes(probs, labels).tolist() == [0, 1, 1, 1, -1]
    strict, _ = sc.confident_learning_flags(probs, labels)
    loose, _ = sc.confident_learning_flags(probs, labels, require_disagreement=False)
    assert strict.tolist() == [False] * 5
    assert loose.tolist() == [False, True, False, False, False]


def test_self_confidence_and_margin_by_hand():
    assert sc.self_confidence(PROBS, LABELS).tolist() == pytest.approx(
        [0.9, 0.7, 0.2, 0.8, 0.6, 0.8]
    )
    m = sc.normalized_margin(PROBS, LABELS)
    assert m[0] == pytest.approx((0.9 - 0.05 + 1) / 2)
    assert m[2] == pytest.approx((0.2 - 0.7 + 1) / 2)
    assert m[4] == pytest.approx((0.6 - 0.3 + 1) / 2)


def test_small_loss_matches_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    ce = sc.per_sample_cross_entropy(logits, labels)
    nll = sc.per_sample_nll(torch.softmax(logits, 1), labels)
    assert np.allclose(ce.numpy(), nll, atol=1e-6)
    # -log softmax by hand for the first row
    expected = -(2.0 - np.log(np.exp(2.0) + 1.0 + np.exp(-1.0)))
    assert ce[0].item() == pytest.approx(expected, rel=1e-5)


def test_loss_trajectory():
    history = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    assert sc.loss_trajectory(history).tolist() == [3.0, 2.0]
    assert sc.loss_trajectory(history, start=1).tolist() == [4.0, 2.0]
    with pytest.raises(ValueError):
        sc.loss_trajectory(history, start=3)


def test_two_component_flags_splits_bimodal_losses():
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.normal(0.2, 0.05, 80), rng.normal(2.0, 0.2, 20)])
    flagged, p_high = sc.two_component_flags(losses)
    assert flagged[80:].all() and not flagged[:80].any()
    assert p_high.shape == (100,)
    assert not sc.two_component_flags(np.ones(5))[0].any()


def test_bad_shapes():
    with pytest.raises(ValueError):
        sc.self_confidence(PROBS, LABELS[:3])
    with pytest.raises(ValueError):
        sc.self_confidence(PROBS, np.array([0, 0, 0, 1, 1, 3]))


def test_confident_class_is_the_largest_probability_among_those_that_pass():
    # t0 = (0.2 + 0.4) / 2 = 0.3, t1 = (0.62 + 0.58) / 2 = 0.6, t2 = 0.8.
    labels = np.array([0, 0, 1, 1, 2])
    probs = np.array(
        [
            [0.2, 0.7, 0.1],  # only class 1 passes
            [0.4, 0.5, 0.1],  # only class 0 passes
            [0.35, 0.62, 0.03],  # both pass: p1 = 0.62 is largest (p - t would pick 0: 0.05 > 0.02)
            [0.1, 0.58, 0.32],  # none passes
            [0.1, 0.1, 0.8],
        ]
    )
    assert sc.class_thresholds(probs, labels).tolist() == pytest.approx([0.3, 0.6, 0.8])
    assert sc.confident_classes(probs, labels).tolist() == [1, 0, 1, -1, 2]
    assert sc.confident_joint(probs, labels).tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_a_probability_equal_to_its_threshold_passes_despite_round_off():
    # Seven samples give class 0 the same 0.7: the mean is 0.7000000000000001 in floating point,
    # yet each sample sits exactly at the threshold and is confidently of class 0.
    labels = np.array([0] * 7 + [1])
    probs = np.array([[0.7, 0.3]] * 7 + [[0.2, 0.8]])
    assert sc.confident_classes(probs, labels).tolist() == [0] * 7 + [1]


def test_noise_rate_flags_by_hand():
    """On the hand-worked example: the calibrated joint's one off-diagonal count (labelled 0,
    truly 1) prunes the sample labelled 0 with the largest p_1 - p_0 (row 2)."""
    joint = sc.calibrated_confident_joint(PROBS, LABELS)
    # raw joint [[2, 1, 0], [0, 1, 0], [0, 0, 1]]; rows scaled to the counts 3, 2, 1
    np.testing.assert_array_equal(joint, [[2, 1, 0], [0, 2, 0], [0, 0, 1]])
    assert np.flatnonzero(sc.noise_rate_flags(PROBS, LABELS)).tolist() == [2]


def test_round_keeping_sum():
    assert sc.round_keeping_sum([0.4, 0.45, 0.3, 0.85]).tolist() == [0, 1, 0, 1]
    assert sc.round_keeping_sum([2.6, 2.7, 0.7]).tolist() == [2, 3, 1]


def test_noise_rate_flags_match_cleanlab():
    """An independent implementation: cleanlab's find_label_issues (prune_by_noise_rate) on
    random probabilities, including classes with one member."""
    filt = pytest.importorskip("cleanlab.filter")
    for seed in range(60):
        rng = np.random.default_rng(seed)
        k, n = int(rng.integers(2, 8)), int(rng.integers(20, 200))
        y = rng.integers(0, k, n)
        y[:k] = np.arange(k)
        logits = rng.normal(size=(n, k)) * rng.uniform(0.5, 4)
        logits[np.arange(n), y] += rng.uniform(0, 3)
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cleanlab warns about one-member classes
            expected = filt.find_label_issues(y, p, n_jobs=1)
        np.testing.assert_array_equal(sc.noise_rate_flags(p, y), expected, err_msg=f"{seed}")


def test_confident_learning_flags_match_cleanlab():
    """cleanlab's filter_by='confident_learning': the confident class is the argmax when several
    classes pass their thresholds, and a tie between the label and another class keeps the
    label. Two inputs built for those cases, then random imbalanced problems."""
    filt = pytest.importorskip("cleanlab.filter")
    several = (
        np.array([0, 0, 1, 1, 2, 2]),
        np.array(
            [[0.40, 0.15, 0.45], [0.30, 0.10, 0.60], [0.45, 0.10, 0.45]]
            + [[0.40, 0.20, 0.40], [0.05, 0.05, 0.90], [0.05, 0.05, 0.90]]
        ),
    )
    tie = (
        np.array([0, 0, 1, 1, 1]),
        np.array([[0.5, 0.5], [0.4, 0.6], [0.5, 0.5], [0.1, 0.9], [0.1, 0.9]]),
    )
    problems = [several, tie]
    for seed in range(150):
        rng = np.random.default_rng(seed)
        k, n = int(rng.integers(2, 7)), int(rng.integers(10, 120))
        y = rng.choice(k, size=n, p=rng.dirichlet(np.ones(k) * 0.7))
        y[:2] = [0, 1]  # two classes at least; others may be absent
        logits = rng.normal(size=(n, k)) * rng.uniform(0.5, 4)
        logits[np.arange(n), y] += rng.uniform(0, 3)
        problems.append((y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)))
    for i, (y, p) in enumerate(problems):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = filt.find_label_issues(y, p, filter_by="confident_learning", n_jobs=1)
        flagged, _ = sc.confident_learning_flags(p, y)
        np.testing.assert_array_equal(flagged, expected, err_msg=f"problem {i}")
