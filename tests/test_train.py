import json

import numpy as np
import pytest
import torch

from noisytail.data.corruption import Corruption
from noisytail.methods.erm import ERM
from noisytail.optim import learning_rate
from noisytail.runfolder import RunExistsError, read_checkpoint
from noisytail.summary import RunSummary, UnfinishedRun, read_summary
from noisytail.train import TrainingError, fit


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
    corr = np.load(run / "corruption.npz")
    counts = np.bincount(corr["true_labels"][corr["train_idx"]])
    assert saved["realised_imbalance_ratio"] == pytest.approx(counts.max() / counts.min())
    assert saved["noise"]["unverified"] is False  # synthetic noise on a benchmark: known
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
    last = [r["test_accuracy"] for r in rows[-5:]]
    assert np.mean(last) != np.mean(last[1:])  # 5 epochs and 4 would differ here
    assert saved["last5_test_accuracy_mean"] == pytest.approx(np.mean(last), abs=1e-12)
    assert abs(saved["noise"]["realised_rate"] - 0.2) < 0.02
    corruption = Corruption.load(run / "corruption.npz")
    assert len(corruption.train_idx) == summary.num_train
    # fit returns the typed summary, the same one read_summary reads back from the folder
    assert isinstance(summary, RunSummary) and summary == read_summary(run)


def test_same_seed_same_numbers(tmp_path, digits_config):
    cfg = digits_config("noise.kind=symmetric", "noise.rate=0.3")
    fit(cfg, tmp_path / "a", write_report=False)
    fit(cfg, tmp_path / "b", write_report=False)
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")


def test_resume_matches_uninterrupted(tmp_path, digits_config):
    cfg = digits_config("noise.kind=symmetric", "noise.rate=0.3", "train.epochs=3")
    fit(cfg, tmp_path / "full", write_report=False)
    part = fit(cfg, tmp_path / "split", write_report=False, stop_after_epochs=1)
    assert part == UnfinishedRun(epochs_done=1) and not part.finished
    fit(cfg, tmp_path / "split", resume=True, write_report=False)
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "split")


def test_refuses_existing_run_and_bad_resume(tmp_path, digits_config):
    cfg = digits_config("train.epochs=1")
    fit(cfg, tmp_path / "run", write_report=False)
    with pytest.raises(RunExistsError, match="--resume"):
        fit(cfg, tmp_path / "run", write_report=False)
    with pytest.raises(RunExistsError, match="no checkpoint"):
        fit(cfg, tmp_path / "empty", resume=True, write_report=False)


def test_resume_accepts_other_execution_settings_only(tmp_path, digits_config):
    """Threads, progress bars and the checkpoint interval may change on --resume (a bench rerun
    with another --jobs); a setting that changes the result may not."""
    from noisytail.config import ConfigError

    cfg = digits_config("train.epochs=2", "train.num_threads=2")
    fit(cfg, tmp_path / "run", write_report=False, stop_after_epochs=1)
    with pytest.raises(ConfigError, match=r"config differs .*\(train\.lr: 0\.05 -> 0\.5\)"):
        fit(digits_config("train.epochs=2", "train.lr=0.5"), tmp_path / "run", resume=True)
    other = digits_config(
        "train.epochs=2",
        "train.num_threads=1",
        "train.progress=false",
        "train.checkpoint_every=2",
        "train.device=cpu",  # a run may continue on another machine (saved: auto)
    )
    assert fit(other, tmp_path / "run", resume=True, write_report=False).finished


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
    state = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
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


def test_validation_reports_plain_and_balanced_accuracy(tmp_path, digits_config, monkeypatch):
    # A model that always answers class 0: accuracy is class 0's share of the (noisy,
    # long-tailed) validation labels, balanced accuracy 1 / (classes present there).
    import noisytail.train as train_module

    run = _run(digits_config("imbalance.ratio=10", "data.val_fraction=0.2"), tmp_path / "r")

    def always_zero(method, data, batch_size, autocast):
        probs = np.zeros((len(data), run.info.num_classes), dtype=np.float32)
        probs[:, 0] = 1.0
        return probs

    monkeypatch.setattr(train_module, "predict_probs", always_zero)
    out = run.evaluate()
    labels = run.data.corruption.noisy_labels[run.data.corruption.val_idx]
    assert out["val_accuracy"] == pytest.approx(float(np.mean(labels == 0)))
    assert out["val_accuracy"] > out["val_balanced_accuracy"]  # class 0 is the head class
    assert out["val_balanced_accuracy"] == pytest.approx(1.0 / len(np.unique(labels)))


