"""Every paper preset in configs/papers loads, its free-form options fit the registered source,
model, method and loss they configure (so a typo fails here, not hours into a run), and its values
are the paper's settings, kept in a table here (not read from the presets)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

import noisytail.data.sources  # noqa: F401  (registers the sources)
import noisytail.methods  # noqa: F401
import noisytail.models  # noqa: F401
from noisytail.config import load_config
from noisytail.losses import build_loss
from noisytail.optim import learning_rate
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
    "mwnet_cifar10_unif40_step120",
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


# --------------------------------------------------------------------------------------------
# The papers' settings (docs/methods.md and the paper or official code it cites), one row per
# preset: {dotted config key: value}. Method, model and data options a preset leaves out are
# checked at their registered default. Values a paper does not give (NOT FOUND) have no entry;
# toolkit conversions say so in a comment. Append a row with each new preset.

L2B_CIFAR = {  # official main.py, README commands
    "noise.kind": "uniform",  # uniform mixing
    "model.name": "preact_resnet18",
    "method.name": "l2b",
    "method.reweight_label": True,
    "method.norm_type": "org",
    "method.warmup_epochs": 10,
    "method.use_optimizer_state": True,  # the virtual step uses the real optimizer (higher)
    "method.lookahead": "all",  # the full look-ahead (noisytail's default is the head only)
    "train.optimizer": "sgd",
    "train.epochs": 300,
    "train.lr": 0.15,
    "train.momentum": 0.9,
    "train.weight_decay": 5e-4,
    "train.schedule": "cosine",
    "data.augment": "crop_flip",
}
GDW_CIFAR = {  # official main.py and README, seed 100
    "seed": 100,
    "model.name": "resnet32",
    "method.vnet_lr": 1e-3,
    "method.vnet_weight_decay": 1e-4,
    "method.hidden": 100,
    "method.lookahead": "all",  # the full look-ahead (noisytail's default is the head only)
    "method.meta_every": 1,  # the meta step every iteration (noisytail's default: every 3rd)
    "train.optimizer": "sgd",
    "train.epochs": 80,
    "train.batch_size": 100,
    "train.lr": 0.1,
    "train.momentum": 0.9,
    "train.weight_decay": 5e-4,
    "train.schedule": "cosine",
    "data.augment": "crop_flip",
    "noise.order": "noise_first",  # noise on the pool, then the long tail by true class
}
MOIT = {  # official train_MOIT.py and run scripts, one parametrisation for every noise level
    "seed": 1,
    "corruption_seed": 42,
    "model.name": "preact_resnet18",
    "method.name": "moit",
    "method.temperature": 0.1,
    "method.proj_dim": 128,
    "method.alpha": 1.0,
    "method.xbm_per_class": 100,
    "method.xbm_start_epoch": 3,  # 0-based; the official epoch > 3, 1-based
    "method.k": 250,
    "method.selection": "balanced",
    "method.switch_epoch": 130,
    "train.epochs": 250,
    "train.batch_size": 128,
    "train.lr": 0.1,
    "train.momentum": 0.9,
    "train.weight_decay": 1e-4,
    "train.schedule": "step",
    "train.milestones": [125, 200],
    "train.gamma": 0.1,
}
MTTV = {  # official configs (the paper omits them)
    "noise.kind": "none",
    "method.name": "mttv",
    "method.temperature": 0.3,
    "method.low": 0.1,
    "method.momentum": 0.9,
    "method.fusion": "sum",
    "method.partner": "dataset",  # a random other image of the whole training set
    "method.knn_k": 200,
    "method.knn_t": 0.1,
    "method.knn_every": 10,
    "train.epochs": 2000,
    "train.batch_size": 1024,
    "train.lr": 3.0,
    "train.momentum": 0.9,
    "train.weight_decay": 1e-4,
    "train.schedule": "cosine",
    "train.warmup_epochs": 200,
    "data.augment": "simclr",
}
SIMCLR = {  # MTTV's SimCLR baseline config: t = 0.5, head 512 -> 128
    "noise.kind": "none",
    "method.name": "simclr",
    "method.temperature": 0.5,
    "method.proj_hidden": 512,
    "method.proj_dim": 128,
    "data.augment": "simclr",
}
LT_CIFAR = {"imbalance.ratio": 100, "imbalance.profile": "exponential"}

DIVIDEMIX_CIFAR = {  # DivideMix's official Train_CIFAR.py
    "model.name": "preact_resnet18",
    "model.options.variant": "dividemix",  # PreResNet.py: BN stem, pre-activated shortcuts
    "method.name": "dividemix",
    "method.p_threshold": 0.5,
    "method.temperature": 0.5,
    "method.alpha": 4.0,
    "method.augmentations": 2,
    "method.rampup_epochs": 16,
    "data.augment": "crop_flip",
    "train.epochs": 300,
    "train.batch_size": 128,  # the official warm-up batch (64 + 64 per MixMatch step)
    "train.lr": 0.02,
    "train.momentum": 0.9,
    "train.weight_decay": 5e-4,
    "train.schedule": "step",
    "train.milestones": [150],
    "train.gamma": 0.1,
}
DIVIDEMIX_SETTINGS: dict[str, dict[str, Any]] = {
    "dividemix_cifar10_sym20": {
        **DIVIDEMIX_CIFAR,
        "data.name": "cifar10",
        "noise.kind": "random_subset",
        "noise.rate": 0.2,
        "method.warmup_epochs": 10,
        "method.lambda_u": 0.0,
    },
    "dividemix_cifar10_sym50": {
        **DIVIDEMIX_CIFAR,
        "data.name": "cifar10",
        "noise.kind": "random_subset",
        "noise.rate": 0.5,
        "method.warmup_epochs": 10,
        "method.lambda_u": 25.0,
    },
    "dividemix_cifar10_asym40": {
        **DIVIDEMIX_CIFAR,
        "data.name": "cifar10",
        "noise.kind": "asymmetric_subset",
        "noise.rate": 0.4,
        "method.warmup_epochs": 10,
        "method.confidence_penalty": True,
        "method.lambda_u": 0.0,  # the C2D script's asymmetric 40 % (L2B_C2D, asnoise40.sh)
    },
    "dividemix_cifar100_sym50": {
        **DIVIDEMIX_CIFAR,
        "data.name": "cifar100",
        "noise.kind": "random_subset",
        "noise.rate": 0.5,
        "method.warmup_epochs": 30,
        "method.lambda_u": 150.0,  # L2B_DivideMix/exp/cifar100_dividemix50.sh
    },
    # L2B's L2B_DivideMix/Train_cifar.py + exp/cifar10_l2b_dividemix50.sh: --single_meta 1,
    # --need_clean (1,000 random training images, true labels, left in the training set)
    "l2b_dividemix_cifar10_sym50": {
        **DIVIDEMIX_CIFAR,
        "data.name": "cifar10",
        "noise.kind": "random_subset",
        "noise.rate": 0.5,
        "method.warmup_epochs": 10,
        "method.lambda_u": 25.0,
        "method.l2b": True,
        "method.l2b_meta": "clean",
        "method.l2b_clip": 0.8,
        "meta.total": 1000,
        "meta.balanced": False,
        "meta.overlap": True,
    },
    # the same code without --need_clean: the labelled (GMM-clean) set as the meta set
    "l2b_dividemix_cifar10_sym50_noclean": {
        **DIVIDEMIX_CIFAR,
        "data.name": "cifar10",
        "noise.kind": "random_subset",
        "noise.rate": 0.5,
        "method.warmup_epochs": 10,
        "method.lambda_u": 25.0,
        "method.l2b": True,
        "method.l2b_meta": "labelled",
        "method.l2b_clip": 0.8,
        "meta.total": 0,
        "meta.per_class": 0,
    },
}

PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    **DIVIDEMIX_SETTINGS,
    "l2b_cifar10_unif40": {
        **L2B_CIFAR,
        "data.name": "cifar10",
        "noise.rate": 0.4,
        "meta.per_class": 100,  # 1,000 clean images removed from training
        "train.batch_size": 512,
        "train.grad_clip": 0.25,
    },
    "l2b_cifar100_unif40": {
        **L2B_CIFAR,
        "data.name": "cifar100",
        "noise.rate": 0.4,
        "meta.per_class": 10,
        "train.batch_size": 256,
        "train.grad_clip": 0.8,
    },
    "l2b_isic2019": {
        "data.name": "isic2019",
        "data.options.image_size": 224,
        "noise.kind": "uniform",
        "meta.total": 640,  # the size of L2B's ISIC/val.lst
        "model.name": "resnet50",
        "model.options.pretrained": True,
        "method.name": "l2b",
        "method.lookahead": "all",
        "method.norm_type": "softmax",
        "method.temperature": 10.0,
        "method.warmup_epochs": 1,
        "train.epochs": 30,
        "train.batch_size": 64,
        "train.lr": 0.01,
        "train.momentum": 0.9,
        "train.weight_decay": 5e-4,
        "train.schedule": "cosine",
        "train.grad_clip": 0.8,
    },
    "l2b_clothing1m": {
        "data.name": "clothing1m",
        "noise.kind": "none",  # real noise
        "meta.source": "provided",  # the whole clean validation set (14,313)
        "model.name": "resnet18",
        "model.options.pretrained": True,
        "method.name": "l2b",
        "method.lookahead": "all",
        "method.norm_type": "org",
        "method.warmup_epochs": 0,
        "train.batch_size": 256,
        "train.lr": 0.005,
        "train.momentum": 0.9,
        "train.weight_decay": 5e-4,
        "train.schedule": "cosine",
        "train.grad_clip": 0.0,  # no clipping
        "train.sampler": "class_balanced",  # a class-balanced resample per epoch
        # toolkit conversion: 300 epochs x 250 batches x 256 = 19.2M samples over ~1M images
        "train.epochs": 19,
    },
    "gdw_cifar10_unif40": {
        **GDW_CIFAR,
        "data.name": "cifar10",
        "noise.kind": "uniform",
        "noise.rate": 0.4,
        "meta.per_class": 100,
        "method.name": "gdw",
        "method.mode": "gdw",
        "method.eta_omega": 100,
        "method.max_step": 0.2,
        "method.p_max": 0.999,
    },
    "gdw_cifar100_unif40": {
        **GDW_CIFAR,
        "data.name": "cifar100",
        "noise.kind": "uniform",
        "noise.rate": 0.4,
        "meta.per_class": 10,  # 1,000 meta images in all
        "method.name": "gdw",
        "method.mode": "gdw",
        "method.eta_omega": 1000,  # the official README, CIFAR-100
        "method.max_step": 0.2,
        "method.p_max": 0.999,
    },
    "gdw_cifar10_flip40": {
        **GDW_CIFAR,
        "data.name": "cifar10",
        "noise.kind": "random_pair",  # GDW's flip: one random other class per class
        "noise.pair_seed": 1,
        "noise.rate": 0.4,
        "meta.per_class": 100,
        "method.name": "gdw",
        "method.eta_omega": 100,
    },
    "gdw_cifar10_lt": {  # the imbalance factors of GDW's table: NOT FOUND
        **GDW_CIFAR,
        "data.name": "cifar10",
        "imbalance.profile": "exponential",
        "imbalance.n_max": 4900,  # 49,000 / 10 after the meta split
        "meta.per_class": 100,  # --num_meta 1000, the split that head size assumes
        "imbalance.select_by": "true",
        "method.name": "gdw",
        "method.eta_omega": 100,
    },
    "gdw_clothing1m": {  # only this much was readable: 5 epochs, SGD momentum 0.9, lr 1e-3
        "data.name": "clothing1m",
        "noise.kind": "none",
        "method.name": "gdw",
        "method.lookahead": "all",
        "method.meta_every": 1,
        "train.epochs": 5,
        "train.momentum": 0.9,
        "train.lr": 1e-3,
    },
    "mwnet_cifar10_unif40": {  # GDW's --mode mw-net baseline
        **GDW_CIFAR,
        "data.name": "cifar10",
        "noise.kind": "uniform",
        "noise.rate": 0.4,
        "meta.per_class": 100,
        "method.name": "mwnet",
    },
    "mwnet_cifar10_unif40_step120": {  # MW-Net's own MW-Net.py
        "seed": 1,
        "data.name": "cifar10",
        "data.augment": "crop_flip",
        "noise.kind": "uniform",
        "noise.rate": 0.4,
        "meta.per_class": 100,
        "model.name": "resnet32",
        "method.name": "mwnet",
        "method.lookahead": "all",
        "method.meta_every": 1,
        "method.hidden": 100,
        "method.vnet_lr": 1e-3,
        "method.vnet_weight_decay": 1e-4,
        "train.epochs": 120,
        "train.batch_size": 100,
        "train.lr": 0.1,
        "train.momentum": 0.9,
        "train.nesterov": False,
        "train.weight_decay": 5e-4,
        "train.schedule": "step",
        "train.milestones": [80, 100],
        "train.gamma": 0.1,
    },
    "moit_cifar10_sym20": {
        **MOIT,
        "data.name": "cifar10",
        "noise.kind": "symmetric",
        "noise.rate": 0.2,
    },
    "moit_cifar10_sym40": {
        **MOIT,
        "data.name": "cifar10",
        "noise.kind": "symmetric",
        "noise.rate": 0.4,
    },
    "moit_cifar10_sym80": {
        **MOIT,
        "data.name": "cifar10",
        "noise.kind": "symmetric",
        "noise.rate": 0.8,
    },
    "moit_cifar10_asym10": {
        **MOIT,
        "data.name": "cifar10",
        "noise.kind": "asymmetric",
        "noise.rate": 0.1,
    },
    "moit_cifar10_asym30": {
        **MOIT,
        "data.name": "cifar10",
        "noise.kind": "asymmetric",
        "noise.rate": 0.3,
    },
    "moit_cifar10_asym40": {
        **MOIT,
        "data.name": "cifar10",
        "noise.kind": "asymmetric",
        "noise.rate": 0.4,
    },
    "moit_cifar100_sym40": {
        **MOIT,
        "data.name": "cifar100",
        "noise.kind": "symmetric",
        "noise.rate": 0.4,
    },
    "moit_plus_cifar10_sym80": {  # train_MOITplus.py, the symmetric-80 % script
        "seed": 1,
        "corruption_seed": 42,
        "data.name": "cifar10",
        "data.augment": "crop_flip",
        "noise.kind": "symmetric",
        "noise.rate": 0.8,
        "model.name": "preact_resnet18",
        "method.name": "moit_plus",
        "method.alpha": 1.0,
        "method.beta": 0.2,
        "method.bootstrap_epoch": 30,
        "train.epochs": 140,
        "train.batch_size": 128,
        "train.lr": 0.001,
        "train.momentum": 0.9,
        "train.weight_decay": 1e-4,
        "train.schedule": "step",
        "train.milestones": [120],
        "train.gamma": 0.1,
    },
    "mttv_cifar10_lt": {
        **MTTV,
        **LT_CIFAR,
        "data.name": "cifar10",
        "model.name": "resnet18",
        "method.high": 0.9,
    },
    "mttv_cifar100_lt": {
        **MTTV,
        **LT_CIFAR,
        "data.name": "cifar100",
        "model.name": "resnet18",
        "method.high": 0.9,
    },
    "mttv_imagenet_lt": {
        **MTTV,
        "model.name": "resnet50",
        "data.train_subset": 28961,  # a stratified 25 % of ImageNet_LT_train.txt's 115,846
        "method.high": 2.0,  # the ImageNet-only mask: |S| < low only (a code comment)
    },
    "simclr_cifar10_lt": {**SIMCLR, **LT_CIFAR, "data.name": "cifar10", "model.name": "resnet18"},
    "simclr_cifar100_lt": {**SIMCLR, **LT_CIFAR, "data.name": "cifar100", "model.name": "resnet18"},
    "simclr_imagenet_lt": {**SIMCLR, "model.name": "resnet50", "data.train_subset": 28961},
    # the two-stage paper's loss, backbone, epochs and settings are NOT FOUND: its data sets only
    "two_stage_cifar10_lt_noisy": {"data.name": "cifar10"},
    "two_stage_clothing1m": {"data.name": "clothing1m", "noise.kind": "none"},
}


def _default(cls: Any, name: str, what: str) -> Any:
    param = inspect.signature(cls).parameters.get(name)
    if param is None or param.default is inspect.Parameter.empty:
        raise KeyError(f"{what} has no option {name!r} with a default")
    return param.default


def resolved(cfg: Any, key: str) -> Any:
    """The value a run of ``cfg`` uses for ``key`` (options left out: the registered default)."""
    parts = key.split(".")
    if parts[0] == "method" and parts[1] != "name":
        args, cls = cfg.method.args, METHODS.get(cfg.method.name)
        return args[parts[1]] if parts[1] in args else _default(cls, parts[1], cfg.method.name)
    if parts[:2] in (["model", "options"], ["data", "options"]):
        section = getattr(cfg, parts[0])
        registry = MODELS if parts[0] == "model" else DATASETS
        opts = section.options
        name = parts[2]
        return opts[name] if name in opts else _default(registry.get(section.name), name, key)
    value = cfg
    for part in parts:
        value = getattr(value, part)
    return value


def test_every_preset_has_a_row_and_every_row_a_preset():
    assert {p.stem for p in PRESETS} == set(PAPER_SETTINGS)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_has_the_papers_settings(path):
    cfg = load_config(path)
    wrong = {
        key: (resolved(cfg, key), want)
        for key, want in PAPER_SETTINGS[path.stem].items()
        if resolved(cfg, key) != want
    }
    assert not wrong, f"{path.stem}: {{key: (preset, paper)}} = {wrong}"


def test_resolved_reads_defaults_and_can_fail():
    cfg = load_config(PAPERS / "gdw_cifar10_unif40.yaml")
    assert resolved(cfg, "method.max_step") == 0.2  # left out of the preset: the default
    assert resolved(cfg, "train.lr") == 0.1
    with pytest.raises(KeyError):
        resolved(cfg, "method.no_such_option")


@pytest.mark.parametrize("stem", ["gdw_cifar10_unif40", "mwnet_cifar10_unif40"])
def test_cosine_presets_say_the_schedule_steps_per_iteration(stem):
    """The loop's cosine moves every step (GDW's code: every epoch), as the preset says."""
    path = PAPERS / f"{stem}.yaml"
    cfg = load_config(path)
    assert cfg.train.schedule == "cosine" and "per iteration" in path.read_text()
    steps = 490  # 49,000 / 100
    assert learning_rate(cfg, 1, steps) < learning_rate(cfg, 0, steps) == cfg.train.lr
