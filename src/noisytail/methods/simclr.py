"""SimCLR (Chen et al. 2020, arXiv 2002.05709): NT-Xent between two views through a projection
MLP, plus an online linear probe so that pre-training reports accuracy as it goes.

The probe is the backbone's own ``head`` trained with cross-entropy on *detached* features and
the (noisy) training labels in the same step (solo-learn's online classifier): it never moves the
encoder, and ``predict`` (= ``model(x)``) evaluates it every epoch. Its parameter group has its
own ``lr_scale`` and no weight decay.

Views come from the loader: ``views = 2`` augmented copies made with ``data.augment``. Use
``data.augment=simclr`` for SimCLR's recipe (``noisytail.data.views``); any other recipe works
(the contract test runs it with ``crop_flip``). Negatives are the other samples of the per-device
batch (no cross-device gather).

An optional kNN monitor (``knn_every`` epochs) labels every training sample by a weighted kNN
(k=200, t=0.1, itself excluded) over the un-augmented training features and logs its agreement
with the noisy labels as ``knn_train_agreement``. The test-set kNN and the offline linear probe
live in ``noisytail.evaluate_ssl``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.contrastive import INFO_NCE_REDUCTIONS, info_nce
from ..models.base import Backbone
from ..neighbors import weighted_knn_scores
from ..registry import METHODS
from .base import Batch, Context, Method, TaskInfo


def projection_mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    *,
    layers: int = 2,
    last_bn: bool = False,
    bn: bool = True,
) -> nn.Sequential:
    """``layers`` linear layers with BatchNorm (if ``bn``) + ReLU between them (SimCLR: 2; MTTV:
    3 with a BN after the last; MTTV's SimCLR baseline: 2 without BN)."""
    if layers < 1:
        raise ValueError(f"projection head needs at least one layer, got {layers}")
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden_dim)]
        mods += [nn.BatchNorm1d(hidden_dim)] if bn else []
        mods += [nn.ReLU(inplace=True)]
        d = hidden_dim
    mods.append(nn.Linear(d, out_dim))
    if last_bn:
        mods.append(nn.BatchNorm1d(out_dim))
    return nn.Sequential(*mods)


def encoder_parameters(model: Backbone) -> list[nn.Parameter]:
    """The backbone's trainable parameters except those of its linear ``head`` (the probe)."""
    head = {id(p) for p in model.head.parameters()}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in head]


