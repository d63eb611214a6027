"""Trusted samples for the meta methods on a user's own data (issue 10, item 6): ``meta.source:
file`` makes a CSV of checked samples the meta set, never trained on; a meta set drawn from a
user's own unverified labels is refused with one line naming the way out."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from noisytail.cli import main
from noisytail.config import ConfigError, load_config
from noisytail.data.prepare import prepare_data


def photos(root, per_class=8):
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(220, 30, 30), (30, 220, 30), (30, 30, 220)]):
        for i in range(per_class):
            pixels = np.clip(rng.normal(colour, 20, size=(12, 12, 3)), 0, 255).astype(np.uint8)
            path = root / f"class_{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    return root


def setup(tmp_path):
    root = photos(tmp_path / "photos")
    rows = ["path,label"] + [f"class_{c}/{i}.png,class_{c}" for c in range(3) for i in (0, 5)]
    (tmp_path / "checked.csv").write_text("\n".join(rows) + "\n")
    return root, ["data.name=image_folder", f"data.root={root}", "data.options.image_size=8"]


def test_checked_samples_are_the_meta_set_and_never_trained_on(tmp_path):
    root, base = setup(tmp_path)
    cfg = load_config(None, [*base, "meta.source=file", f"meta.file={tmp_path / 'checked.csv'}"])
    data = prepare_data(cfg)
    corr, paths = data.corruption, data.bundle.train.paths
    checked = {str(root / f"class_{c}" / f"{i}.png") for c in range(3) for i in (0, 5)}
    meta_paths = {paths[i] for i in corr.meta_idx}
    assert meta_paths == checked
    trained = {paths[i] for i in np.concatenate([corr.train_idx, corr.val_idx])}
    assert not trained & checked  # its rows are removed from the training set
    assert len(trained) + len(data.bundle.test) == 3 * 8 - 6
    _, labels = corr.split("meta")
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]  # the checked labels


def test_a_meta_set_from_the_users_own_labels_is_refused(tmp_path):
    _, base = setup(tmp_path)
    with pytest.raises(ConfigError, match=r"unverified.*meta\.source=file.*meta\.file=") as e:
        prepare_data(load_config(None, [*base, "meta.per_class=1"]))
    assert "\n" not in str(e.value)
    # with synthetic noise the folder's labels are the truth, so a clean meta set can be drawn
    prepare_data(
        load_config(None, [*base, "meta.per_class=1", "noise.kind=symmetric", "noise.rate=0.2"])
    )
    # a meta method without a meta set is told the same way out, not to draw one from them
    from noisytail.train import fit

    with pytest.raises(ConfigError, match=r"l2rw.*needs a clean meta set: list samples.*pseudo"):
        fit(load_config(None, [*base, "method.name=l2rw"]), tmp_path / "run")
    # meta.source=file needs the file, and only image folders and CSVs have one
    with pytest.raises((ConfigError, ValueError), match="meta.file"):
        load_config(None, [*base, "meta.source=file"])
    with pytest.raises(ConfigError, match="meta.source=file"):
        prepare_data(load_config(None, ["data.name=digits", "meta.source=file", "meta.file=x.csv"]))


@pytest.mark.slow
def test_a_meta_method_trains_on_checked_samples(tmp_path):
    _, base = setup(tmp_path)
    args = ["train", "--out", str(tmp_path / "run"), "--no-progress", "--no-report"]
    for override in [
        *base,
        "method.name=l2b",
        "meta.source=file",
        f"meta.file={tmp_path / 'checked.csv'}",
        "train.epochs=1",
        "train.batch_size=8",
        "model.options.width=4",
    ]:
        args += ["--set", override]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output


def csv_with_checked(tmp_path, *options):
    """A csv config (its files in ``options``) whose checked samples are
    ``tmp_path/checked.csv``."""
    return load_config(
        None,
        ["data.name=csv", *options, "meta.source=file", f"meta.file={tmp_path / 'checked.csv'}"],
    )


def test_checked_labels_are_read_as_the_datas_own_labels(tmp_path):
    # the data's CSV writes its integer labels zero-padded; "02" is the data's class "2"
    rows = ["a,b,label"] + [f"{i},{i % 3},0{1 + i % 3}" for i in range(30)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "checked.csv").write_text("a,b,label\n4,1,02\n5,2,3\n")
    cfg = csv_with_checked(tmp_path, f"data.options.train_csv={tmp_path / 't.csv'}")
    data = prepare_data(cfg)
    assert data.bundle.class_names == ["1", "2", "3"]
    _, labels = data.corruption.split("meta")
    assert labels.tolist() == [1, 2]
    (tmp_path / "checked.csv").write_text("a,b,label\n4,1,04\n")
    from noisytail.data.types import DataError

    with pytest.raises(
        DataError, match=r"line 2: label '04' is not a class of the data \(1, 2, 3\)"
    ):
        prepare_data(cfg)


def test_a_checked_test_image_leaves_the_test_split(tmp_path):
    # train/ and test/ folders: a checked image listed from test/ joins the meta set (which
    # meta methods train on), so it must not be scored in the test split too
    photos(tmp_path / "photos" / "train")
    photos(tmp_path / "photos" / "test", per_class=3)
    root = tmp_path / "photos"
    rows = ["path,label", "train/class_0/0.png,class_0", "test/class_1/2.png,class_1"]
    (tmp_path / "checked.csv").write_text("\n".join(rows) + "\n")
    cfg = load_config(
        None,
        [
            "data.name=image_folder",
            f"data.root={root}",
            "data.options.image_size=8",
            "meta.source=file",
            f"meta.file={tmp_path / 'checked.csv'}",
        ],
    )
    data = prepare_data(cfg)
    test = set(data.bundle.test.paths)
    assert len(test) == 8 and str(root / "test" / "class_1" / "2.png") not in test
    paths = data.bundle.train.paths
    meta = {paths[i] for i in data.corruption.meta_idx}
    assert meta == {
        str(root / "train" / "class_0" / "0.png"),
        str(root / "test" / "class_1" / "2.png"),
    }


def test_a_checked_row_of_the_test_csv_leaves_the_test_split(tmp_path):
    train = ["a,b,label"] + [f"{i},{i % 3},{i % 2}" for i in range(20)]
    test = ["a,b,label"] + [f"{i},{i % 3},{i % 2}" for i in range(100, 106)]
    (tmp_path / "train.csv").write_text("\n".join(train) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(test) + "\n")
    (tmp_path / "checked.csv").write_text("a,b,label\n3,0,1\n102,0,0\n")
    cfg = csv_with_checked(
        tmp_path,
        f"data.options.train_csv={tmp_path / 'train.csv'}",
        f"data.options.test_csv={tmp_path / 'test.csv'}",
    )
    data = prepare_data(cfg)
    assert len(data.bundle.test) == 5
    assert len(data.corruption.meta_idx) == 2
