"""The options of the issue-5 self-supervised benchmark (`noisytail.benchmarks.ssl`) and the
configs of its runs: pre-training (SimCLR, k-view multiview, MTTV) and fine-tuning (ERM with a
loss, from a pre-trained encoder or from scratch). ``scripts/bench_ssl.py`` maps its command line
onto `SslOptions`, field for field."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from noisytail.config import Config, load_config
from noisytail.runfolder import checkpoint_path
from noisytail.summary import SUMMARY_FILE

SSL_METHODS = ("simclr", "multiview", "mttv")
LOSSES = ("ce", "gce", "sce", "logit_adjustment", "cb_focal", "la_gce")


@dataclass(frozen=True)
class SslOptions:
    """What one invocation of the benchmark runs (the script's flags; see `noisytail.benchmarks.ssl`
    for their meaning). The defaults are the full benchmark; `shrunk` is ``--quick``."""

    part: str = "all"  # all | pretrain | finetune | cost
    seeds: tuple[int, ...] = (0, 1, 2)
    out: str = "runs/bench-ssl"
    data: str = "fashion_mnist"
    pool: int = 20000  # training images before imbalance
    test_subset: int = 5000
    ratio: float = 100.0
    width: int = 16  # small_cnn width (features = 2x)
    device: str = "cpu"
    threads: int | None = None  # torch threads per process
    jobs: int = 1  # runs in parallel (processes)
    # pre-training
    methods: tuple[str, ...] = SSL_METHODS
    pretrain_epochs: int = 30  # SimCLR's (2-view) epochs
    views: int = 4  # k of the k-view method
    ssl_batch: int = 256
    ssl_lr: float = 0.3
    mttv_partner: str = "dataset"  # dataset (the official code) | batch
    mttv_loss: str = "clean"  # clean | official | mean_log (docs/methods.md, MTTV)
    probe_per_class: int = 300
    probe_epochs: int = 100
    # fine-tuning
    noise_rates: tuple[float, ...] = (0.2, 0.4)
    losses: tuple[str, ...] = LOSSES
    scratch_losses: tuple[str, ...] = LOSSES
    init_from: str = "simclr"
    finetune_epochs: int = 15
    freeze_epochs: int = 0
    backbone_lr_scale: float = 1.0
    lr: float = 0.1
    # cost
    cost_steps: int = 15
    cost_warmup: int = 3

    def shrunk(self) -> SslOptions:
        """The ``--quick`` smoke run of seconds: a small pool, 1 pre-training epoch, two losses."""
        return replace(
            self,
            pool=min(self.pool, 1500),
            test_subset=min(self.test_subset, 300),
            pretrain_epochs=1,
            ssl_batch=min(self.ssl_batch, 64),
            probe_per_class=min(self.probe_per_class, 20),
            probe_epochs=2,
            losses=("ce", "la_gce"),
            scratch_losses=("ce", "la_gce"),
            finetune_epochs=2,
            cost_steps=2,
            cost_warmup=1,
        )


def base_overrides(args: SslOptions, seed: int) -> list[str]:
    return [
        f"seed={seed}",
        f"data.name={args.data}",
        f"data.train_subset={args.pool}",
        f"data.test_subset={args.test_subset}",
        "data.val_fraction=0.1",
        f"imbalance.ratio={args.ratio}",
        "imbalance.profile=exponential",
        "model.name=small_cnn",
        f"model.options.width={args.width}",
        f"train.device={args.device}",
        "train.progress=false",
        f"train.num_threads={args.threads}" if args.threads else "train.num_threads=null",
    ]


def pretrain_epochs(args: SslOptions, method: str) -> int:
    """Equal views-with-gradient budget: SimCLR and MTTV 2 per image, k-view k per image."""
    if method == "multiview":
        return max(1, round(args.pretrain_epochs * 2 / args.views))
    return args.pretrain_epochs


def grad_views(args: SslOptions, method: str) -> int:
    return args.views if method == "multiview" else 2


def pretrain_config(args: SslOptions, method: str, seed: int) -> Config:
    extra = [f"method.num_views={args.views}"] if method == "multiview" else []
    if method == "mttv":
        extra = [f"method.partner={args.mttv_partner}", f"method.loss_form={args.mttv_loss}"]
    return load_config(
        None,
        base_overrides(args, seed)
        + [
            f"method.name={method}",
            *extra,
            "data.augment=simclr",
            "noise.kind=none",
            f"train.epochs={pretrain_epochs(args, method)}",
            f"train.batch_size={args.ssl_batch}",
            f"train.lr={args.ssl_lr}",
            "train.weight_decay=1.0e-4",
            "train.schedule=cosine",
            "train.checkpoint_every=5",  # an interrupted long pre-training resumes from here
        ],
    )


def finetune_config(
    args: SslOptions, seed: int, rate: float, loss: str, init: str | None
) -> Config:
    extra = (
        [
            f"model.init={init}",
            f"train.freeze_backbone_epochs={args.freeze_epochs}",
            f"train.backbone_lr_scale={args.backbone_lr_scale}",
        ]
        if init
        else []
    )
    return load_config(
        None,
        base_overrides(args, seed)
        + [
            "method.name=erm",
            f"method.loss={loss}",
            "data.augment=crop_flip",
            "noise.kind=symmetric",
            f"noise.rate={rate}",
            f"train.epochs={args.finetune_epochs}",
            "train.batch_size=128",
            f"train.lr={args.lr}",
            "train.weight_decay=5.0e-4",
            "train.schedule=cosine",
            "train.checkpoint_every=1000",
            *extra,
        ],
    )


def clear_unfinished(out: Path) -> bool:
    """A run folder left by an interrupted benchmark (no summary yet): resumed from its checkpoint
    (returns True: pass ``resume=True`` to ``fit``), else removed and redone (returns False)."""
    if not out.exists() or (out / SUMMARY_FILE).exists():
        return False
    if checkpoint_path(out).exists():
        return True
    shutil.rmtree(out)
    return False


def set_threads(args: SslOptions) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