@pytest.mark.parametrize("metric", ["val_accuracy", "val_balanced_accuracy"])
def test_best_epoch_is_picked_by_the_chosen_validation_metric(tmp_path, digits_config, metric):
    cfg = digits_config(
        "imbalance.ratio=10",
        "data.val_fraction=0.2",
        "noise.kind=symmetric",
        "noise.rate=0.4",
        "train.epochs=5",
        f"train.select_metric={metric}",
    )
    summary = fit(cfg, tmp_path / "run", write_report=False)
    rows = _metrics(tmp_path / "run")
    top = max(r[metric] for r in rows)
    chosen = [r for r in rows if r[metric] == top][-1]  # ties: the later epoch
    assert summary.select_metric == metric
    assert summary.best_epoch == chosen["epoch"]
    assert summary.test_accuracy_at_best_val == chosen["test_accuracy"]
    assert summary.best_val_balanced_accuracy == chosen["val_balanced_accuracy"]


# -- two-stage fine-tuning: frozen backbone, then everything -----------------------------------


def _run(cfg, out):
    from noisytail.data.prepare import prepare_data
    from noisytail.train import Run, setup_runtime

    return Run(cfg, out, setup_runtime(cfg), prepare_data(cfg))


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _split(state):
    """(backbone entries, head entries) of a model state dict."""
    body = {k: v for k, v in state.items() if not k.startswith("head.")}
    head = {k: v for k, v in state.items() if k.startswith("head.")}
    return body, head


def _encoder(tmp_path, digits_config):
    """A saved encoder whose weights differ from a fresh model's (another seed), as after SSL."""
    from noisytail.evaluate_ssl import save_encoder

    run = _run(digits_config("seed=5"), tmp_path / "unused")
    run.train_epoch(0, progress=False)  # moved weights and BN statistics
    return save_encoder(run.method.model, tmp_path / "encoder.pt")


def test_frozen_epochs_train_only_the_head_then_everything(tmp_path, digits_config):
    enc = _encoder(tmp_path, digits_config)
    cfg = digits_config(
        f"model.init={enc}",
        "train.freeze_backbone_epochs=1",
        "train.weight_decay=0.01",  # a decay step would move frozen weights too
        "train.epochs=2",
    )
    run = _run(cfg, tmp_path / "run")
    loaded = read_checkpoint(enc)["model"]
    start_body, start_head = _split(_snapshot(run.method.model))
    for k, v in start_body.items():  # model.init loaded the encoder (BN statistics included)
        assert torch.equal(v, loaded[k]), k
    record = run.train_epoch(0, progress=False)
    assert record["backbone_frozen"] == 1.0
    body, head = _split(_snapshot(run.method.model))
    for k, v in body.items():  # weights and BN running stats / counters untouched
        assert torch.equal(v, start_body[k]), k
    assert any(not torch.equal(v, start_head[k]) for k, v in head.items())
    for p in run.freeze.params:  # no optimizer state was created for the frozen parameters
        assert p.grad is None and not run.optimizer.state.get(p)
    assert run.method.training  # the loop's mode is otherwise normal
    record = run.train_epoch(1, progress=False)
    assert record["backbone_frozen"] == 0.0
    body2, _ = _split(_snapshot(run.method.model))
    assert not torch.equal(body2["body.0.weight"], body["body.0.weight"])
    assert not torch.equal(body2["body.1.running_mean"], body["body.1.running_mean"])


def test_frozen_backbone_stays_in_eval_mode_after_inference(tmp_path, digits_config):
    from noisytail.methods.erm import ERM

    seen = []
    original = ERM.training_step

    def spy(self, batch, ctx):
        ctx.predict_train(self.model.features)  # inference restores train mode on return
        seen.append((self.model.body[1].training, self.model.head.training))
        return original(self, batch, ctx)

    cfg = digits_config("train.freeze_backbone_epochs=1", "train.epochs=2")
    run = _run(cfg, tmp_path / "run")
    ERM.training_step = spy
    try:
        run.train_epoch(0, progress=False)
        frozen = list(seen)
        seen.clear()
        run.train_epoch(1, progress=False)
    finally:
        ERM.training_step = original
    # after an inference inside a step, the frozen BN is back in eval mode, the head training
    assert frozen and all(bn is False and head is True for bn, head in frozen)
    assert all(bn is True for bn, _ in seen)


