"""Every paper preset in configs/papers loads, and its free-form options fit the registered
source, model, method and loss they configure (so a typo fails here, not hours into a run)."""

from __future__ import annotations

from pathlib import Path

import pytest

import noisytail.data.sources  # noqa: F401  (registers the sources)
import noisytail.methods  # noqa: F401
import noisytail.models  # noqa: F401
from noisytail.config import load_config
from noisytail.losses import build_loss
from noisytail.registry import DATASETS, METHODS, MODELS, check_kwargs

PAPERS = Path(__file__).resolve().parents[2] / "configs" / "papers"
PRESETS = sorted(PAPERS.glob("*.yaml"))
NEW = [
    "l2b_isic2019",
    "l2b_clothing1m",
    "gdw_clothing1m",
    "simclr_cifar10_lt",
    "simclr_cifar100_lt",
    "mttv_cifar10_lt",
    "mttv_cifar100_lt",
    "simclr_imagenet_lt",
    "mttv_imagenet_lt",
    "two_stage_cifar10_lt_noisy",
    "two_stage_clothing1m",
]


def test_new_presets_exist():
    assert {p.stem for p in PRESETS} >= set(NEW)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_and_fits_the_registries(path):
    cfg = load_config(path)
    header = path.read_text().splitlines()[0]
    assert header.startswith("#"), "each preset starts with a comment citing its paper"
    if path.stem in NEW:  # the newer presets also carry their run command
        assert "# Run: noisytail " in path.read_text()
    check_kwargs(
        DATASETS.get(cfg.data.name), cfg.data.options, what=cfg.data.name, reserved={"root"}
    )
    check_kwargs(
        MODELS.get(cfg.model.name),
        cfg.model.options,
        what=cfg.model.name,
        reserved={"num_classes", "input_shape"},
    )
    check_kwargs(
        METHODS.get(cfg.method.name), cfg.method.args, what=cfg.method.name, reserved={"info"}
    )
    if "loss" in cfg.method.args:
        build_loss(cfg.method.args["loss"], class_counts=[10, 5, 2])


def test_two_stage_fine_tuning_matches_its_pretraining():
    pre = load_config(PAPERS / "simclr_cifar10_lt.yaml")
    fine = load_config(PAPERS / "two_stage_cifar10_lt_noisy.yaml")
    assert (fine.model.name, fine.model.options) == (pre.model.name, pre.model.options)
    assert (fine.data.name, fine.seed, fine.imbalance) == (pre.data.name, pre.seed, pre.imbalance)
    assert fine.model.init == "runs/simclr_cifar10_lt/encoder.pt"
