"""ResNet-32 for 32x32 images (He et al. 2016, "Deep Residual Learning", Sec. 4.2: 6n+2 layers
with n = 5), with option-A shortcuts, as used by MW-Net and GDW: a 3x3 conv-BN-ReLU stem with 16
channels, three stages of five basic blocks (16, 32, 64 channels), global average pooling, 64-d
features (about 0.46M parameters with 10 classes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS
from .base import Backbone


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad the new channels (no parameters)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = (c_out - c_in) // 2, (c_out - c_in) - (c_out - c_in) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = ZeroPadShortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@MODELS.register("resnet32")
class ResNet32(Backbone):
    """CIFAR ResNet-32. Convolutions and the head's weight start Kaiming-normal (fan-in), as in
    the MW-Net/GDW code. ``blocks_per_stage`` gives the other CIFAR depths (3: ResNet-20, ...)."""

    def __init__(
        self,
        *,
        num_classes: int,
        input_shape: tuple[int, ...] = (3, 32, 32),
        blocks_per_stage: int = 5,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"resnet32 needs [C, H, W] inputs, got {input_shape}.")
        if blocks_per_stage < 1:
            raise ValueError(f"resnet32: blocks_per_stage must be >= 1, got {blocks_per_stage}.")
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        )
        stages, c_in = [], 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [BasicBlock(c_in, c_out, stride)]
            blocks += [BasicBlock(c_out, c_out, 1) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
        self.feature_dim = 64
        self.reset_head(num_classes)
        nn.init.kaiming_normal_(self.head.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(x))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)
