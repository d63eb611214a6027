"""A trained model on its own (issue 11 items 3-4): `load_model` in a fresh process without the
data, ``noisytail predict`` and ``noisytail export`` round trips, and their one-line errors."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from noisytail.cli import main
from noisytail.data.arrays import normalise_inputs
from noisytail.data.types import DataError
from noisytail.estimator import NoisyTailClassifier, load_model
from noisytail.inference import TrainedModel

FAST = dict(num_threads=1, precision="fp32", augment="none", batch_size=16, epochs=8)
COLOURS = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]


def _images(n=60, size=10, seed=0):
    """Three classes told apart by their colour: uint8 [N, H, W, 3] and labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(np.array(COLOURS)[y][:, None, None, :], 20, size=(n, size, size, 3))
    return np.clip(x, 0, 255).astype(np.uint8), np.array(["red", "green", "blue"])[y]


@pytest.fixture(scope="module")
def estimator_run(tmp_path_factory):
    """A NoisyTailClassifier trained into a run folder; the arrays exist only in this process."""
    run = tmp_path_factory.mktemp("est") / "run"
    x, y = _images()
    clf = NoisyTailClassifier(run_dir=str(run), **FAST).fit(x, y)
    return run, clf, x, y


def _fresh_process(code: str, cwd: Path) -> str:
    """Run ``code`` in a new interpreter (no state of this one) and return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_load_model_in_a_fresh_process_without_the_data(estimator_run, tmp_path):
    run, clf, x, y = estimator_run
    np.save(tmp_path / "x.npy", x[:12])
    out = _fresh_process(
        "import json, numpy as np\n"
        "from noisytail.estimator import load_model\n"
        f"clf = load_model({str(run)!r})\n"
        f"p = clf.predict_proba(np.load({str(tmp_path / 'x.npy')!r}))\n"
        "print(json.dumps({'p': p.tolist(), 'classes': clf.classes_.tolist(),\n"
        "                  'pred': clf.predict(np.load('x.npy')).tolist()}))\n",
        cwd=tmp_path,
    )
    got = json.loads(out)
    assert got["classes"] == ["blue", "green", "red"]
    np.testing.assert_allclose(got["p"], clf.predict_proba(x[:12]), rtol=0, atol=1e-12)
    assert got["pred"] == clf.predict(x[:12]).tolist()
    assert (np.array(got["pred"]) == y[:12]).mean() > 0.9


def test_load_model_of_a_cli_run_after_its_image_folder_is_gone(tmp_path):
    photos = tmp_path / "photos"
    x, y = _images(n=45, size=12)
    for i, (img, label) in enumerate(zip(x, y)):
        (photos / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(photos / label / f"{i}.png")
    new = tmp_path / "new"
    new.mkdir()
    for i in range(6):  # of another size: a run trained on files resizes them as in training
        Image.fromarray(np.repeat(np.repeat(x[i], 2, 0), 2, 1)).save(new / f"{i}-{y[i]}.png")
    run = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["train", "--out", str(run), "--no-report"]
        + sum(
            (
                ["--set", o]
                for o in (
                    "data.name=image_folder",
                    f"data.root={photos}",
                    "data.options.image_size=12",
                    "data.val_fraction=0",
                    "train.epochs=6",
                    "train.batch_size=16",
                    "train.precision=fp32",
                    "train.progress=false",
                    "model.options.width=8",
                )
            ),
            [],
        ),
    )
    assert result.exit_code == 0, result.output
    shutil.rmtree(photos)
    out = _fresh_process(
        "import json\n"
        "from noisytail.estimator import load_model\n"
        "from noisytail.prediction import image_paths\n"
        f"clf = load_model({str(run)!r})\n"
        f"paths = [str(p) for p in image_paths([{str(new)!r}])]\n"
        "print(json.dumps(paths))\n"
        "print(json.dumps(clf.predict(paths).tolist()))\n",
        cwd=tmp_path,
    )
    paths_json, pred_json = out.splitlines()
    truth = [Path(p).stem.split("-")[1] for p in json.loads(paths_json)]
    assert json.loads(pred_json) == truth
    # arrays of another size are refused, saying that paths would be resized
    with pytest.raises(DataError, match="Or pass the files' paths: they are resized"):
        load_model(run).predict(np.repeat(np.repeat(x[:2], 2, 1), 2, 2))


def test_predict_writes_class_probability_and_top_k(estimator_run, tmp_path):
    run, clf, x, y = estimator_run
    folder = tmp_path / "new"
    folder.mkdir()
    for i in range(7):
        Image.fromarray(x[i]).save(folder / f"{i:02d}.png")
    listing = tmp_path / "list.csv"
    listing.write_text("path\n" + "".join(f"new/{i:02d}.png\n" for i in (5, 6)))
    (tmp_path / "results").mkdir()
    out = tmp_path / "results" / "p.csv"
    result = CliRunner().invoke(
        main,
        ["predict", str(run), "--images", str(folder / "00.png"), "--images", str(folder),
         "--images", str(listing), "--out", str(out), "--top-k", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [Path(r["input"]).name for r in rows] == [
        f"{i:02d}.png" for i in [0, 0, 1, 2, 3, 4, 5, 6, 5, 6]
    ]
    assert list(rows[0]) == ["input", "class", "probability", "class_2", "probability_2"]
    order = [0, 0, 1, 2, 3, 4, 5, 6, 5, 6]
    probs = clf.predict_proba(x[order])
    for row, p in zip(rows, probs):
        top = np.argsort(-p)[:2]
        assert row["class"] == clf.classes_[top[0]] and row["class_2"] == clf.classes_[top[1]]
        assert float(row["probability"]) == pytest.approx(p[top[0]], abs=1e-6)
        assert float(row["probability_2"]) == pytest.approx(p[top[1]], abs=1e-6)
    # a rerun replaces its own table; an input or any other file of the user's is left alone
    again = ["predict", str(run), "--images", str(folder), "--out"]
    assert CliRunner().invoke(main, [*again, str(out)]).exit_code == 0
    listing_text = listing.read_text()
    result = CliRunner().invoke(
        main, ["predict", str(run), "--images", str(listing), "--out", str(listing)]
    )
    assert result.exit_code == 2 and "among your data" in result.output
    result = CliRunner().invoke(main, [*again, str(folder / "p.csv")])  # among the images
    assert result.exit_code == 2 and "among your data" in result.output
    assert not (folder / "p.csv").exists()
    # by default the table goes into the run folder
    result = CliRunner().invoke(main, ["predict", str(run), "--images", str(folder)])
    assert result.exit_code == 0 and (run / "predictions.csv").is_file(), result.output
    notes = tmp_path / "results" / "notes.csv"
    notes.write_text("path,note\nnew/00.png,mine\n")
    result = CliRunner().invoke(main, [*again, str(notes)])
    assert result.exit_code == 2 and "is not a predictions table" in result.output
    assert (
        listing.read_text() == listing_text and notes.read_text() == "path,note\nnew/00.png,mine\n"
    )


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((14, 14, 3), np.uint8), "14x14 RGB .* takes 10x10 RGB"),
        (np.zeros((10, 10), np.uint8), r"odd.png is a grayscale image; the model takes colour"),
    ],
    ids=["another size", "another channel count"],
)
def test_predict_refuses_an_image_of_another_shape(estimator_run, tmp_path, image, message):
    run = estimator_run[0]
    Image.fromarray(image).save(tmp_path / "odd.png")
    result = CliRunner().invoke(main, ["predict", str(run), "--images", str(tmp_path / "odd.png")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert __import__("re").search(message, lines[0]), lines[0]


def test_predict_judges_each_image_against_the_model_and_skips_what_training_skips(
    estimator_run, tmp_path
):
    # a grey image next to a colour one is still grey (the batch does not decide); a folder's
    # hidden files and noisytail output folders are skipped, as training skips them
    run = estimator_run[0]
    folder = tmp_path / "new"
    (folder / ".thumbnails").mkdir(parents=True)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "colour.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / ".thumbnails" / "colour.png")
    (folder / "._colour.png").write_bytes(b"AppleDouble")
    out = tmp_path / "p.csv"
    result = CliRunner().invoke(main, ["predict", str(run), "--images", str(folder), "--out", out])
    assert result.exit_code == 0, result.output
    assert [r["input"] for r in csv.DictReader(out.open())] == [str(folder / "colour.png")]
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folder / "grey.png")
    result = CliRunner().invoke(main, ["predict", str(run), "--images", str(folder)])
    assert result.exit_code == 2 and "grey.png is a grayscale image" in result.output


def test_a_grey_palette_image_is_grayscale_as_in_training(tmp_path):
    from noisytail.inference import read_images

    grey = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P")
    grey.save(tmp_path / "pal.gif")
    assert read_images([tmp_path / "pal.gif"]).shape == (1, 1, 8, 8)
    assert read_images([tmp_path / "pal.gif"], channels=1).shape == (1, 1, 8, 8)
    with pytest.raises(DataError, match="pal.gif is a grayscale image; the model takes colour"):
        read_images([tmp_path / "pal.gif"], channels=3)


def test_predict_and_export_refuse_a_folder_that_is_not_a_run(tmp_path):
    for args in (["predict", str(tmp_path), "--images", str(tmp_path)], ["export", str(tmp_path)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and "not a run folder" in result.output, result.output


def _reference(run: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The normalised batch and PyTorch's float32 logits of the run's model."""
    trained = TrainedModel.from_run(run)
    inputs = x.transpose(0, 3, 1, 2)
    batch = normalise_inputs(inputs, trained.mean, trained.std).numpy()
    return batch, trained.logits(inputs).numpy()


