"""torchvision's ResNet-18 and ResNet-50 as backbones, optionally ImageNet-pretrained, optionally
with a CIFAR stem (3x3 stride-1 first convolution, no max-pool) for 32x32 inputs.

torchvision is imported when one is built, not when the registry loads this module: it costs
about 1.6 s of every command's start-up, and a table or the small CNN never needs it."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..registry import MODELS
from .base import Backbone


def load_imagenet_state(weights_name: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights (``"ResNet18_Weights.IMAGENET1K_V1"``), from the torch hub
    cache or downloaded; a clear error when neither works."""
    import torchvision

    weights = torchvision.models.get_weight(weights_name)
    try:
        return weights.get_state_dict(progress=False)
    except Exception as err:  # no network, proxy, corrupt file, ...
        cache = f"{torch.hub.get_dir()}/checkpoints/{weights.url.rsplit('/', 1)[-1]}"
        raise RuntimeError(
            f"Could not load the pretrained weights {weights_name} ({type(err).__name__}: {err}). "
            f"Download {weights.url} to {cache} (or set TORCH_HOME), or use pretrained=False."
        ) from err


class TorchvisionResNet(Backbone):
    """A torchvision ResNet without its ``fc``; our ``head`` replaces it.

    ``pretrained=True`` loads torchvision's ImageNet weights (the V1 set, which
    ``pretrained=True`` meant in the torchvision the papers used) and initialises the new head
    Xavier-normal with zero bias, as L2B does. ``cifar_stem=True`` replaces the 7x7 stride-2
    stem and max-pool by a 3x3 stride-1 convolution (freshly initialised even when pretrained).
    A stem for other than 3 input channels is rebuilt too; pretrained, its weights are the RGB
    weights' mean, repeated and scaled by 3/C.
    """

    arch: ClassVar[str]
    weights_name: ClassVar[str]

    def __init__(
        self,
        *,
        num_classes: int,
        input_shape: tuple[int, ...] = (3, 224, 224),
        pretrained: bool = False,
        cifar_stem: bool = False,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"{self.arch} needs [C, H, W] inputs, got {input_shape}.")
        import torchvision

        net = getattr(torchvision.models, self.arch)(weights=None)
        if pretrained:
            net.load_state_dict(load_imagenet_state(self.weights_name))
        channels = input_shape[0]
        if cifar_stem:
            net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
            net.maxpool = nn.Identity()
        elif channels != 3:
            old = net.conv1
            net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            if pretrained:
                with torch.no_grad():
                    mean = old.weight.mean(dim=1, keepdim=True)
                    net.conv1.weight.copy_(mean.repeat(1, channels, 1, 1) * (3.0 / channels))
            else:
                nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net
        self.reset_head(num_classes)
        if pretrained:
            nn.init.xavier_normal_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@MODELS.register("resnet18")
class ResNet18(TorchvisionResNet):
    """torchvision ResNet-18, 512-d features."""

    arch = "resnet18"
    weights_name = "ResNet18_Weights.IMAGENET1K_V1"


@MODELS.register("resnet50")
class ResNet50(TorchvisionResNet):
    """torchvision ResNet-50, 2048-d features."""

    arch = "resnet50"
    weights_name = "ResNet50_Weights.IMAGENET1K_V1"
