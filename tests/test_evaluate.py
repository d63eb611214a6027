import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from noisytail.evaluate import (
    classification_metrics,
    confusion_matrix,
    epoch_metrics,
    expected_calibration_error,
    negative_log_likelihood,
    shot_groups,
    shot_thresholds,
)


def one_hot(pred, k, p=1.0):
    """Probabilities with mass ``p`` on ``pred`` and the rest spread evenly."""
    out = np.full((len(pred), k), (1 - p) / (k - 1))
    out[np.arange(len(pred)), pred] = p
    return out


def test_accuracy_six_samples():
    y = np.array([0, 1, 2, 0, 1, 2])
    pred = np.array([0, 1, 1, 0, 2, 2])  # 4 of 6 right
    m = classification_metrics(y, one_hot(pred, 3, 0.8), np.array([600, 600, 600]))
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class_accuracy"] == pytest.approx([1.0, 0.5, 0.5])
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 1, 1], [0, 1, 1]]


def test_balanced_accuracy_differs_on_imbalanced_test_and_matches_sklearn():
    y = np.array([0] * 8 + [1] * 2)
    pred = np.array([0] * 8 + [0, 1])
    m = classification_metrics(y, one_hot(pred, 2, 0.9), np.array([800, 200]))
    assert m["accuracy"] == pytest.approx(0.9)
    assert m["balanced_accuracy"] == pytest.approx(0.75)  # (8/8 + 1/2) / 2
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))


def test_absent_class_is_none_and_ignored_by_balanced_accuracy():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    m = classification_metrics(y, one_hot(pred, 3, 0.9), np.array([1000, 300, 10]))
    assert m["per_class_accuracy"] == [0.5, 1.0, None]
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["few_shot_accuracy"] is None  # only class 2 is few-shot and it is not tested
    assert m["medium_shot_accuracy"] is None
    assert m["many_shot_accuracy"] == pytest.approx(0.75)
    json.dumps(m, allow_nan=False)  # JSON-serialisable, no NaN


def test_ece_zero_for_confident_correct_predictions():
    y = np.array([0, 1, 2, 1])
    assert expected_calibration_error(one_hot(y, 3), y) == 0.0


def test_ece_single_bin_is_gap_between_confidence_and_accuracy():
    y = np.zeros(10, dtype=int)
    pred = np.array([0] * 6 + [1] * 4)  # accuracy 0.6, every confidence 0.7
    probs = one_hot(pred, 2, 0.7)
    assert expected_calibration_error(probs, y) == pytest.approx(0.1)


def test_ece_two_bins_weighted_by_size():
    # bin (0.6, 0.8]: 2 samples, conf 0.7, both right -> gap 0.3; bin (0.8, 1]: 2 samples, conf 0.9,
    # one right -> gap 0.4. ECE = (2 * 0.3 + 2 * 0.4) / 4 = 0.35 with 5 bins.
    probs = np.array([[0.7, 0.3], [0.3, 0.7], [0.9, 0.1], [0.9, 0.1]])
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probs, y, n_bins=5) == pytest.approx(0.35)


def test_nll():
    probs = np.array([[0.5, 0.5], [0.25, 0.75]])
    y = np.array([0, 1])
    assert negative_log_likelihood(probs, y) == pytest.approx((math.log(2) - math.log(0.75)) / 2)


def test_shot_groups_with_known_counts():
    counts = np.array([500, 150, 101, 100, 50, 20, 19, 5])
    many, few, scale = shot_thresholds(counts)
    assert (many, few, scale) == (100, 20, 1.0)
    groups = shot_groups(counts, many, few)
    expected = ["many", "many", "many", "medium", "medium", "medium", "few", "few"]
    assert groups.tolist() == expected


def test_shot_thresholds_scale_for_small_data_sets():
    counts = np.array([250, 60, 40, 9])
    many, few, scale = shot_thresholds(counts)
    assert scale == pytest.approx(0.5)
    assert (many, few) == pytest.approx((50, 10))
    assert shot_groups(counts, many, few).tolist() == ["many", "many", "medium", "few"]
    # Large data sets are not scaled up.
    assert shot_thresholds(np.array([5000, 10]))[2] == 1.0