def test_export_torchscript_runs_like_pytorch(estimator_run, tmp_path):
    run, _, x, _ = estimator_run
    result = CliRunner().invoke(
        main, ["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "m.pt.json").read_text())
    assert meta["class_names"] == ["blue", "green", "red"] and meta["input_shape"] == [3, 10, 10]
    assert (
        meta["image_files"].startswith("read at their own size") and meta["feature_names"] is None
    )
    batch, want = _reference(run, x[:5])  # a batch size the trace did not see
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    got = scripted(torch.from_numpy(batch)).numpy()  # no gradients to detach from
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_export_onnx_runs_like_pytorch(estimator_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    run, _, x, _ = estimator_run
    result = CliRunner().invoke(main, ["export", str(run), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    assert (run / "model.onnx").is_file() and (run / "model.onnx.json").is_file()
    batch, want = _reference(run, x[:7])
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": batch})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_load_model_of_a_tabular_run_standardises_as_training_did(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.normal(0, 1, size=(90, 4)) + 3 * np.eye(3, 4)[y] * 100 + 500  # far from 0
    clf = NoisyTailClassifier(run_dir=str(tmp_path / "run"), **FAST).fit(x, y)
    back = load_model(tmp_path / "run")
    assert back.n_features_in_ == 4 and back.classes_.tolist() == [0, 1, 2]
    np.testing.assert_allclose(back.predict_proba(x), clf.predict_proba(x), atol=1e-12)
    assert back.score(x, y) > 0.9
    table = tmp_path / "new.csv"  # `noisytail predict` on a CSV of the feature columns
    table.write_text("a,b,label,c,d\n" + "".join(f"{r[0]},{r[1]},x,{r[2]},{r[3]}\n" for r in x))
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "run"), "--images", str(table)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "run" / "predictions.csv").read_text().splitlines()))
    assert [r["input"] for r in rows] == [str(i) for i in range(90)]  # 0-based data rows
    assert [int(r["class"]) for r in rows] == clf.predict(x).tolist()
    table.write_text("a,b,c\n1,2,3\n")
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "run"), "--images", str(table)])
    assert result.exit_code == 2 and "has 3 features, but the model is expecting 4" in result.output
    table.write_text("a,b,c,d\n1,2,3,4\n1,nan,3,4\n")
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "run"), "--images", str(table)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "NaN or infinity (first in sample 1)" in lines[0]


