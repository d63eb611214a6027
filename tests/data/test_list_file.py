"""The generic `list_file` source (ImageNet-LT style 'relative/path label' lists)."""

from __future__ import annotations

import numpy as np
import pytest

from noisytail.data.list_file import load_list_file
from noisytail.data.sources import load_dataset
from noisytail.data.types import DataError
from noisytail.registry import DATASETS, RegistryError


def test_parses_paths_labels_and_counts(tmp_path, write_lists):
    write_lists(tmp_path)
    b = load_dataset(
        "list_file",
        root=tmp_path,
        options={"train_list": "train.txt", "test_list": "test.txt", "image_size": 4},
    )
    assert b.name == "list_file" and b.class_names == ["0", "1", "2"]
    assert np.bincount(b.train.labels).tolist() == [5, 3, 1]
    assert np.bincount(b.test.labels).tolist() == [2, 2, 2]
    assert b.train.paths[0] == str(tmp_path / "train/n0/0.png")
    assert b.train.images.get(np.array([0, 8])).shape == (2, 3, 4, 4)
    assert b.train.images.decode_count == 2  # lazy: only what was asked for
    assert b.mean and b.std


def test_val_list_as_test_and_num_classes(tmp_path, write_lists):
    write_lists(tmp_path)
    b = load_list_file(
        str(tmp_path),
        train_list="train.txt",
        test_list="test.txt",
        val_list="val.txt",
        evaluate_on="val",
        num_classes=5,
    )
    assert len(b.test) == 3 and b.num_classes == 5
    only_val = load_list_file(str(tmp_path), train_list="train.txt", val_list="val.txt")
    assert len(only_val.test) == 3


def test_without_test_list_holds_out_a_stratified_split(tmp_path, write_lists):
    write_lists(tmp_path, counts=(10, 10, 10))
    b = load_list_file(str(tmp_path), train_list="train.txt", test_fraction=0.2, seed=3)
    assert np.bincount(b.test.labels).tolist() == [2, 2, 2]
    assert len(b.train) == 24
    assert not set(b.train.paths) & set(b.test.paths)


def test_absolute_list_path_and_no_root(tmp_path, write_lists):
    write_lists(tmp_path)
    b = load_list_file(train_list=str(tmp_path / "train.txt"), test_list=str(tmp_path / "test.txt"))
    assert b.train.paths[0] == str(tmp_path / "train/n0/0.png")


@pytest.mark.parametrize(
    "line", ["train/n0/0.png", "train/n0/0.png x", "train/n0/0.png -1", "train/n0/0.png 1.5"]
)
def test_malformed_line_names_file_and_line(tmp_path, line, write_lists):
    write_lists(tmp_path)
    text = (tmp_path / "train.txt").read_text().splitlines()
    text[2] = line
    (tmp_path / "train.txt").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"train\.txt line 3: expected 'relative/path label'"):
        load_list_file(str(tmp_path), train_list="train.txt")


def test_missing_files_are_named(tmp_path, write_lists):
    write_lists(tmp_path)
    with pytest.raises(DataError, match=r"Test list .*nope\.txt does not exist"):
        load_list_file(str(tmp_path), train_list="train.txt", test_list="nope.txt")
    with pytest.raises(DataError, match="needs data.options.train_list"):
        load_list_file(str(tmp_path))
    (tmp_path / "train/n1/2.png").unlink()
    with pytest.raises(DataError, match=r"train\.txt line 8: image .*n1/2\.png does not exist"):
        load_list_file(str(tmp_path), train_list="train.txt", test_list="test.txt")
    # check_files=False defers the error to decoding, which still names the file
    b = load_list_file(
        str(tmp_path), train_list="train.txt", test_list="test.txt", check_files=False
    )
    with pytest.raises(DataError, match=r"n1/2\.png"):
        b.train.images.get(np.array([7]))


def test_label_beyond_num_classes(tmp_path, write_lists):
    write_lists(tmp_path)
    with pytest.raises(DataError, match="num_classes=2"):
        load_list_file(str(tmp_path), train_list="train.txt", num_classes=2)


def test_registered_and_options_checked(tmp_path):
    assert "list_file" in DATASETS
    with pytest.raises(RegistryError, match="train_list"):
        load_dataset("list_file", root=tmp_path, options={"train_lst": "train.txt"})


def test_labels_with_gaps_are_renumbered_saying_so(tmp_path, write_lists, caplog):
    write_lists(tmp_path)
    for name in ("train.txt", "test.txt"):  # labels 0, 1, 2 become 0, 4, 7
        text = (tmp_path / name).read_text()
        (tmp_path / name).write_text(text.replace(" 1\n", " 4\n").replace(" 2\n", " 7\n"))
    b = load_list_file(str(tmp_path), train_list="train.txt", test_list="test.txt")
    assert b.class_names == ["0", "4", "7"]
    assert np.bincount(b.train.labels).tolist() == [5, 3, 1]
    assert np.bincount(b.test.labels).tolist() == [2, 2, 2]
    assert any("{0, 4, 7}" in r.getMessage() for r in caplog.records)
    kept = load_list_file(
        str(tmp_path), train_list="train.txt", test_list="test.txt", num_classes=8
    )
    assert kept.num_classes == 8 and np.bincount(kept.train.labels).tolist()[7] == 1
