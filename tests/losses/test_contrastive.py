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


def _mttv_reference(u, v, t, low, high, form):
    """Straight loops over the interleaved rows (independent of the vectorised code)."""
    x = interleave(u, v).double()
    n = len(x)
    s = [[float(F.cosine_similarity(x[i], x[j], dim=0)) for j in range(n)] for i in range(n)]
    ext = [[abs(s[i][j]) > high or abs(s[i][j]) < low for j in range(n)] for i in range(n)]
    ratios = []
    for j in range(n):
        p = j + 1 if j % 2 == 0 else j - 1
        num = 0.0 if ext[p][j] else math.exp(s[p][j] / t)
        if form == "official":
            col = sum(math.exp(s[i][j] / t) for i in range(n) if not ext[i][j])
            ratios.append(num / (col - math.exp(1 / t)))
        else:
            den = sum(math.exp(s[i][j] / t) for i in range(n) if i != j and not ext[i][j])
            ratios.append(num / den if num > 0 else 0.0)
    if form == "mean_log":
        kept = [r for r in ratios if r > 0]
        return -sum(math.log(r) for r in kept) / len(kept)
    return -math.log(sum(ratios) / n)


@pytest.mark.parametrize("form", ["clean", "official", "mean_log"])
def test_mttv_loss_matches_reference_on_a_non_degenerate_batch(form):
    g = torch.Generator().manual_seed(3)
    u = torch.randn(24, 6, generator=g)
    v = u + 0.8 * torch.randn(24, 6, generator=g)
    mask = mttv_mask(cosine_matrix(interleave(u, v)))
    off = ~torch.eye(48, dtype=torch.bool)
    assert 0.05 < mask[off].float().mean() < 0.6  # the filter is active but not everything
    assert bool(mask[torch.arange(48), torch.arange(48) ^ 1].any())  # some positive is filtered
    got = mttv_loss(u, v, temperature=0.3, form=form).item()
    assert math.isfinite(got)
    assert got == pytest.approx(_mttv_reference(u, v, 0.3, 0.1, 0.9, form), rel=1e-5)


def _rows_with_gram(gram):
    """Rows whose cosine matrix is ``gram`` (Cholesky factor), split into interleaved u, v."""
    x = torch.linalg.cholesky(torch.tensor(gram, dtype=torch.float64)).float()
    return x[0::2].clone(), x[1::2].clone()


# Rows [u0, v0, u1, v1] with these cosines; t = 1, low 0.1, high 0.9. Filtered: (u0, u1) at 0.05
# (too orthogonal) and the positive (u1, v1) at 0.95 (too similar).
GRAM = [
    [1.0, 0.6, 0.05, 0.2],
    [0.6, 1.0, 0.5, 0.45],
    [0.05, 0.5, 1.0, 0.95],
    [0.2, 0.45, 0.95, 1.0],
]
E = math.exp
R0 = E(0.6) / (E(0.6) + E(0.2))  # anchor u0: positive v0; u1 filtered; v1 a negative
R1 = E(0.6) / (E(0.6) + E(0.5) + E(0.45))  # anchor v0: positive u0; u1, v1 negatives
# anchors u1, v1: their positive is filtered, r = 0


def test_mttv_clean_form_by_hand():
    u, v = _rows_with_gram(GRAM)
    got = mttv_loss(u, v, temperature=1.0, form="clean").item()
    # log of the mean over all 4 anchors; the two with a filtered positive count as 0
    assert got == pytest.approx(-math.log((R0 + R1 + 0 + 0) / 4), rel=1e-5)


def test_mttv_mean_log_form_by_hand():
    u, v = _rows_with_gram(GRAM)
    got = mttv_loss(u, v, temperature=1.0, form="mean_log").item()
    # mean of the per-anchor logs over the 2 anchors whose positive is kept
    assert got == pytest.approx(-(math.log(R0) + math.log(R1)) / 2, rel=1e-5)


