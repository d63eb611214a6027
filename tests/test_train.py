import json

import numpy as np
import pytest
import torch

from noisytail.data.corruption import Corruption
from noisytail.methods.erm import ERM
from noisytail.train import RunExistsError, TrainingError, fit, learning_rate


def _metrics(path):
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
    return rows


def test_fit_writes_the_run_folder_and_learns(tmp_path, digits_config):
    cfg = digits_config(
        "noise.kind=symmetric", "noise.rate=0.2", "imbalance.ratio=5", "train.epochs=8"
    )
    summary = fit(cfg, tmp_path / "run", write_report=False)
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "corruption.npz",
        "metrics.jsonl",
        "summary.json",
        "predictions.npz",
    ):
        assert (run / name).exists(), name
    assert (run / "checkpoints" / "last.pt").exists() and (run / "checkpoints" / "best.pt").exists()
    rows = _metrics(run)
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    saved = json.loads((run / "summary.json").read_text())
    required = {
        "method",
        "dataset",
        "noise",
        "imbalance_ratio",
        "epochs",
        "test_accuracy",
        "balanced_accuracy",
        "many_shot_accuracy",
        "medium_shot_accuracy",
        "few_shot_accuracy",
        "ece",
        "train_seconds",
        "images_per_second",
    }
    assert required <= set(saved)
    assert saved["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert abs(saved["noise"]["realised_rate"] - 0.2) < 0.02
    corruption = Corruption.load(run / "corruption.npz")
    assert len(corruption.train_idx) == summary["num_train"]


def test_same_seed_same_numbers(tmp_path, digits_config):
    cfg = digits_config("noise.kind=symmetric", "noise.rate=0.3")
    fit(cfg, tmp_path / "a", write_report=False)
    fit(cfg, tmp_path / "b", write_report=False)
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")


def test_resume_matches_uninterrupted(tmp_path, digits_config):
    cfg = digits_config("noise.kind=symmetric", "noise.rate=0.3", "train.epochs=3")
    fit(cfg, tmp_path / "full", write_report=False)
    part = fit(cfg, tmp_path / "split", write_report=False, stop_after_epochs=1)
    assert not part["finished"]
    fit(cfg, tmp_path / "split", resume=True, write_report=False)
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "split")


def test_refuses_existing_run_and_bad_resume(tmp_path, digits_config):
    cfg = digits_config("train.epochs=1")
    fit(cfg, tmp_path / "run", write_report=False)
    with pytest.raises(RunExistsError, match="--resume"):
        fit(cfg, tmp_path / "run", write_report=False)
    with pytest.raises(RunExistsError, match="no checkpoint"):
        fit(cfg, tmp_path / "empty", resume=True, write_report=False)


def test_nan_loss_stops_with_step_and_keeps_checkpoint(tmp_path, digits_config, monkeypatch):
    cfg = digits_config("train.epochs=3")
    original = ERM.training_step

    def poisoned(self, batch, ctx):
        out = original(self, batch, ctx)
        if ctx.epoch == 1 and ctx.step_in_epoch == 2:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(ERM, "training_step", poisoned)
    with pytest.raises(TrainingError, match=r"epoch 2, step 3"):
        fit(cfg, tmp_path / "run", write_report=False)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())


def test_learning_rate_schedules(digits_config):
    cfg = digits_config("train.epochs=10", "train.lr=1.0", "train.warmup_epochs=1")
    assert learning_rate(cfg, 0, 10) == pytest.approx(0.1)
    assert learning_rate(cfg, 9, 10) == pytest.approx(1.0)
    assert learning_rate(cfg, 99, 10) < 0.01
    cfg = digits_config(
        "train.epochs=10", "train.lr=1.0", "train.schedule=step", "train.milestones=[5, 8]"
    )
    assert learning_rate(cfg, 49, 10) == pytest.approx(1.0)
    assert learning_rate(cfg, 50, 10) == pytest.approx(0.1)
    assert learning_rate(cfg, 85, 10) == pytest.approx(0.01)


def test_meta_split_is_disjoint_and_clean(tmp_path, digits_config):
    cfg = digits_config(
        "meta.per_class=5", "noise.kind=symmetric", "noise.rate=0.4", "train.epochs=1"
    )
    fit(cfg, tmp_path / "run", write_report=False)
    c = Corruption.load(tmp_path / "run" / "corruption.npz")
    assert len(np.intersect1d(c.meta_idx, c.train_idx)) == 0
    assert np.array_equal(c.noisy_labels[c.meta_idx], c.true_labels[c.meta_idx])
