"""Contrastive losses: hand-worked NT-Xent values, k-view and SupCon forms, MTTV's filter."""

import math

import pytest
import torch
import torch.nn.functional as F

from noisytail.losses.contrastive import (
    cosine_matrix,
    info_nce,
    interleave,
    mttv_loss,
    mttv_mask,
    nt_xent,
)

E1, E2 = [1.0, 0.0], [0.0, 1.0]


def test_nt_xent_by_hand_aligned_positives():
    # Every anchor: positive s=1, two negatives s=0. t=0.5 -> -log(e^2 / (e^2 + 2)).
    z1 = torch.tensor([E1, E2])
    z2 = torch.tensor([E1, E2])
    expected = math.log(1 + 2 * math.exp(-2))
    assert nt_xent(z1, z2, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_by_hand_orthogonal_positives():
    # Anchor e1 (view 1, sample 0): positive e2 (s=0), negatives e2 (s=0) and e1 (s=1).
    z1 = torch.tensor([E1, E2])
    z2 = torch.tensor([E2, E1])
    expected = math.log(2 + math.exp(2))
    assert nt_xent(z1, z2, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_temperature_and_scale_invariance():
    z1 = torch.tensor([E1, E2])
    z2 = torch.tensor([E1, E2])
    expected = math.log(1 + 2 * math.exp(-1 / 0.1))
    got = nt_xent(3 * z1, 0.5 * z2, temperature=0.1).item()
    assert got == pytest.approx(expected, abs=1e-6)  # float32 log-softmax near 0


def _reference_info_nce(z, ids, t):
    z = F.normalize(z, dim=1)
    n = len(z)
    total, anchors = 0.0, 0
    for a in range(n):
        den = sum(math.exp(float(z[a] @ z[j]) / t) for j in range(n) if j != a)
        pos = [p for p in range(n) if p != a and ids[p] == ids[a]]
        if not pos:
            continue
        total += -sum(math.log(math.exp(float(z[a] @ z[p]) / t) / den) for p in pos) / len(pos)
        anchors += 1
    return total / anchors


@pytest.mark.parametrize("k", [2, 3, 5])
def test_k_view_matches_reference(k):
    g = torch.Generator().manual_seed(k)
    b = 4
    z = torch.randn(k * b, 6, generator=g)
    ids = torch.arange(b).repeat(k)
    got = info_nce(z, ids, temperature=0.3).item()
    assert got == pytest.approx(_reference_info_nce(z, ids, 0.3), rel=1e-5)


def test_k_view_at_two_equals_nt_xent():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(2, 8, 5, generator=g)
    ids = torch.arange(8).repeat(2)
    assert info_nce(torch.cat([z1, z2]), ids, temperature=0.5).item() == pytest.approx(
        nt_xent(z1, z2, 0.5).item(), rel=1e-6
    )


def test_supcon_with_labels_matches_reference_and_skips_lonely_anchors():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(7, 4, generator=g)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])  # classes 2 and 3 have no positive
    got = info_nce(z, labels, temperature=0.1).item()
    assert got == pytest.approx(_reference_info_nce(z, labels, 0.1), rel=1e-5)


def test_info_nce_without_positives_is_a_finite_zero():
    z = torch.randn(4, 3, requires_grad=True)
    loss = info_nce(z, torch.arange(4), temperature=0.5)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()


def test_nt_xent_falls_under_sgd():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(16, 8, generator=g).requires_grad_()
    z2 = torch.randn(16, 8, generator=g).requires_grad_()
    opt = torch.optim.SGD([z1, z2], lr=1.0)
    first = None
    for _ in range(20):
        loss = nt_xent(z1, z2, temperature=0.5)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert nt_xent(z1, z2, 0.5).item() < first - 0.5


def test_nt_xent_bf16_inputs_compute_in_float32():
    z1, z2 = torch.tensor([E1, E2]), torch.tensor([E1, E2])
    loss = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.5)
    assert loss.dtype == torch.float32


# ------------------------------------------------------------------------------------------
# MTTV


def test_mttv_mask_exact_entries():
    s = torch.tensor([[1.0, 0.95, -0.95, 0.5], [0.05, -0.05, -0.5, 0.1], [0.9, -0.9, 0.2, 0.0]])
    expected = torch.tensor(
        [[True, True, True, False], [True, True, False, False], [False, False, False, True]]
    )
    assert torch.equal(mttv_mask(s, low=0.1, high=0.9), expected)


