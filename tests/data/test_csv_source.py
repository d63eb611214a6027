"""The csv source: image manifests, feature tables, label encodings and row-numbered errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noisytail.data.image_folder import LazyImageStore
from noisytail.data.sources import load_dataset
from noisytail.data.types import DataError, TensorStore


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_image(path: Path, grey: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), (grey, grey, grey)).save(path)


def test_image_manifest_with_relative_and_absolute_paths(tmp_path):
    for i in range(3):
        write_image(tmp_path / "img" / f"{i}.png", 10 * i)
    absolute = tmp_path / "elsewhere" / "x.png"
    write_image(absolute, 99)
    write(
        tmp_path / "train.csv", f"path,label\nimg/0.png,2\nimg/1.png,0\nimg/2.png,2\n{absolute},1\n"
    )
    write(tmp_path / "test.csv", "path,label\nimg/1.png,1\n")
    options = {"train_csv": str(tmp_path / "train.csv"), "test_csv": str(tmp_path / "test.csv")}
    bundle = load_dataset("csv", options={**options, "image_size": 4, "channels": 1})
    assert bundle.class_names == ["0", "1", "2"]
    assert bundle.train.labels.tolist() == [2, 0, 2, 1] and bundle.test.labels.tolist() == [1]
    assert isinstance(bundle.train.images, LazyImageStore)
    assert bundle.train.paths[0] == str(tmp_path / "img" / "0.png")
    assert bundle.train.paths[3] == str(absolute)
    x = bundle.train.images.get(np.arange(4))
    assert x.shape == (4, 1, 4, 4) and x.dtype == torch.uint8
    assert x[:, 0, 0, 0].tolist() == [0, 10, 20, 99]
    assert bundle.mean == (0.449,) and bundle.root == str(tmp_path)


def test_root_sets_where_paths_and_csv_names_start(tmp_path):
    write_image(tmp_path / "data" / "a.png", 5)
    write_image(tmp_path / "data" / "b.png", 6)
    write(tmp_path / "data" / "lists" / "train.csv", "label,file\ncat,a.png\ndog,b.png\n")
    options = {"train_csv": "lists/train.csv", "path_column": "file", "test_csv": "lists/train.csv"}
    bundle = load_dataset("csv", root=tmp_path / "data", options=options)
    assert bundle.class_names == ["cat", "dog"]
    assert bundle.train.paths == [
        str(tmp_path / "data" / "a.png"),
        str(tmp_path / "data" / "b.png"),
    ]


def test_feature_table_is_standardised_with_train_statistics(tmp_path):
    rows = ["x1,x2,y,x3"] + [f"{i},{2 * i + 1},{'ab'[i % 2]},7" for i in range(10)]
    write(tmp_path / "train.csv", "\n".join(rows) + "\n")
    write(tmp_path / "test.csv", "x1,x2,y,x3\n4.5,10,b,8\n")
    options = {"train_csv": str(tmp_path / "train.csv"), "test_csv": str(tmp_path / "test.csv")}
    bundle = load_dataset("csv", options={**options, "label_column": "y"})
    assert isinstance(bundle.train.images, TensorStore)
    x = bundle.train.images.data
    assert x.dtype == torch.float32 and x.shape == (10, 3) and bundle.input_shape == (3,)
    assert not bundle.is_image and bundle.mean == pytest.approx((4.5, 10.0, 7.0))
    assert bundle.std == pytest.approx((8.25**0.5, 33**0.5, 1.0))  # recorded for new rows
    assert torch.allclose(x[:, :2].mean(0), torch.zeros(2), atol=1e-6)
    assert torch.allclose(x[:, :2].std(0, unbiased=False), torch.ones(2), atol=1e-6)
    assert torch.all(x[:, 2] == 0)  # a constant column is centred, not divided by zero
    raw = np.arange(10.0)
    expected = (4.5 - raw.mean()) / raw.std()
    test = bundle.test.images.data[0]
    assert test[0].item() == pytest.approx(expected) and test[2].item() == pytest.approx(1.0)
    assert bundle.class_names == ["a", "b"]
    assert bundle.train.labels.tolist() == [0, 1] * 5 and bundle.test.labels.tolist() == [1]


def test_without_test_csv_the_split_is_stratified_and_seeded(tmp_path):
    rows = ["f,label"] + [f"{i},{i % 3}" for i in range(30)]
    write(tmp_path / "t.csv", "\n".join(rows))
    a = load_dataset("csv", options={"train_csv": str(tmp_path / "t.csv")})
    b = load_dataset("csv", options={"train_csv": str(tmp_path / "t.csv"), "seed": 5})
    assert len(a.train) == 24 and np.bincount(a.test.labels).tolist() == [2, 2, 2]
    assert not torch.equal(a.test.images.data, b.test.images.data)


def test_int_labels_0_to_k_are_kept_as_they_are(tmp_path, caplog):
    write(tmp_path / "t.csv", "f,label\n1,2\n2,0\n3,1\n4,10\n5,3\n6,4\n7,5\n8,6\n9,7\n0,8\n1,9\n")
    path = str(tmp_path / "t.csv")
    bundle = load_dataset("csv", options={"train_csv": path, "test_csv": path})
    assert bundle.class_names == [str(c) for c in range(11)]  # numeric order: "10" after "9"
    assert bundle.train.labels.tolist() == [2, 0, 1, 10, 3, 4, 5, 6, 7, 8, 9]
    assert not caplog.records  # nothing reinterpreted


def test_int_labels_with_gaps_are_renumbered_saying_so(tmp_path, caplog):
    write(tmp_path / "t.csv", "f,label\n1,9\n2,0\n3,1\n4,9\n")
    write(tmp_path / "test.csv", "f,label\n1,1\n2,9\n")
    bundle = load_dataset(
        "csv",
        options={"train_csv": str(tmp_path / "t.csv"), "test_csv": str(tmp_path / "test.csv")},
    )
    assert bundle.class_names == ["0", "1", "9"]  # no empty classes 2..8 for noise to fill
    assert bundle.train.labels.tolist() == [2, 0, 1, 2] and bundle.test.labels.tolist() == [1, 2]
    (record,) = caplog.records
    assert "{0, 1, 9}" in record.getMessage() and "renumbered" in record.getMessage()
    assert "\n" not in record.getMessage()


def test_a_stray_value_in_an_integer_label_column_is_an_error(tmp_path):
    write(tmp_path / "t.csv", "f,label\n1,0\n2,1\n3,1x\n4,2\n")
    with pytest.raises(DataError, match=r"t.csv line 4: label '1x' is not an integer, unlike 3"):
        load_dataset("csv", options={"train_csv": str(tmp_path / "t.csv")})


def test_names_mixed_with_integers_are_all_names_in_natural_order(tmp_path, caplog):
    write(tmp_path / "t.csv", "f,label\n1,cat\n2,10\n3,dog\n4,2\n5,cat\n")
    bundle = load_dataset(
        "csv", options={"train_csv": str(tmp_path / "t.csv"), "test_csv": str(tmp_path / "t.csv")}
    )
    assert bundle.class_names == ["2", "10", "cat", "dog"]
    assert bundle.train.labels.tolist() == [2, 1, 3, 0, 2]
    (record,) = caplog.records
    assert "class names" in record.getMessage()


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("", {}, "is empty"),
        ("f,label\n", {}, "no data rows"),
        ("f,lbl\n1,0\n", {}, "no column 'label'.*columns: f, lbl"),
        ("f,label\n1,0\n2,zero\n1,1\n", {"label_column": "nope"}, "no column 'nope'"),
        ("f,label\n1,0\n2x,1\n", {}, "line 3: column 'f' value '2x' is not a finite number"),
        ("f,label\n1,0\nnan,1\n", {}, "line 3: .*not a finite number"),
        ("f,label\n1,0\n2,\n", {}, "line 3: the 'label' value is empty"),
        ("f,label\n1,0\n2,1,3\n", {}, "line 3: 3 fields"),
        ("f,label\n1,-1\n2,1\n", {}, "line 2: negative label"),
        ("label\n1\n", {}, "only the label column"),
        ("path,label\nmissing.png,0\n", {}, r"line 2: file '.*missing.png' does not exist"),
        ("path,label\n,0\n", {}, "line 2: the 'path' value is empty"),
    ],
)
def test_errors_name_the_problem_and_line(tmp_path, text, options, message):
    write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=message):
        load_dataset("csv", options={"train_csv": str(tmp_path / "bad.csv"), **options})


def test_missing_train_csv_option_and_file(tmp_path):
    with pytest.raises(DataError, match="needs data.options.train_csv"):
        load_dataset("csv", root=tmp_path)
    with pytest.raises(DataError, match="nope.csv does not exist"):
        load_dataset("csv", root=tmp_path, options={"train_csv": "nope.csv"})


def test_test_labels_must_be_training_classes(tmp_path):
    write(tmp_path / "train.csv", "f,label\n1,cat\n2,dog\n")
    write(tmp_path / "test.csv", "f,label\n1,cat\n3,eel\n")
    options = {"train_csv": str(tmp_path / "train.csv"), "test_csv": str(tmp_path / "test.csv")}
    with pytest.raises(DataError, match="test.csv line 3: label 'eel' does not occur"):
        load_dataset("csv", options=options)


def test_train_and_test_must_have_the_same_columns(tmp_path):
    write(tmp_path / "train.csv", "f,g,label\n1,2,0\n")
    write(tmp_path / "test.csv", "f,label\n1,0\n")
    options = {"train_csv": str(tmp_path / "train.csv"), "test_csv": str(tmp_path / "test.csv")}
    with pytest.raises(DataError, match="same form/columns"):
        load_dataset("csv", options=options)
