"""The `clothing1m` source on a tiny copy of the standard layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from noisytail.data.clothing1m import CLOTHING1M_CLASSES, load_clothing1m
from noisytail.data.sources import load_dataset
from noisytail.data.types import DataError


def test_noisy_train_and_clean_test(tmp_path, write_clothing):
    splits = write_clothing(tmp_path)
    b = load_dataset("clothing1m", root=tmp_path, options={"image_size": 8})
    assert b.name == "clothing1m" and b.class_names == CLOTHING1M_CLASSES
    assert b.num_classes == 14
    # the observed (noisy) labels are the training labels, not the known clean ones
    assert b.train.labels.tolist() == [y for _, y in splits["noisy_train"]]
    assert np.bincount(b.train.labels).tolist() == [4, 4, 4]
    assert b.test.labels.tolist() == [0, 1, 2]
    assert b.labels_are_noisy
    assert b.meta is not None and b.meta.labels.tolist() == [13, 12, 11]  # clean_val, clean labels
    assert b.train.paths[0] == str(tmp_path / "images/0/00/n0.jpg")
    x = b.test.images.get(np.array([2]))
    assert x.shape == (1, 3, 8, 8) and x.dtype == torch.uint8


def test_other_splits_and_class_names_file(tmp_path, write_clothing):
    write_clothing(tmp_path)
    names = [f"c{i}" for i in range(14)]
    (tmp_path / "category_names_eng.txt").write_text("\n".join(names) + "\n")
    b = load_clothing1m(
        str(tmp_path), train_split="clean_train", test_split="clean_val", meta_split=None
    )
    assert b.meta is None and not b.labels_are_noisy
    assert b.class_names == names
    assert b.train.labels.tolist() == [3, 4, 5] and b.test.labels.tolist() == [13, 12, 11]
    with pytest.raises(DataError, match="test_split must be a clean split"):
        load_clothing1m(str(tmp_path), test_split="noisy_train")
    with pytest.raises(DataError, match="train_split must be one of"):
        load_clothing1m(str(tmp_path), train_split="noisy")


def test_missing_file_is_named(tmp_path, write_clothing):
    write_clothing(tmp_path)
    (tmp_path / "clean_test_key_list.txt").unlink()
    with pytest.raises(DataError, match=r"clean_test_key_list\.txt is missing"):
        load_clothing1m(str(tmp_path))
    with pytest.raises(DataError, match="needs data.root"):
        load_clothing1m()


def test_missing_image_names_key_list_line(tmp_path, write_clothing):
    write_clothing(tmp_path)
    (tmp_path / "images/0/05/n5.jpg").unlink()
    with pytest.raises(DataError, match=r"noisy_train_key_list\.txt line 6: image .*n5\.jpg"):
        load_clothing1m(str(tmp_path))


def test_malformed_kv_line_and_unknown_key(tmp_path, write_clothing):
    write_clothing(tmp_path)
    kv = tmp_path / "noisy_label_kv.txt"
    lines = kv.read_text().splitlines()
    lines[3] = "images/0/03/n3.jpg three"
    kv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"noisy_label_kv\.txt line 4: expected"):
        load_clothing1m(str(tmp_path))
    lines[3] = "images/0/03/n3.jpg 14"
    kv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"noisy_label_kv\.txt line 4: label 14 is outside 0\.\.13"):
        load_clothing1m(str(tmp_path))
    kv.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    with pytest.raises(
        DataError, match=r"noisy_train_key_list\.txt line 4: .*n3\.jpg has no label in"
    ):
        load_clothing1m(str(tmp_path))


def test_conflicting_repeated_key(tmp_path, write_clothing):
    write_clothing(tmp_path)
    kv = tmp_path / "noisy_label_kv.txt"
    kv.write_text(kv.read_text() + "images/0/00/n0.jpg 2\n")
    with pytest.raises(DataError, match=r"line 13: .*n0\.jpg is labelled 2 here but 0"):
        load_clothing1m(str(tmp_path))


def test_meta_split_must_be_clean_and_unused(tmp_path, write_clothing):
    write_clothing(tmp_path)
    with pytest.raises(DataError, match="meta_split must be a clean split"):
        load_clothing1m(str(tmp_path), meta_split="noisy_train")
    with pytest.raises(DataError, match="also the train or test split"):
        load_clothing1m(str(tmp_path), test_split="clean_val")
