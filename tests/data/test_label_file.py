"""apply_label_file on tiny .npy/.npz/.pt/.pth/.csv files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from noisytail.data.corruption import Corruption
from noisytail.data.label_file import apply_label_file
from noisytail.data.prepare import prepare_data
from noisytail.data.sources import load_dataset
from noisytail.data.types import DataError, DatasetBundle, DataSplit, TensorStore

TRUE = np.array([0, 1, 2, 0, 1, 2])
NOISY = np.array([1, 1, 0, 2, 1, 0])


@pytest.fixture
def bundle() -> DatasetBundle:
    train = DataSplit(TensorStore(torch.arange(6 * 4, dtype=torch.uint8).view(6, 1, 2, 2)), TRUE)
    test = DataSplit(TensorStore(torch.zeros(2, 1, 2, 2, dtype=torch.uint8)), np.array([2, 0]))
    return DatasetBundle("tiny", train, test, ["cat", "dog", "fox"], mean=(0.5,), std=(0.2,))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_applied(original: DatasetBundle, noisy: DatasetBundle, expected: np.ndarray) -> None:
    assert noisy is not original
    assert noisy.train.labels.dtype == np.int64
    assert np.array_equal(noisy.train.labels, expected)
    assert np.array_equal(original.train.labels, TRUE)  # the input bundle is untouched
    assert noisy.train.images is original.train.images
    assert noisy.test is original.test and noisy.class_names == original.class_names


def test_npy(tmp_path, bundle):
    path = tmp_path / "labels.npy"
    np.save(path, NOISY.astype(np.int32))
    before = digest(path)
    check_applied(bundle, apply_label_file(bundle, path), NOISY)
    assert digest(path) == before


def test_npy_with_integral_floats(tmp_path, bundle):
    np.save(tmp_path / "f.npy", NOISY.astype(np.float32))
    check_applied(bundle, apply_label_file(bundle, tmp_path / "f.npy"), NOISY)
    np.save(tmp_path / "g.npy", NOISY + 0.5)
    with pytest.raises(DataError, match="must be integers"):
        apply_label_file(bundle, tmp_path / "g.npy")


def test_npz_with_key(tmp_path, bundle):
    np.savez(tmp_path / "run.npz", noisy_labels=NOISY, true_labels=TRUE)
    check_applied(bundle, apply_label_file(bundle, tmp_path / "run.npz", key="noisy_labels"), NOISY)
    with pytest.raises(DataError, match="several arrays.*noisy_labels, true_labels"):
        apply_label_file(bundle, tmp_path / "run.npz")


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_pt_tensor(tmp_path, bundle, suffix):
    path = tmp_path / f"labels{suffix}"
    torch.save(torch.from_numpy(NOISY), path)
    check_applied(bundle, apply_label_file(bundle, path), NOISY)


def test_pt_dict_of_numpy_like_cifar_n(tmp_path, bundle):
    path = tmp_path / "CIFAR-10_human.pt"
    entries = {
        "clean_label": TRUE,
        "worse_label": NOISY,
        "aggre_label": TRUE,
        "random_label1": NOISY[::-1].copy(),
    }
    torch.save(entries, path)
    before = digest(path)
    check_applied(bundle, apply_label_file(bundle, path, key="worse_label"), NOISY)
    check_applied(bundle, apply_label_file(bundle, path, key="random_label1"), NOISY[::-1])
    assert digest(path) == before
    with pytest.raises(DataError, match="no key 'noisy_label'.*clean_label, worse_label"):
        apply_label_file(bundle, path, key="noisy_label")
    with pytest.raises(DataError, match="choose one with key="):
        apply_label_file(bundle, path)


def test_pt_single_entry_dict_needs_no_key(tmp_path, bundle):
    torch.save({"noisy_label": torch.from_numpy(NOISY)}, tmp_path / "c100.pt")
    check_applied(bundle, apply_label_file(bundle, tmp_path / "c100.pt"), NOISY)


def test_pt_refuses_arbitrary_objects(tmp_path, bundle):
    torch.save({"labels": NOISY, "thing": Path("x")}, tmp_path / "odd.pt")
    with pytest.raises(DataError, match="odd.pt: .*PosixPath.*Only tensors, numpy arrays"):
        apply_label_file(bundle, tmp_path / "odd.pt", key="labels")


def test_csv_with_class_names_and_ints(tmp_path, bundle):
    path = tmp_path / "labels.csv"
    path.write_text("label\ndog\n1\ncat\nfox\n1\n0\n")
    check_applied(bundle, apply_label_file(bundle, path), np.array([1, 1, 0, 2, 1, 0]))


def test_csv_with_index_column(tmp_path, bundle):
    order = [3, 0, 5, 1, 4, 2]
    rows = ["index,label"] + [f"{i},{NOISY[i]}" for i in order]
    (tmp_path / "l.csv").write_text("\n".join(rows) + "\n")
    check_applied(bundle, apply_label_file(bundle, tmp_path / "l.csv"), NOISY)


def test_csv_with_path_column_matches_rows_to_images(tmp_path):
    from PIL import Image

    root = tmp_path / "data"
    for name in ("ant", "bee"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (4, 4), 40 * i).save(root / name / f"{name}{i}.png")
    bundle = load_dataset("image_folder", root=root, options={"image_size": 4, "test_fraction": 0})
    paths = bundle.train.paths
    assert [Path(p).name for p in paths] == [
        "ant0.png",
        "ant1.png",
        "ant2.png",
        "bee0.png",
        "bee1.png",
        "bee2.png",
    ]
    wanted = {
        "ant0.png": "bee",
        "ant1.png": "ant",
        "ant2.png": "bee",
        "bee0.png": "ant",
        "bee1.png": "bee",
        "bee2.png": "bee",
    }
    rows = ["path,label"]  # reversed order; relative to the root, to the CSV's folder, absolute
    for i, p in enumerate(reversed(paths)):
        name = Path(p).name
        cell = (f"{name[:3]}/{name}", f"data/{name[:3]}/{name}", str(p))[i % 3]
        rows.append(f"{cell},{wanted[name]}")
    labels = tmp_path / "noisy.csv"
    labels.write_text("\n".join(rows) + "\n")
    noisy = apply_label_file(bundle, labels)
    got = {Path(p).name: bundle.class_names[y] for p, y in zip(paths, noisy.train.labels)}
    assert got == wanted
    bad = {
        "path,label\nant/ant9.png,ant\n": "line 2: 'ant/ant9.png' is not a training image",
        "path,label\n" + "ant/ant0.png,ant\n" * 6: "'path' column must list each of the 6",
        "index,path,label\n0,ant/ant0.png,ant\n": "both 'index' and 'path'",
    }
    for text, message in bad.items():
        labels.write_text(text)
        with pytest.raises(DataError, match=message):
            apply_label_file(bundle, labels)


def test_csv_with_path_column_needs_image_files(tmp_path, bundle):
    (tmp_path / "l.csv").write_text("path,label\na.png,dog\n")
    with pytest.raises(DataError, match="not image files: give an 'index' column"):
        apply_label_file(bundle, tmp_path / "l.csv")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "index,label\n0,1\n0,1\n1,1\n2,1\n3,1\n4,1\n",
            "'index' column must list each of the 6 training samples",
        ),
        ("index,label\n9,1\n", "line 2: index '9' is not in 0..5"),
        (
            "label\ndog\nwolf\n",
            "line 3: 'wolf' is not a class of the data \\(cat, dog, fox\\) nor a class number 0..2",
        ),
        ("labels\n1\n", "no 'label' column"),
    ],
)
def test_csv_errors(tmp_path, bundle, text, message):
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        apply_label_file(bundle, tmp_path / "l.csv")


def test_length_and_range_are_checked(tmp_path, bundle):
    np.save(tmp_path / "short.npy", NOISY[:5])
    with pytest.raises(DataError, match="has 5 labels but tiny has 6 training samples"):
        apply_label_file(bundle, tmp_path / "short.npy")
    np.save(tmp_path / "range.npy", np.array([0, 1, 2, 3, 0, 0]))
    with pytest.raises(DataError, match=r"label 3 at index 3 is outside \[0, 3\)"):
        apply_label_file(bundle, tmp_path / "range.npy")
    np.save(tmp_path / "neg.npy", np.array([0, -1, 2, 0, 0, 0]))
    with pytest.raises(DataError, match="label -1 at index 1"):
        apply_label_file(bundle, tmp_path / "neg.npy")


def test_bad_files(tmp_path, bundle):
    with pytest.raises(DataError, match="does not exist"):
        apply_label_file(bundle, tmp_path / "none.npy")
    (tmp_path / "l.txt").write_text("1\n")
    with pytest.raises(DataError, match="unknown format '.txt'"):
        apply_label_file(bundle, tmp_path / "l.txt")
    np.save(tmp_path / "two_d.npy", np.zeros((6, 2), dtype=np.int64))
    with pytest.raises(DataError, match="1-D array"):
        apply_label_file(bundle, tmp_path / "two_d.npy")
    np.save(tmp_path / "obj.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="Cannot read label file"):
        apply_label_file(bundle, tmp_path / "obj.npy")
    np.save(tmp_path / "ok.npy", NOISY)
    with pytest.raises(DataError, match="holds a single array"):
        apply_label_file(bundle, tmp_path / "ok.npy", key="worse_label")
    (tmp_path / "broken.pt").write_bytes(b"garbage")
    with pytest.raises(DataError, match="broken.pt"):
        apply_label_file(bundle, tmp_path / "broken.pt")


def test_labels_of_a_renumbered_source_are_its_original_values(tmp_path, bundle):
    import dataclasses

    gaps = dataclasses.replace(bundle, class_names=["0", "1", "9"])  # labels {0, 1, 9} renumbered
    np.save(tmp_path / "y.npy", np.array([1, 1, 0, 9, 1, 0]))
    noisy = apply_label_file(gaps, tmp_path / "y.npy")
    assert noisy.train.labels.tolist() == [1, 1, 0, 2, 1, 0]
    (tmp_path / "y.csv").write_text("label\n1\n1\n0\n9\n1\n0\n")
    assert apply_label_file(gaps, tmp_path / "y.csv").train.labels.tolist() == [1, 1, 0, 2, 1, 0]
    (tmp_path / "y.csv").write_text("label\n01\n1\n00\n09\n+1\n0\n")  # as the data's CSV reads them
    assert apply_label_file(gaps, tmp_path / "y.csv").train.labels.tolist() == [1, 1, 0, 2, 1, 0]
    np.save(tmp_path / "bad.npy", np.array([1, 1, 0, 2, 1, 0]))  # 2 is no label of the data
    with pytest.raises(DataError, match="label 2 at index 3 is not one of the data's labels"):
        apply_label_file(gaps, tmp_path / "bad.npy")
    (tmp_path / "bad.csv").write_text("label\n1\n1\n0\n2\n1\n0\n")
    with pytest.raises(DataError, match=r"line 5: '2' is not a class of the data \(0, 1, 9\)\.$"):
        apply_label_file(gaps, tmp_path / "bad.csv")


def test_labels_from_a_file_are_the_corruption_input_and_its_record(tmp_path, digits_config):
    n = len(load_dataset("digits").train)
    given = np.random.default_rng(0).integers(0, 10, n)
    path = tmp_path / "noisy.npy"
    np.save(path, given)
    cfg = digits_config(f"data.label_file={path}", "data.train_subset=400", "meta.per_class=2")
    prepared = prepare_data(cfg)
    c = prepared.corruption
    assert c.spec["noise"]["kind"] == "label_file"
    assert c.spec["label_source"] == {"path": str(path), "key": None, "sha256": digest(path)}
    kept = np.concatenate([c.train_idx, c.val_idx])
    assert np.array_equal(c.noisy_labels[kept], given[prepared.train_source_idx][kept])
    assert np.array_equal(c.noisy_labels[c.meta_idx], c.true_labels[c.meta_idx])  # meta: clean
    summary = c.summary()
    assert summary["noise_kind"] == "label_file" and summary["noise_rate_expected"] is None
    wrong = given[prepared.train_source_idx][c.train_idx] != c.true_labels[c.train_idx]
    assert summary["noise_rate_realised"] == pytest.approx(wrong.mean())
    c.save(tmp_path / "corruption.npz")
    assert Corruption.load(tmp_path / "corruption.npz").spec == c.spec  # the record says it all
