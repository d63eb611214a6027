"""Settings chosen from a user's own data (noisytail.defaults): the rules, that explicit settings
win, and that ``noisytail train`` runs a tabular CSV given nothing but its path (issue 10)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from noisytail.cli import main
from noisytail.config import load_config
from noisytail.data.locations import holds_class_folders
from noisytail.defaults import (
    MAX_EPOCHS,
    MIN_EPOCHS,
    choose_defaults,
    epochs_for,
    explicit_keys,
    model_for,
    network_for_inputs,
)


def table(path, n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 3)) + 2.0 * y[:, None]
    rows = [f"{a:.4f},{b:.4f},{c:.4f},{t}" for (a, b, c), t in zip(x.tolist(), y)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a,b,c,label\n" + "\n".join(rows) + "\n")
    return path


def gray_pngs(root, per_class=5):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / c / f"{i}.png")


def test_epoch_rule_by_hand():
    # 400 target steps: 1,000 samples in batches of 128 make 8 steps -> 50 epochs, capped at 40
    assert epochs_for(1000, 128)[0] == MAX_EPOCHS
    assert epochs_for(128 * 20, 128)[0] == 20  # 20 steps per epoch -> 400 / 20
    assert epochs_for(128 * 30, 128)[0] == 14  # ceil(400 / 30)
    assert epochs_for(60_000, 128)[0] == MIN_EPOCHS  # 469 steps: the usual 10
    assert "469 steps of 128" in epochs_for(60_000, 128)[1]


def test_model_rule():
    assert model_for((30,), 400)[:2] == ("mlp", {"hidden": [64, 64]})
    assert model_for((30,), 5000)[:2] == ("mlp", {})
    assert model_for((1, 28, 28), 800)[:2] == ("small_cnn", {"width": 16})
    assert model_for((3, 64, 64), 50_000)[:2] == ("small_cnn", {})


def test_explicit_keys_of_a_file_and_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  epochs: 3\nmodel: {name: mlp}\n")
    keys = explicit_keys(tmp_path / "c.yaml", ["data.options.image_size=8", "seed=1"])
    assert {"train.epochs", "model.name", "data.options.image_size", "seed"} <= keys
    assert "train.lr" not in keys and "data.options.channels" not in keys


def test_chosen_from_a_gray_folder_and_explicit_settings_win(tmp_path):
    gray_pngs(tmp_path / "photos")
    base = ["data.name=image_folder", f"data.root={tmp_path / 'photos'}"]
    cfg, choices = choose_defaults(load_config(None, base), explicit_keys(None, base))
    assert cfg.data.options == {"image_size": 28, "channels": 1}
    assert cfg.model.name == "small_cnn" and cfg.model.options == {"width": 16}
    assert cfg.train.epochs == MAX_EPOCHS
    assert [c.key for c in choices] == [
        "data.options.image_size",
        "data.options.channels",
        "model.name",
        "train.epochs",
    ]
    assert set(cfg.inferred) == {c.key for c in choices}
    given = base + ["data.options.image_size=12", "train.epochs=2", "model.name=resnet32"]
    cfg, choices = choose_defaults(load_config(None, given), explicit_keys(None, given))
    assert cfg.data.options == {"image_size": 12, "channels": 1}
    assert (cfg.train.epochs, cfg.model.name, cfg.model.options) == (2, "resnet32", {})
    assert [c.key for c in choices] == ["data.options.channels"]
    # a detector that trains no network: the data's own settings only
    cfg, choices = choose_defaults(
        load_config(None, base), explicit_keys(None, base), training=False
    )
    assert [c.key for c in choices] == ["data.options.image_size", "data.options.channels"]
    assert set(cfg.inferred) == {"data.options.image_size", "data.options.channels"}
    # data.root alone, holding class folders of images, is an image folder
    alone = [f"data.root={tmp_path / 'photos'}"]
    cfg, choices = choose_defaults(load_config(None, alone), explicit_keys(None, alone))
    assert cfg.data.name == "image_folder" and choices[0].key == "data.name"
    (tmp_path / "empty").mkdir()
    assert not holds_class_folders(str(tmp_path / "empty"))
    assert not holds_class_folders(str(tmp_path / "photos" / "missing"))
    # other sources are left alone
    cfg, choices = choose_defaults(load_config(None, ["data.name=digits"]), ["data.name"])
    assert choices == [] and cfg.model.name == "small_cnn" and cfg.train.epochs == 10


@pytest.mark.slow
def test_train_runs_a_tabular_csv_given_nothing_but_its_path(tmp_path):
    csv = table(tmp_path / "data" / "t.csv")
    out = tmp_path / "run"
    args = ["train", "--set", f"data.options.train_csv={csv}", "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("chose ")]
    assert [ln.split("=")[0] for ln in lines] == [
        "chose data.name",
        "chose model.name",
        "chose train.epochs",
    ]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["name"] == "csv" and saved["model"]["name"] == "mlp"
    assert saved["train"]["epochs"] == MAX_EPOCHS
    assert set(saved["inferred"]) == {"data.name", "model.name", "train.epochs"}
    summary = yaml.safe_load((out / "summary.json").read_text())
    assert summary["finished"] and summary["test_accuracy"] > 0.8  # separable by construction
    # --resume with the same command chooses the same settings: the saved config matches
    again = CliRunner().invoke(main, [*args, "--resume"])
    assert again.exit_code == 0, again.output


@pytest.mark.slow
def test_detect_runs_a_tabular_csv_given_nothing_but_its_path(tmp_path):
    csv = table(tmp_path / "data" / "t.csv")
    out = tmp_path / "det"
    args = ["detect", "--set", f"data.options.train_csv={csv}", "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    # the default detector trains a network on a table (its third part): the model and the
    # epochs are chosen from the data, said, and used
    assert [ln.split("=")[0] for ln in result.stdout.splitlines() if ln.startswith("chose ")] == [
        "chose data.name",
        "chose model.name",
        "chose train.epochs",
    ]
    # the whole table is checked (no test or validation split), and a fold model trains on 4/5
    chosen = {ln.split("=")[0]: ln for ln in result.stdout.splitlines() if ln.startswith("chose ")}
    assert "for 60 training samples" in chosen["chose model.name"]
    assert "48 training samples" in chosen["chose train.epochs"]
    assert "one fold model's 48 of 60" in chosen["chose train.epochs"]
    rows = (out / "label_issues.csv").read_text().splitlines()
    assert len(rows) == 1 + 60  # a header and one row per input row
    details = json.loads((out / "detection.json").read_text())["details"]
    network = details["network"]
    assert {k: network[k] for k in ("model", "options")} == {
        "model": "mlp",
        "options": {"hidden": [64, 64]},
    }
    # 60 rows: the chosen 40 epochs are 40 steps a fold, so 4x is tried and the better kept
    assert network["epochs_tried"] == [40, 160] and network["epochs"] in (40, 160)
    weights = [details[f"{part}_weight"] for part in ("knn", "linear", "network")]
    assert sum(weights) == pytest.approx(1.0)


def test_the_default_detector_trains_a_network_on_tables_only(tmp_path):
    """choose_defaults asks the detector with whether the data are images: the default
    detector chooses the model and epochs for a table, not for a folder of images."""
    from noisytail.detect.task import detector_trains_network

    auto = detector_trains_network(None, None)
    assert auto(False) and not auto(True)
    assert not detector_trains_network("auto", {"network": "never"})(False)
    assert not detector_trains_network("auto", {"model": "linear"})(False)
    assert detector_trains_network("auto", {"network": "always"})(True)
    gray_pngs(tmp_path / "photos")
    folder = ["data.name=image_folder", f"data.root={tmp_path / 'photos'}"]
    _, choices = choose_defaults(
        load_config(None, folder), explicit_keys(None, folder), training=auto
    )
    assert [c.key for c in choices] == ["data.options.image_size", "data.options.channels"]
    csv = [f"data.options.train_csv={table(tmp_path / 'data' / 't.csv')}"]
    _, choices = choose_defaults(load_config(None, csv), explicit_keys(None, csv), training=auto)
    assert [c.key for c in choices] == ["data.name", "model.name", "train.epochs"]


def test_network_for_inputs_replaces_only_a_model_that_cannot_take_them():
    cfg = load_config(None, ["data.name=csv"])  # the config's default model: small_cnn
    fitted = network_for_inputs(cfg, (5,), 400)
    assert (fitted.model.name, dict(fitted.model.options)) == ("mlp", {"hidden": [64, 64]})
    assert fitted.train.epochs == epochs_for(400, cfg.train.batch_size)[0]
    assert {"model.name", "train.epochs"} <= set(fitted.inferred)
    mine = load_config(None, ["data.name=csv", "model.name=mlp", "train.epochs=3"])
    assert network_for_inputs(mine, (5,), 400) is mine
    assert network_for_inputs(cfg, (1, 28, 28), 400) is cfg


def test_epochs_follow_one_fold_models_share_of_the_checked_data(tmp_path):
    from noisytail.detect.task import detector_fold_share, whole_data_config

    assert detector_fold_share(None, None) == pytest.approx(0.8)  # auto, 5 folds
    assert detector_fold_share("auto", {"folds": 10}) == pytest.approx(0.9)
    assert detector_fold_share("confident_learning", {"folds": 4}) == pytest.approx(0.75)
    assert detector_fold_share("knn", None) == 1.0  # one network on all the data
    csv = [f"data.options.train_csv={table(tmp_path / 't.csv', n=3000)}"]
    cfg, explicit = load_config(None, csv), explicit_keys(None, csv)
    chosen, choices = choose_defaults(cfg, explicit, fold_share=0.8, scope=whole_data_config)
    # 3,000 rows checked: the wider model; 2,400 a fold: 19 steps an epoch, 22 epochs
    assert dict(chosen.model.options) == {}
    assert chosen.train.epochs == epochs_for(2400, 128)[0] == 22
    assert epochs_for(3000, 128)[0] != 22
    assert "one fold model's 2400 of 3000" in choices[-1].why
    whole, _ = choose_defaults(cfg, explicit, scope=whole_data_config)
    assert whole.train.epochs == epochs_for(3000, 128)[0]
    split, _ = choose_defaults(cfg, explicit)  # train: the source's test split, 10 % validation
    assert split.train.epochs == epochs_for(int(2400 * 0.9), 128)[0]
    fitted = network_for_inputs(load_config(None, ["data.name=csv"]), (5,), 3000, fold_share=0.8)
    assert (fitted.model.name, fitted.train.epochs) == ("mlp", 22)


def test_detect_shows_one_bar_for_the_cross_fitted_network(tmp_path):
    # a fold's epoch is one step here: a bar per epoch would print hundreds of them
    csv = table(tmp_path / "t.csv")
    args = ["detect", "--set", f"data.options.train_csv={csv}", "--out", str(tmp_path / "d")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "network on 5 folds, 40 epochs each" in result.output
    assert "epoch 1/40" not in result.output
