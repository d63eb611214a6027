"""MW-Net: the weighting network and its optimizer state for resume."""

import torch

from noisytail.methods.mwnet import VNet
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
