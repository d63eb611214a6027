"""MOIT+ (Ortego et al., CVPR 2021, arXiv 2012.04462, Sec. 3.3; official ``train_MOITplus.py`` and
``criterionMixBoot``): fine-tune a finished MOIT model on the samples its detector kept.

Two runs, no stage machinery:

    noisytail train configs/papers/moit_cifar10_sym40.yaml --out runs/moit
    noisytail train configs/methods/moit_plus.yaml --out runs/moit_plus \\
        --set model.init=runs/moit --set method.clean_from=runs/moit  (plus the same data/noise)

``model.init`` loads the MOIT backbone; the classifier is re-initialised here (``reinit_head``).
``clean_from`` is the MOIT run folder (or a checkpoint file). The clean set is the one MOIT's
detector finds after its last epoch, as in the official code: with ``redetect`` (default) MOIT+
re-runs the detection in ``on_train_start`` on the final MOIT weights (the checkpoint's projection
head, its ``k`` and selection rule, the noisy labels it saw), before any fine-tuning step. That
needs ``model.init`` to be the same run (checked weight by weight); otherwise, or with
``redetect=False``, it takes the mask saved in the checkpoint, the one used *during* MOIT's last
epoch (computed one epoch earlier), with a warning. Masks are indexed by training-pool position:
the same data, split and corruption settings (and seed) give the same pool; sizes are checked when
the mask is read, and the noisy labels the MOIT run saw are checked against every batch, so a
different pool fails with a clear message. The mask in use is checkpointed, so a resumed MOIT+
run keeps it. ``clean_from=None`` treats every sample as clean (with a warning): plain mixup +
bootstrapping fine-tuning; the contract test runs it that way.

Batches (``batches``): ``"clean"`` (default, the official loader) asks the loop to draw only
from the clean samples (`Method.train_subset`, once the mask is final in ``on_train_start``):
full batches of ``train.batch_size`` clean samples and ``|clean| // batch_size`` steps an epoch.
``"masked"`` keeps the loop's loader over the whole pool and drops the noisy rows of each batch,
so a batch holds about ``batch_size * f`` clean samples (``f`` the clean fraction) and an epoch
has ``1/f`` times more steps.

Per batch (``x = (augmented view, plain image)``): only the rows flagged clean are used (with
``"masked"`` the others contribute zero loss); they are mixed among themselves (one permutation,
``lam = max(l, 1 - l)``, ``l ~ Beta(1, 1)``) and the loss is their mean of
``lam CE(y_a) + (1 - lam) CE(y_b)``. From ``bootstrap_epoch`` (0-based; the official
``epoch > 30``), **hard bootstrapping** with ``beta = 0.2`` in both terms: ``(1 - beta) CE(y) +
beta CE(argmax of the prediction on the plain image)`` (prediction detached).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint_file import read_checkpoint
from ..errors import ConfigError
from ..losses.classification import cross_entropy
from ..models.base import Backbone
from ..neighbors import moit_detect
from ..registry import METHODS
from .base import Batch, Context, Method, TaskInfo
from .moit import draw_mixup, split_views


@dataclass
class MoitRun:
    """What MOIT+ takes from a MOIT checkpoint."""

    path: Path
    clean: torch.Tensor  # [N] bool: the mask used in the last MOIT epoch
    labels: torch.Tensor | None  # [N] noisy labels the MOIT run saw (-1: never seen)
    k: int | None
    selection: str
    projector: dict[str, torch.Tensor]  # the 128-d projection's weights
    backbone: dict[str, torch.Tensor]  # the MOIT model's weights (for the model.init check)


def read_moit_run(path: str | Path, num_train: int) -> MoitRun:
    """The clean mask, labels, kNN settings and weights of a MOIT run folder or checkpoint."""
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "last.pt"
    if not p.is_file():
        raise ConfigError(
            f"moit_plus: clean_from={str(path)!r}: {p} not found (give the MOIT run folder or its "
            "checkpoint)."
        )
    state = read_checkpoint(p, "cpu", what="moit_plus clean_from")
    extra = state.get("extra")
    extra = extra if isinstance(extra, dict) else {}
    config = state.get("config")
    method_cfg = config.get("method", {}) if isinstance(config, dict) else {}
    if "clean" not in extra:
        raise ConfigError(
            f"moit_plus: {p} holds no clean mask (method {method_cfg.get('name', '?')!r}); "
            "clean_from must be a MOIT run."
        )
    clean = torch.as_tensor(extra["clean"]).bool().cpu()
    if clean.shape != (num_train,):
        raise ConfigError(
            f"moit_plus: the clean mask in {p} covers {clean.shape[0]} training samples but this "
            f"run trains on {num_train}: use the MOIT run's data, split, noise and seed settings."
        )
    if int(extra.get("detected_epoch", 0)) < 0:
        warnings.warn(
            f"moit_plus: the MOIT run in {p} never ran its detection: every sample is clean.",
            stacklevel=2,
        )
    labels = extra.get("labels")
    weights = state.get("method")
    weights = weights if isinstance(weights, dict) else {}
    return MoitRun(
        path=p,
        clean=clean,
        labels=torch.as_tensor(labels).long().cpu() if labels is not None else None,
        k=extra.get("k"),
        selection=str(method_cfg.get("selection", "balanced")),
        projector={
            k[len("projector.") :]: v for k, v in weights.items() if k.startswith("projector.")
        },
        backbone={k[len("model.") :]: v for k, v in weights.items() if k.startswith("model.")},
    )


@METHODS.register("moit_plus")
class MOITPlus(Method):
    """MOIT+: fine-tuning of a MOIT model on its detected clean set with a re-initialised
    classifier, mixup, then hard bootstrapping (beta = 0.2) from ``bootstrap_epoch``."""

    views = 1
    include_plain_view = True

    def __init__(
        self,
        model: Backbone,
        info: TaskInfo,
        *,
        clean_from: str | None = None,
        alpha: float = 1.0,
        bootstrap_epoch: int = 30,
        beta: float = 0.2,
        reinit_head: bool = True,
        redetect: bool = True,
        batches: str = "clean",
    ) -> None:
        super().__init__(model, info)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"moit_plus: beta must lie in [0, 1], got {beta}")
        if batches not in ("clean", "masked"):
            raise ValueError(f"moit_plus: batches must be 'clean' or 'masked', got {batches!r}")
        self.batches = batches
        self.alpha, self.bootstrap_epoch, self.beta = alpha, bootstrap_epoch, beta
        self.clean_from = clean_from
        self.redetect = redetect
        self.saved_labels: torch.Tensor | None = None
        self.moit: MoitRun | None = None
        self.mask_source = "all"  # all | saved | redetected
        if clean_from is None:
            warnings.warn(
                "moit_plus: clean_from is not set, so every training sample counts as clean "
                "(plain mixup + bootstrapping fine-tuning). Set method.clean_from=<MOIT run>.",
                stacklevel=2,
            )
            self.clean = torch.ones(info.num_train, dtype=torch.bool)
        else:
            self.moit = read_moit_run(clean_from, info.num_train)
            self.clean, self.saved_labels = self.moit.clean.clone(), self.moit.labels
            self.mask_source = "saved"
        if reinit_head:
            model.reset_head(info.num_classes)
        self._clean_dev: torch.Tensor | None = None

    # --- the clean set -----------------------------------------------------------------------
    def _same_backbone(self, run: MoitRun) -> bool:
        own = {k: v for k, v in self.model.state_dict().items() if not k.startswith("head.")}
        theirs = {k: v for k, v in run.backbone.items() if not k.startswith("head.")}
        return own.keys() == theirs.keys() and all(
            torch.equal(v.detach().cpu(), theirs[k]) for k, v in own.items()
        )

    def on_train_start(self, ctx: Context) -> None:
        """Re-run MOIT's detection on the final MOIT weights (the official MOIT+ reads the mask
        computed after MOIT's last epoch; the checkpoint holds the one used during that epoch)."""
        run = self.moit
        if run is None or not self.redetect or self.mask_source != "saved":
            return  # nothing to do, or restored from a MOIT+ checkpoint
        same = run.labels is not None and bool(run.projector) and self._same_backbone(run)
        run.backbone = {}  # only needed for the check above
        if not same:
            warnings.warn(
                f"moit_plus: model.init is not the MOIT run {str(run.path)!r} (or it lacks its "
                "projection): using the clean mask saved in its checkpoint.",
                stacklevel=2,
            )
            return
        assert run.labels is not None
        w = run.projector["weight"]
        projector = torch.nn.Linear(w.shape[1], w.shape[0]).to(ctx.device)
        projector.load_state_dict(run.projector)

        def embed(x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.normalize(projector(self.model.features(x)).float(), dim=1)

        feats = ctx.predict_train(embed)  # the kNN runs where the features are
        ids = (run.labels >= 0).nonzero().squeeze(1)
        det = moit_detect(
            feats[ids.to(feats.device)],
            run.labels[ids],
            self.info.num_classes,
            k=run.k,
            selection=run.selection,
        )
        self.clean = torch.ones(self.info.num_train, dtype=torch.bool)
        self.clean[ids] = torch.from_numpy(det.clean)
        self.mask_source = "redetected"
        run.projector = {}
        self._clean_dev = None

    def train_subset(self) -> np.ndarray | None:
        """With ``batches="clean"`` the loop draws only the clean samples' pool positions."""
        if self.batches != "clean" or bool(self.clean.all()):
            return None
        if not bool(self.clean.any()):
            raise ConfigError(
                f"moit_plus: the MOIT run {self.clean_from!r} kept no sample as clean: nothing "
                "to fine-tune on."
            )
        return self.clean.nonzero().squeeze(1).numpy()

    def extra_state(self) -> dict[str, Any]:
        return {"clean": self.clean.clone(), "mask_source": self.mask_source}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.clean = state["clean"].cpu().bool()
        self.mask_source = str(state["mask_source"])
        self._clean_dev = None

    def _check_labels(self, batch: Batch) -> None:
        if self.saved_labels is None:
            return
        saved = self.saved_labels[batch.idx.cpu()]
        seen = saved >= 0
        if bool((saved[seen] != batch.labels.cpu()[seen]).any()):
            raise ConfigError(
                f"moit_plus: the noisy labels differ from those of the MOIT run "
                f"{self.clean_from!r}: the training pool is not the same. Use the MOIT run's "
                "data, noise and seed settings."
            )

    def training_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        (x,), plain = split_views(batch, 1)
        self._check_labels(batch)
        dev = batch.labels.device
        if self._clean_dev is None or self._clean_dev.device != dev:
            self._clean_dev = self.clean.to(dev)
        keep = self._clean_dev[batch.idx]
        n = int(keep.sum())
        if n < 2:  # nothing (or one image, too few for BatchNorm) to learn from
            zero = self.model(x).sum() * 0.0
            return {"loss": zero, "clean_fraction_batch": keep.float().mean()}
        x, plain, y = x[keep], plain[keep], batch.labels[keep]
        perm, lam = draw_mixup(n, self.alpha, ctx.generator)
        perm = perm.to(dev)
        logits = self.model(lam * x + (1 - lam) * x[perm])
        with torch.no_grad():  # every step, in train mode, as the official code (MOIT's note)
            z = self.model(plain).argmax(1)
        ce_a = cross_entropy(logits, y, reduction="none")
        ce_b = cross_entropy(logits, y[perm], reduction="none")
        out: dict[str, torch.Tensor] = {}
        if ctx.epoch >= self.bootstrap_epoch and self.beta > 0:
            boot_a = cross_entropy(logits, z, reduction="none")
            boot_b = cross_entropy(logits, z[perm], reduction="none")
            b = self.beta
            loss = lam * ((1 - b) * ce_a + b * boot_a) + (1 - lam) * ((1 - b) * ce_b + b * boot_b)
            out["bootstrap_agreement"] = (z == y).float().mean()
        else:
            loss = lam * ce_a + (1 - lam) * ce_b
        with torch.no_grad():
            acc = (logits.argmax(1) == y).float().mean()
        out.update(
            loss=loss.mean(),
            clean_fraction_batch=keep.float().mean(),
            train_accuracy_noisy=acc,
        )
        return out

    def sample_scores(self) -> np.ndarray | None:
        """The MOIT run's clean mask as 1/0 (None when every sample was taken as clean)."""
        if self.clean_from is None:
            return None
        return self.clean.double().numpy()