def train_cli(run, *overrides):
    """``noisytail train`` of a tabular CSV into ``run``: no validation split, fp32, quiet."""
    common = ["data.val_fraction=0", "train.precision=fp32", "train.progress=false"]
    sets = sum((["--set", o] for o in [*overrides, *common]), [])
    result = CliRunner().invoke(main, ["train", "--out", str(run), "--no-report", *sets])
    assert result.exit_code == 0, result.output


def test_load_model_of_a_cli_tabular_csv_run_standardises_its_features(tmp_path):
    rng = np.random.default_rng(0)
    header = "a,b,c,label\n"

    def table(n: int) -> tuple[str, np.ndarray]:
        y = np.arange(n) % 2
        # column b sits at a timestamp's offset: float32 spaces values 128 apart there
        x = rng.normal(0, 1, size=(n, 3)) * [1, 50, 0.1] + [0, 1.7e9, -3] + 2 * y[:, None]
        return header + "".join(f"{r[0]},{r[1]},{r[2]},{c}\n" for r, c in zip(x, y)), x

    (tmp_path / "train.csv").write_text(table(80)[0])
    text, x_test = table(30)
    (tmp_path / "test.csv").write_text(text)
    run = tmp_path / "run"
    train_cli(
        run,
        f"data.options.train_csv={tmp_path / 'train.csv'}",
        f"data.options.test_csv={tmp_path / 'test.csv'}",
        "train.epochs=3",
    )
    probs = np.load(run / "predictions.npz")["probs"]  # the loop's own, on standardised rows
    clf = load_model(run)
    np.testing.assert_allclose(clf.predict_proba(x_test), probs, atol=1e-4)
    assert clf.classes_.tolist() == [0, 1]  # integer labels come back as integers
    assert 0.0 <= clf.score(x_test, np.arange(30) % 2) <= 1.0


