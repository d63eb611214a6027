"""Pre-activation ResNet-18 for 32x32 images (He et al. 2016, "Identity Mappings in Deep Residual
Networks"), in the CIFAR form used by L2B and MOIT: a 3x3 stride-1 stem, no max-pool, four stages
of two pre-activation basic blocks (64, 128, 256, 512 channels), global average pooling, 512-d
features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS
from .base import Backbone


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut taken after the first BN-ReLU; the
    shortcut is a 1x1 convolution when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


@MODELS.register("preact_resnet18")
class PreActResNet18(Backbone):
    """PreAct ResNet-18 (about 11.2M parameters with 10 classes).

    ``variant="l2b"``: a bare 3x3 conv stem and PyTorch's default initialisation (L2B's code).
    ``variant="moit"``: a conv-BN-ReLU stem and Kaiming-normal (fan-out) conv initialisation
    (MOIT's code). Neither code has a final BN-ReLU before the pooling, so neither has here.
    MOIT's 128-d projection head belongs to the method, on top of ``features``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        input_shape: tuple[int, ...] = (3, 32, 32),
        variant: str = "l2b",
    ) -> None:
        super().__init__()
        if variant not in ("l2b", "moit"):
            raise ValueError(f"preact_resnet18: variant must be 'l2b' or 'moit', got {variant!r}.")
        if len(input_shape) != 3:
            raise ValueError(f"preact_resnet18 needs [C, H, W] inputs, got {input_shape}.")
        stem: list[nn.Module] = [nn.Conv2d(input_shape[0], 64, 3, padding=1, bias=False)]
        if variant == "moit":
            stem += [nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*stem)
        stages, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(
                nn.Sequential(PreActBlock(c_in, c_out, stride), PreActBlock(c_out, c_out, 1))
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
