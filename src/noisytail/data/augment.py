"""Batch-level augmentation on whatever device the batch lives on (airbench style).

Functions take a float batch ``[B, C, H, W]`` and a `torch.Generator` on the CPU (random numbers
are drawn there, so results do not depend on the device) and return a new batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from noisytail.data.specs import AUGMENT_KINDS, SIMCLR_KINDS


def to_float(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 images ``[B, C, H, W]`` -> normalised float32; float features pass through."""
    if x.dtype != torch.uint8:
        return x.float()
    x = x.float().div_(255.0)
    if mean:
        m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        x = (x - m) / s
    return x


def _uniform(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator).to(device)


def random_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image left-right with probability ``p``."""
    flip = (_uniform(x.shape[0], generator, x.device) < p).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def random_crop(
    x: torch.Tensor, generator: torch.Generator, padding: int, mode: str = "reflect"
) -> torch.Tensor:
    """Pad by ``padding`` pixels and cut a random ``H x W`` window from each image.

    ``mode`` is "reflect" (GDW's CIFAR recipe) or "constant" (zeros, torchvision's default).
    """
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    mode = mode if min(h, w) > padding else "constant"
    padded = F.pad(x, (padding,) * 4, mode=mode)
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
    rows = (top.view(b, 1) + torch.arange(h, device=x.device).view(1, h)).view(b, 1, h, 1)
    cols = (left.view(b, 1) + torch.arange(w, device=x.device).view(1, w)).view(b, 1, 1, w)
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chan, rows, cols]


def default_padding(height: int) -> int:
    """4 pixels for 32x32 (the CIFAR recipe), scaled for other sizes, at least 1."""
    return max(1, round(height / 8))


def augment(
    x: torch.Tensor,
    kind: str,
    generator: torch.Generator,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> torch.Tensor:
    """Apply the named recipe to a normalised float batch ``[B, C, H, W]``.

    ``kind``: "none", "flip", "crop", "crop_flip" (pad-and-crop then flip), "simclr" (random
    resized crop, flip, colour jitter, grayscale, blur: `noisytail.data.views.simclr_augment`),
    "simclr_noblur" (the same without the blur: SimCLR's own CIFAR recipe, and MOIT's).
    ``mean`` / ``std``: the normalisation that mapped [0, 1] pixels to ``x``; "simclr"'s colour
    operations then act on the true pixel values (without them, on the batch's range).
    Feature vectors (``x.dim() != 4``) are returned unchanged.
    """
    if x.dim() != 4 or kind == "none":
        return x
    if kind in SIMCLR_KINDS:
        from .views import simclr_augment

        blur = {} if kind == "simclr" else {"blur_p": 0.0}
        return simclr_augment(x, generator, mean=mean, std=std, **blur)
    if kind in ("crop", "crop_flip"):
        x = random_crop(x, generator, default_padding(x.shape[2]))
    if kind in ("flip", "crop_flip"):
        x = random_flip(x, generator)
    if kind not in ("flip", "crop", "crop_flip"):
        raise ValueError(f"Unknown augmentation {kind!r}: use one of {', '.join(AUGMENT_KINDS)}.")
    return x
