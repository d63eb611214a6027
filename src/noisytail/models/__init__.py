"""Backbones: each subclasses `Backbone` (``features(x) -> [B, D]``, a linear ``head``) and is
registered in ``MODELS`` with the constructor ``(*, num_classes, input_shape, **options)``."""

from .base import Backbone
from .mlp import MLP
from .preact_resnet import PreActResNet18
from .resnet32 import ResNet32
from .small_cnn import SmallCNN
from .torchvision_resnet import ResNet18, ResNet50, TorchvisionResNet, load_imagenet_state

__all__ = [
    "MLP",
    "Backbone",
    "PreActResNet18",
    "ResNet18",
    "ResNet32",
    "ResNet50",
    "SmallCNN",
    "TorchvisionResNet",
    "load_imagenet_state",
]
