"""Analytic values and properties of the class-imbalance losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from noisytail.losses import (
    balanced_softmax,
    class_balanced_ce,
    class_balanced_focal,
    class_balanced_weights,
    cosine_logits,
    cross_entropy,
    drw_class_weights,
    focal,
    generalized_ce,
    ldam,
    ldam_margins,
    logit_adjusted_ce,
    logit_adjusted_gce,
)

COUNTS = [500, 100, 20, 5]


def batch(seed=0, n=16, k=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g), torch.randint(0, k, (n,), generator=g)


def test_cb_weights_by_hand():
    # beta = 0.5: 1/E_1 = 1, 1/E_2 = 0.5 / 0.75 = 2/3; scaled to sum to K = 2: [1.2, 0.8]
    torch.testing.assert_close(class_balanced_weights([1, 2], beta=0.5), torch.tensor([1.2, 0.8]))


@pytest.mark.parametrize("beta", [0.9, 0.99, 0.999, 0.9999])
def test_cb_weights_sum_to_k_and_favour_rare(beta):
    w = class_balanced_weights(COUNTS, beta)
    assert w.dtype == torch.float32 and w.shape == (4,)
    assert w.sum().item() == pytest.approx(4.0)
    assert (w[1:] > w[:-1]).all()


def test_cb_weights_limits():
    torch.testing.assert_close(class_balanced_weights(COUNTS, 0.0), torch.ones(4))
    inv = 1 / torch.tensor(COUNTS, dtype=torch.float64)
    torch.testing.assert_close(class_balanced_weights(COUNTS, 1.0), (inv / inv.sum() * 4).float())
    near = class_balanced_weights(COUNTS, 1 - 1e-9)
    torch.testing.assert_close(near, class_balanced_weights(COUNTS, 1.0), rtol=1e-4, atol=1e-5)
    assert torch.isfinite(class_balanced_weights([10, 0, 3], 0.9999)).all()


def test_drw_schedule():
    before = drw_class_weights(COUNTS, epoch=159, start_epoch=160)
    after = drw_class_weights(COUNTS, epoch=160, start_epoch=160)
    torch.testing.assert_close(before, torch.ones(4))
    torch.testing.assert_close(after, class_balanced_weights(COUNTS, 0.9999))


def test_cb_ce_and_focal():
    logits, y = batch()
    w = class_balanced_weights(COUNTS, 0.999)
    torch.testing.assert_close(
        class_balanced_ce(logits, y, class_counts=COUNTS, beta=0.999),
        F.cross_entropy(logits, y, weight=w),
    )
    torch.testing.assert_close(
        class_balanced_ce(logits, y, class_counts=COUNTS, beta=0.0), cross_entropy(logits, y)
    )
    torch.testing.assert_close(
        class_balanced_focal(logits, y, class_counts=COUNTS, beta=0.999, gamma=1.0),
        focal(logits, y, gamma=1.0, class_weight=w),
    )


def test_cb_focal_sigmoid_gamma_zero_is_summed_bce():
    logits, y = batch(1)
    bce = F.binary_cross_entropy_with_logits(logits, F.one_hot(y, 4).float(), reduction="none").sum(
        1
    )
    out = class_balanced_focal(
        logits, y, class_counts=COUNTS, beta=0.0, gamma=0.0, sigmoid=True, reduction="none"
    )
    torch.testing.assert_close(out, bce)
    focal2 = class_balanced_focal(logits, y, class_counts=COUNTS, beta=0.0, sigmoid=True)
    assert focal2 < bce.mean()


def test_ldam_margins():
    m = ldam_margins(COUNTS, max_margin=0.5)
    assert m.max().item() == pytest.approx(0.5)
    assert m[-1].item() == pytest.approx(0.5)  # the rarest class has the largest margin
    ratio = m * torch.tensor(COUNTS, dtype=torch.float32) ** 0.25
    torch.testing.assert_close(ratio, torch.full((4,), ratio[0].item()))


def test_ldam_by_hand():
    counts = [16, 1]  # margins: 0.25, 0.5 with max_margin 0.5
    logits = torch.tensor([[0.2, 0.1], [0.3, -0.4]])
    y = torch.tensor([0, 1])
    shifted = torch.tensor([[0.2 - 0.25, 0.1], [0.3, -0.4 - 0.5]])
    expected = F.cross_entropy(30 * shifted, y, reduction="none")
    torch.testing.assert_close(ldam(logits, y, class_counts=counts, reduction="none"), expected)
    torch.testing.assert_close(
        ldam(logits, y, class_counts=counts, max_margin=0.0, scale=1.0), cross_entropy(logits, y)
    )


def test_balanced_softmax_equals_logit_adjustment_tau_one():
    logits, y = batch(2)
    torch.testing.assert_close(
        balanced_softmax(logits, y, class_counts=COUNTS, reduction="none"),
        logit_adjusted_ce(logits, y, class_counts=COUNTS, tau=1.0, reduction="none"),
    )


def test_logit_adjustment_by_hand_and_limits():
    logits, y = torch.zeros(1, 2), torch.tensor([1])
    # prior [3/4, 1/4], tau = 1: p_y = 1/4
    la = logit_adjusted_ce(logits, y, class_counts=[3, 1])
    assert la.item() == pytest.approx(math.log(4))
    assert logit_adjusted_ce(logits, y, class_counts=[3, 1], tau=0.5).item() == pytest.approx(
        -math.log(0.5 / (0.5 + math.sqrt(0.75)))
    )
    logits, y = batch(3)
    torch.testing.assert_close(
        logit_adjusted_ce(logits, y, class_counts=COUNTS, tau=0.0), cross_entropy(logits, y)
    )
    torch.testing.assert_close(
        logit_adjusted_ce(logits, y, class_counts=[7, 7, 7, 7]), cross_entropy(logits, y)
    )


def test_la_gce():
    logits, y = batch(4)
    torch.testing.assert_close(
        logit_adjusted_gce(logits, y, class_counts=COUNTS, tau=0.0, q=0.7),
        generalized_ce(logits, y, q=0.7),
    )
    prior = torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS)
    torch.testing.assert_close(
        logit_adjusted_gce(logits, y, class_counts=COUNTS, q=0.5),
        generalized_ce(logits + prior.log(), y, q=0.5),
    )


def test_adjusted_losses_favour_rare_classes():
    # same logits, a rare label costs more under the adjustment than a frequent one
    logits = torch.zeros(2, 4)
    y = torch.tensor([0, 3])
    out = logit_adjusted_ce(logits, y, class_counts=COUNTS, reduction="none")
    assert out[1] > out[0]


def test_zero_count_class_stays_finite():
    logits, y = batch(5)
    counts = [10, 0, 5, 2]
    for fn in (logit_adjusted_ce, balanced_softmax, ldam, class_balanced_ce):
        x = logits.clone().requires_grad_()
        loss = fn(x, y, class_counts=counts)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_counts_shape_checked():
    logits, y = batch()
    with pytest.raises(ValueError, match="class_counts"):
        logit_adjusted_ce(logits, y, class_counts=[1, 2, 3])


def test_cosine_logits():
    g = torch.Generator().manual_seed(6)
    feats, w = torch.randn(5, 8, generator=g), torch.randn(3, 8, generator=g)
    z = cosine_logits(feats, w)
    assert z.shape == (5, 3) and z.abs().max() <= 1 + 1e-6
    torch.testing.assert_close(cosine_logits(feats, feats)[range(5), range(5)], torch.ones(5))


def test_defaults_by_independent_formulas():
    # cb_ce: beta = 0.9999, weights (1 - b) / (1 - b^n) scaled to sum to K (Cui et al. 2019);
    # cb_focal: also gamma = 2, -(1 - p_y)^2 log p_y; la_gce: q = 0.7 on z + log(n / sum n).
    logits, y = batch(6)
    n = torch.tensor(COUNTS, dtype=torch.float64)
    w = (1 - 0.9999) / (1 - 0.9999**n)
    w = (w / w.sum() * 4).float()
    log_p = F.log_softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    ce = -log_p
    torch.testing.assert_close(
        class_balanced_ce(logits, y, class_counts=COUNTS), (w[y] * ce).sum() / w[y].sum()
    )
    fl = (1 - log_p.exp()) ** 2 * ce
    torch.testing.assert_close(
        class_balanced_focal(logits, y, class_counts=COUNTS), (w[y] * fl).sum() / w[y].sum()
    )
    adjusted = logits + (n / n.sum()).log().float()
    p_y = F.softmax(adjusted, 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(
        logit_adjusted_gce(logits, y, class_counts=COUNTS), ((1 - p_y**0.7) / 0.7).mean()
    )