def test_tables_are_standardised_in_float64():
    from noisytail.data.arrays import as_model_inputs, input_statistics, normalise_inputs

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=200), 1.7e9 + 10 * rng.normal(size=200)])
    inputs = as_model_inputs(x, "X")
    assert inputs.dtype == np.float64
    mean, std = input_statistics(inputs)
    got = normalise_inputs(inputs, mean, std)
    assert got.dtype == torch.float32
    want = (x - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    assert len(np.unique(got.numpy()[:, 1])) == 200  # float32 first would keep a handful


def test_float_images_outside_0_1_are_refused():
    from noisytail.data.arrays import as_model_inputs

    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 8, 8)).astype(np.float32)
    with pytest.raises(DataError, match=r"float pixels in \[0, 255\].*divide by 255"):
        as_model_inputs(pixels, "X")
    assert as_model_inputs(pixels / 255, "X").dtype == np.float32


def test_predict_reads_a_feature_csv_by_the_trained_column_names(tmp_path):
    # trained on "id,a,b,target" (the id is a feature there): a file with its columns in
    # another order, a label column and a blank line gives the same predictions
    rng = np.random.default_rng(1)
    y = np.arange(60) % 2
    x = np.column_stack([np.arange(60), rng.normal(size=(60, 2)) + 3 * y[:, None]])
    train = tmp_path / "train.csv"
    train.write_text(
        "id,a,b,target\n" + "".join(f"{r[0]:.0f},{r[1]},{r[2]},{c}\n" for r, c in zip(x, y))
    )
    run = tmp_path / "run"
    train_cli(
        run, f"data.options.train_csv={train}", "data.options.label_column=target", "train.epochs=2"
    )
    want = load_model(run).predict_proba(x[:5])
    new = tmp_path / "new.csv"
    lines = [f"{r[2]},x,{r[0]:.0f},{r[1]}" for r in x[:5]]
    new.write_text("\n".join(["b,target,id,a", lines[0], "", *lines[1:]]) + "\n")
    out = run / "p.csv"
    result = CliRunner().invoke(
        main, ["predict", str(run), "--images", str(new), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["input"] for r in rows] == ["0", "1", "2", "3", "4"]  # the blank line skipped
    top = want.argmax(1)
    np.testing.assert_allclose([float(r["probability"]) for r in rows], want.max(1), atol=1e-5)
    assert [r["class"] for r in rows] == [str(c) for c in top]
    # an exported model's sidecar names the columns in the order it takes them
    assert CliRunner().invoke(main, ["export", str(run)]).exit_code == 0
    meta = json.loads((run / "model.pt.json").read_text())
    assert meta["feature_names"] == ["id", "a", "b"] and meta["image_files"] is None
    new.write_text("id,a,target\n1,2,0\n")
    result = CliRunner().invoke(main, ["predict", str(run), "--images", str(new)])
    assert result.exit_code == 2 and "has no column 'b'" in result.output


def test_a_dividemix_model_predicts_with_both_networks_everywhere(tmp_path):
    """DivideMix predicts with the mean of its two networks' logits: the estimator, `load_model`
    and both exports give the loop's own probabilities (``predictions.npz``: `Method.predict`
    on the fit-check split, which for 60 samples is every training sample in order)."""
    run = tmp_path / "run"
    x, y = _images()
    dividemix = {"warmup_epochs": 1, "lambda_u": 0}
    clf = NoisyTailClassifier(
        method="dividemix", loss=None, method_args=dividemix, run_dir=str(run), **FAST
    ).fit(x, y)
    probs = np.load(run / "predictions.npz")["probs"]
    assert probs.shape == (60, 3)
    np.testing.assert_allclose(clf.predict_proba(x), probs, atol=1e-4)
    np.testing.assert_allclose(load_model(run).predict_proba(x), probs, atol=1e-4)
    batch, _ = _reference(run, x)
    nets = TrainedModel.from_run(run).model.networks
    assert len(nets) == 2  # and they differ: the first network alone does not give these
    with torch.no_grad():
        first = torch.softmax(nets[0](torch.from_numpy(batch)), 1).numpy()
    assert np.abs(first - probs).max() > 1e-3
    for fmt in ("torchscript", "onnx"):
        if fmt == "onnx" and not _has_onnxruntime():
            continue
        result = CliRunner().invoke(main, ["export", str(run), "--format", fmt])
        assert result.exit_code == 0, result.output
        out = run / ("model.pt" if fmt == "torchscript" else "model.onnx")
        if fmt == "torchscript":
            logits = torch.jit.load(str(out))(torch.from_numpy(batch)).detach()
        else:
            import onnxruntime as ort

            session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            logits = torch.from_numpy(session.run(None, {"input": batch})[0])
        np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), probs, atol=1e-4)
        assert (
            "mean of 2 networks"
            in json.loads(out.with_name(out.name + ".json").read_text())["output"]
        )


