"""MW-Net: the weighting network and its optimizer state for resume."""

import numpy as np
import pytest
import torch

from noisytail.methods.base import TaskInfo
from noisytail.methods.mwnet import VNET_LR, VNet
from noisytail.registry import METHODS, MODELS
from noisytail.runfolder import read_checkpoint


def test_vnet_maps_losses_to_weights_in_unit_interval():
    v = VNet(100)
    assert sum(p.numel() for p in v.parameters()) == 100 + 100 + 100 + 1
    w = v(torch.rand(7) * 5)
    assert w.shape == (7,) and ((w > 0) & (w < 1)).all()


def test_vnet_optimizer_state_resumes(tmp_path, digits_config):
    from noisytail.train import fit

    cfg = digits_config("method.name=mwnet", "meta.per_class=5", "train.epochs=2")
    fit(cfg, tmp_path / "a", write_report=False, stop_after_epochs=1)
    state = read_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    adam = state["extra"]["vnet_optimizer"]
    assert adam["state"] and all("exp_avg" in s for s in adam["state"].values())
    resumed = fit(cfg, tmp_path / "a", resume=True, write_report=False)
    straight = fit(cfg, tmp_path / "b", write_report=False)
    assert resumed.test_accuracy == straight.test_accuracy


@pytest.mark.parametrize("name,default_every", [("mwnet", 4), ("gdw", 1)])
def test_weighting_network_lr_scales_with_meta_every_unless_given(name, default_every):
    """A meta step every k-th iteration takes k times Adam's per-step learning rate by default,
    so the weighting network moves as far per epoch; an explicit ``vnet_lr`` is used as given."""

    def lr(**args):
        model = MODELS.build("mlp", num_classes=3, input_shape=(4,), hidden=())
        info = TaskInfo(3, np.array([5] * 3), 15, (4,), 2, 1)
        method = METHODS.build(name, args=args, model=model, info=info)
        return method.vnet_optimizer.param_groups[0]["lr"]

    assert lr(meta_every=1) == pytest.approx(VNET_LR)
    assert lr(meta_every=3) == pytest.approx(3 * VNET_LR)
    assert lr() == pytest.approx(default_every * VNET_LR)  # MW-Net every 4th, GDW every step
    assert lr(meta_every=3, vnet_lr=1e-3) == pytest.approx(1e-3)


@pytest.mark.parametrize("name", ["mwnet", "gdw"])
def test_the_second_forward_routes_refuse_a_model_with_dropout(name):
    """The tangent pass of the full look-ahead forwards the batch again: with dropout it would
    draw other masks than the training forward, so only the exact routes are allowed."""

    def build(dropout, **args):
        model = MODELS.build("mlp", num_classes=3, input_shape=(4,), hidden=(8,), dropout=dropout)
        info = TaskInfo(3, np.array([5] * 3), 15, (4,), 2, 1)
        return METHODS.build(name, args=args, model=model, info=info)

    for meta_grad in ("forward", "first_order"):
        with pytest.raises(ValueError, match="without dropout.*set meta_grad: double_backward"):
            build(0.5, lookahead="all", meta_grad=meta_grad)
        build(0.0, lookahead="all", meta_grad=meta_grad)
    build(0.5, lookahead="all", meta_grad="double_backward")
    build(0.5, lookahead="head", meta_grad="forward")  # reuses the training forward's features


def test_the_weighting_network_keeps_float32_under_autocast():
    v = VNet(100)
    loss = torch.rand(64) * 3
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        w = v(loss)
    assert w.dtype == torch.float32
    assert torch.allclose(w, v(loss), rtol=0, atol=1e-7)
