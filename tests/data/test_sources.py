"""Fashion-MNIST, CIFAR and digits on tiny files in the standard formats; load_dataset; find."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from noisytail.data import cifar, fashion_mnist
from noisytail.data.sources import find_datasets, load_dataset
from noisytail.data.types import DataError, DatasetBundle, DataSplit, TensorStore
from noisytail.registry import DATASETS, RegistryError

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated_search(tmp_path_factory, monkeypatch):
    """Default searches look only in empty temporary folders, never the machine's own data."""
    empty = tmp_path_factory.mktemp("nothing")
    monkeypatch.setenv("XDG_CACHE_HOME", str(empty / "cache"))
    monkeypatch.delenv("NOISYTAIL_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", empty / "system")
    monkeypatch.setattr(cifar, "SYSTEM_DIR", empty / "system")


# --- Fashion-MNIST ---------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_fashion(folder: Path, *, gz: bool, n_train: int = 5, n_test: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        if gz:
            with gzip.open(folder / (name + ".gz"), "wb") as f:
                f.write(idx_bytes(array))
        else:
            (folder / name).write_bytes(idx_bytes(array))
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_round_trips_idx_files(tmp_path, gz):
    arrays = write_fashion(tmp_path, gz=gz)
    bundle = load_dataset("fashion_mnist", root=tmp_path)
    train, test = bundle.train, bundle.test
    assert train.images.shape == (1, 28, 28) and len(train) == 5 and len(test) == 3
    assert train.images.data.dtype == torch.uint8 and train.labels.dtype == np.int64
    assert np.array_equal(train.images.data[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(test.images.data[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert np.array_equal(train.labels, arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(test.labels, arrays["t10k-labels-idx1-ubyte"])
    assert bundle.class_names[0] == "T-shirt/top" and bundle.num_classes == 10
    assert bundle.mean == (0.2860,) and bundle.std == (0.3530,)
    assert bundle.asymmetric_map == {0: 6, 6: 0, 2: 4, 4: 2, 5: 7}
    assert bundle.root == str(tmp_path)


def test_fashion_mnist_bundle_does_not_share_memory_with_cache(tmp_path):
    write_fashion(tmp_path, gz=False)
    first = load_dataset("fashion_mnist", root=tmp_path)
    first.train.images.data.zero_()
    second = load_dataset("fashion_mnist", root=tmp_path)
    assert second.train.images.data.sum() > 0


def test_read_idx_is_cached_per_path(tmp_path):
    write_fashion(tmp_path, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    assert fashion_mnist.read_idx(path) is fashion_mnist.read_idx(path)


def test_parse_idx_reads_big_endian_int32_and_dims():
    array = np.arange(24, dtype=np.int32).reshape(2, 3, 4) * 70_000
    parsed = fashion_mnist.parse_idx(idx_bytes(array, type_code=0x0C))
    assert parsed.shape == (2, 3, 4) and np.array_equal(parsed, array)


def test_fashion_mnist_torchvision_layout(tmp_path):
    write_fashion(tmp_path / "FashionMNIST" / "raw", gz=True)
    bundle = load_dataset("fashion_mnist", root=tmp_path)
    assert bundle.root == str(tmp_path / "FashionMNIST" / "raw")


def test_fashion_mnist_default_search_uses_env(tmp_path, monkeypatch):
    write_fashion(tmp_path / "fashion-mnist", gz=False)
    monkeypatch.setenv("NOISYTAIL_DATA", str(tmp_path))
    assert load_dataset("fashion_mnist").root == str(tmp_path / "fashion-mnist")


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"\x01" + b[1:],  # bad magic
        lambda b: b[:-7],  # truncated data
        lambda b: b[:6],  # truncated header
    ],
)
def test_fashion_mnist_corrupt_file(tmp_path, damage):
    write_fashion(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("fashion_mnist", root=tmp_path)


def test_fashion_mnist_corrupt_gzip(tmp_path):
    write_fashion(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("fashion_mnist", root=tmp_path)


def test_fashion_mnist_mismatched_files(tmp_path):
    write_fashion(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(DataError, match="do not fit together"):
        load_dataset("fashion_mnist", root=tmp_path)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as info:
        load_dataset("fashion_mnist", root=tmp_path)
    assert "data.options.download=true" in str(info.value)
    assert "\n" not in str(info.value)


def test_fashion_mnist_download_goes_through_torchvision(tmp_path, monkeypatch):
    calls = []

    class FakeFashionMNIST:
        def __init__(self, root, train=True, download=False):
            calls.append((root, download))
            write_fashion(Path(root) / "FashionMNIST" / "raw", gz=True)

    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    bundle = load_dataset("fashion_mnist", options={"download": True})
    assert calls == [(str(tmp_path / "noisytail" / "fashion-mnist"), True)]
    assert bundle.root == str(tmp_path / "noisytail" / "fashion-mnist" / "FashionMNIST" / "raw")


@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", REAL_FASHION_MNIST.parent)
    bundle = load_dataset("fashion_mnist")
    assert len(bundle.train) == 60_000 and len(bundle.test) == 10_000
    assert bundle.input_shape == (1, 28, 28)
    assert np.array_equal(np.bincount(bundle.train.labels), np.full(10, 6000))
    mean = bundle.train.images.data.float().mean().item() / 255
    assert abs(mean - 0.2860) < 1e-3


# --- CIFAR -----------------------------------------------------------------------------------


def write_pickle(path: Path, obj, *, legacy_numpy: bool = False, protocol: int = 2) -> None:
    data = pickle.dumps(obj, protocol=protocol)
    if legacy_numpy:  # as written by numpy 1.x, which the real files were
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(data)


def cifar_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


CIFAR10_NAMES = [
    b"airplane", b"automobile", b"bird", b"cat", b"deer",
    b"dog", b"frog", b"horse", b"ship", b"truck",
]  # fmt: skip


def write_cifar10(
    folder: Path, *, per_batch: int = 3, n_test: int = 4, legacy: bool = False, protocol: int = 2
):
    folder.mkdir(parents=True)
    batches = []
    for i in range(1, 6):
        batch = {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": [(i + j) % 10 for j in range(per_batch)],
            b"data": cifar_images(per_batch, i),
            b"filenames": [b"x.png"] * per_batch,
        }
        write_pickle(folder / f"data_batch_{i}", batch, legacy_numpy=legacy, protocol=protocol)
        batches.append(batch)
    test = {b"labels": list(range(n_test)), b"data": cifar_images(n_test, 9)}
    write_pickle(folder / "test_batch", test, legacy_numpy=legacy)
    write_pickle(folder / "batches.meta", {b"label_names": CIFAR10_NAMES, b"num_vis": 3072})
    return batches, test


@pytest.mark.parametrize("point_at", ["folder", "parent"])
def test_cifar10_round_trips_pickles(tmp_path, point_at):
    batches, test = write_cifar10(tmp_path / "cifar-10-batches-py")
    root = tmp_path / "cifar-10-batches-py" if point_at == "folder" else tmp_path
    bundle = load_dataset("cifar10", root=root)
    assert len(bundle.train) == 15 and len(bundle.test) == 4
    assert bundle.input_shape == (3, 32, 32)
    assert bundle.train.images.data.dtype == torch.uint8
    expected = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    assert np.array_equal(bundle.train.images.data.numpy(), expected)
    assert np.array_equal(bundle.train.labels, np.concatenate([b[b"labels"] for b in batches]))
    assert np.array_equal(bundle.test.labels, test[b"labels"])
    assert bundle.class_names[9] == "truck"
    assert bundle.asymmetric_map == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    assert len(bundle.mean) == 3 and len(bundle.std) == 3
    assert bundle.root == str(tmp_path / "cifar-10-batches-py")


def test_cifar_rows_are_rgb_planes(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)])
    batch = {b"labels": [3], b"data": row.astype(np.uint8)[None]}
    write_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", batch)
    image = load_dataset("cifar10", root=tmp_path).test.images.get(np.array([0]))[0]
    assert image.shape == (3, 32, 32)
    assert [int(image[c].unique().item()) for c in range(3)] == [10, 20, 30]


def test_cifar10_reads_numpy1_pickles(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py", legacy=True)
    assert len(load_dataset("cifar10", root=tmp_path).train) == 15


def test_cifar10_reads_newer_pickle_protocols(tmp_path):
    batches, _ = write_cifar10(tmp_path / "cifar-10-batches-py", protocol=4)
    bundle = load_dataset("cifar10", root=tmp_path)
    assert np.array_equal(bundle.train.images.data[:3].numpy().reshape(3, -1), batches[0][b"data"])


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    evil = b"cos\nsystem\n(S'echo hacked'\ntR."
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(evil)
    with pytest.raises(DataError, match="data_batch_2.*refusing"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_bad_data_shape(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    batch = {b"labels": [1], b"data": np.zeros((1, 100), dtype=np.uint8)}
    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_3", batch)
    with pytest.raises(DataError, match=r"data_batch_3.*expected uint8 \[N, 3072\]"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_missing_key_lists_keys(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    write_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": cifar_images(1, 0)})
    with pytest.raises(DataError, match="no 'labels' entry.*it has: data"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="cifar10 not found.*download=true"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DataError, match="cifar-100-python"):
        load_dataset("cifar100")


def write_cifar100(folder: Path, *, n_fine: int = 100):
    folder.mkdir(parents=True)
    fine = np.arange(n_fine) % 100
    train = {
        b"fine_labels": fine.tolist(),
        b"coarse_labels": (fine // 5).tolist(),
        b"data": cifar_images(n_fine, 1),
    }
    test = {
        b"fine_labels": [7, 99, 0],
        b"coarse_labels": [1, 19, 0],
        b"data": cifar_images(3, 2),
    }
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    write_pickle(folder / "train", train)
    write_pickle(folder / "test", test)
    write_pickle(folder / "meta", meta)
    return train, test


def test_cifar100_fine_and_coarse_labels(tmp_path):
    train, test = write_cifar100(tmp_path / "cifar-100-python")
    bundle = load_dataset("cifar100", root=tmp_path)
    assert bundle.num_classes == 100 and bundle.class_names[42] == "fine42"
    assert np.array_equal(bundle.train.labels, train[b"fine_labels"])
    assert np.array_equal(bundle.test.labels, test[b"fine_labels"])
    assert bundle.coarse_labels.shape == (100,)
    assert np.array_equal(bundle.coarse_labels, np.arange(100) // 5)
    assert np.array_equal(bundle.train.images.data.numpy().reshape(-1, 3072), train[b"data"])


def test_cifar100_inconsistent_coarse_labels(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python")
    test = {b"fine_labels": [7], b"coarse_labels": [5], b"data": cifar_images(1, 2)}
    write_pickle(tmp_path / "cifar-100-python" / "test", test)
    with pytest.raises(DataError, match="fine class 7 appears with coarse classes"):
        load_dataset("cifar100", root=tmp_path)


def test_cifar100_incomplete_classes(tmp_path):
    folder = tmp_path / "cifar-100-python"
    write_cifar100(folder)
    train = {b"fine_labels": [0, 1], b"coarse_labels": [0, 0], b"data": cifar_images(2, 1)}
    write_pickle(folder / "train", train)
    with pytest.raises(DataError, match="super-class is unknown"):
        load_dataset("cifar100", root=folder)


# --- digits ----------------------------------------------------------------------------------


def test_digits_shapes_split_and_stats():
    bundle = load_dataset("digits")
    assert bundle.input_shape == (1, 8, 8) and bundle.num_classes == 10
    assert len(bundle.train) + len(bundle.test) == 1797
    assert abs(len(bundle.test) / 1797 - 0.25) < 0.01
    x = bundle.train.images.data
    assert x.dtype == torch.uint8 and int(x.max()) == 255 and int(x.min()) == 0
    assert set(np.unique(bundle.test.labels)) == set(range(10))
    pixels = x.double() / 255
    assert bundle.mean[0] == pytest.approx(pixels.mean().item())
    assert bundle.std[0] == pytest.approx(pixels.std(unbiased=False).item())
    again = load_dataset("digits")
    assert np.array_equal(again.test.labels, bundle.test.labels)
    assert torch.equal(again.test.images.data, bundle.test.images.data)


def test_digits_test_fraction_option():
    bundle = load_dataset("digits", options={"test_fraction": 0.5})
    assert abs(len(bundle.test) - 1797 / 2) < 10


# --- load_dataset / find_datasets -----------------------------------------------------------


def test_all_sources_registered():
    for name in ["fashion_mnist", "digits", "cifar10", "cifar100", "image_folder", "csv"]:
        assert name in DATASETS


def test_load_dataset_rejects_unknown_names_and_options():
    with pytest.raises(RegistryError, match="Did you mean 'digits'"):
        load_dataset("digit")
    with pytest.raises(RegistryError, match="no argument 'test_frac'.*test_fraction"):
        load_dataset("digits", options={"test_frac": 0.1})


def test_load_dataset_validates_labels(monkeypatch):
    def bad_source(root=None):
        split = DataSplit(TensorStore(torch.zeros(2, 3)), np.array([0, 5]))
        return DatasetBundle("bad", split, split, ["a", "b"])

    monkeypatch.setitem(DATASETS._items, "bad_source_for_test", bad_source)
    with pytest.raises(DataError, match="label 5 at index 1"):
        load_dataset("bad_source_for_test")


def test_find_datasets_reports_each_source(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    monkeypatch.setenv("NOISYTAIL_DATA", str(tmp_path))
    rows = {row["name"]: row for row in find_datasets()}
    assert set(rows) >= {"fashion_mnist", "digits", "cifar10", "cifar100", "image_folder", "csv"}
    assert rows["cifar10"]["found"] is True
    assert rows["cifar10"]["location"] == str(tmp_path / "cifar-10-batches-py")
    assert rows["cifar100"]["found"] is False and "download=true" in rows["cifar100"]["how"]
    assert rows["fashion_mnist"]["found"] is False
    assert "apt-get install" in rows["fashion_mnist"]["how"]
    assert rows["digits"]["found"] is True
    assert rows["image_folder"]["found"] is None and "data.root" in rows["image_folder"]["how"]
    assert rows["csv"]["found"] is None and "train_csv" in rows["csv"]["how"]


def test_class_names_differing_only_in_case_are_warned_of(caplog):
    import logging

    from noisytail.data.types import DatasetBundle, DataSplit, TensorStore

    split = DataSplit(TensorStore(torch.zeros(4, 3)), np.array([0, 1, 2, 0]))
    bundle = DatasetBundle(name="t", train=split, test=split, class_names=["Red", "red ", "blue"])
    with caplog.at_level(logging.WARNING):
        bundle.validate()
    assert "classes 'Red' and 'red ' differ only in case or spaces" in caplog.text
    caplog.clear()
    DatasetBundle(name="t", train=split, test=split, class_names=["a", "b", "c"]).validate()
    assert "differ only" not in caplog.text
