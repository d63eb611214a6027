"""Analytic values and properties of the noise-robust losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from noisytail.losses import (
    bootstrap_hard,
    bootstrap_soft,
    cross_entropy,
    generalized_ce,
    symmetric_ce,
)


def batch(seed=0, n=12, k=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g), torch.randint(0, k, (n,), generator=g)


def p_label(logits, y):
    return F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)


def test_gce_by_hand():
    logits, y = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([1])
    assert generalized_ce(logits, y, q=0.5).item() == pytest.approx((1 - math.sqrt(0.75)) / 0.5)


def test_gce_limits():
    logits, y = batch()
    torch.testing.assert_close(
        generalized_ce(logits, y, q=1.0, reduction="none"), 1 - p_label(logits, y)
    )
    torch.testing.assert_close(
        generalized_ce(logits, y, q=1e-6), cross_entropy(logits, y), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError):
        generalized_ce(logits, y, q=0.0)


def test_gce_bounded_by_one_over_q():
    logits = torch.tensor([[50.0, -50.0]])
    assert generalized_ce(logits, torch.tensor([1]), q=0.7).item() == pytest.approx(1 / 0.7)


def test_sce_is_alpha_ce_plus_beta_rce():
    logits, y = batch(1)
    alpha, beta, a = 0.1, 1.0, -4.0
    rce = -a * (1 - p_label(logits, y))
    expected = alpha * cross_entropy(logits, y, reduction="none") + beta * rce
    torch.testing.assert_close(symmetric_ce(logits, y, reduction="none"), expected)
    # RCE from its definition: -sum_k p_k log q_k with log 0 := A
    log_q = torch.full_like(logits, a).scatter(1, y[:, None], 0.0)
    rce_def = -(F.softmax(logits, 1) * log_q).sum(1)
    torch.testing.assert_close(rce, rce_def)
    cifar100 = symmetric_ce(logits, y, alpha=6.0, beta=0.1, log_zero=math.log(1e-4))
    expected = (
        6.0 * cross_entropy(logits, y) + 0.1 * (-math.log(1e-4)) * (1 - p_label(logits, y)).mean()
    )
    torch.testing.assert_close(cifar100, expected)


def test_bootstrap_soft():
    logits, y = batch(2)
    torch.testing.assert_close(bootstrap_soft(logits, y, beta=1.0), cross_entropy(logits, y))
    p = F.softmax(logits, 1)
    target = 0.95 * F.one_hot(y, 4) + 0.05 * p
    expected = -(target * F.log_softmax(logits, 1)).sum(1)
    torch.testing.assert_close(bootstrap_soft(logits, y, reduction="none"), expected)
    # same value with or without detaching, different gradients
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    bootstrap_soft(a, y, detach=True).backward()
    bootstrap_soft(b, y, detach=False).backward()
    assert not torch.allclose(a.grad, b.grad)
    torch.testing.assert_close(
        bootstrap_soft(logits, y, detach=True), bootstrap_soft(logits, y, detach=False)
    )


def test_bootstrap_hard():
    logits, y = batch(3)
    pred = logits.argmax(1)
    torch.testing.assert_close(bootstrap_hard(logits, y, beta=1.0), cross_entropy(logits, y))
    expected = 0.8 * cross_entropy(logits, y, reduction="none") + 0.2 * cross_entropy(
        logits, pred, reduction="none"
    )
    torch.testing.assert_close(bootstrap_hard(logits, y, reduction="none"), expected)
    # when the prediction agrees with the label it is plain CE
    torch.testing.assert_close(bootstrap_hard(logits, pred), cross_entropy(logits, pred))


def test_gce_default_q_is_the_papers_0_7():
    # p_y = 3/4: L = (1 - 0.75^0.7) / 0.7
    logits, y = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([1])
    assert generalized_ce(logits, y).item() == pytest.approx((1 - 0.75**0.7) / 0.7)


@pytest.mark.parametrize("loss", [generalized_ce, symmetric_ce, bootstrap_soft, bootstrap_hard])
def test_class_weight_scales_each_sample_by_its_labels_weight(loss):
    logits, y = batch(4)
    w = torch.tensor([0.5, 1.0, 2.0, 4.0])
    plain = loss(logits, y, reduction="none")
    torch.testing.assert_close(loss(logits, y, reduction="none", class_weight=w), w[y] * plain)
    torch.testing.assert_close(loss(logits, y, class_weight=w), (w[y] * plain).sum() / w[y].sum())
