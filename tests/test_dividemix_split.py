"""The DivideMix split analysis (`noisytail.benchmarks.dividemix_split`): hand-worked figures,
and a real run folder read back in the training split's order."""

import numpy as np
import pytest

from noisytail.benchmarks.dividemix_split import read_bench, read_run, split_quality
from noisytail.checkpoint_file import read_checkpoint
from noisytail.train import fit


def test_split_quality_hand_worked():
    given = np.array([0, 0, 1, 1, 2, 2])
    true = np.array([0, 1, 1, 1, 2, 0])  # samples 1 and 5 mislabelled
    prob = np.array(
        [
            [0.9, 0.8, 0.7, 0.2, 0.6, 0.1],  # labelled {0, 1, 2, 4}: one noisy of 4; 3 of 4 clean
            [0.9, 0.1, 0.7, 0.9, 0.1, 0.1],  # labelled {0, 2, 3}: none noisy; 3 of 4 clean
        ]
    )
    q = split_quality(prob, given, true, num_classes=3)
    assert q["labelled"] == pytest.approx(7 / 12)
    assert q["noise_in_labelled"] == pytest.approx((1 / 4 + 0) / 2)
    assert q["clean_recall"] == pytest.approx(3 / 4)
    np.testing.assert_allclose(q["labelled_per_class"], [(2 + 1) / 2, (1 + 2) / 2, (1 + 0) / 2])
    # mean probabilities of the clean samples 0,2,3,4: .9 .7 .55 .35; noisy 1,5: .45 .1
    # pairs (clean above noisy) 7 of 8 -> AUROC 0.875
    assert q["auroc"] == pytest.approx(7 / 8)


def test_split_quality_threshold_and_shapes():
    given, true = np.array([0, 1]), np.array([0, 0])
    assert split_quality(np.array([0.6, 0.6]), given, true, 2)["labelled"] == 1.0
    assert split_quality(np.array([0.6, 0.6]), given, true, 2, threshold=0.7)["labelled"] == 0.0
    with pytest.raises(ValueError):
        split_quality(np.ones((2, 3)), given, true, 2)


def test_read_run_joins_the_split_to_the_saved_corruption(tmp_path, digits_config):
    cfg = digits_config(
        "method.name=dividemix",
        "method.warmup_epochs=1",
        "noise.kind=uniform",
        "noise.rate=0.4",
        "train.epochs=3",
    )
    run = tmp_path / "runs" / "uniform40-dividemix-s0-0123456789"
    fit(cfg, run, write_report=False)
    row = read_run(run)
    state = read_checkpoint(run / "checkpoints" / "last.pt")
    corruption = np.load(run / "corruption.npz")
    n = len(corruption["train_idx"])
    assert state["extra"]["prob"].shape == (2, n)
    assert row["labelled_per_class"].sum() == pytest.approx(row["labelled"] * n)
    # the split is a detector of wrong labels in the training order: far better than chance
    assert row["auroc"] > 0.7
    assert row["test_per_class"].shape == (10,)
    (rows,) = read_bench(tmp_path)
    assert (rows["setting"], rows["variant"], rows["seed"]) == ("uniform40", "dividemix", 0)