def test_shot_accuracy_is_mean_of_per_class_accuracy_in_group():
    counts = np.array([1000, 50, 10, 5])  # many, medium, few, few
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    pred = np.array([0, 0, 1, 0, 2, 0, 0, 0])
    m = classification_metrics(y, one_hot(pred, 4, 0.9), counts)
    assert m["many_shot_accuracy"] == pytest.approx(1.0)
    assert m["medium_shot_accuracy"] == pytest.approx(0.5)
    assert m["few_shot_accuracy"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["shot_thresholds"] == {"many": 100.0, "few": 20.0, "scale": 1.0}
    assert m["shot_groups"] == ["many", "medium", "few", "few"]


def test_confusion_matrix_rows_are_true_class():
    cm = confusion_matrix([0, 0, 1, 2], [1, 0, 1, 0], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)


def test_accepts_torch_tensors():
    y = torch.tensor([0, 1, 1])
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    m = classification_metrics(y, probs, torch.tensor([600, 600]))
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_shape_errors():
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 1]), np.ones((3, 2)) / 2, np.array([1, 1]))
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 1]), np.ones((2, 2)) / 2, np.array([1, 1, 1]))


# --- properties that planted bugs slipped past (issue 13, item 10; see scripts/mutants.py)


def test_ece_uses_15_bins_by_default():
    # Confidences 0.64 (right) and 0.68 (wrong). With 15 bins they fall in (0.600, 0.667] and
    # (0.667, 0.733]: ECE = (0.36 + 0.68) / 2 = 0.52. With 10 bins both are in (0.6, 0.7]:
    # accuracy 0.5, mean confidence 0.66, ECE 0.16.
    probs = np.array([[0.64, 0.36], [0.68, 0.32]])
    y = np.array([0, 1])
    assert expected_calibration_error(probs, y) == pytest.approx(0.52)
    assert expected_calibration_error(probs, y, n_bins=15) == pytest.approx(0.52)
    assert expected_calibration_error(probs, y, n_bins=10) == pytest.approx(0.16)
    m = classification_metrics(y, probs, np.array([600, 600]))
    assert m["ece"] == pytest.approx(0.52)


def test_ece_weights_bins_by_their_sample_counts():
    # Three right at confidence 0.7 (gap 0.3) and one wrong at 0.9 (gap 0.9):
    # ECE = (3 * 0.3 + 1 * 0.9) / 4 = 0.45, not the unweighted bin mean (0.3 + 0.9) / 2 = 0.6.
    probs = np.array([[0.7, 0.3]] * 3 + [[0.9, 0.1]])
    y = np.array([0, 0, 0, 1])
    assert expected_calibration_error(probs, y) == pytest.approx(0.45)


def test_ece_bins_are_closed_on_the_right():
    # With 5 bins a confidence of exactly 0.8 is in (0.6, 0.8], with 0.7: accuracy 1/2, mean
    # confidence 0.75, ECE 0.25 (in [0.8, 1.0) on its own it would give (0.3 + 0.8) / 2 = 0.55).
    probs = np.array([[0.7, 0.3], [0.8, 0.2]])
    y = np.array([0, 1])
    assert expected_calibration_error(probs, y, n_bins=5) == pytest.approx(0.25)


def test_epoch_metrics_by_hand():
    counts = [10, 5, 1]
    # validation: noisy labels [0, 0, 0, 1], predictions [0, 1, 1, 1]: accuracy 2/4; recall
    # 1/3 and 1 over the classes present (class 2 is absent and left out), mean 2/3
    val = {"val_labels": np.array([0, 0, 0, 1]), "val_probs": one_hot([0, 1, 1, 1], 3, 0.8)}
    # test: labels [0, 1, 2, 2], predictions [0, 1, 1, 2]: accuracy 3/4; recall 1, 1, 1/2
    test = (np.array([0, 1, 2, 2]), one_hot([0, 1, 1, 2], 3, 0.8), counts)
    out = epoch_metrics(*test, **val)
    assert list(out) == [
        "val_accuracy",
        "val_balanced_accuracy",
        "test_accuracy",
        "test_balanced_accuracy",
    ]
    assert out["val_accuracy"] == pytest.approx(0.5)
    assert out["val_balanced_accuracy"] == pytest.approx(2 / 3)
    assert out["test_accuracy"] == pytest.approx(0.75)
    assert out["test_balanced_accuracy"] == pytest.approx(2.5 / 3)
    assert set(epoch_metrics(*test)) == {"test_accuracy", "test_balanced_accuracy"}