def _has_onnxruntime() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def test_a_pretrained_model_is_rebuilt_without_fetching_imagenet_weights(monkeypatch):
    # the checkpoint holds every weight: a deployed model loads offline, with no hub cache
    from noisytail.models import torchvision_resnet
    from noisytail.registry import MODELS

    def offline(name):
        raise RuntimeError(f"offline: {name} requested")

    monkeypatch.setattr(torchvision_resnet, "load_imagenet_state", offline)
    shape = (3, 32, 32)
    net = MODELS.build("resnet18", args={}, num_classes=3, input_shape=shape).eval()
    record = {
        "input_shape": list(shape),
        "class_names": ["a", "b", "c"],
        "model": {"name": "resnet18", "options": {"pretrained": True}},
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
    }
    trained = TrainedModel.from_record(record, net.state_dict())
    x = torch.rand(2, *shape)
    with torch.no_grad():
        assert torch.allclose(trained.model(x), net(x))
    assert record["model"]["options"] == {"pretrained": True}  # the record is left as it was


def test_export_replaces_only_an_earlier_export(estimator_run, tmp_path):
    run, _, _, _ = estimator_run
    precious = tmp_path / "precious.txt"
    precious.write_text("precious")
    best = run / "checkpoints" / "best.pt"
    before = best.read_bytes() if best.exists() else None
    targets = [precious, run / "checkpoints" / "last.pt", run / "summary"]
    kept = {t: t.read_bytes() for t in (precious, run / "checkpoints" / "last.pt")}
    kept[run / "summary.json"] = (run / "summary.json").read_bytes()
    for target in targets:
        result = CliRunner().invoke(main, ["export", str(run), "--out", str(target)])
        assert result.exit_code == 2, result.output
        assert "is not an earlier export" in result.output, result.output
    for path, content in kept.items():
        assert path.read_bytes() == content, path
    assert (best.read_bytes() if best.exists() else None) == before
    out = tmp_path / "exports" / "m.pt"
    for _ in range(2):  # a second export replaces the first
        result = CliRunner().invoke(main, ["export", str(run), "--out", str(out)])
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["export", str(run), "--out", str(precious / "m.pt")])
    assert result.exit_code != 0 and result.output.startswith("error: "), result.output
    assert result.output.count("\n") == 1, result.output


def test_predict_reads_a_wide_grey_image_as_training_did(tmp_path):
    """A 16-bit scan is stretched to 0..255 by the training decoder; predict's reader (images at
    their own size) must give the same pixels, not Pillow's clipped conversion."""
    from PIL import Image

    from noisytail.data.image_folder import decode_image
    from noisytail.inference import read_images

    ramp = (np.arange(64, dtype=np.float64).reshape(8, 8) * 900).astype(np.uint16)
    path = tmp_path / "scan.png"
    Image.fromarray(ramp).save(path)
    np.testing.assert_array_equal(read_images([path])[0], decode_image(str(path), 8, 1).numpy())
