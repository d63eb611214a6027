"""Pre-activation ResNet-18 for 32x32 images (He et al. 2016, "Identity Mappings in Deep Residual
Networks"), in the CIFAR form used by L2B, MOIT and DivideMix: a 3x3 stride-1 stem, no max-pool,
four stages of two pre-activation basic blocks (64, 128, 256, 512 channels), global average
pooling, 512-d features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS
from .base import Backbone


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut: a 1x1 convolution of the pre-activated
    input ``relu(bn1(x))`` when the shape changes; otherwise the identity, of ``x`` itself
    (``preact_skip=False``: L2B's code) or of the pre-activated input (``True``: MOIT's and
    DivideMix's code, whose identity shortcut is an empty ``nn.Sequential`` applied to it)."""

    def __init__(self, c_in: int, c_out: int, stride: int, preact_skip: bool = False) -> None:
        super().__init__()
        self.preact_skip = preact_skip
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        identity = out if self.preact_skip else x
        skip = identity if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


#: The networks of the papers' codes (`PreActResNet18`).
VARIANTS = ("l2b", "moit", "dividemix")


@MODELS.register("preact_resnet18")
class PreActResNet18(Backbone):
    """PreAct ResNet-18 (about 11.2M parameters with 10 classes).

    ``variant="l2b"``: a bare 3x3 conv stem, identity shortcuts of the block's input and
    PyTorch's default initialisation (L2B's ``models/PreResNet.py``).
    ``variant="moit"``: a conv-BN-ReLU stem, identity shortcuts of the pre-activated input and
    Kaiming-normal (fan-out) conv initialisation (MOIT's ``preact_resnet.py``).
    ``variant="dividemix"``: MOIT's stem and shortcuts with PyTorch's default initialisation
    (DivideMix's ``PreResNet.py``, also L2B's DivideMix fork's).
    No code has a final BN-ReLU before the pooling, so none has here. MOIT's 128-d projection
    head belongs to the method, on top of ``features``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        input_shape: tuple[int, ...] = (3, 32, 32),
        variant: str = "l2b",
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(
                f"preact_resnet18: variant must be one of {', '.join(VARIANTS)}, got {variant!r}."
            )
        if len(input_shape) != 3:
            raise ValueError(f"preact_resnet18 needs [C, H, W] inputs, got {input_shape}.")
        stem: list[nn.Module] = [nn.Conv2d(input_shape[0], 64, 3, padding=1, bias=False)]
        preact_skip = variant in ("moit", "dividemix")
        if preact_skip:
            stem += [nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*stem)
        stages, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(
                nn.Sequential(
                    PreActBlock(c_in, c_out, stride, preact_skip),
                    PreActBlock(c_out, c_out, 1, preact_skip),
                )
            )
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        if variant == "moit":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.feature_dim = 512
        self.reset_head(num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(x))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)
