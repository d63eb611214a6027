"""The optimiser, the learning-rate schedule and backbone freezing of a run.

Two-stage fine-tuning (``model.init=<encoder.pt>``): ``train.freeze_backbone_epochs=N`` trains only
the model's ``head`` for the first N epochs (`BackboneFreeze`: backbone gradients dropped before
each step, backbone modules in eval mode so BatchNorm statistics stay put); then everything trains,
the backbone at ``lr * train.backbone_lr_scale`` (`scale_backbone_groups`). Whether an epoch is
frozen depends on its number only, so resume mid-freeze or after it gives the uninterrupted result.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .config import Config
from .errors import TrainingError


def check_finite_losses(losses: torch.Tensor, epoch: int, steps: int, last_good: Path) -> None:
    """Raise a `TrainingError` naming the first non-finite loss of ``losses`` (the epoch's step
    losses so far, ``[n]``) and the last good checkpoint ``last_good``; nothing if all are
    finite."""
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return
    first = int((~finite).nonzero()[0])
    kept = (
        f"the last good checkpoint is {last_good}"
        if last_good.exists()
        else "no checkpoint was written yet"
    )
    raise TrainingError(
        f"The loss became {float(losses[first])} at epoch {epoch + 1}, step {first + 1} "
        f"(global step {epoch * steps + first + 1}); training stopped and {kept}. "
        "Lower train.lr or set train.grad_clip."
    )


def clip_gradients(method: Any, max_norm: float) -> None:
    """Clip the gradient norm of each of ``method``'s `clip_groups` to ``max_norm`` (0: off)."""
    if max_norm > 0:
        for group in method.clip_groups():
            torch.nn.utils.clip_grad_norm_(group, max_norm)


def build_optimizer(cfg: Config, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay, Nesterov) or AdamW over the parameter ``groups``."""
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=t.nesterov
        )
    return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)


def learning_rate(cfg: Config, step: int, steps_per_epoch: int) -> float:
    """The learning rate at global ``step``: linear warm-up, then cosine / step / constant."""
    t = cfg.train
    total = t.epochs * steps_per_epoch
    warm = int(t.warmup_epochs * steps_per_epoch)
    if step < warm:
        return t.lr * (step + 1) / warm
    if t.schedule == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * t.lr * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if t.schedule == "step":
        epoch = step // steps_per_epoch
        return t.lr * t.gamma ** sum(epoch >= m for m in t.milestones)
    return t.lr


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set each group's rate to ``lr`` times its ``lr_scale`` (1 if absent)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def backbone_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable parameters of ``model`` outside its linear ``head``: what
    ``train.freeze_backbone_epochs`` freezes and ``train.backbone_lr_scale`` scales."""
    head = getattr(model, "head", None)
    skip = {id(p) for p in head.parameters()} if isinstance(head, torch.nn.Module) else set()
    return [p for p in model.parameters() if p.requires_grad and id(p) not in skip]


def scale_backbone_groups(
    groups: list[dict[str, Any]], backbone: list[torch.nn.Parameter], scale: float
) -> list[dict[str, Any]]:
    """Split each optimizer group into its non-backbone and backbone parameters; the backbone
    part gets ``lr_scale`` multiplied by ``scale`` (other group options are kept)."""
    ids = {id(p) for p in backbone}
    out: list[dict[str, Any]] = []
    for group in groups:
        params = list(group["params"])
        opts = {k: v for k, v in group.items() if k != "params"}
        rest = [p for p in params if id(p) not in ids]
        body = [p for p in params if id(p) in ids]
        if rest:
            out.append({**opts, "params": rest})
        if body:
            out.append({**opts, "params": body, "lr_scale": opts.get("lr_scale", 1.0) * scale})
    return out


def set_backbone_eval(model: torch.nn.Module) -> None:
    """Put every module of ``model`` except its ``head`` in eval mode (BatchNorm uses and keeps
    its running statistics, dropout is off): the frozen backbone is a fixed feature extractor."""
    head = getattr(model, "head", None)
    skip = {id(m) for m in head.modules()} if isinstance(head, torch.nn.Module) else set()
    for module in model.modules():
        if id(module) not in skip:
            module.training = False


class BackboneFreeze:
    """``train.freeze_backbone_epochs``: in the first ``epochs`` epochs only ``model.head``
    trains. The loop calls `begin_epoch` once per epoch and wraps each step's forward and
    backward pass in `step`."""

    def __init__(self, model: torch.nn.Module, epochs: int) -> None:
        self.model = model
        self.epochs = epochs
        self.params = backbone_parameters(model)
        self.active = False  # whether the current epoch trains the head only

    def begin_epoch(self, epoch: int) -> tuple[torch.nn.Parameter, ...]:
        """Enter epoch ``epoch`` (after the method was put in train mode); return the frozen
        parameters, for ``Context.frozen_parameters`` (none after the frozen epochs)."""
        self.active = epoch < self.epochs
        if self.active:
            set_backbone_eval(self.model)
        return tuple(self.params) if self.active else ()

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Around one step's forward and backward pass: on entry the backbone is put (back) in
        eval mode, in case a method reset the modes; on exit its gradients are dropped, so the
        optimizer leaves it alone (SGD/AdamW skip a parameter without a gradient: no momentum,
        no weight decay). The gradients are still computed: some methods need them inside their
        step, and DDP's all-reduce expects every rank to produce them."""
        if self.active:
            set_backbone_eval(self.model)
        yield
        if self.active:
            for p in self.params:
                p.grad = None

    def record(self) -> dict[str, float]:
        """The epoch's ``backbone_frozen`` flag for ``metrics.jsonl`` (nothing without freezing)."""
        return {"backbone_frozen": float(self.active)} if self.epochs > 0 else {}
