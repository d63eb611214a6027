import json

import numpy as np
import pytest

from noisytail.data.types import DataError
from noisytail.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
NAMES += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def make_run(run_dir, *, epochs=12, noisy=True, with_val=True):
    """A fake run folder in the format the training loop writes."""
    rng = np.random.default_rng(0)
    k = len(NAMES)
    counts = np.floor(2000 * 400.0 ** (-np.arange(k) / (k - 1))).astype(int)  # ratio 400
    true = np.repeat(np.arange(k), counts)
    noisy_labels = true.copy()
    if noisy:
        flip = rng.random(len(true)) < 0.4
        noisy_labels[flip] = (true[flip] + 1) % k  # class c -> c + 1
    pool = len(true) + 500  # the pool also holds 500 samples not used for training
    true_pool = np.concatenate([true, rng.integers(0, k, 500)])
    noisy_pool = np.concatenate([noisy_labels, rng.integers(0, k, 500)])
    np.savez(
        run_dir / "corruption.npz",
        true_labels=true_pool,
        noisy_labels=noisy_pool,
        train_idx=np.arange(len(true)),
    )
    assert pool == len(true_pool)
    y = np.repeat(np.arange(k), 100)
    hit = rng.random(len(y)) < np.linspace(0.95, 0.5, k)[y]
    pred = np.where(hit, y, (y + 1) % k)
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), pred] += 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    train_counts = np.bincount(noisy_labels, minlength=k)
    np.savez(
        run_dir / "predictions.npz",
        y_true=y,
        probs=probs,
        train_class_counts=train_counts,
        class_names=np.array(NAMES),
    )
    acc = float((pred == y).mean())
    with open(run_dir / "metrics.jsonl", "w") as f:
        for e in range(1, epochs + 1):
            row = {
                "epoch": e,
                "train_loss": 2.0 / e,
                "lr": 0.1,
                "seconds": 1.5,
                "val_accuracy": 0.5 + 0.02 * e if with_val else None,
                "test_accuracy": acc - 0.2 / e,
                "test_balanced_accuracy": acc - 0.25 / e,
                "train_accuracy_noisy": 0.4 + 0.03 * e,
            }
            f.write(json.dumps(row) + "\n")
        f.write('{"epoch": 13, "train_lo')  # a crashed run leaves a truncated line
    summary = {
        "method": "erm",
        "method_args": {"loss": {"name": "gce", "q": 0.7}},
        "dataset": "fashion_mnist",
        "model": "small_cnn",
        "noise": {"kind": "pair_flip", "rate": 0.4 if noisy else 0.0, "realised_rate": 0.398},
        "imbalance_ratio": 400,
        "realised_imbalance_ratio": 398.0,
        "epochs": epochs,
        "test_accuracy": acc,
        "balanced_accuracy": acc,
        "many_shot_accuracy": 0.9,
        "medium_shot_accuracy": None,
        "few_shot_accuracy": 0.55,
        "ece": 0.05,
        "train_seconds": 18.0,
        "images_per_second": 12345.6,
        "best_epoch": 9 if with_val else None,
        "best_val_accuracy": 0.68 if with_val else None,
        "test_accuracy_at_best_val": acc - 0.01,
        "last5_test_accuracy_mean": acc - 0.02,
        "shot_thresholds": {"many": 100.0, "few": 20.0, "scale": 1.0},
        "seed": 0,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "config.yaml").write_text("method:\n  name: erm\n  loss: gce\nseed: 0\n")
    return summary


def assert_png(path):
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000


def test_write_report_full_run(tmp_path):
    summary = make_run(tmp_path)
    out = write_report(tmp_path)
    assert out == tmp_path / "report.md"
    for name in (
        "learning_curves",
        "per_class_accuracy",
        "confusion_matrix",
        "noise_transition",
    ):
        assert_png(tmp_path / f"{name}.png")
        assert f"({name}.png)" in out.read_text()
    text = out.read_text()
    assert text.startswith("# erm on Fashion-MNIST")
    assert f"{100 * summary['test_accuracy']:.1f} %" in text
    assert "40 % pair flip label noise (realised 39.8 %" in text
    assert "an imbalance ratio of 398 (largest class / smallest)" in text
    assert "| Imbalance ratio requested / realised | 400 / 398 |" in text
    assert "`erm` with the `gce` loss" in text
    assert "many-shot > 100, few-shot < 20" in text
    assert "Ankle boot" in text  # per-class table uses class names
    assert "```yaml\nmethod:\n  name: erm" in text


def test_write_report_clean_run_without_validation(tmp_path):
    make_run(tmp_path, noisy=False, with_val=False)
    text = write_report(tmp_path).read_text()
    assert not (tmp_path / "noise_transition.png").exists()
    assert "No training label was changed." in text
    assert "Choosing the epoch by validation" not in text
    assert_png(tmp_path / "learning_curves.png")