def test_mttv_official_and_clean_forms_by_hand_on_equal_similarities():
    # 4 rows, every pair at cosine 0.8 (x_i = sqrt(.8) e_0 + sqrt(.2) e_(i+1)); t = 1, nothing
    # filtered but the self term. Clean: r = e^.8 / (3 e^.8) = 1/3. Official: the self term (e^1)
    # is subtracted although already masked, r = e^.8 / (3 e^.8 - e^1) = 1 / (3 - e^.2).
    x = torch.cat([math.sqrt(0.8) * torch.ones(4, 1), math.sqrt(0.2) * torch.eye(4)], dim=1)
    u, v = x[0::2], x[1::2]
    assert mttv_loss(u, v, temperature=1.0, form="clean").item() == pytest.approx(math.log(3))
    assert mttv_loss(u, v, temperature=1.0, form="mean_log").item() == pytest.approx(math.log(3))
    official = mttv_loss(u, v, temperature=1.0, form="official").item()
    assert official == pytest.approx(math.log(3 - math.exp(0.2)), rel=1e-5)


def test_mttv_official_form_with_high_two_is_the_clean_form_and_the_imagenet_mask():
    # high = 2 never filters |s| > high, so the self term stays in and the official subtraction
    # removes it once: the official ImageNet variant (mask |s| < low only) equals the clean form.
    g = torch.Generator().manual_seed(6)
    u = torch.randn(16, 6, generator=g)
    v = u + 0.8 * torch.randn(16, 6, generator=g)
    sim = cosine_matrix(interleave(u, v))
    assert torch.equal(mttv_mask(sim, low=0.1, high=2.0), sim.abs() < 0.1)
    off = ~torch.eye(32, dtype=torch.bool)
    assert bool((sim[off].abs() > 0.9).any())  # the default high would have filtered some
    clean = mttv_loss(u, v, high=2.0, form="clean").item()
    official = mttv_loss(u, v, high=2.0, form="official").item()
    assert official == pytest.approx(clean, rel=1e-4)
    assert mttv_loss(u, v, high=0.9, form="clean").item() != pytest.approx(clean, rel=1e-3)


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
@pytest.mark.parametrize("form", ["clean", "mean_log"])
def test_mttv_safe_forms_are_finite_when_every_similarity_is_extreme(case, form):
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
    loss = mttv_loss(u, v, form=form)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(u.grad).all()


def test_mttv_official_form_can_be_nan_where_the_others_are_not():
    u = torch.ones(4, 8)
    v = torch.ones(4, 8)
    assert not torch.isfinite(mttv_loss(u, v, form="official"))
    assert torch.isfinite(mttv_loss(u, v, form="clean"))
    assert torch.isfinite(mttv_loss(u, v, form="mean_log"))


def test_mttv_loss_without_filter_is_nt_xent_on_interleaved_rows():
    # mean_log without a filter is NT-Xent; clean is the log of the mean of the same ratios
    g = torch.Generator().manual_seed(5)
    u, v = torch.randn(2, 10, 4, generator=g)
    got = mttv_loss(u, v, temperature=0.3, low=0.0, high=2.0, form="mean_log")
    assert got.item() == pytest.approx(nt_xent(u, v, 0.3).item(), rel=1e-5)
    z = F.normalize(interleave(u, v), dim=1)
    logits = (z @ z.T / 0.3).masked_fill(torch.eye(20, dtype=torch.bool), float("-inf"))
    ratios = torch.softmax(logits, dim=1)[torch.arange(20), torch.arange(20) ^ 1]
    clean = mttv_loss(u, v, temperature=0.3, low=0.0, high=2.0, form="clean")
    assert clean.item() == pytest.approx(-math.log(ratios.mean().item()), rel=1e-5)


def test_mttv_loss_rejects_an_unknown_form():
    with pytest.raises(ValueError, match="form"):
        mttv_loss(torch.ones(2, 3), torch.ones(2, 3), form="compat")


def test_the_losses_keep_float32_similarities_under_bf16_autocast():
    # the training step runs under bf16 autocast on CPUs with AVX512-BF16 (and on GPUs): the
    # similarity logits at temperature 0.1 must not be rounded to bf16's 8 bits
    from noisytail.losses.interpolated import interpolated_supcon

    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, 32, generator=g)
    z = torch.cat([base, base + 0.05 * torch.randn(16, 32, generator=g)])  # aligned positives
    ids = torch.arange(16).repeat(2)
    labels = torch.arange(16) % 4
    perm = torch.roll(torch.arange(16), 1)

    def losses():
        return torch.stack(
            [
                info_nce(z, ids, temperature=0.1),
                nt_xent(z[:16], z[16:], temperature=0.1),
                interpolated_supcon(z, labels, labels[perm], perm, 0.7, temperature=0.1),
            ]
        )

    want = losses()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = losses()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
