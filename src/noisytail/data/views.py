"""SimCLR-style views made per batch on the batch's device, with tensor ops only.

The recipe (Chen et al. 2020; MTTV's Kornia pipeline, arXiv 2509.08469) is, per image:
random resized crop (scale 0.08-1, aspect 3/4-4/3) -> horizontal flip (p=0.5) -> colour jitter
0.4/0.4/0.4/0.1 (p=0.8) -> grayscale (p=0.2) -> Gaussian blur (p=0.5, sigma 0.1-2, kernel about
10% of the image side, forced odd). On one-channel images the jitter is brightness and contrast
only (torchvision's ``ColorJitter`` on a grayscale image) and grayscale is a no-op.

Like ``augment.py``, every function takes a float batch ``[B, C, H, W]`` and a CPU
`torch.Generator`; all random numbers are drawn there, in a fixed amount per call, so the views
depend only on the generator's state, never on the device.

Inputs are normalised (``(pixel - mean) / std``). Colour operations need pixel values in [0, 1]:
give ``mean``/``std`` to map exactly; without them each channel is mapped by the batch's own
min..max, which equals the exact map whenever the batch holds a black and a white pixel in that
channel (true for practically every CIFAR/Fashion-MNIST batch).

Differences from torchvision/Kornia, by design: the crop box is continuous (no rounding to whole
pixels) and sampled from the bilinear grid; hue is rotated in YIQ space (a linear approximation of
the HSV hue shift); the order of the four jitter operations is drawn once per batch; the colour
operations come after the crop (Kornia's pipeline in MTTV's code jitters first, so its contrast
blends towards the whole image's mean grey, here towards the crop's).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

_LUMA = (0.299, 0.587, 0.114)


def _rand(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator).to(device)


def crop_boxes(
    b: int,
    height: int,
    width: int,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    tries: int = 10,
) -> torch.Tensor:
    """Random resized crop boxes ``[B, 4]`` = (centre x, centre y, width, height) as fractions of
    the image, drawn like torchvision's ``RandomResizedCrop.get_params`` (10 tries, then the whole
    image)."""
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(b, tries, generator=generator)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(
        b, tries, generator=generator
    )
    r = torch.exp(log_r)
    aspect = height / width
    wf = torch.sqrt(area * r * aspect)  # crop width / W  (w_pix = sqrt(A * H * W * r))
    hf = torch.sqrt(area / r / aspect)  # crop height / H
    ok = (wf <= 1.0) & (hf <= 1.0)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1))
    rows = torch.arange(b)
    pick = first.clamp(min=0)
    w = torch.where(first >= 0, wf[rows, pick], torch.ones(b))
    h = torch.where(first >= 0, hf[rows, pick], torch.ones(b))
    ux, uy = torch.rand(2, b, generator=generator)
    cx = w / 2 + ux * (1 - w)
    cy = h / 2 + uy * (1 - h)
    return torch.stack([cx, cy, w, h], dim=1)


def random_resized_crop(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    size: tuple[int, int] | None = None,
    flip_p: float = 0.0,
) -> torch.Tensor:
    """Crop a random box from each image and resize it to ``size`` (default: the input size) with
    one ``affine_grid``/``grid_sample`` (bilinear); ``flip_p`` folds a left-right flip into the same
    resampling."""
    b, c, h, w = x.shape
    boxes = crop_boxes(b, h, w, generator, scale=scale, ratio=ratio)
    flip = torch.rand(b, generator=generator) < flip_p
    sx = torch.where(flip, -boxes[:, 2], boxes[:, 2])
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = 2 * boxes[:, 0] - 1
    theta[:, 1, 1] = boxes[:, 3]
    theta[:, 1, 2] = 2 * boxes[:, 1] - 1
    out_h, out_w = size if size is not None else (h, w)
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [b, c, out_h, out_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _gray(p: torch.Tensor) -> torch.Tensor:
    """Luma ``[B, 1, H, W]`` of RGB ``[B, 3, H, W]``; a one-channel batch is its own luma."""
    if p.shape[1] == 1:
        return p
    wts = torch.tensor(_LUMA, device=p.device, dtype=p.dtype).view(1, 3, 1, 1)
    return (p * wts).sum(1, keepdim=True)


def _hue_rotate(p: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma of RGB ``p`` by ``2*pi*shift`` (per image) in YIQ space."""
    to_yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
        device=p.device,
        dtype=p.dtype,
    )
    to_rgb = torch.linalg.inv(to_yiq)
    ang = 2 * math.pi * shift
    cos, sin = torch.cos(ang), torch.sin(ang)
    rot = torch.zeros(p.shape[0], 3, 3, device=p.device, dtype=p.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    mat = to_rgb.unsqueeze(0) @ rot @ to_yiq.unsqueeze(0)  # [B, 3, 3]
    return torch.einsum("bij,bjhw->bihw", mat, p)


def color_jitter01(
    p: torch.Tensor,
    generator: torch.Generator,
    *,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    prob: float = 0.8,
) -> torch.Tensor:
    """Colour jitter of RGB images in [0, 1], each image with probability ``prob``; factors drawn
    per image from ``[1 - s, 1 + s]`` (hue: ``[-hue, hue]`` of a turn). On one-channel images
    only brightness and contrast act, as torchvision's ``ColorJitter`` on a grayscale image."""
    b = p.shape[0]
    dev = p.device
    u = _rand((5, b), generator, dev)
    order = torch.randperm(4, generator=generator).tolist()
    apply = (u[4] < prob).view(-1, 1, 1, 1)
    factors = [1 + brightness * (2 * u[0] - 1), 1 + contrast * (2 * u[1] - 1)]
    factors += [1 + saturation * (2 * u[2] - 1), hue * (2 * u[3] - 1)]
    out = p
    for op in order:
        f = factors[op].to(p.dtype)
        if op == 0:
            out = out * f.view(-1, 1, 1, 1)
        elif op == 1:
            m = _gray(out).mean(dim=(1, 2, 3), keepdim=True)
            out = (out - m) * f.view(-1, 1, 1, 1) + m
        elif op == 2:
            g = _gray(out)
            out = (out - g) * f.view(-1, 1, 1, 1) + g
        elif p.shape[1] == 3:
            out = _hue_rotate(out, f)
        out = out.clamp(0.0, 1.0)
    return torch.where(apply, out, p)


def random_grayscale01(
    p: torch.Tensor, generator: torch.Generator, prob: float = 0.2
) -> torch.Tensor:
    """Replace RGB images by their luma (in all three channels) with probability ``prob``."""
    apply = (_rand((p.shape[0],), generator, p.device) < prob).view(-1, 1, 1, 1)
    return torch.where(apply, _gray(p).expand_as(p), p)


def blur_kernel_size(height: int, width: int, fraction: float = 0.1) -> int:
    """``int(fraction * min side)``, made odd: an even size is rounded down, as MTTV's ImageNet
    and CIFAR-100 modules do (224 px: 21), unless that leaves less than 3, where it is rounded up
    as its CIFAR-10 module does (28 and 32 px: 3); 1 means no blur (images < 20 px)."""
    k = int(fraction * min(height, width))
    if k % 2 == 0:
        k = k - 1 if k - 1 >= 3 else k + 1
    return k


def gaussian_blur(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    prob: float = 0.5,
    sigma: tuple[float, float] = (0.1, 2.0),
    kernel_size: int | None = None,
) -> torch.Tensor:
    """Separable Gaussian blur, each image with probability ``prob`` and its own sigma; reflect
    padding. The random numbers are drawn even when the kernel is 1 (no-op) to keep streams
    aligned across image sizes."""
    b, c, h, w = x.shape
    u = _rand((2, b), generator, x.device)
    k = kernel_size if kernel_size is not None else blur_kernel_size(h, w)
    if k < 3 or k // 2 >= min(h, w):
        return x
    s = (sigma[0] + (sigma[1] - sigma[0]) * u[0]).to(x.dtype)
    r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kern = torch.exp(-(r.view(1, -1) ** 2) / (2 * s.view(-1, 1) ** 2))
    kern = kern / kern.sum(1, keepdim=True)  # [B, k]
    kern = kern.repeat_interleave(c, dim=0)  # [B*C, k]
    y = x.reshape(1, b * c, h, w)
    y = F.pad(y, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, kern.view(b * c, 1, k, 1), groups=b * c)
    y = F.conv2d(y, kern.view(b * c, 1, 1, k), groups=b * c)
    y = y.reshape(b, c, h, w)
    apply = (u[1] < prob).view(-1, 1, 1, 1)
    return torch.where(apply, y, x)


def _to01(
    x: torch.Tensor, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(p in [0,1], lo, span)`` with ``x = p * span + lo`` per channel."""
    c = x.shape[1]
    if mean is not None and std is not None:
        m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, c, 1, 1)
        s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, c, 1, 1)
        lo, span = -m / s, 1.0 / s
    else:
        lo = x.amin(dim=(0, 2, 3), keepdim=True)
        span = (x.amax(dim=(0, 2, 3), keepdim=True) - lo).clamp_min(1e-6)
    return ((x - lo) / span).clamp(0.0, 1.0), lo, span


def simclr_augment(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    colour: bool | None = None,
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    jitter_p: float = 0.8,
    gray_p: float = 0.2,
    blur_p: float = 0.5,
) -> torch.Tensor:
    """One SimCLR view of each image of a normalised batch ``[B, C, H, W]`` (see module docstring).

    ``colour=None`` applies the jitter to 1- and 3-channel images (on one channel only brightness
    and contrast act, as torchvision's ``ColorJitter`` on a grayscale image does) and grayscale
    to 3-channel images; other channel counts get no colour operations. Feature vectors
    (``x.dim() != 4``) are returned unchanged.
    """
    if x.dim() != 4:
        return x
    out = random_resized_crop(x.float(), generator, scale=crop_scale, flip_p=0.5)
    use_colour = (x.shape[1] in (1, 3)) if colour is None else colour
    if use_colour:
        p, lo, span = _to01(out, mean, std)
        b, c, s, h = jitter
        p = color_jitter01(
            p, generator, brightness=b, contrast=c, saturation=s, hue=h, prob=jitter_p
        )
        p = random_grayscale01(p, generator, prob=gray_p)
        out = p * span + lo
    out = gaussian_blur(out, generator, prob=blur_p)
    return out.to(x.dtype)


def multi_view(
    x: torch.Tensor,
    k: int,
    generator: torch.Generator,
    fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor] = simclr_augment,
) -> tuple[torch.Tensor, ...]:
    """``k`` independent views of each image (``k`` calls of ``fn``)."""
    if k < 1:
        raise ValueError(f"multi_view: k must be at least 1, got {k}")
    return tuple(fn(x, generator) for _ in range(k))


def partner_permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation ``pi`` of ``0..n-1`` with no fixed point (for ``n > 1``): sample ``i``
    gets partner ``pi[i] != i``. Built as one random cycle, so it is uniform over cyclic orders."""
    if n <= 1:
        return torch.arange(n)
    sigma = torch.randperm(n, generator=generator)
    perm = torch.empty(n, dtype=torch.long)
    perm[sigma] = torch.roll(sigma, -1)
    return perm