def test_the_report_says_only_what_the_run_did(tmp_path, monkeypatch):
    # no validation split: the loop's "best" is the last epoch, not a choice by validation;
    # a user's own labels are not "clean"; the imbalance is the data's, not the config's
    import noisytail.report as report

    summary = make_run(tmp_path, noisy=False, with_val=False)
    summary.update(
        best_epoch=summary["epochs"],
        dataset="image_folder",
        noise={"kind": "none", "rate": 0.0, "realised_rate": 0.0, "unverified": True},
        imbalance_ratio=1.0,
        realised_imbalance_ratio=54.2,
    )
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    drawn = []
    real = report.plot_learning_curves
    monkeypatch.setattr(
        report,
        "plot_learning_curves",
        lambda rows, path, best_epoch=None: drawn.append(best_epoch) or real(rows, path),
    )
    text = write_report(tmp_path).read_text()
    assert "its labels as given (how many are wrong is not known)" in text
    assert "clean training labels" not in text and "balanced classes" not in text
    assert "an imbalance ratio of 54.2" in text
    assert "| Best epoch by validation | n/a (no validation split) |" in text
    assert "| Test accuracy at best-validation epoch | n/a |" in text
    assert drawn == [None]  # no "best by validation" line on the curves


def test_write_report_tolerates_missing_files(tmp_path):
    make_run(tmp_path)
    for name in ("predictions.npz", "corruption.npz", "config.yaml", "summary.json"):
        (tmp_path / name).unlink()
    text = write_report(tmp_path).read_text()
    assert_png(tmp_path / "learning_curves.png")
    assert not (tmp_path / "per_class_accuracy.png").exists()
    assert "learning_curves.png" in text
    assert "the run has not finished" in text  # only metrics.jsonl is left
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "report.md").write_text("my notes")
    with pytest.raises(DataError, match="nothing to report"):
        write_report(empty)  # a folder holding no run file is not written into
    assert (empty / "report.md").read_text() == "my notes"
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "missing")
    (tmp_path / "predictions.npz").write_bytes(b"PK\x03\x04 damaged")
    with pytest.raises(DataError, match="predictions.npz: cannot be read"):
        write_report(tmp_path)


def test_a_one_epoch_run_with_tied_counts_and_odd_class_names(tmp_path):
    # the report's sentences fit a short run on balanced data: "the last epoch", no "rarest
    # against most frequent" when all classes are the same size, a "|" in a class name escaped
    summary = make_run(tmp_path, epochs=1)
    pred = dict(np.load(tmp_path / "predictions.npz"))
    pred["train_class_counts"] = np.full(len(NAMES), 50)
    pred["class_names"] = np.array(["chien|loup"] + NAMES[1:])
    np.savez(tmp_path / "predictions.npz", **pred)
    summary["realised_imbalance_ratio"] = None
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    text = write_report(tmp_path).read_text()
    assert "(`small_cnn`, 1 epoch)" in text and "1 epochs" not in text
    assert "The mean over the last 1 epoch is" in text
    assert "| Mean test accuracy, last 1 epoch |" in text
    assert "rarest" not in text and "balanced classes" in text
    assert "| chien\\|loup | 50 |" in text


def test_classes_without_training_samples(tmp_path):
    # an empty class is the most imbalanced case, not "balanced classes", and gets no bar
    from noisytail.figures import plot_per_class_accuracy

    summary = make_run(tmp_path)
    pred = dict(np.load(tmp_path / "predictions.npz"))
    counts = np.array([40, 40, 40, 0, 0, 40, 40, 40, 40, 40])
    pred["train_class_counts"] = counts
    np.savez(tmp_path / "predictions.npz", **pred)
    summary["realised_imbalance_ratio"] = None
    summary["imbalance_ratio"] = 1.0
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    text = write_report(tmp_path).read_text()
    assert "an imbalance ratio of 1 (largest class / smallest), 2 of 10 classes having no " in text
    drawn = plot_per_class_accuracy(
        [0.5] * 10, counts, NAMES, ["few"] * 10, {"many": 100, "few": 20}, tmp_path / "p.png"
    )
    assert_png(drawn)


def test_noise_transition_uses_train_idx(tmp_path):
    from noisytail.figures import noise_transition

    corr = {
        "true_labels": np.array([0, 0, 1, 1, 0]),
        "noisy_labels": np.array([0, 1, 1, 1, -1]),
        "train_idx": np.array([0, 1, 2, 3]),  # sample 4 is in no split
    }
    assert noise_transition(corr, 2).tolist() == [[0.5, 0.5], [0.0, 1.0]]


def test_accuracy_curves_merge_equal_test_curves_and_skip_missing_ones():
    from noisytail.figures import accuracy_curves

    balanced_test = [
        {"epoch": e, "test_accuracy": 0.5 + 0.1 * e, "test_balanced_accuracy": 0.5 + 0.1 * e}
        for e in (1, 2)
    ]
    curves = accuracy_curves(balanced_test)
    assert [(c[0], c[1]) for c in curves] == [("test_accuracy", "test accuracy (= balanced)")]
    long_tailed = [
        {
            "epoch": e,
            "test_accuracy": 0.6,
            "test_balanced_accuracy": 0.4,
            "val_accuracy": 0.5,
            "val_balanced_accuracy": None,
        }
        for e in (1, 2)
    ]
    keys = [c[0] for c in accuracy_curves(long_tailed)]
    assert keys == ["test_accuracy", "test_balanced_accuracy", "val_accuracy"]
    assert accuracy_curves(long_tailed)[0][1] == "test accuracy"


def test_the_report_replaces_planted_links_and_leaves_their_targets_alone(tmp_path):
    run = tmp_path / "received"
    run.mkdir()
    make_run(run)
    victims = {}
    for name in ("report.md", "learning_curves.png", "confusion_matrix.png"):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_text("precious")
        (run / name).symlink_to(victims[name])
    write_report(run)
    for name, victim in victims.items():
        assert victim.read_text() == "precious", name
        assert not (run / name).is_symlink(), name
    assert_png(run / "learning_curves.png")
