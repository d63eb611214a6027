"""SimCLR views on the device: shapes, randomness, and the identity cases of each operation."""

import pytest
import torch

from noisytail.data.augment import augment, to_float
from noisytail.data.views import (
    blur_kernel_size,
    color_jitter01,
    crop_boxes,
    gaussian_blur,
    multi_view,
    partner_permutation,
    random_grayscale01,
    random_resized_crop,
    simclr_augment,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(b=6, c=3, h=32, w=32, seed=0):
    raw = torch.randint(0, 256, (b, c, h, w), generator=gen(seed), dtype=torch.uint8)
    raw[:, :, 0, 0], raw[:, :, 0, 1] = 0, 255  # black and white pixels in every channel
    mean, std = (0.5,) * c, (0.25,) * c
    return to_float(raw, mean, std), mean, std


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8), (1, 28, 28), (3, 24, 40)])
def test_simclr_views_have_the_input_shape_and_differ(shape):
    x, _, _ = images(5, *shape)
    v1, v2 = multi_view(x, 2, gen())
    assert v1.shape == x.shape and v2.shape == x.shape
    assert v1.dtype == x.dtype
    assert torch.isfinite(v1).all()
    assert not torch.allclose(v1, v2)
    assert not torch.allclose(v1, x)


def test_views_depend_only_on_the_generator():
    x, _, _ = images()
    assert torch.equal(simclr_augment(x, gen(7)), simclr_augment(x, gen(7)))
    assert not torch.equal(simclr_augment(x, gen(7)), simclr_augment(x, gen(8)))


def test_augment_dispatches_simclr():
    x, _, _ = images(4, 1, 8, 8)
    assert torch.equal(augment(x, "simclr", gen(1)), simclr_augment(x, gen(1)))
    # MOIT's recipe: the same view without the blur (the blur is the last operation)
    x, _, _ = images(4, 3, 32, 32)
    plain = simclr_augment(x, gen(1), blur_p=0.0)
    assert torch.equal(augment(x, "simclr_noblur", gen(1)), plain)
    assert not torch.equal(plain, simclr_augment(x, gen(1), blur_p=1.0))
    feats = torch.randn(4, 10)
    assert augment(feats, "simclr", gen()) is feats


def test_crop_boxes_lie_inside_the_image_with_the_right_area():
    boxes = crop_boxes(2000, 32, 32, gen())
    cx, cy, w, h = boxes.unbind(1)
    assert torch.all(w <= 1 + 1e-6) and torch.all(h <= 1 + 1e-6)
    assert torch.all(cx - w / 2 >= -1e-6) and torch.all(cx + w / 2 <= 1 + 1e-6)
    assert torch.all(cy - h / 2 >= -1e-6) and torch.all(cy + h / 2 <= 1 + 1e-6)
    area = w * h
    assert area.min() >= 0.08 - 1e-5 and area.max() <= 1 + 1e-6
    ratio = w / h
    kept = area < 1 - 1e-6  # the fallback (whole image) has ratio 1 anyway
    assert torch.all(ratio[kept] >= 3 / 4 - 1e-4) and torch.all(ratio[kept] <= 4 / 3 + 1e-4)


def test_full_crop_is_the_identity_and_flip_flips():
    x, _, _ = images(3, 3, 16, 16)
    same = random_resized_crop(x, gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-5)
    flipped = random_resized_crop(x, gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0)
    assert torch.allclose(flipped, x.flip(3), atol=1e-5)


def test_crop_resizes_to_a_given_size():
    x, _, _ = images(2, 3, 32, 32)
    assert random_resized_crop(x, gen(), size=(16, 24)).shape == (2, 3, 16, 24)


def test_single_channel_gets_no_colour_ops_without_jitter():
    x, _, _ = images(4, 1, 8, 8)
    # 8 px: blur kernel is 1 (no blur); a full, unflipped crop must then leave x unchanged.
    out = simclr_augment(x, gen(), crop_scale=(1.0, 1.0), jitter_p=0.0)
    flips = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-5
    assert torch.allclose(out[~flips], x[~flips], atol=1e-5)
    assert torch.allclose(out[flips], x[flips].flip(3), atol=1e-5)


def test_single_channel_jitter_is_brightness_and_contrast_only():
    # torchvision's ColorJitter on a grayscale image: an affine map of each image's intensities
    # (no clamping here: values stay inside [0, 1]); saturation and hue do nothing.
    p = 0.25 + 0.5 * torch.rand(6, 1, 8, 8, generator=gen(3))
    out = color_jitter01(p, gen(4), brightness=0.2, contrast=0.2, saturation=0.9, hue=0.5, prob=1)
    assert out.shape == p.shape and not torch.allclose(out, p)
    for before, after in zip(p.flatten(1), out.flatten(1), strict=True):
        design = torch.stack([before, torch.ones_like(before)], 1)
        coef = torch.linalg.lstsq(design, after.unsqueeze(1)).solution
        assert torch.allclose(design @ coef, after.unsqueeze(1), atol=1e-5)
    only_sat_hue = color_jitter01(p, gen(4), brightness=0, contrast=0, saturation=0.9, hue=0.5)
    assert torch.allclose(only_sat_hue, p, atol=1e-6)


def test_colour_ops_with_probability_zero_or_one():
    x, _, _ = images(4, 3, 8, 8)
    p = (x - x.amin()) / (x.amax() - x.amin())
    assert torch.equal(color_jitter01(p, gen(), prob=0.0), p)
    jittered = color_jitter01(p, gen(), prob=1.0)
    assert jittered.min() >= 0 and jittered.max() <= 1 and not torch.allclose(jittered, p)
    gray = random_grayscale01(p, gen(), prob=1.0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    assert torch.equal(random_grayscale01(p, gen(), prob=0.0), p)


def test_no_op_jitter_round_trips_the_normalisation():
    x, mean, std = images(4, 3, 16, 16)
    for m, s in ((mean, std), (None, None)):
        out = simclr_augment(
            x, gen(), mean=m, std=s, crop_scale=(1.0, 1.0), jitter_p=0.0, gray_p=0.0, blur_p=0.0
        )
        flips = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-4
        assert torch.allclose(out[~flips], x[~flips], atol=1e-4)


def test_blur_kernel_rule_and_constant_images():
    assert blur_kernel_size(32, 32) == 3
    assert blur_kernel_size(28, 28) == 3
    assert blur_kernel_size(224, 224) == 21  # MTTV's ImageNet module: int(22.4) = 22 -> 21
    assert blur_kernel_size(40, 60) == 3 and blur_kernel_size(50, 50) == 5
    assert blur_kernel_size(8, 8) == 1
    const = torch.full((2, 3, 32, 32), 0.7)
    assert torch.allclose(gaussian_blur(const, gen(), prob=1.0), const, atol=1e-6)
    x, _, _ = images(2, 3, 32, 32)
    blurred = gaussian_blur(x, gen(), prob=1.0)
    assert blurred.var() < x.var()
    assert torch.equal(gaussian_blur(x, gen(), prob=0.0), x)


def test_partner_permutation_has_no_fixed_point():
    for n in (2, 3, 17, 256):
        perm = partner_permutation(n, gen(n))
        assert sorted(perm.tolist()) == list(range(n))
        assert torch.all(perm != torch.arange(n))
    assert partner_permutation(1, gen()).tolist() == [0]
