"""The `isic2019` source on a tiny ground-truth CSV and image folder."""

from __future__ import annotations

import numpy as np
import pytest

from noisytail.data.isic2019 import L2B_TEST_FRACTION, load_isic2019
from noisytail.data.sources import load_dataset
from noisytail.data.types import DataError

ISIC_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
ISIC_GT = "ISIC_2019_Training_GroundTruth.csv"


def test_drops_empty_unk_and_splits_stratified(tmp_path, write_isic):
    write_isic(tmp_path)
    b = load_dataset("isic2019", root=tmp_path, options={"image_size": 8, "test_fraction": 0.25})
    assert b.name == "isic2019" and b.class_names == ISIC_CLASSES[:8]
    counts = np.bincount(b.train.labels, minlength=8) + np.bincount(b.test.labels, minlength=8)
    assert counts.tolist() == [6, 12, 4, 2, 3, 2, 2, 2]
    assert np.bincount(b.test.labels, minlength=8).tolist() == [2, 3, 1, 1, 1, 1, 1, 1]
    assert not set(b.train.paths) & set(b.test.paths)
    assert b.train.paths[0].endswith("ISIC_2019_Training_Input/ISIC_0000000.jpg")
    assert b.test.images.get(np.array([0])).shape == (1, 3, 8, 8)


def test_default_split_has_l2b_test_size():
    assert round(L2B_TEST_FRACTION * 25331) == 4291


def test_unk_kept_when_used(tmp_path, write_isic):
    write_isic(tmp_path, unk=2)
    b = load_isic2019(str(tmp_path), test_fraction=0.25)
    assert b.class_names == ISIC_CLASSES and b.num_classes == 9


def test_test_and_train_lists(tmp_path, write_isic):
    ids = write_isic(tmp_path)
    (tmp_path / "test.lst").write_text(f"{ids[0]}.jpg 0\n{ids[7]},1\nsome/dir/{ids[30]}\n")
    b = load_isic2019(str(tmp_path), test_list="test.lst")
    assert b.test.labels.tolist() == [0, 1, 6]
    assert len(b.train) == len(ids) - 3
    (tmp_path / "train.lst").write_text("\n".join(ids[1:6]) + "\n")
    b = load_isic2019(str(tmp_path), test_list="test.lst", train_list="train.lst")
    assert len(b.train) == 5 and b.train.labels.tolist() == [0] * 5
    (tmp_path / "train.lst").write_text(f"{ids[0]}\n")
    with pytest.raises(DataError, match="share 1 images"):
        load_isic2019(str(tmp_path), test_list="test.lst", train_list="train.lst")
    (tmp_path / "test.lst").write_text(f"{ids[0]}\nISIC_9999999\n")
    with pytest.raises(DataError, match=r"test\.lst line 2: 'ISIC_9999999' is not in"):
        load_isic2019(str(tmp_path), test_list="test.lst")


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ("1.0,1.0,0,0,0,0,0,0,0", "2 classes marked"),
        ("0,0,0,0,0,0,0,0,0", "0 classes marked"),
        ("0.5,0.5,0,0,0,0,0,0,0", "column 'MEL' is '0.5'"),
        ("1,0,0", "4 fields, but the header has 10"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, cells, message, write_isic):
    write_isic(tmp_path)
    gt = tmp_path / ISIC_GT
    lines = gt.read_text().splitlines()
    lines[4] = "ISIC_0000003," + cells
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{ISIC_GT}.* line 5: .*{message}"):
        load_isic2019(str(tmp_path))


def test_missing_files_are_named(tmp_path, write_isic):
    write_isic(tmp_path)
    (tmp_path / "ISIC_2019_Training_Input" / "ISIC_0000004.jpg").unlink()
    with pytest.raises(
        DataError, match=rf"{ISIC_GT} line 6: image .*ISIC_0000004\.jpg does not exist"
    ):
        load_isic2019(str(tmp_path))
    with pytest.raises(DataError, match="ground-truth CSV .*other.csv does not exist"):
        load_isic2019(str(tmp_path), ground_truth="other.csv")
    with pytest.raises(DataError, match="needs data.root"):
        load_isic2019()


def test_meta_list_becomes_the_clean_meta_split(tmp_path, write_isic):
    ids = write_isic(tmp_path)
    (tmp_path / "test.lst").write_text(f"{ids[0]}\n")
    (tmp_path / "val.lst").write_text(f"{ids[1]}\n{ids[7]}\n")
    b = load_isic2019(str(tmp_path), test_list="test.lst", meta_list="val.lst")
    assert b.meta is not None and len(b.meta) == 2
    assert len(b.train) == len(ids) - 3
    assert not set(b.meta.paths) & set(b.train.paths)
    (tmp_path / "val.lst").write_text(f"{ids[0]}\n")
    with pytest.raises(DataError, match="shares images with the test split"):
        load_isic2019(str(tmp_path), test_list="test.lst", meta_list="val.lst")
