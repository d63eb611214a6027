"""The list_file, clothing1m and isic2019 sources through a one-epoch `noisytail train`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from noisytail.cli import main
from noisytail.config import ConfigError, load_config
from noisytail.train import fit

TINY = [
    "model.name=small_cnn",
    "model.options.width=4",
    "data.val_fraction=0",
    "train.epochs=1",
    "train.batch_size=4",
    "train.progress=false",
]


def test_list_file_through_the_cli(tmp_path, write_lists):
    write_lists(tmp_path / "data", counts=(6, 6, 6))
    sets = [
        "data.name=list_file",
        f"data.root={tmp_path / 'data'}",
        "data.options.train_list=train.txt",
        "data.options.test_list=test.txt",
        "data.options.image_size=8",
        *TINY,
    ]
    args = ["train", "--no-progress", "--no-report", "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["class_names"] == ["0", "1", "2"]
    assert 0.0 <= summary["test_accuracy"] <= 1.0


def test_clothing1m_observed_labels_are_the_noisy_ones(tmp_path, write_clothing):
    # through the CLI with its report: the realised noise rate of real noise is unknown (None),
    # and 11 of the 14 classes have no training sample in this tiny layout
    splits = write_clothing(tmp_path / "c1m")
    sets = ["data.name=clothing1m", f"data.root={tmp_path / 'c1m'}", "data.options.image_size=8"]
    args = ["train", "--no-progress", "--out", str(tmp_path / "run")]
    for s in sets + TINY:
        args += ["--set", s]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "realised unknown" in result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["class_names"]) == 14
    # no validation split: no epoch was chosen by validation
    assert summary["best_epoch"] is None and summary["test_accuracy_at_best_val"] is None
    corr = np.load(tmp_path / "run" / "corruption.npz")
    assert corr["noisy_labels"].tolist() == [y for _, y in splits["noisy_train"]]
    report = (tmp_path / "run" / "report.md").read_text()
    empty = 14 - len({y for _, y in splits["noisy_train"]})
    assert f"{empty} of 14 classes having no training sample" in report
    assert "balanced classes" not in report and "No training label was changed" not in report
    assert "how many of them are wrong is not known" in report
    assert "(by given label)" in report


def test_isic2019_with_meta_set(tmp_path, write_isic):
    write_isic(tmp_path / "isic", counts=(6, 8, 4, 4, 4, 4, 4, 4))
    cfg = load_config(
        None,
        [
            "data.name=isic2019",
            f"data.root={tmp_path / 'isic'}",
            "data.options.image_size=8",
            "data.options.test_fraction=0.25",
            "meta.total=8",
            "noise.kind=uniform",
            "noise.rate=0.4",
        ]
        + TINY,
    )
    summary = fit(cfg, tmp_path / "run", write_report=False)
    assert 0.0 <= summary.test_accuracy <= 1.0
    corr = np.load(tmp_path / "run" / "corruption.npz")
    assert len(corr["meta_idx"]) == 8


def test_clothing1m_clean_val_is_the_meta_set_of_a_meta_method(tmp_path, write_clothing):
    splits = write_clothing(tmp_path / "c1m")
    base = ["data.name=clothing1m", f"data.root={tmp_path / 'c1m'}", "data.options.image_size=8"]
    cfg = load_config(None, base + TINY + ["meta.source=provided", "method.name=l2rw"])
    summary = fit(cfg, tmp_path / "run", write_report=False)
    assert summary.noise["realised_rate"] is None  # real noise: the truth is unknown
    corr = np.load(tmp_path / "run" / "corruption.npz")
    n_train, n_val = len(splits["noisy_train"]), len(splits["clean_val"])
    assert corr["meta_idx"].tolist() == list(range(n_train, n_train + n_val))
    assert corr["true_labels"][corr["meta_idx"]].tolist() == [y for _, y in splits["clean_val"]]
    assert corr["train_idx"].max() < n_train  # the clean split is never trained on
    no_meta = load_config(
        None, base + TINY + ["meta.source=provided", "data.options.meta_split=null"]
    )
    with pytest.raises(ConfigError, match="offers no clean meta split"):
        fit(no_meta, tmp_path / "run2", write_report=False)
    with pytest.raises(ConfigError, match="meta.source='clean' is not one of train, provided"):
        fit(load_config(None, base + TINY + ["meta.source=clean"]), tmp_path / "run3")
    # drawn from the training split, the "clean" meta set would hold web labels
    from_train = load_config(None, base + TINY + ["meta.source=train", "meta.per_class=1"])
    with pytest.raises(ConfigError, match="training labels, which carry real noise"):
        fit(from_train, tmp_path / "run4")
    assert not (tmp_path / "run4").exists()