def probe_step(
    model: Backbone, feats: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the linear head on detached features, and its accuracy on ``labels``."""
    logits = model.head(feats.detach())
    loss = F.cross_entropy(logits.float(), labels)
    with torch.no_grad():
        acc = (logits.argmax(1) == labels).float().mean()
    return loss, acc


@torch.no_grad()
def knn_leave_one_out(
    feats: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    k: int = 200,
    t: float = 0.1,
    chunk: int = 1024,
) -> torch.Tensor:
    """Weighted-kNN class ``[N]`` of every row of ``feats [N, D]`` among the others (itself
    excluded): the argmax of `noisytail.neighbors.weighted_knn_scores`, queries in blocks of
    ``chunk``."""
    ids = torch.arange(feats.shape[0], device=feats.device)
    scores = weighted_knn_scores(
        feats, feats, labels, num_classes, k=k, t=t, query_ids=ids, block_size=chunk
    )
    return scores.argmax(1)


class ContrastiveMethod(Method):
    """Shared parts: projection head, probe parameter groups, optional kNN monitor."""

    self_supervised = True
    contrasts_within_batch = True

    def __init__(
        self,
        model: Backbone,
        info: TaskInfo,
        *,
        probe_lr_scale: float,
        knn_every: int,
        knn_k: int,
        knn_t: float,
    ) -> None:
        super().__init__(model, info)
        self.probe_lr_scale = probe_lr_scale
        self.knn_every = knn_every
        self.knn_k, self.knn_t = knn_k, knn_t
        self._knn_value: float | None = None
        # the noisy label of each training index for the kNN monitor: all of them when the loop
        # gives them up front (so a resumed run logs what an uninterrupted one does), else the
        # ones seen so far
        self._labels_cache: torch.Tensor | None = None
        if info.train_labels is not None:
            self._labels_cache = torch.as_tensor(info.train_labels, dtype=torch.long).clone()
        self.projector: nn.Module = nn.Identity()

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [
            {"params": encoder_parameters(self.model) + list(self.projector.parameters())},
            {
                "params": list(self.model.head.parameters()),
                "lr_scale": self.probe_lr_scale,
                "weight_decay": 0.0,
            },
        ]

    def on_epoch_start(self, ctx: Context) -> None:
        self._knn_value = None
        if self.knn_every <= 0 or ctx.epoch == 0 or ctx.epoch % self.knn_every:
            return
        labels = self._labels_cache
        if labels is None or not bool((labels >= 0).any()):
            return  # no labels given nor seen yet
        feats = ctx.predict_train(self.model.features)
        labels = labels.to(feats.device)
        seen = labels >= 0
        pred = knn_leave_one_out(
            feats[seen], labels[seen], self.info.num_classes, k=self.knn_k, t=self.knn_t
        )
        self._knn_value = float((pred == labels[seen]).float().mean())

    def _remember_labels(self, batch: Batch) -> None:
        """Keep the noisy label of each training index seen (for the kNN monitor)."""
        if self.knn_every <= 0:
            return
        cache = self._labels_cache
        if cache is None:
            cache = torch.full((self.info.num_train,), -1, dtype=torch.long)
            self._labels_cache = cache
        cache[batch.idx.cpu()] = batch.labels.cpu()

    def _log_knn(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self._knn_value is not None:
            out["knn_train_agreement"] = torch.tensor(self._knn_value)
        return out


@METHODS.register("simclr")
class SimCLR(ContrastiveMethod):
    """SimCLR: NT-Xent (temperature 0.5) on a 2-layer projection MLP over two augmented views,
    with an online linear probe on detached features (``predict`` = the probe).

    ``head_bn`` (BN in the projection MLP, default True) and ``loss_form`` (``"mean_log"``, SimCLR's
    NT-Xent, or ``"log_mean"``, the log of the mean of MTTV's baseline; `info_nce`) let the
    ``simclr_*_lt`` presets match MTTV's SimCLR: no BN, hidden 512, log of the mean
    (docs/methods.md, SimCLR and k views)."""

    views = 2

    def __init__(
        self,
        model: Backbone,
        info: TaskInfo,
        *,
        temperature: float = 0.5,
        proj_dim: int = 128,
        proj_hidden: int | None = None,
        head_bn: bool = True,
        loss_form: str = "mean_log",
        probe_lr_scale: float = 1.0,
        knn_every: int = 0,
        knn_k: int = 200,
        knn_t: float = 0.1,
    ) -> None:
        super().__init__(
            model,
            info,
            probe_lr_scale=probe_lr_scale,
            knn_every=knn_every,
            knn_k=knn_k,
            knn_t=knn_t,
        )
        if temperature <= 0:
            raise ValueError(f"simclr: temperature must be positive, got {temperature}")
        if loss_form not in INFO_NCE_REDUCTIONS:
            raise ValueError(
                f"simclr: loss_form must be one of {INFO_NCE_REDUCTIONS}, got {loss_form!r}"
            )
        self.temperature = temperature
        self.loss_reduction = loss_form
        d = model.feature_dim
        self.projector = projection_mlp(d, proj_hidden or d, proj_dim, bn=head_bn)

    def _views(self, batch: Batch) -> list[torch.Tensor]:
        if isinstance(batch.x, torch.Tensor):
            raise ValueError(f"{type(self).__name__} needs a tuple of views in batch.x")
        return list(batch.x[: self.views])

    def training_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        views = self._views(batch)
        self._remember_labels(batch)
        k, b = len(views), len(batch)
        h = self.model.features(torch.cat(views))
        z = self.projector(h)
        ids = torch.arange(b, device=z.device).repeat(k)
        ssl = info_nce(z, ids, temperature=self.temperature, reduction=self.loss_reduction)
        probe, acc = probe_step(self.model, h, batch.labels.repeat(k))
        out = {
            "loss": ssl + probe,
            "ssl_loss": ssl.detach(),
            "probe_loss": probe.detach(),
            "train_accuracy_noisy": acc,
        }
        return self._log_knn(out)
