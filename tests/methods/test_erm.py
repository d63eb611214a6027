"""ERM: the loss of each step, and deferred re-weighting switching on at its epoch."""

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisytail.losses import class_balanced_weights
from noisytail.methods.base import Batch, Context, TaskInfo
from noisytail.registry import METHODS, MODELS

COUNTS = np.array([40, 10, 4, 2])


def build(**kw):
    torch.manual_seed(0)
    model = MODELS.build("small_cnn", num_classes=4, input_shape=(1, 8, 8), width=4)
    info = TaskInfo(4, COUNTS, int(COUNTS.sum()), (1, 8, 8), 5, 4)
    method = METHODS.build("erm", args=kw, model=model, info=info)
    ctx = Context(
        info=info,
        optimizer=torch.optim.SGD(method.parameter_groups(), lr=0.1),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
        meta_batches=None,
        predict_train=None,
        autocast=contextlib.nullcontext,
    )
    g = torch.Generator().manual_seed(1)
    batch = Batch(torch.randn(12, 1, 8, 8, generator=g), torch.arange(12) % 4, torch.arange(12))
    return method, ctx, batch


def test_drw_is_plain_ce_before_its_epoch_and_class_balanced_from_it():
    method, ctx, batch = build(drw_epoch=2)
    method.model.eval()  # the same logits at every call
    with torch.no_grad():
        logits = method.model(batch.x)
    ce = F.cross_entropy(logits, batch.labels, reduction="none")
    w = class_balanced_weights(COUNTS, 0.9999)[batch.labels]
    for epoch, expected in ((0, ce.mean()), (1, ce.mean()), (2, (w * ce).sum() / w.sum())):
        ctx.epoch = epoch
        assert method(batch, ctx)["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    plain, ctx, batch = build()
    plain.model.eval()
    ctx.epoch = 4
    assert plain(batch, ctx)["loss"].item() == pytest.approx(ce.mean().item(), rel=1e-5)