def test_interleave_puts_positives_side_by_side():
    u = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    v = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    assert torch.equal(interleave(u, v), torch.tensor([[1.0, 0], [0, 1], [2, 0], [0, 2]]))


def _mttv_reference(u, v, t, low, high, compat):
    """Straight loops over the interleaved rows (independent of the vectorised code)."""
    x = interleave(u, v).double()
    n = len(x)
    s = [[float(F.cosine_similarity(x[i], x[j], dim=0)) for j in range(n)] for i in range(n)]
    ext = [[abs(s[i][j]) > high or abs(s[i][j]) < low for j in range(n)] for i in range(n)]
    if compat:
        ratios = []
        for j in range(n):
            p = j + 1 if j % 2 == 0 else j - 1
            col = sum(math.exp(s[i][j] / t) for i in range(n) if not ext[i][j])
            num = 0.0 if ext[p][j] else math.exp(s[p][j] / t)
            ratios.append(num / (col - math.exp(1 / t)))
        return -math.log(sum(ratios) / n)
    terms = []
    for j in range(n):
        p = j + 1 if j % 2 == 0 else j - 1
        if ext[j][p]:
            continue
        den = sum(math.exp(s[j][i] / t) for i in range(n) if i != j and (i == p or not ext[j][i]))
        terms.append(-math.log(math.exp(s[j][p] / t) / den))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("compat", [False, True])
def test_mttv_loss_matches_reference_on_a_non_degenerate_batch(compat):
    g = torch.Generator().manual_seed(3)
    u = torch.randn(24, 6, generator=g)
    v = u + 0.8 * torch.randn(24, 6, generator=g)
    mask = mttv_mask(cosine_matrix(interleave(u, v)))
    off = ~torch.eye(48, dtype=torch.bool)
    assert 0.05 < mask[off].float().mean() < 0.6  # the filter is active but not everything
    got = mttv_loss(u, v, temperature=0.3, compat=compat).item()
    assert math.isfinite(got)
    assert got == pytest.approx(_mttv_reference(u, v, 0.3, 0.1, 0.9, compat), rel=1e-5)


def test_mttv_masked_entries_do_not_reach_the_loss():
    # Pair 0 is (e1, e1): its positive has s = 1 (masked) and it is orthogonal to every other row
    # (s = 0, masked), so it must get no gradient; the other pairs live in span(e2, e3, e4).
    g = torch.Generator().manual_seed(4)
    rest = torch.randn(5, 3, generator=g)
    rest_u = F.pad(rest, (1, 0))
    rest_v = F.pad(rest + 0.7 * torch.randn(5, 3, generator=g), (1, 0))
    e1 = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    u = torch.cat([e1, rest_u]).requires_grad_()
    v = torch.cat([e1, rest_v]).requires_grad_()
    m = mttv_mask(cosine_matrix(interleave(u.detach(), v.detach())))
    assert bool(m[0].all()) and bool(m[1].all())
    loss = mttv_loss(u, v)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(u.grad[0] == 0) and torch.all(v.grad[0] == 0)
    assert u.grad[1:].abs().sum() > 0


@pytest.mark.parametrize(
    "case",
    ["identical", "orthogonal", "antipodal"],
)
def test_mttv_safe_form_is_finite_when_every_similarity_is_extreme(case):
    d = 8
    if case == "identical":  # every |s| = 1 > 0.9
        u = torch.ones(4, d)
        v = torch.ones(4, d)
    elif case == "orthogonal":  # every off-diagonal s = 0 < 0.1
        eye = torch.eye(d)
        u, v = eye[0::2], eye[1::2]
    else:  # s = +-1
        u = torch.ones(4, d)
        v = -torch.ones(4, d)
    u = u.clone().requires_grad_()
    loss = mttv_loss(u, v)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(u.grad).all()


def test_mttv_compat_form_can_be_nan_where_safe_form_is_not():
    u = torch.ones(4, 8)
    v = torch.ones(4, 8)
    assert not torch.isfinite(mttv_loss(u, v, compat=True))
    assert torch.isfinite(mttv_loss(u, v, compat=False))


def test_mttv_loss_without_filter_is_nt_xent_on_interleaved_rows():
    g = torch.Generator().manual_seed(5)
    u, v = torch.randn(2, 10, 4, generator=g)
    got = mttv_loss(u, v, temperature=0.3, low=0.0, high=2.0)
    assert got.item() == pytest.approx(nt_xent(u, v, 0.3).item(), rel=1e-5)
