"""A user's own images and tables: formats inferred from the files, aspect-kept decoding, the
in-memory cache of decoded images, and the one-line refusals of bad input (issue 10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noisytail.data.checks import check_fold_sizes
from noisytail.data.image_folder import (
    MAX_INFERRED_SIZE,
    LazyImageStore,
    decode_image,
    infer_image_format,
)
from noisytail.data.sources import load_dataset
from noisytail.data.types import DataError


def gray_pngs(root: Path, per_class: int = 6, size: tuple[int, int] = (28, 28)) -> None:
    rng = np.random.default_rng(0)
    for c in ("shirt", "shoe"):
        for i in range(per_class):
            path = root / c / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(path)


def test_gray_28px_pngs_give_size_28_and_one_channel(tmp_path):
    gray_pngs(tmp_path)
    bundle = load_dataset("image_folder", root=tmp_path)
    assert bundle.input_shape == (1, 28, 28)
    assert bundle.inferred["image_size"][0] == 28 and bundle.inferred["channels"][0] == 1
    assert "28 px" in bundle.inferred["image_size"][1]
    assert "grayscale" in bundle.inferred["channels"][1]
    x = bundle.train.images.get(np.arange(len(bundle.train)))
    assert x.shape[1:] == (1, 28, 28)
    # at the files' own size nothing is resampled: the pixels are the files' pixels
    first = np.asarray(Image.open(bundle.train.paths[0]))
    assert np.array_equal(x[0, 0].numpy(), first)
    # explicit settings win over the files
    given = load_dataset("image_folder", root=tmp_path, options={"image_size": 8, "channels": 3})
    assert given.input_shape == (3, 8, 8) and given.inferred == {}


def test_inference_takes_the_median_shorter_side_capped_and_colour_if_any(tmp_path):
    paths = []
    for i, (w, h) in enumerate([(20, 50), (30, 31), (45, 40)]):  # shorter sides 20, 30, 40
        paths.append(tmp_path / f"{i}.png")
        Image.new("L", (w, h), 7).save(paths[-1])
    fmt = infer_image_format(paths)
    assert (fmt.image_size, fmt.channels) == (30, 1)
    Image.new("RGB", (30, 30), (1, 2, 3)).save(tmp_path / "colour.png")
    fmt = infer_image_format(paths + [tmp_path / "colour.png"])
    assert fmt.channels == 3 and "colour.png" in fmt.channels_reason
    big = tmp_path / "big.png"
    Image.new("L", (500, 400), 7).save(big)
    fmt = infer_image_format([big])
    assert fmt.image_size == MAX_INFERRED_SIZE and "capped" in fmt.size_reason
    # a palette image with a grey palette is grayscale
    pal = Image.new("L", (30, 30), 100).convert("P")
    pal.save(tmp_path / "pal.png")
    assert infer_image_format([tmp_path / "pal.png"]).channels == 1


def test_a_csv_manifest_infers_the_format_of_its_images(tmp_path):
    gray_pngs(tmp_path / "img", per_class=3, size=(12, 16))
    rows = [f"img/{c}/{i}.png,{c}" for c in ("shirt", "shoe") for i in range(3)]
    (tmp_path / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    bundle = load_dataset("csv", options={"train_csv": str(tmp_path / "train.csv")})
    assert bundle.input_shape == (1, 12, 12) and set(bundle.inferred) == {"image_size", "channels"}


def test_decode_keeps_the_aspect_ratio_then_crops_the_centre(tmp_path):
    # 40 x 20: red, green, blue vertical bands of 10, 20 and 10 columns
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10, 0] = 255
    pixels[:, 10:30, 1] = 255
    pixels[:, 30:, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    x = decode_image(str(tmp_path / "wide.png"), 10, 3)
    assert x.shape == (3, 10, 10)
    # resized to 20 x 10, the centre 10 columns are the green band; a squashed image would show
    # red in its first column and blue in its last
    assert (x[1] > 150).all() and (x[0] < 100).all() and (x[2] < 100).all()
    tall = np.zeros((40, 20), dtype=np.uint8)
    tall[10:30] = 200
    Image.fromarray(tall).save(tmp_path / "tall.png")
    y = decode_image(str(tmp_path / "tall.png"), 10, 1)
    assert y.shape == (1, 10, 10) and (y > 150).all()


def test_the_cache_gives_the_tensors_of_the_uncached_path(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(12):
        w, h = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        ext = ".jpg" if i % 2 else ".png"
        paths.append(tmp_path / f"{i}{ext}")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    cached = LazyImageStore(paths, image_size=16, channels=3)
    plain = LazyImageStore(paths, image_size=16, channels=3, cache_items=0, cache_mb=0)
    assert cached.resident and not plain.resident
    order = rng.permutation(12)
    for idx in (order[:7], order, order[::-1], np.array([3, 3, 5])):
        assert torch.equal(cached.get(idx), plain.get(idx))
    assert cached.decode_count == 12  # each file decoded once, then served from memory
    assert plain.decode_count > 12
    # the cap: a store larger than cache_mb keeps only the LRU cache
    assert not LazyImageStore(paths, image_size=16, cache_mb=12 * 3 * 16 * 16 / 2**20 / 2).resident


def test_unreadable_images_are_named_in_one_line(tmp_path):
    gray_pngs(tmp_path)
    bad = tmp_path / "shoe" / "9.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    # inferring the format reads every header: the bad file is named before any training
    with pytest.raises(DataError, match=r"Cannot read image .*shoe/9\.png: .*stops rather") as e:
        load_dataset("image_folder", root=tmp_path, options={"test_fraction": 0})
    assert "\n" not in str(e.value)
    # with the size given, decoding names it
    good = Image.new("RGB", (64, 64), (1, 2, 3))
    good.save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    store = LazyImageStore([tmp_path / "whole.jpg", tmp_path / "cut.jpg"], image_size=8)
    with pytest.raises(DataError, match=r"cut\.jpg") as e:
        store.get(np.arange(2))
    assert "\n" not in str(e.value)


def test_one_class_is_refused(tmp_path):
    gray_pngs(tmp_path)
    for p in (tmp_path / "shoe").iterdir():
        p.unlink()
    (tmp_path / "shoe").rmdir()
    with pytest.raises(DataError, match=r"has one class \('shirt'\).*at least two"):
        load_dataset("image_folder", root=tmp_path)
    (tmp_path / "t.csv").write_text("a,b,label\n1,2,x\n3,4,x\n")
    with pytest.raises(DataError, match=r"t\.csv has one class \('x'\)"):
        load_dataset("csv", options={"train_csv": str(tmp_path / "t.csv")})


def test_no_test_split_when_test_fraction_is_zero(tmp_path):
    gray_pngs(tmp_path)
    bundle = load_dataset("image_folder", root=tmp_path, options={"test_fraction": 0})
    assert len(bundle.train) == 12 and len(bundle.test) == 0


def test_fold_sizes():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 3)
    check_fold_sizes(labels, ["a", "b", "c"], 2)
    with pytest.raises(DataError, match=r"Class 'b' has 2 sample\(s\) \(and 1 more classes\)"):
        check_fold_sizes(labels, ["a", "b", "c"], 5)
    with pytest.raises(DataError, match=r"Class 'b' has 2 sample\(s\), fewer than the 3 folds"):
        check_fold_sizes(labels, ["a", "b", "c"], 3, fix="set folds=2")
    with pytest.raises(DataError, match="Class 'c' has 0"):
        check_fold_sizes(labels[:7], ["a", "b", "c"], 2)


def test_checked_images_become_the_meta_set_and_leave_the_training_images(tmp_path):
    gray_pngs(tmp_path / "photos")
    outside = tmp_path / "extra" / "x.png"
    outside.parent.mkdir()
    Image.new("L", (28, 28), 3).save(outside)
    (tmp_path / "checked.csv").write_text(
        f"path,label\n{tmp_path}/extra/../photos/shirt/1.png,shirt\nshirt/4.png,shoe\n{outside},shoe\n"
    )
    options = {"test_fraction": 0, "meta_csv": str(tmp_path / "checked.csv")}
    bundle = load_dataset("image_folder", root=tmp_path / "photos", options=options)
    listed = {str(tmp_path / "photos" / "shirt" / n) for n in ("1.png", "4.png")}
    assert len(bundle.train) == 10 and not listed & set(bundle.train.paths)
    assert bundle.meta is not None and bundle.meta.labels.tolist() == [0, 1, 1]  # as checked
    assert bundle.meta.paths[2] == str(outside)
    x = bundle.meta.images.get(np.arange(3))
    assert x.shape == (3, 1, 28, 28) and int(x[2].float().mean()) == 3
    (tmp_path / "bad.csv").write_text("path,label\nshirt/1.png,hat\n")
    with pytest.raises(DataError, match=r"bad\.csv line 2: label 'hat' is not a class"):
        load_dataset(
            "image_folder",
            root=tmp_path / "photos",
            options={"meta_csv": str(tmp_path / "bad.csv")},
        )


def test_checked_rows_of_a_table_leave_its_training_rows(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 2)).round(3)
    y = ["a", "b"] * 5
    rows = [f"{p},{q},{c}" for (p, q), c in zip(x.tolist(), y)]
    (tmp_path / "t.csv").write_text("f1,f2,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "checked.csv").write_text(f"f1,f2,label\n{rows[3][:-2]},a\n9.5,9.5,b\n")
    options = {"train_csv": str(tmp_path / "t.csv"), "test_fraction": 0}
    bundle = load_dataset("csv", options={**options, "meta_csv": str(tmp_path / "checked.csv")})
    kept = np.delete(x, 3, axis=0)
    assert len(bundle.train) == 9 and bundle.meta.labels.tolist() == [0, 1]
    mu, sd = kept.mean(0), kept.std(0)
    expect = (np.array([x[3], [9.5, 9.5]]) - mu) / sd  # standardised like the training rows
    assert np.allclose(bundle.meta.images.get(np.arange(2)).numpy(), expect, atol=1e-5)
    train_x = bundle.train.images.get(np.arange(9)).numpy()
    assert np.allclose(train_x, (kept - mu) / sd, atol=1e-5)


def test_the_decoding_benchmark_passes_over_every_image(tmp_path):
    from noisytail.benchmarks.decode import epoch_rates, folder_rates

    gray_pngs(tmp_path)
    calls = []

    class Counting(LazyImageStore):
        def get(self, idx):
            calls.append(np.asarray(idx).copy())
            return super().get(idx)

    res = folder_rates(str(tmp_path), Counting, image_size=28, channels=1, epochs=2)
    assert res["n"] == 12 and len(res["rates"]) == 2 and min(res["rates"]) > 0
    calls.clear()
    store = Counting(sorted(str(p) for p in tmp_path.rglob("*.png")), 28, 1)
    assert len(epoch_rates(store, epochs=2, batch_size=5)) == 2
    # each pass asks for every image once, in batches of 5
    assert [len(c) for c in calls] == [5, 5, 2, 5, 5, 2]
    assert sorted(np.concatenate(calls).tolist()) == sorted(list(range(12)) * 2)
