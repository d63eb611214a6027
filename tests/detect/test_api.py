import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noisytail.config import ConfigError, load_config
from noisytail.data.corruption import Corruption
from noisytail.data.sources import load_dataset
from noisytail.data.types import DataError
from noisytail.detect import detect_label_issues
from noisytail.detect.exporters import CSV_COLUMNS
from noisytail.detect.task import list_detectors, parse_detector_args
from noisytail.registry import RegistryError
from noisytail.train import fit

COLOURS = {"blue": (20, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}
# (folder it is filed under, colour it really has): 3 mislabelled images
MISLABELLED = [("green", "red"), ("blue", "green"), ("red", "blue")]


def _png(path, colour, rng):
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (16, 16, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.fixture
def image_folder(tmp_path):
    """42 PNGs in 3 class folders (13 correct each) plus 3 in the wrong folder."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(13):
            _png(root / name / f"{name}_{i:02d}.png", colour, rng)
    wrong = []
    for folder, really in MISLABELLED:
        path = root / folder / f"wrong_{really}.png"
        _png(path, COLOURS[really], rng)
        wrong.append(str(path))
    return root, wrong


def image_config(root, *extra):
    return load_config(
        None,
        [
            "data.name=image_folder",
            f"data.root={root}",
            "data.options.image_size=12",
            "data.options.test_fraction=0.1",
            "data.augment=none",
            "model.name=small_cnn",
            "model.options.width=8",
            "train.epochs=2",
            "train.batch_size=16",
            "train.device=cpu",
            "train.progress=false",
            *extra,
        ],
    )


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_image_folder_writes_ranked_csv(image_folder, tmp_path):
    root, wrong = image_folder
    cfg = image_config(root)
    out = tmp_path / "out"
    result = detect_label_issues(
        cfg, out, detector="knn", detector_args={"space": "input", "selection": "agreement"}
    )
    rows = read_rows(out / "label_issues.csv")
    with open(out / "label_issues.csv") as f:
        assert tuple(next(csv.reader(f))) == CSV_COLUMNS
    # every image once (no test or validation split is taken from a user's folder)
    train_paths = {r["path"] for r in rows}
    assert len(rows) == result.n == len(train_paths) == len(list(root.rglob("*.png")))
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert {r["given_label"] for r in rows} <= set(COLOURS)
    assert all(r["flagged"] in ("0", "1") for r in rows)
    ids = [int(r["sample_id"]) for r in rows]
    assert len(set(ids)) == len(ids)
    # the mislabelled images that landed in training come first, flagged, with the right label
    in_train = [p for p in wrong if p in train_paths]
    assert in_train == wrong
    top = rows[: len(in_train)]
    assert {r["path"] for r in top} == set(in_train)
    for r in top:
        assert r["flagged"] == "1"
        assert r["suggested_label"] == r["path"].split("wrong_")[1].removesuffix(".png")
        assert r["given_label"] != r["suggested_label"]
    assert int(sum(r["flagged"] == "1" for r in rows)) == result.n_flagged
    assert (out / "suspects.png").is_file()
    info = json.loads((out / "detection.json").read_text())
    assert info["truth_known"] is False and info["metrics"] is None
    assert [c["name"] for c in info["per_class"]] == sorted(COLOURS)
    assert sum(c["n_flagged"] for c in info["per_class"]) == result.n_flagged


def test_image_folder_with_a_trained_model(image_folder, tmp_path):
    root, _ = image_folder
    cfg = image_config(root, "data.train_subset=30")
    result = detect_label_issues(cfg, tmp_path / "out", detector="knn")
    rows = read_rows(tmp_path / "out" / "label_issues.csv")
    assert len(rows) == result.n == 30 and result.output.info["k"] == 10
    # the sample ids index the source's data, read whole (through the subset), and its files
    options = {**cfg.data.options, "test_fraction": 0}
    source = load_dataset("image_folder", root=root, options=options)
    names = source.class_names
    for r in rows:
        i = int(r["sample_id"])
        assert source.train.paths[i] == r["path"]
        assert names[source.train.labels[i]] == r["given_label"]


def test_refuses_bad_input(image_folder, tmp_path):
    root, _ = image_folder
    cfg = image_config(root)
    with pytest.raises(RegistryError, match="Did you mean 'knn'"):
        detect_label_issues(cfg, tmp_path / "a", detector="knm")
    with pytest.raises(RegistryError, match="has no argument 'kk'"):
        detect_label_issues(cfg, tmp_path / "a", detector="knn", detector_args={"kk": 3})
    with pytest.raises(DataError, match="is not a folder"):
        detect_label_issues(image_config(tmp_path / "missing"), tmp_path / "a")
    with pytest.raises(DataError, match="inside the data folder"):
        detect_label_issues(cfg, root / "red" / "out")
    with pytest.raises(ConfigError, match="cleaned copy of a CSV manifest"):
        detect_label_issues(cfg, tmp_path / "a", clean_csv=True)
    with pytest.raises(DataError, match="does not exist"):
        detect_label_issues(None, tmp_path / "a", from_run=tmp_path / "no_run")
    assert not (tmp_path / "a").exists()
    detect_label_issues(cfg, tmp_path / "b")
    with pytest.raises(ConfigError, match="already exists"):
        detect_label_issues(cfg, tmp_path / "b")


def test_csv_manifest_is_never_modified(image_folder, tmp_path):
    root, wrong = image_folder
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for p in sorted(root.rglob("*.png")):
            w.writerow([str(p.relative_to(root)), p.parent.name])
    before = hashlib.sha256(manifest.read_bytes()).hexdigest()
    cfg = load_config(
        None,
        [
            "data.name=csv",
            f"data.root={root}",
            f"data.options.train_csv={manifest}",
            "data.options.image_size=12",
            "data.options.test_fraction=0.1",
            "train.device=cpu",
        ],
    )
    out = tmp_path / "out"
    result = detect_label_issues(
        cfg,
        out,
        detector="knn",
        detector_args={"space": "input", "selection": "agreement"},
        clean_csv=True,
    )
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() == before
    cleaned = result.files["cleaned_csv"]
    assert cleaned == out / "manifest.cleaned.csv"
    kept = read_rows(cleaned)
    original = read_rows(manifest)
    issues = read_rows(out / "label_issues.csv")
    flagged = {r["path"] for r in issues if r["flagged"] == "1"}
    assert flagged and flagged <= set(wrong)
    kept_paths = {str(root / r["path"]) for r in kept}
    assert not kept_paths & flagged
    assert len(kept) == len(original) - len(flagged)
    assert kept_paths | flagged == {str(root / r["path"]) for r in original}
    # its relative paths are written absolute: the copy trains from its own folder
    assert all(Path(r["path"]).is_absolute() and Path(r["path"]).is_file() for r in kept)
    # a second cleaned copy never overwrites a file
    with pytest.raises(ConfigError, match="already exists"):
        detect_label_issues(cfg, tmp_path / "out2", clean_csv=cleaned)


def test_feature_csv_cleaned_rows_match_known_flips(tmp_path):
    rng = np.random.default_rng(1)
    centres = np.eye(3, 6) * 8
    true = np.repeat(np.arange(3), 60)
    x = centres[true] + rng.normal(size=(180, 6))
    noisy = true.copy()
    flips = rng.choice(180, 36, replace=False)
    noisy[flips] = (true[flips] + 1) % 3
    manifest = tmp_path / "features.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"f{i}" for i in range(6)] + ["label"])
        for row, y in zip(x, noisy):
            w.writerow([f"{v:.6f}" for v in row] + [int(y)])
    cfg = load_config(
        None, ["data.name=csv", f"data.options.train_csv={manifest}", "train.device=cpu"]
    )
    result = detect_label_issues(
        cfg,
        tmp_path / "out",
        detector="knn",
        detector_args={"space": "input", "selection": "agreement"},
        clean_csv=True,
    )
    with open(manifest, newline="") as f:
        original = list(csv.reader(f))[1:]
    with open(result.files["cleaned_csv"], newline="") as f:
        kept = {tuple(r) for r in list(csv.reader(f))[1:]}
    dropped = [i for i, r in enumerate(original) if tuple(r) not in kept]
    assert len(dropped) == result.n_flagged
    # the rows dropped are flipped ones (a wrong row map would hit flips only ~20 % of the
    # time), and they are the rows label_issues.csv flags
    assert np.isin(dropped, flips).all()
    assert len(dropped) >= 0.8 * len(flips)
    issues = read_rows(tmp_path / "out" / "label_issues.csv")
    assert sorted(int(r["row"]) for r in issues if r["flagged"] == "1") == dropped


def test_synthetic_noise_metrics_and_detectors(tmp_path, digits_config):
    cfg = digits_config(
        "data.train_subset=200",
        "data.test_subset=50",
        "noise.kind=symmetric",
        "noise.rate=0.3",
        "train.epochs=1",
        "train.device=cpu",
    )
    for name, args in [
        ("small_loss", None),
        ("loss_trajectory", {"flag": 0.3}),
        ("confident_learning", {"folds": 2}),
        ("knn", None),
        ("auto", None),
    ]:
        result = detect_label_issues(cfg, tmp_path / name, detector=name, detector_args=args)
        info = json.loads((tmp_path / name / "detection.json").read_text())
        assert info["truth_known"] and info["metrics"]["n"] == result.n
        assert result.n >= 195  # no validation hold-out: val_fraction is 0 for detection
        assert info["metrics"]["n_noisy"] == sum(c["n_noisy"] for c in info["per_class"])
        assert 0.0 <= info["metrics"]["auroc"] <= 1.0
        rows = read_rows(tmp_path / name / "label_issues.csv")
        assert len(rows) == result.n and rows[0]["path"] == ""
        assert (tmp_path / name / "suspects.png").is_file()
    assert result.metrics is not None


def test_from_run(tmp_path, digits_config):
    cfg = digits_config(
        "data.train_subset=150",
        "data.test_subset=50",
        "noise.kind=symmetric",
        "noise.rate=0.2",
        "train.epochs=1",
        "train.device=cpu",
    )
    run_dir = tmp_path / "run"
    fit(cfg, run_dir, write_report=False)
    result = detect_label_issues(None, tmp_path / "d1", detector="small_loss", from_run=run_dir)
    saved = Corruption.load(run_dir / "corruption.npz")
    assert result.n == len(saved.train_idx) < 150  # the run held out 10 % for validation
    assert result.metrics is not None
    with pytest.raises(ConfigError, match="per-epoch losses"):
        detect_label_issues(None, tmp_path / "d2", detector="loss_trajectory", from_run=run_dir)
    with pytest.raises(ConfigError, match="not both"):
        detect_label_issues(cfg, tmp_path / "d3", from_run=run_dir)
    with pytest.raises(ConfigError, match="does not rank samples"):
        detect_label_issues(None, tmp_path / "d4", detector="method_scores", from_run=run_dir)


def test_knn_detector_finds_synthetic_flips_on_feature_csv(tmp_path):
    """Gaussian blobs as a feature CSV, 25 % symmetric flips by noisytail: the kNN detector in
    the input space finds them with precision and recall above 0.9."""
    rng = np.random.default_rng(2)
    true = np.repeat(np.arange(4), 100)
    x = np.eye(4, 8)[true] * 6 + rng.normal(size=(400, 8))
    manifest = tmp_path / "blobs.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"f{i}" for i in range(8)] + ["label"])
        for row, y in zip(x, true):
            w.writerow([f"{v:.6f}" for v in row] + [int(y)])
    cfg = load_config(
        None,
        [
            "data.name=csv",
            f"data.options.train_csv={manifest}",
            "noise.kind=symmetric",
            "noise.rate=0.25",
            "train.device=cpu",
        ],
    )
    result = detect_label_issues(
        cfg, tmp_path / "out", detector="knn", detector_args={"space": "input"}
    )
    m = result.metrics
    assert m["n_noisy"] > 50
    assert m["precision"] > 0.9 and m["recall"] > 0.9, m
    info = json.loads((tmp_path / "out" / "detection.json").read_text())
    assert info["metrics"]["f1"] == pytest.approx(m["f1"])
    assert not (tmp_path / "out" / "suspects.png").exists()  # no picture for feature vectors


def test_parse_detector_args():
    assert parse_detector_args(["k=50", "selection=agreement", "flag=0.2"]) == {
        "k": 50,
        "selection": "agreement",
        "flag": 0.2,
    }
    with pytest.raises(ConfigError):
        parse_detector_args(["k"])
    names = [name for name, _ in list_detectors()]
    assert {"auto", "knn", "small_loss", "loss_trajectory", "confident_learning"} <= set(names)


def test_method_scores_adapter_uses_sample_scores():
    from types import SimpleNamespace

    from noisytail.detect.detectors import MethodScoresDetector

    clean = np.array([0.9, 0.1, 0.8, 0.3, 1.0])

    class FakeTask:
        labels = np.array([0, 1, 0, 1, 1])
        cfg = SimpleNamespace(seed=0, method=SimpleNamespace(name="fake"))

        def trained(self):
            return SimpleNamespace(method=SimpleNamespace(sample_scores=lambda: clean))

        def pool_probs(self, run):
            return np.eye(2)[[0, 0, 0, 0, 1]]

    out = MethodScoresDetector().detect(FakeTask())
    assert out.flagged.tolist() == [False, True, False, True, False]
    assert np.argsort(-out.suspicion, kind="stable").tolist()[:2] == [1, 3]
    assert out.suggested.tolist() == [0, 0, 0, 0, 1]


def test_detect_cli_wires_inputs(tmp_path):
    from click.testing import CliRunner

    from noisytail.cli import main

    rng = np.random.default_rng(4)
    true = np.repeat(np.arange(2), 40)
    x = np.eye(2, 4)[true] * 6 + rng.normal(size=(80, 4))
    manifest = tmp_path / "f.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c", "d", "label"])
        for row, y in zip(x, true):
            w.writerow([f"{v:.5f}" for v in row] + [int(y)])
    config = tmp_path / "detect.yaml"
    config.write_text(f"data:\n  name: csv\n  options:\n    train_csv: {manifest}\n")
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(main, ["detect", str(config), "--out", str(out), "--arg", "k=5"])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "detection.json").read_text())
    assert info["detector"] == "auto" and info["args"]["k"] == 5 and info["n"] == 80
    result = runner.invoke(main, ["detect", str(config), "--from-run", str(tmp_path)])
    assert result.exit_code == 2 and "--from-run" in result.output