def test_backbone_lr_scale_splits_the_groups(tmp_path, digits_config):
    cfg = digits_config("train.backbone_lr_scale=0.1", "train.schedule=constant", "train.epochs=1")
    run = _run(cfg, tmp_path / "run")
    run.train_epoch(0, progress=False)
    body = {id(p) for p in run.freeze.params}
    lrs = {}
    for group in run.optimizer.param_groups:
        kinds = {id(p) in body for p in group["params"]}
        assert len(kinds) == 1  # a group is all backbone or all head
        lrs[kinds.pop()] = group["lr"]
    assert lrs[False] == pytest.approx(0.05) and lrs[True] == pytest.approx(0.005)
    assert len(run.freeze.params) + len(list(run.method.model.head.parameters())) == len(
        list(run.method.model.parameters())
    )


def test_a_stop_between_checkpoints_resumes_from_the_stop(tmp_path, digits_config):
    # checkpoint_every=5 does not divide the stop: the stop itself is checkpointed, so resume
    # goes on from epoch 3 (it started afresh, and deleted the metrics, before)
    cfg = digits_config("train.epochs=6", "train.checkpoint_every=5")
    fit(cfg, tmp_path / "full", write_report=False)
    part = fit(cfg, tmp_path / "split", write_report=False, stop_after_epochs=3)
    assert not part.finished and part.epochs_done == 3
    assert read_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["epoch"] == 3
    done = fit(cfg, tmp_path / "split", resume=True, write_report=False, stop_after_epochs=3)
    assert done.finished
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "split")


@pytest.mark.parametrize("stop", [1, 2], ids=["mid-freeze", "after-unfreeze"])
def test_resume_with_frozen_epochs_matches_uninterrupted(tmp_path, digits_config, stop):
    enc = _encoder(tmp_path, digits_config)
    cfg = digits_config(
        f"model.init={enc}",
        "noise.kind=symmetric",
        "noise.rate=0.3",
        "train.epochs=3",
        "train.freeze_backbone_epochs=2" if stop == 1 else "train.freeze_backbone_epochs=1",
        "train.backbone_lr_scale=0.5",
    )
    fit(cfg, tmp_path / "full", write_report=False)
    part = fit(cfg, tmp_path / "split", write_report=False, stop_after_epochs=stop)
    assert not part.finished
    fit(cfg, tmp_path / "split", resume=True, write_report=False)
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "split")
    a = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = read_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    for k, v in a["method"].items():
        assert torch.equal(v, b["method"][k]), k


def test_a_finished_run_is_evaluated_and_resumed_without_its_encoder_file(tmp_path, digits_config):
    """The checkpoint replaces the start from `model.init`: re-opening the run reads no encoder."""
    from noisytail.train import evaluate_run

    enc = _encoder(tmp_path, digits_config)
    cfg = digits_config(f"model.init={enc}", "train.epochs=2")
    fit(cfg, tmp_path / "a", write_report=False, stop_after_epochs=1)
    straight = fit(cfg, tmp_path / "b", write_report=False)
    enc.unlink()
    resumed = fit(cfg, tmp_path / "a", resume=True, write_report=False)
    assert resumed.test_accuracy == straight.test_accuracy
    assert evaluate_run(tmp_path / "a")["accuracy"] == pytest.approx(straight.test_accuracy)


def test_a_gpu_run_is_evaluated_on_a_machine_without_one(tmp_path, digits_config, monkeypatch):
    from noisytail.train import evaluate_run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    summary = fit(digits_config("train.epochs=1"), tmp_path / "run", write_report=False)
    saved = tmp_path / "run" / "config.yaml"
    saved.write_text(saved.read_text().replace("device: auto", "device: cuda"))
    assert "device: cuda" in saved.read_text()
    assert evaluate_run(tmp_path / "run")["accuracy"] == pytest.approx(summary.test_accuracy)
