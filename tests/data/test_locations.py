"""Outputs never land among a source's data; noisytail's own folders are never image classes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noisytail.data.locations import check_outside_data, is_output_folder
from noisytail.data.sources import load_dataset
from noisytail.data.types import DataError


def png(path: Path, grey: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), (grey, grey, grey)).save(path)
    return path


def run_folder(path: Path) -> Path:
    """What a run leaves: its config, metrics and a plot (an image file)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("seed: 0\n")
    (path / "metrics.jsonl").write_text("{}\n")
    png(path / "curves.png")
    return path


def photos(root: Path) -> Path:
    for name in ("ant", "bee"):
        for i in range(5):
            png(root / name / f"{i}.png", 40 * i)
    return root


def test_output_folders_are_recognised(tmp_path):
    assert is_output_folder(run_folder(tmp_path / "runs" / "r1"))
    assert is_output_folder(tmp_path / "runs")  # a folder of runs
    det = tmp_path / "det"
    det.mkdir()
    (det / "detection.json").write_text("{}")
    (det / "label_issues.csv").write_text("")
    assert is_output_folder(det)
    assert not is_output_folder(photos(tmp_path / "photos"))
    alone = tmp_path / "alone"  # a config.yaml of the user's own is not a run
    alone.mkdir()
    (alone / "config.yaml").write_text("x: 1\n")
    assert not is_output_folder(alone)


def test_image_folder_skips_runs_and_hidden_folders_saying_so(tmp_path, caplog):
    root = photos(tmp_path / "photos")
    run_folder(root / "runs" / "demo-erm")
    png(root / ".thumbs" / "0.png")
    run_folder(root / "ant" / "old-run")  # a run inside a class: its plot is no ant
    with caplog.at_level(logging.INFO):
        bundle = load_dataset("image_folder", root=root, options={"image_size": 4})
    assert bundle.class_names == ["ant", "bee"]
    paths = {str(Path(p).relative_to(root)) for p in bundle.train.paths + bundle.test.paths}
    assert paths == {f"{c}/{i}.png" for c in ("ant", "bee") for i in range(5)}
    (line,) = [r.getMessage() for r in caplog.records]
    assert "runs (noisytail output)" in line and ".thumbs (hidden)" in line


def test_image_folder_refuses_outputs_inside_its_root(tmp_path):
    root = photos(tmp_path / "photos")
    bundle = load_dataset("image_folder", root=root, options={"image_size": 4})
    for inside in (root, root / "runs" / "x", root / "ant"):
        with pytest.raises(DataError, match="inside the data folder"):
            check_outside_data(inside, bundle)
    check_outside_data(tmp_path / "runs" / "x", bundle)  # beside the data
    check_outside_data(tmp_path / "photos-runs", bundle)  # a name that only starts alike


def test_csv_outputs_stay_out_of_image_folders_and_manifest_folders(tmp_path):
    root = photos(tmp_path / "project" / "images")
    manifest = tmp_path / "project" / "lists" / "train.csv"
    manifest.parent.mkdir()
    rows = [f"{p.relative_to(root)},{p.parent.name}" for p in sorted(root.rglob("*.png"))]
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    bundle = load_dataset("csv", root=root, options={"train_csv": str(manifest)})
    for bad in (root / "ant" / "out", manifest.parent):
        with pytest.raises(DataError, match="data folder|data file"):
            check_outside_data(bad, bundle)
    check_outside_data(tmp_path / "project" / "runs", bundle)
    check_outside_data(manifest.parent / "runs", bundle)  # below the manifest, not among images


def test_feature_csv_label_file_and_list_file(tmp_path, write_lists):
    table = tmp_path / "data" / "label_issues.csv"  # a manifest named like a detect output
    table.parent.mkdir()
    table.write_text("f,label\n" + "\n".join(f"{i},{i % 2}" for i in range(20)) + "\n")
    bundle = load_dataset("csv", options={"train_csv": str(table)})
    with pytest.raises(DataError, match="folder of the data file .*label_issues.csv"):
        check_outside_data(table.parent, bundle)
    check_outside_data(table.parent / "issues", bundle)
    labels = tmp_path / "labels" / "noisy.npy"
    labels.parent.mkdir()
    np.save(labels, np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match="noisy.npy"):
        check_outside_data(labels.parent, bundle, extra_files=[str(labels)])
    write_lists(tmp_path / "lt")
    lists = load_dataset(
        "list_file", root=tmp_path / "lt", options={"train_list": "train.txt", "image_size": 4}
    )
    with pytest.raises(DataError, match="inside the data folder"):
        check_outside_data(tmp_path / "lt" / "train" / "n0" / "out", lists)
    with pytest.raises(DataError, match="train.txt"):
        check_outside_data(tmp_path / "lt", lists)
    check_outside_data(tmp_path / "lt" / "runs", lists)


def test_a_source_that_declares_nothing_owns_its_root(tmp_path):
    bundle = load_dataset("digits")
    with pytest.raises(DataError, match="inside the data folder"):
        check_outside_data(Path(bundle.root) / "out", bundle)
    check_outside_data(tmp_path / "out", bundle)
