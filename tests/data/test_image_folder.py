"""image_folder layouts, the stratified split and LazyImageStore's decoding and cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noisytail.data.image_folder import LazyImageStore, decode_image, split_train_test
from noisytail.data.sources import load_dataset
from noisytail.data.types import DataError

COLOURS = {"ant": (255, 0, 0), "bee": (0, 255, 0), "cat": (0, 0, 255)}


def write_image(path: Path, colour=(10, 20, 30), size=(12, 9)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def write_classes(folder: Path, counts: dict[str, int], ext: str = ".png") -> None:
    for name, n in counts.items():
        for i in range(n):
            write_image(folder / name / f"{i}{ext}", COLOURS[name])


def test_flat_layout_is_split_stratified(tmp_path):
    write_classes(tmp_path, {"ant": 10, "bee": 5, "cat": 5})
    bundle = load_dataset("image_folder", root=tmp_path, options={"image_size": 16})
    assert bundle.class_names == ["ant", "bee", "cat"]
    assert np.bincount(bundle.test.labels).tolist() == [2, 1, 1]
    assert np.bincount(bundle.train.labels).tolist() == [8, 4, 4]
    assert not set(bundle.train.paths) & set(bundle.test.paths)
    x = bundle.train.images.get(np.arange(len(bundle.train)))
    assert x.shape == (16, 3, 16, 16) and x.dtype == torch.uint8
    for image, label, path in zip(x, bundle.train.labels, bundle.train.paths):
        name = bundle.class_names[label]
        assert Path(path).parent.name == name
        assert tuple(image[:, 0, 0].tolist()) == COLOURS[name]
    assert bundle.mean == (0.485, 0.456, 0.406) and bundle.root == str(tmp_path)


def test_split_is_seeded(tmp_path):
    write_classes(tmp_path, {"ant": 10, "bee": 10})
    a = load_dataset("image_folder", root=tmp_path)
    b = load_dataset("image_folder", root=tmp_path)
    c = load_dataset("image_folder", root=tmp_path, options={"seed": 1})
    assert a.test.paths == b.test.paths and a.test.paths != c.test.paths


@pytest.mark.parametrize("test_name", ["test", "val"])
def test_train_test_layout(tmp_path, test_name):
    write_classes(tmp_path / "train", {"ant": 3, "bee": 2})
    write_classes(tmp_path / test_name, {"bee": 2})
    bundle = load_dataset("image_folder", root=tmp_path, options={"image_size": 8})
    assert bundle.class_names == ["ant", "bee"]
    assert bundle.train.labels.tolist() == [0, 0, 0, 1, 1]
    assert bundle.test.labels.tolist() == [1, 1]
    assert all(f"/{test_name}/bee/" in p for p in bundle.test.paths)


def test_grayscale_and_extensions(tmp_path):
    write_image(tmp_path / "ant" / "a.PNG", (200, 200, 200))
    write_image(tmp_path / "ant" / "deep" / "b.JPG", (200, 200, 200))
    write_image(tmp_path / "bee" / "c.bmp", (0, 0, 0))
    write_image(tmp_path / "bee" / "d.gif", (0, 0, 0))
    (tmp_path / "bee" / "notes.txt").write_text("not an image")
    write_image(tmp_path / "bee" / ".hidden.png")
    bundle = load_dataset("image_folder", root=tmp_path, options={"channels": 1, "image_size": 5})
    assert len(bundle.train) + len(bundle.test) == 4
    assert bundle.input_shape == (1, 5, 5) and len(bundle.mean) == 1
    x = bundle.train.images.get(np.arange(len(bundle.train)))
    assert x.shape[1:] == (1, 5, 5)
    for image, label in zip(x, bundle.train.labels):
        assert (int(image.float().mean()) > 150) == (label == 0)


def test_missing_root_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="image_folder needs data.root"):
        load_dataset("image_folder")
    with pytest.raises(DataError, match="No class folders"):
        load_dataset("image_folder", root=tmp_path)
    write_classes(tmp_path, {"ant": 2})
    (tmp_path / "bee").mkdir()
    with pytest.raises(DataError, match=r"Class folder .*bee has no images"):
        load_dataset("image_folder", root=tmp_path)


def test_test_class_must_be_a_training_class(tmp_path):
    write_classes(tmp_path / "train", {"ant": 2, "bee": 1})
    write_classes(tmp_path / "test", {"cat": 1})
    with pytest.raises(DataError, match="cat is not among the training classes"):
        load_dataset("image_folder", root=tmp_path)


def test_lazy_store_caches_decoded_images(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", (i, i, i)) for i in range(4)]
    store = LazyImageStore(paths, image_size=4, channels=3, cache_items=3, cache_mb=0)
    assert all(hasattr(store, m) for m in ("shape", "__len__", "get"))  # the ImageStore protocol
    assert store.shape == (3, 4, 4) and len(store) == 4
    first = store.get(np.array([0, 1, 2]))
    assert store.decode_count == 3
    again = store.get(np.array([2, 1, 0]))
    assert store.decode_count == 3 and torch.equal(again, first.flip(0))
    store.get(np.array([3]))  # evicts the least recently used (index 2)
    assert store.decode_count == 4
    store.get(np.array([0, 1, 3]))
    assert store.decode_count == 4
    store.get(np.array([2]))
    assert store.decode_count == 5
    assert [int(store.get(np.array([i]))[0, 0, 0, 0]) for i in range(4)] == [0, 1, 2, 3]


def test_lazy_store_serves_batches_larger_than_its_cache(tmp_path):
    # a batch whose fresh images evict a hit of the same batch (a shuffled epoch over more
    # images than the cache holds) still gets every image right
    paths = [write_image(tmp_path / f"{i}.png", (i, i, i)) for i in range(8)]
    store = LazyImageStore(paths, image_size=2, channels=3, cache_items=2, cache_mb=0)
    store.get(np.array([0, 1]))
    assert [int(v) for v in store.get(np.array([2, 3, 0, 1]))[:, 0, 0, 0]] == [2, 3, 0, 1]
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = rng.integers(0, 8, size=5)
        assert store.get(idx)[:, 0, 0, 0].tolist() == idx.tolist()


def test_lazy_store_without_cache_decodes_every_time(tmp_path):
    store = LazyImageStore(
        [write_image(tmp_path / "a.png")], image_size=2, cache_items=0, cache_mb=0
    )
    store.get(np.array([0]))
    store.get(np.array([0]))
    assert store.decode_count == 2


def test_lazy_store_names_unreadable_files(tmp_path):
    good = write_image(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    store = LazyImageStore([good, bad, tmp_path / "gone.png"], image_size=4)
    with pytest.raises(DataError, match="bad.png"):
        store.get(np.array([0, 1]))
    with pytest.raises(DataError, match="gone.png"):
        store.get(np.array([2]))


def test_lazy_store_rejects_bad_settings(tmp_path):
    with pytest.raises(DataError, match="channels must be 1"):
        LazyImageStore([], channels=2)
    with pytest.raises(DataError, match="image_size"):
        LazyImageStore([], image_size=0)


def test_split_train_test_properties():
    labels = np.repeat(np.arange(4), [1, 2, 10, 40])
    train, test = split_train_test(labels, 0.25, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
    assert np.bincount(labels[test], minlength=4).tolist() == [0, 1, 3, 10]
    again = split_train_test(labels, 0.25, seed=3)
    assert np.array_equal(again[1], test)
    with pytest.raises(DataError, match="test_fraction"):
        split_train_test(labels, 1.0)


@pytest.mark.parametrize("kind", ["uint16 png", "int32 tiff", "float tiff"])
@pytest.mark.parametrize("channels", [1, 3])
def test_wide_grey_images_are_stretched_not_clipped(tmp_path, kind, channels):
    # Pillow's own conversion clips 16-bit values at 255 (an almost white image) and float values
    # in [0, 1] to 0 or 1 (almost black): the decoder stretches each image's range to 0..255
    ramp = np.arange(16 * 16, dtype=np.float64).reshape(16, 16)
    if kind == "uint16 png":
        values, path = (ramp * 200).astype(np.uint16), tmp_path / "scan.png"
        Image.fromarray(values).save(path)
    elif kind == "int32 tiff":
        values, path = (ramp * 200).astype(np.int32), tmp_path / "scan.tiff"
        Image.fromarray(values, "I").save(path)
    else:
        values, path = (ramp / 255.0).astype(np.float32), tmp_path / "scan.tiff"
        Image.fromarray(values, "F").save(path)
    with Image.open(path) as im:
        assert im.mode in {"I", "I;16", "F"}  # the case under test, not an 8-bit file
    expected = np.round(ramp * 255.0 / ramp.max()).astype(np.uint8)
    decoded = decode_image(str(path), 16, channels)
    assert decoded.shape == (channels, 16, 16)
    for channel in decoded:
        assert np.array_equal(channel.numpy(), expected)


def test_a_constant_wide_grey_image_is_black(tmp_path):
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(path)
    assert int(decode_image(str(path), 8, 1).max()) == 0
