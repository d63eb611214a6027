"""Analytic values and properties of the plain classification losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from noisytail.losses import (
    cross_entropy,
    focal,
    label_smoothing_ce,
    mixup_ce,
    soft_target_ce,
)

LN3 = math.log(3.0)


def two_class():
    """Logits [0, ln 3]: p = [1/4, 3/4]."""
    return torch.tensor([[0.0, LN3]]), torch.tensor([1])


def test_ce_by_hand():
    logits, y = two_class()
    assert cross_entropy(logits, y).item() == pytest.approx(math.log(4 / 3))
    assert cross_entropy(logits, torch.tensor([0])).item() == pytest.approx(math.log(4))


def test_ce_matches_torch_and_reductions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=g)
    y = torch.randint(0, 5, (16,), generator=g)
    none = cross_entropy(logits, y, reduction="none")
    assert none.shape == (16,)
    torch.testing.assert_close(none, F.cross_entropy(logits, y, reduction="none"))
    torch.testing.assert_close(cross_entropy(logits, y), none.mean())
    torch.testing.assert_close(cross_entropy(logits, y, reduction="sum"), none.sum())


def test_class_weight_follows_torch_convention():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(32, 4, generator=g)
    y = torch.randint(0, 4, (32,), generator=g)
    w = torch.tensor([0.5, 1.0, 2.0, 4.0])
    torch.testing.assert_close(
        cross_entropy(logits, y, class_weight=w), F.cross_entropy(logits, y, weight=w)
    )
    none = cross_entropy(logits, y, reduction="none", class_weight=w)
    torch.testing.assert_close(none, F.cross_entropy(logits, y, reduction="none", weight=w))
    torch.testing.assert_close(cross_entropy(logits, y, class_weight=w), none.sum() / w[y].sum())
    ones = cross_entropy(logits, y, class_weight=torch.ones(4))
    torch.testing.assert_close(ones, cross_entropy(logits, y))


def test_label_smoothing_by_hand_and_torch():
    logits, y = two_class()
    expected = 0.9 * math.log(4 / 3) + 0.1 * (math.log(4) + math.log(4 / 3)) / 2
    assert label_smoothing_ce(logits, y, smoothing=0.1).item() == pytest.approx(expected)
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(8, 6, generator=g)
    y = torch.randint(0, 6, (8,), generator=g)
    torch.testing.assert_close(
        label_smoothing_ce(logits, y, smoothing=0.2),
        F.cross_entropy(logits, y, label_smoothing=0.2),
    )
    torch.testing.assert_close(
        label_smoothing_ce(logits, y, smoothing=0.0), cross_entropy(logits, y)
    )


def test_focal_by_hand_and_gamma_zero_is_ce():
    logits, y = two_class()
    assert focal(logits, y, gamma=2.0).item() == pytest.approx(0.25**2 * math.log(4 / 3))
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(10, 3, generator=g)
    y = torch.randint(0, 3, (10,), generator=g)
    torch.testing.assert_close(focal(logits, y, gamma=0.0), cross_entropy(logits, y))
    assert (focal(logits, y, reduction="none") <= cross_entropy(logits, y, reduction="none")).all()


def test_focal_finite_gradient_at_certainty():
    logits = torch.tensor([[0.0, 60.0]], requires_grad=True)
    focal(logits, torch.tensor([1]), gamma=0.5).backward()
    assert torch.isfinite(logits.grad).all()


def test_soft_target_ce_onehot_equals_ce():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(7, 4, generator=g)
    y = torch.randint(0, 4, (7,), generator=g)
    onehot = F.one_hot(y, 4).float()
    torch.testing.assert_close(soft_target_ce(logits, onehot), cross_entropy(logits, y))
    uniform = torch.full((7, 4), 0.25)
    expected = -F.log_softmax(logits, 1).mean(1)
    torch.testing.assert_close(soft_target_ce(logits, uniform, reduction="none"), expected)


def test_mixup_ce():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 3, generator=g)
    a = torch.randint(0, 3, (6,), generator=g)
    b = torch.randint(0, 3, (6,), generator=g)
    torch.testing.assert_close(mixup_ce(logits, a, b, 1.0), cross_entropy(logits, a))
    lam = 0.7
    expected = lam * cross_entropy(logits, a) + (1 - lam) * cross_entropy(logits, b)
    torch.testing.assert_close(mixup_ce(logits, a, b, lam), expected)
    # equal to CE against the mixed one-hot target
    mixed = lam * F.one_hot(a, 3) + (1 - lam) * F.one_hot(b, 3)
    torch.testing.assert_close(mixup_ce(logits, a, b, lam), soft_target_ce(logits, mixed.float()))
    per_sample = torch.linspace(0, 1, 6)
    none = mixup_ce(logits, a, b, per_sample, reduction="none")
    ce_a = cross_entropy(logits, a, reduction="none")
    ce_b = cross_entropy(logits, b, reduction="none")
    torch.testing.assert_close(none, per_sample * ce_a + (1 - per_sample) * ce_b)


def test_bad_inputs_raise():
    logits, y = two_class()
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(logits, y, reduction="avg")
    with pytest.raises(TypeError, match="integer"):
        cross_entropy(logits, y.float())
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        cross_entropy(logits[0], y)
    with pytest.raises(ValueError, match="labels"):
        cross_entropy(logits, torch.tensor([0, 1]))


def test_half_precision_logits_computed_in_float32():
    logits = torch.randn(4, 3).bfloat16()
    y = torch.tensor([0, 1, 2, 0])
    out = focal(logits, y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, focal(logits.float(), y))


def test_focal_default_gamma_is_2():
    logits, y = two_class()  # p_y = 3/4
    assert focal(logits, y).item() == pytest.approx(0.25**2 * math.log(4 / 3))
