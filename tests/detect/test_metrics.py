import numpy as np
import pytest
import torch

from noisytail.detect import detection_metrics, per_class_detection


def test_hand_worked_counts():
    noisy = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    flags = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    m = detection_metrics(noisy, flags)
    assert m["true_positives"] == 2
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(8 / 10)
    assert m["clean_precision"] == pytest.approx(6 / 7)  # 7 kept, 6 truly clean
    assert m["clean_recall"] == pytest.approx(6 / 7)  # 7 clean, 6 kept
    assert (m["n"], m["n_noisy"], m["n_flagged"]) == (10, 3, 3)
    assert m["flagged_fraction"] == pytest.approx(0.3)
    assert m["noise_rate"] == pytest.approx(0.3)
    assert m["auroc"] is None and m["average_precision"] is None  # no score given


def test_f1_with_unequal_precision_and_recall():
    noisy = np.array([1, 1, 1, 1, 0, 0], dtype=bool)
    flags = np.array([1, 0, 0, 0, 0, 0], dtype=bool)
    m = detection_metrics(noisy, flags)
    assert (m["precision"], m["recall"]) == pytest.approx((1.0, 0.25))
    assert m["f1"] == pytest.approx(2 * 1 * 0.25 / 1.25)


def test_empty_denominators():
    noisy = np.array([1, 0, 0], dtype=bool)
    nothing = np.zeros(3, dtype=bool)
    m = detection_metrics(noisy, nothing)  # flags nothing on noisy data
    assert (m["precision"], m["recall"], m["f1"]) == (1.0, 0.0, 0.0)
    m = detection_metrics(nothing, nothing)  # flags nothing on clean data
    assert (m["precision"], m["recall"], m["f1"]) == (1.0, 1.0, 1.0)
    m = detection_metrics(nothing, np.array([1, 0, 0], dtype=bool))  # false alarm on clean data
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 1.0, 0.0)


def test_auroc_perfect_inverted_and_hand_worked():
    noisy = np.array([0, 0, 0, 1, 1], dtype=bool)
    score = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    m = detection_metrics(noisy, score > 0.5, score)
    assert m["auroc"] == 1.0 and m["average_precision"] == 1.0
    assert detection_metrics(noisy, score > 0.5, -score)["auroc"] == 0.0
    # One clean sample (0.85) outranks one noisy (0.8): 5 of 6 pairs ordered -> 5/6.
    score = np.array([0.1, 0.2, 0.85, 0.8, 0.9])
    assert detection_metrics(noisy, score > 0.5, score)["auroc"] == pytest.approx(5 / 6)


def test_auroc_random_score_is_about_half():
    rng = np.random.default_rng(0)
    noisy = rng.random(20_000) < 0.3
    score = rng.random(20_000)
    m = detection_metrics(noisy, score > 0.7, score)
    assert m["auroc"] == pytest.approx(0.5, abs=0.02)
    assert m["average_precision"] == pytest.approx(0.3, abs=0.02)  # AP of chance = noise rate


def test_auroc_none_with_one_class_and_bad_scores_raise():
    clean = np.zeros(4, dtype=bool)
    assert detection_metrics(clean, clean, np.arange(4.0))["auroc"] is None
    with pytest.raises(ValueError):
        detection_metrics(np.array([0, 1], bool), np.array([0, 1], bool), np.array([0.1, np.nan]))
    with pytest.raises(ValueError):
        detection_metrics(np.array([0, 1], bool), np.array([0, 1, 1], bool))


def test_accepts_tensors():
    m = detection_metrics(
        torch.tensor([True, False]), torch.tensor([True, True]), torch.tensor([1.0, 0.0])
    )
    assert m["precision"] == 0.5 and m["auroc"] == 1.0


def test_per_class_detection_counts():
    labels = np.array([0, 0, 0, 1, 1, 2])
    noisy = np.array([1, 0, 0, 1, 1, 0], dtype=bool)
    flags = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    rows = per_class_detection(noisy, flags, labels, 4)
    assert rows == [
        {"class": 0, "n": 3, "n_noisy": 1, "n_flagged": 2, "true_positives": 1},
        {"class": 1, "n": 2, "n_noisy": 2, "n_flagged": 1, "true_positives": 1},
        {"class": 2, "n": 1, "n_noisy": 0, "n_flagged": 0, "true_positives": 0},
        {"class": 3, "n": 0, "n_noisy": 0, "n_flagged": 0, "true_positives": 0},
    ]
    with pytest.raises(ValueError):
        per_class_detection(noisy, flags, labels, 2)


def test_clean_mask_precision_and_recall_differ_by_hand():
    # 2 noisy of 6, 3 flagged (one right). Kept: samples 1, 4, 5, of which 4 and 5 are clean:
    # clean precision 2/3 (of the kept), clean recall 2/4 (of the clean).
    noisy = np.array([1, 1, 0, 0, 0, 0], dtype=bool)
    flags = np.array([1, 0, 1, 1, 0, 0], dtype=bool)
    m = detection_metrics(noisy, flags)
    assert m["clean_precision"] == pytest.approx(2 / 3)
    assert m["clean_recall"] == pytest.approx(2 / 4)
    assert m["flagged_fraction"] == pytest.approx(3 / 6)
    assert m["noise_rate"] == pytest.approx(2 / 6)
