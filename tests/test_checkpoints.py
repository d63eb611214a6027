"""Checkpoints and resume (issue 12): nothing runs from a checkpoint, a run resumes only on its own
data, a run that stopped before its first checkpoint restarts, and damaged files or a full disk are
one-line errors. The CLI's one-line errors for damaged run folders and checkpoints are rows of
tests/test_bad_input.py."""

from __future__ import annotations

import builtins
import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import noisytail.atomic as atomic
import noisytail.runfolder as runfolder
from noisytail.cli import main
from noisytail.config import load_config
from noisytail.methods.erm import ERM
from noisytail.runfolder import (
    CHECKPOINT_KEYS,
    WEIGHTS_KEYS,
    CheckpointError,
    WriteError,
    read_checkpoint,
    write_checkpoint,
    write_text,
)
from noisytail.train import Run, evaluate_run, fit

OVERRIDES = [
    "data.name=digits",
    "data.train_subset=200",
    "data.test_subset=100",
    "model.options.width=8",
    "train.batch_size=64",
    "train.epochs=2",
    "train.progress=false",
]


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def _cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _train(out: Path, *extra: str, overrides: list[str] = OVERRIDES):
    return _cli("train", *_sets(overrides), "--out", out, "--no-report", *extra)


def _one_line_error(result, code: int, fragment: str) -> None:
    """Exit ``code``, exactly one line on stderr starting with ``error:`` and holding
    ``fragment``, and no traceback anywhere."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]


def _metrics(run: Path) -> list[dict]:
    rows = runfolder.read_metrics(run / "metrics.jsonl")
    for r in rows:
        r.pop("seconds")
    return rows


class Evil:
    """A pickle whose loading opens (creates) ``marker``: stands for any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def _evil(path: Path, marker: Path, raw: bool = False) -> Path:
    obj = {"model": Evil(marker), "method": Evil(marker)}
    if raw:  # a plain (not zip) pickle
        import pickle

        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished 2-epoch run and one stopped after epoch 1 (same config)."""
    base = tmp_path_factory.mktemp("runs")
    cfg = load_config(None, OVERRIDES)
    fit(cfg, base / "done", write_report=False)
    part = fit(cfg, base / "stopped", write_report=False, stop_after_epochs=1)
    assert not part.finished
    return base


def _copy(runs: Path, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(runs / name, tmp_path / name))


# --------------------------------------------------------------------------------------------
# read_checkpoint / write_checkpoint


def test_the_payload_runs_code_when_loaded_unsafely(tmp_path):
    # The malicious file of the tests below is live: torch.load(weights_only=False) runs it.
    marker = tmp_path / "ran"
    evil = _evil(tmp_path / "evil.pt", marker)
    torch.load(evil, weights_only=False)
    assert marker.exists()


def _bad_files(tmp_path: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.randn(64, 64)}}, good)
    data = good.read_bytes()
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": torch.ones(50)}, legacy, _use_new_zipfile_serialization=False)
    files = {
        "missing": (tmp_path / "nope.pt", "not found"),
        "folder": (tmp_path, "is a folder"),
        "empty": (tmp_path / "empty.pt", "is empty (0 bytes)"),
        "truncated": (tmp_path / "half.pt", "cannot be read"),
        "truncated legacy": (tmp_path / "half_legacy.pt", "cannot be read"),
        "text": (tmp_path / "notes.pt", "cannot be read"),
        "bare tensor": (tmp_path / "bare.pt", "bare tensor"),
        "list": (tmp_path / "list.pt", "holds a list"),
        "numpy array": (tmp_path / "np.pt", "refused"),
        "malicious zip": (_evil(tmp_path / "evil.pt", marker), "refused"),
        "malicious pickle": (_evil(tmp_path / "evil.pkl", marker, raw=True), "refused"),
    }
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "half_legacy.pt").write_bytes(legacy.read_bytes()[:100])
    (tmp_path / "notes.pt").write_text("these are not weights\n")
    torch.save(torch.ones(3), tmp_path / "bare.pt")
    torch.save([torch.ones(3)], tmp_path / "list.pt")
    torch.save({"model": np.zeros(3)}, tmp_path / "np.pt")
    return files


def test_read_checkpoint_turns_every_bad_file_into_one_line(tmp_path):
    marker = tmp_path / "ran"
    for name, (path, fragment) in _bad_files(tmp_path, marker).items():
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(path, what="model.init")
        message = str(info.value)
        assert message.startswith(f"model.init: {path}: "), (name, message)
        assert fragment in message and "\n" not in message, (name, message)
    assert not marker.exists()


def test_read_checkpoint_names_missing_keys(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"epoch": 1, "method": {}}, path)
    with pytest.raises(CheckpointError, match="lacks 'optimizer', 'history'"):
        read_checkpoint(path, required=("epoch", "optimizer", "history"))
    assert read_checkpoint(path, required=("epoch",))["epoch"] == 1


def test_write_checkpoint_round_trips_and_refuses_objects(tmp_path):
    state = {"w": torch.arange(4.0), "nested": [{"a": 1, "b": 0.5, "c": "x", "d": None}], "t": (1,)}
    path = write_checkpoint(state, tmp_path / "sub" / "c.pt")
    back = read_checkpoint(path)
    assert torch.equal(back["w"], state["w"]) and back["nested"] == state["nested"]
    for bad, where in (
        ({"extra": {"rng": np.zeros(3)}}, "checkpoint['extra']['rng'] is a numpy.ndarray"),
        ({"extra": [np.int64(3)]}, "checkpoint['extra'][0] is a numpy.int64"),
        ({"p": Path("x")}, "checkpoint['p'] is a pathlib"),
    ):
        with pytest.raises(TypeError, match=where.replace("[", r"\[").replace("]", r"\]")):
            write_checkpoint(bad, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_text("old", tmp_path / "f.json")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runfolder.os, "fsync", full)
    with pytest.raises(WriteError, match="No space left on device"):
        write_text("new", path)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]  # no .tmp left behind


def test_every_saved_run_file_reads_back_safely(runs):
    done = runs / "done"
    state = read_checkpoint(done / "checkpoints" / "last.pt", required=CHECKPOINT_KEYS)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    best = read_checkpoint(done / "checkpoints" / "best.pt", required=WEIGHTS_KEYS)
    assert set(best) == {*WEIGHTS_KEYS, "inference"}
    # what the model needs to live without the data set (issue 11): digits are 8x8 grayscale
    for saved in (state, best):
        record = saved["inference"]
        assert record["model"] == {"name": "small_cnn", "options": {"width": 8}}
        assert record["class_names"] == [str(c) for c in range(10)]
        assert record["input_shape"] == [1, 8, 8] and record["resize"] is False
        assert record["mean"] == pytest.approx([0.30577], abs=1e-5)
        assert record["std"] == pytest.approx([0.37607], abs=1e-5)


def test_best_checkpoint_holds_every_network_of_the_method(tmp_path, digits_config):
    """DivideMix predicts with two networks. best.pt keeps the whole method state, so with one
    epoch (the best is the last) ``evaluate --checkpoint best`` gives the metrics of ``last``
    (a best.pt of ``method.model`` alone left the second network at its initialisation)."""
    cfg = digits_config("method.name=dividemix", "method.warmup_epochs=1", "train.epochs=1")
    out = tmp_path / "run"
    fit(cfg, out, write_report=False)
    best, last = evaluate_run(out, checkpoint="best"), evaluate_run(out, checkpoint="last")
    assert best.pop("checkpoint").endswith("best.pt") and last.pop("checkpoint").endswith("last.pt")
    assert best == last
    run = Run.from_folder(out, "best")
    saved = read_checkpoint(out / "checkpoints" / "best.pt")["method"]
    assert any(k.startswith("net2.") for k in saved)
    for key, value in run.method.state_dict().items():
        assert torch.equal(value.cpu(), saved[key]), key


# --------------------------------------------------------------------------------------------
# A malicious checkpoint is refused everywhere and runs nothing


@pytest.mark.parametrize("where", ["model.init", "resume", "evaluate", "detect --from-run"])
def test_malicious_checkpoint_is_refused(where, runs, tmp_path):
    marker = tmp_path / "ran"
    if where == "model.init":
        evil = _evil(tmp_path / "encoder.pt", marker)
        result = _train(tmp_path / "new", overrides=[*OVERRIDES, f"model.init={evil}"])
    elif where == "resume":
        run = _copy(runs, "stopped", tmp_path)
        evil = _evil(run / "checkpoints" / "last.pt", marker)
        result = _train(run, "--resume")
    else:
        run = _copy(runs, "done", tmp_path)
        evil = _evil(run / "checkpoints" / "last.pt", marker)
        if where == "evaluate":
            result = _cli("evaluate", run)
        else:
            result = _cli("detect", "--from-run", run, "--out", tmp_path / "det", "--no-progress")
    _one_line_error(result, 2, f"{evil}: refused: it holds a Python object (io.open)")
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# Recovery: interrupted runs


def test_interrupted_in_epoch_1_then_resume_starts_afresh(runs, tmp_path, monkeypatch, caplog):
    original = ERM.training_step

    def interrupted(self, batch, ctx):
        if ctx.epoch == 0 and ctx.step_in_epoch == 1:
            raise KeyboardInterrupt
        return original(self, batch, ctx)

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(ERM, "training_step", interrupted)
        result = _train(out)
    assert result.exit_code == 130 and "--resume" in result.stderr, result.output
    assert (out / "config.yaml").exists() and not (out / "checkpoints" / "last.pt").exists()
    result = _train(out, "--resume")
    assert result.exit_code == 0, result.output
    # one line, logged (the CLI shows it as a note on stderr)
    assert "holds no checkpoint (the run stopped before its first one); starting it afresh" in (
        caplog.text
    )
    assert _metrics(out) == _metrics(runs / "done")


def test_resume_after_a_failed_start_takes_the_fixed_config(tmp_path, caplog):
    # A bad setting caught late leaves config.yaml only; --resume with the fixed setting runs.
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("method: {name: erm}\n_provenance: {git: abc}\n")
    result = _train(out, "--resume")
    assert result.exit_code == 0, result.output
    assert "starting it afresh" in caplog.text


def test_resume_leaves_a_users_own_config_yaml_alone(tmp_path):
    # exp/config.yaml is the user's file, not a run's: --resume must not take the folder over
    out = tmp_path / "exp"
    out.mkdir()
    mine = "# my experiment: keep these notes\nmethod: {name: erm}\n"
    (out / "config.yaml").write_text(mine)
    result = _train(out, "--resume")
    assert result.exit_code == 2 and "is not a run's config" in result.output
    assert (out / "config.yaml").read_text() == mine
    assert [p.name for p in out.iterdir()] == ["config.yaml"]


@pytest.mark.parametrize("how", ["killed", "disk full"])
def test_death_between_metrics_and_checkpoint_leaves_no_duplicate_epoch(
    how, runs, tmp_path, monkeypatch
):
    """Epoch 2's metrics line is written, then its checkpoint save dies (the process is killed,
    or the disk is full): resume redoes epoch 2 once, to the uninterrupted result."""
    real = atomic._write_bytes
    saves = []

    def dying(path, data):
        if path.name == "last.pt":
            saves.append(path)
            if len(saves) == 2:
                if how == "killed":
                    raise KeyboardInterrupt
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(atomic, "_write_bytes", dying)
        result = _train(out)
    if how == "killed":
        assert result.exit_code == 130, result.output
    else:
        _one_line_error(result, 1, "last.pt: cannot write it (No space left on device)")
        assert "--resume" in result.stderr
    assert [r["epoch"] for r in _metrics(out)] == [1, 2]
    assert read_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")] == []
    result = _train(out, "--resume")
    assert result.exit_code == 0, result.output
    assert _metrics(out) == _metrics(runs / "done")
    done = json.loads((runs / "done" / "summary.json").read_text())
    again = json.loads((out / "summary.json").read_text())
    assert again["test_accuracy"] == done["test_accuracy"]


# --------------------------------------------------------------------------------------------
# Resume, evaluate and detect refuse changed data


def _image_folder(root: Path, per_class: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 2)):
        for c in ("cat", "dog", "fox"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


def _image_overrides(root: Path) -> list[str]:
    return [
        "data.name=image_folder",
        f"data.root={root}",
        "data.options.image_size=8",
        "data.val_fraction=0",
        "model.options.width=8",
        "train.batch_size=8",
        "train.epochs=2",
        "train.progress=false",
    ]


def test_resume_and_evaluate_refuse_a_removed_image(tmp_path):
    data = _image_folder(tmp_path / "data")
    overrides = _image_overrides(data)
    out = tmp_path / "run"
    fit(load_config(None, overrides), out, write_report=False, stop_after_epochs=1)
    (data / "train" / "dog" / "3.png").unlink()
    result = _train(out, "--resume", overrides=overrides)
    _one_line_error(
        result,
        2,
        "the data changed since the run: the training split has 23 samples, the run was made on 24",
    )
    assert [r["epoch"] for r in _metrics(out)] == [1]  # nothing trained on the other data
    _one_line_error(_cli("evaluate", out), 2, "the training split has 23 samples")


def _csv_data(root: Path) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(0)
    root.mkdir()
    for name, n in (("train.csv", 60), ("test.csv", 30)):
        labels = np.arange(n) % 3
        x = rng.normal(size=(n, 2)) + labels[:, None]
        rows = ["f0,f1,label"] + [f"{a:.4f},{b:.4f},{y}" for (a, b), y in zip(x, labels)]
        (root / name).write_text("\n".join(rows) + "\n")
    overrides = [
        "data.name=csv",
        f"data.root={root}",
        "data.options.train_csv=train.csv",
        "data.options.test_csv=test.csv",
        "data.val_fraction=0",
        "model.name=mlp",
        "train.batch_size=16",
        "train.epochs=2",
        "train.progress=false",
    ]
    return root / "train.csv", overrides


def test_resume_and_detect_refuse_a_changed_csv_label(tmp_path):
    manifest, overrides = _csv_data(tmp_path / "data")
    out = tmp_path / "run"
    fit(load_config(None, overrides), out, write_report=False, stop_after_epochs=1)
    lines = manifest.read_text().splitlines()
    lines[5] = lines[5][:-1] + ("2" if lines[5].endswith("0") else "0")
    manifest.write_text("\n".join(lines) + "\n")
    expected = "labels differ at 1 of 60 samples of the training split"
    _one_line_error(_train(out, "--resume", overrides=overrides), 2, expected)
    result = _cli("detect", "--from-run", out, "--out", tmp_path / "det", "--no-progress")
    _one_line_error(result, 2, expected)
    assert not (tmp_path / "det").exists()


def test_resume_removes_a_best_pt_written_after_the_checkpoint(runs, tmp_path, caplog):
    # the stopped attempt wrote best.pt for an epoch after last.pt (its replay may not reach it
    # again on a GPU): resume drops it, and the finished run's best.pt is its best epoch's
    out = _copy(runs, "stopped", tmp_path)
    best = out / "checkpoints" / "best.pt"
    later = {**read_checkpoint(best), "epoch": 2}
    write_checkpoint(later, best)
    cfg = load_config(None, OVERRIDES)
    summary = fit(cfg, out, resume=True, write_report=False)
    assert "holds epoch 2, but the checkpoint resumed from has its best at epoch 1" in caplog.text
    if best.exists():
        assert read_checkpoint(best)["epoch"] == summary.best_epoch
    else:
        assert summary.best_epoch == 1  # the replay found no better epoch to write


def test_resume_on_another_machine_keeps_the_runs_precision_and_layout(tmp_path, monkeypatch):
    # precision=auto and an unset channels_last are resolved by the machine: a run started on a
    # CPU with bf16 and resumed on one without goes on in bf16, and every epoch says so
    import noisytail.runtime as runtime_mod
    import noisytail.train as train_mod

    cfg = load_config(None, [*OVERRIDES, "train.epochs=3", "train.precision=auto"])
    monkeypatch.setattr(runtime_mod, "cpu_has_bf16", lambda: True)
    fit(cfg, tmp_path / "run", write_report=False, stop_after_epochs=1)
    monkeypatch.setattr(runtime_mod, "cpu_has_bf16", lambda: False)
    # the other machine's default layout differs too (digits are 8x8 images: on by default)
    monkeypatch.setattr(train_mod, "resolve_channels_last", lambda d, setting, i: bool(setting))
    summary = fit(cfg, tmp_path / "run", resume=True, write_report=False)
    records = _metrics(tmp_path / "run")
    assert [r["precision"] for r in records] == ["bf16"] * 3
    assert [r["channels_last"] for r in records] == [True] * 3
    assert summary.precision == "bf16"
    fresh = fit(cfg, tmp_path / "fresh", write_report=False)  # this machine alone: fp32
    assert fresh.precision == "fp32"
