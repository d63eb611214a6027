"""End-to-end runs on the file-based sources (lazy image folder, CSV features, label files)."""

import json

import numpy as np
from PIL import Image

from noisytail.config import load_config
from noisytail.train import fit


def _image_folder(root, per_class=12):
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(220, 30, 30), (30, 220, 30), (30, 30, 220)]):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(colour, 20, size=(20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"img{i}.png")


def test_image_folder_run(tmp_path):
    _image_folder(tmp_path / "photos")
    before = sorted(p.stat().st_mtime_ns for p in (tmp_path / "photos").rglob("*.png"))
    cfg = load_config(
        None,
        [
            "data.name=image_folder",
            f"data.root={tmp_path / 'photos'}",
            "data.options.image_size=16",
            "data.val_fraction=0",
            "model.options.width=8",
            "train.epochs=3",
            "train.batch_size=8",
            "train.progress=false",
        ],
    )
    summary = fit(cfg, tmp_path / "run", write_report=False)
    assert summary.test_accuracy > 0.6  # three colours: easy
    after = sorted(p.stat().st_mtime_ns for p in (tmp_path / "photos").rglob("*.png"))
    assert before == after  # the user's files are untouched


def test_csv_features_with_mlp(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["f1,f2,label"]
    for i in range(200):
        label = i % 2
        x = rng.normal(3.0 * label, 1.0, size=2)
        rows.append(f"{x[0]:.4f},{x[1]:.4f},{'yes' if label else 'no'}")
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    cfg = load_config(
        None,
        [
            "data.name=csv",
            f"data.options.train_csv={tmp_path / 'table.csv'}",
            "model.name=mlp",
            "model.options.hidden=[16]",
            "data.augment=none",
            "train.epochs=5",
            "train.batch_size=16",
            "train.progress=false",
            "noise.kind=symmetric",
            "noise.rate=0.2",
        ],
    )
    summary = fit(cfg, tmp_path / "run", write_report=False)
    assert summary.test_accuracy > 0.8
    assert summary.class_names == ["no", "yes"]


def test_label_file_supplies_real_noisy_labels(tmp_path, digits_config):
    from noisytail.data.sources import load_dataset

    true = load_dataset("digits").train.labels
    noisy = true.copy()
    noisy[:100] = (noisy[:100] + 1) % 10
    np.save(tmp_path / "noisy.npy", noisy)
    cfg = digits_config(f"data.label_file={tmp_path / 'noisy.npy'}", "train.epochs=1")
    summary = fit(cfg, tmp_path / "run", write_report=False)
    expected = 100 / len(true)
    assert abs(summary.noise["realised_rate"] - expected) < 0.03
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["noise"]["kind"] == "none"


def test_own_labels_are_unverified_unless_a_label_file_gives_the_noisy_ones(tmp_path):
    """A user's CSV trained as given: nobody knows how many labels are wrong (``unverified``).
    With ``data.label_file`` the CSV's labels are the truth the noisy file is measured against."""
    rng = np.random.default_rng(0)
    for name, n in (("train.csv", 120), ("test.csv", 40)):
        rows = ["f1,f2,label"] + [
            f"{rng.normal(3.0 * (i % 2)):.4f},{rng.normal():.4f},{i % 2}" for i in range(n)
        ]
        (tmp_path / name).write_text("\n".join(rows) + "\n")
    noisy = np.arange(120) % 2
    noisy[:12] = 1 - noisy[:12]
    np.save(tmp_path / "noisy.npy", noisy)
    base = [
        "data.name=csv",
        f"data.options.train_csv={tmp_path / 'train.csv'}",
        f"data.options.test_csv={tmp_path / 'test.csv'}",
        "data.val_fraction=0",
        "model.name=mlp",
        "model.options.hidden=[8]",
        "train.epochs=1",
        "train.progress=false",
    ]
    own = fit(load_config(None, base), tmp_path / "own", write_report=False)
    assert own.noise["unverified"] is True
    measured = fit(
        load_config(None, [*base, f"data.label_file={tmp_path / 'noisy.npy'}"]),
        tmp_path / "measured",
        write_report=False,
    )
    assert measured.noise["unverified"] is False
    assert measured.noise["realised_rate"] == 12 / 120
