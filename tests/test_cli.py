import json
import re

import yaml
from click.testing import CliRunner

from noisytail.cli import main
from noisytail.evaluate_ssl import FINETUNE_LOSS

FAST = [
    "--set",
    "data.name=digits",
    "--set",
    "data.train_subset=400",
    "--set",
    "train.epochs=2",
    "--set",
    "model.options.width=8",
    "--set",
    "train.batch_size=64",
]


def test_help_everywhere():
    runner = CliRunner()
    for args in ([], ["train"], ["evaluate"], ["list"], ["data"], ["report"]):
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_list_names_the_registries():
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0
    assert "erm" in result.output and "gce" in result.output and "small_cnn" in result.output


def test_train_evaluate_and_refuse_existing(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", *FAST, "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and "report" in result.output
    # no bars, but one line per epoch, in order, on stdout (a log file shows how training went)
    epochs = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert epochs == ["1/2", "2/2"], result.stdout
    assert "\r" not in result.stdout  # no progress bar redraws
    assert (out / "report.md").exists()
    result = runner.invoke(main, ["evaluate", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "summary.json").read_text())
    evaluated = json.loads((out / "evaluation_last.json").read_text())
    assert abs(evaluated["accuracy"] - saved["test_accuracy"]) < 1e-9
    assert (evaluated["device"], evaluated["precision"]) == (saved["device"], saved["precision"])
    result = runner.invoke(main, ["train", *FAST, "--out", str(out)])
    assert result.exit_code == 2
    assert "already holds a run" in result.output


def test_bad_input_is_one_line_exit_2(tmp_path):
    runner = CliRunner()
    cases = [
        (["--set", "train.lrr=0.1"], "Did you mean 'lr'"),
        (["--set", "noise.rate=1.5"], "noise.rate must be in"),
        (["--set", "method.name=ermm"], "Did you mean 'erm'"),
        (["--set", "method.loss=gcee"], "Did you mean 'gce'"),
        (
            [
                "--set",
                "noise.kind=matrix",
                "--set",
                "noise.rate=0.2",
                "--set",
                "noise.matrix=[[0.5, 0.4]]",
            ],
            "matrix",
        ),
        (["--set", "imbalance.ratio=100000"], "ratio"),
    ]
    for i, (args, expected) in enumerate(cases):
        result = runner.invoke(main, ["train", *FAST, *args, "--out", str(tmp_path / f"r{i}")])
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output, (args, result.output)
        assert result.output.count("\n") <= 2, result.output


def test_pretrain_then_fine_tune(tmp_path):
    runner = CliRunner()
    pre = tmp_path / "pre"
    result = runner.invoke(
        main, ["pretrain", *FAST, "--out", str(pre), "--probe-epochs", "5", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert (pre / "encoder.pt").exists() and "linear probe" in result.output
    # MTTV's groups, thirds by training frequency: never "n/a" (digits has 10 classes)
    assert re.search(r"many / medium / few thirds \d+\.\d+% / \d+\.\d+% / \d+\.\d+%", result.output)
    pool_n = int(re.search(r"trained on the run's training pool, (\d+) samples", result.output)[1])
    src = runner.invoke(
        main,
        ["pretrain", *FAST, "--out", str(tmp_path / "src"), "--probe-epochs", "1"]
        + ["--probe-train", "source", "--no-progress"],
    )
    assert src.exit_code == 0, src.output
    src_n = int(re.search(r"trained on the source's training split, (\d+) samples", src.output)[1])
    assert src_n > pool_n  # the validation split is the source's too
    # The printed fine-tuning command (encoder + the measured default loss) runs as printed.
    hint = next(ln for ln in result.output.splitlines() if ln.startswith("fine-tune:"))
    printed = hint.split("noisytail train CONFIG", 1)[1].split()
    assert printed == [
        "--set",
        f"model.init={pre / 'encoder.pt'}",
        "--set",
        f"method.loss={FINETUNE_LOSS}",
    ]
    result = runner.invoke(main, ["train", *FAST, *printed, "--out", str(tmp_path / "ft")])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())["method"]["loss"] == (
        "cb_focal"
    )
    result = runner.invoke(
        main, ["pretrain", *FAST, "--set", "method.name=erm", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "must be one of" in result.output


def test_detect_command_writes_ranked_csv(tmp_path):
    runner = CliRunner()
    out = tmp_path / "det"
    args = ["detect", *FAST, "--set", "noise.kind=symmetric", "--set", "noise.rate=0.3"]
    result = runner.invoke(main, [*args, "--out", str(out), "--arg", "k=10", "--no-progress"])
    assert result.exit_code == 0, result.output
    header = (out / "label_issues.csv").read_text().splitlines()[0]
    assert header.split(",")[:5] == ["sample_id", "row", "path", "given_label", "suggested_label"]
    result = runner.invoke(main, [*args, "--out", str(tmp_path / "x"), "--detector", "knnn"])
    assert result.exit_code == 2 and "Did you mean 'knn'" in result.output


def test_a_bug_is_not_reported_as_bad_input(tmp_path, monkeypatch):
    # Only the toolkit's own error types are bad input (exit 2, one line); a plain ValueError from
    # inside the library is a bug and must surface as one, not as "error: ..." with exit 2.
    import noisytail.train

    def buggy_fit(*args, **kwargs):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(noisytail.train, "fit", buggy_fit)
    result = CliRunner().invoke(main, ["train", *FAST, "--out", str(tmp_path / "run")])
    assert result.exit_code != 2 and isinstance(result.exception, ValueError), result.output
    assert "error:" not in result.output


def test_corruption_and_argument_errors_are_bad_input(tmp_path):
    cases = [
        (["--set", "noise.kind=asymmetric", "--set", "noise.rate=0.3"], "no standard asymmetric"),
        (["--set", "method.loss={name: gce, q: 2.0}"], "loss 'gce': q must be in (0, 1]"),
        (["--set", "noise.kind=none", "--set", "noise.rate=0.3"], "takes no rate"),
    ]
    for i, (args, expected) in enumerate(cases):
        result = CliRunner().invoke(main, ["train", *FAST, *args, "--out", str(tmp_path / str(i))])
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("error: ") and result.output.count("\n") == 1
        assert expected in result.output, result.output


def test_default_run_folders_started_in_the_same_second_do_not_collide(tmp_path, monkeypatch):
    from noisytail import cli

    monkeypatch.setattr(cli.time, "strftime", lambda fmt: "20261201-120000")
    first = cli.new_run_dir("run-erm-seed0", tmp_path)
    assert first == tmp_path / "run-erm-seed0-20261201-120000"
    first.mkdir()
    second = cli.new_run_dir("run-erm-seed0", tmp_path)
    assert second == tmp_path / "run-erm-seed0-20261201-120000-2"
    second.mkdir()
    assert cli.new_run_dir("run-erm-seed0", tmp_path).name.endswith("-3")


def _two_class_images(root):
    """24 grey 12x12 PNGs in two class folders; the --set flags that train on them."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(60 + 120 * k + rng.normal(0, 20, (12, 12)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return ["--set", "data.name=image_folder", "--set", f"data.root={root}"]


def test_resume_accepts_a_value_it_had_chosen_now_given(tmp_path):
    """The run printed `chose data.options.image_size=12`; giving that value on --resume is the
    same config (only the recorded reason differs)."""
    data = _two_class_images(tmp_path / "images")
    quick = [
        "--set",
        "train.epochs=1",
        "--no-progress",
        "--no-report",
        "--out",
        str(tmp_path / "r"),
    ]
    runner = CliRunner()
    result = runner.invoke(main, ["train", *data, *quick])
    assert result.exit_code == 0 and "chose data.options.image_size=12" in result.output
    pinned = ["--set", "data.options.image_size=12"]
    result = runner.invoke(main, ["train", *data, *pinned, *quick, "--resume"])
    assert result.exit_code == 0, result.output
    assert "resuming " in result.output and "after epoch 1 of 1" in result.output  # says so
    result = runner.invoke(main, ["train", *data, "--set", "train.lr=0.5", *quick, "--resume"])
    assert result.exit_code == 2 and "(train.lr: " in result.output, result.output


def test_pretrain_builds_the_model_train_picks_for_a_users_images(tmp_path):
    """On a small image folder `train` picks a narrower network than the default: `pretrain`
    picks the same one, so the encoder fits the network it is fine-tuned in."""
    data = _two_class_images(tmp_path / "images")
    quick = ["--set", "train.epochs=1", "--set", "train.device=cpu", "--no-progress"]
    runner = CliRunner()
    pre = tmp_path / "pre"
    result = runner.invoke(
        main, ["pretrain", *data, *quick, "--probe-epochs", "1", "--out", str(pre)]
    )
    assert result.exit_code == 0, result.output
    chosen = yaml.safe_load((pre / "config.yaml").read_text())
    assert chosen["train"]["epochs"] == 1
    init = ["--set", f"model.init={pre / 'encoder.pt'}"]
    result = runner.invoke(main, ["train", *data, *quick, *init, "--out", str(tmp_path / "ft")])
    assert result.exit_code == 0, result.output
    tuned = yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())
    assert tuned["model"] == {**chosen["model"], "init": str(pre / "encoder.pt")}
