"""MOIT's interpolated contrastive loss: SupCon at lam = 1, hand-worked values, a brute-force
reference of the definition, the memory term."""

import math

import pytest
import torch
import torch.nn.functional as F

from noisytail.losses.contrastive import info_nce
from noisytail.losses.interpolated import interpolated_supcon


def reference(z, ya, yb, perm, lam, t, mem_z=None, mem_y=None):
    """The definition, one anchor and one key at a time (official masks, multiset counts)."""
    z = F.normalize(z.double(), dim=1)
    n = z.shape[0]
    b = n // 2
    keys = [(z[c], int(ya[c % b]), c) for c in range(n)]

    def term(key_list):
        total = 0.0
        for r in range(n):
            i, p = r % b, int(perm[r])
            sims = {idx: float(z[r] @ k) / t for idx, (k, _, c) in enumerate(key_list) if c != r}
            log_den = math.log(sum(math.exp(s) for s in sims.values()))
            lp = {idx: s - log_den for idx, s in sims.items()}
            a_num = a_cnt = b_num = b_cnt = 0.0
            for idx, (_, lab, c) in enumerate(key_list):
                if c == r:
                    continue
                in_batch = c is not None and c >= 0
                same = in_batch and c % b == i
                if lab == int(ya[i]) and not same:  # Sup_a
                    a_num, a_cnt = a_num + lp[idx], a_cnt + 1
                if same:  # Uns_a (the other view)
                    a_num, a_cnt = a_num + lp[idx], a_cnt + 1
                if lab == int(yb[r]):  # Sup_b
                    b_num, b_cnt = b_num + lp[idx], b_cnt + 1
                if in_batch and c % b == p:  # Uns_b
                    b_num, b_cnt = b_num + lp[idx], b_cnt + 1
            lr = float(lam[r])
            total += -(lr * a_num / max(a_cnt, 1) + (1 - lr) * b_num / max(b_cnt, 1))
        return total / n

    loss = term(keys)
    if mem_z is not None:
        mz = F.normalize(mem_z.double(), dim=1)
        loss += term(keys + [(mz[m], int(mem_y[m]), -1 - m) for m in range(mz.shape[0])])
    return loss


def random_case(b=6, d=5, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2 * b, d, generator=g)
    ya = torch.randint(0, k, (b,), generator=g)
    perm = torch.cat([torch.randperm(b, generator=g), torch.randperm(b, generator=g)])
    lam = torch.cat([torch.full((b,), 0.8), torch.full((b,), 0.6)])
    return z, ya, ya[perm], perm, lam


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lambda_one_is_supervised_contrastive(seed):
    z, ya, yb, perm, _ = random_case(seed=seed)
    got = interpolated_supcon(z, ya, yb, perm, 1.0, temperature=0.1)
    want = info_nce(z, ya.repeat(2), temperature=0.1)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_three_embeddings_by_hand():
    """B = 1 (two views z0, z1) and one memory entry m, temperature 1, lam = 0.75.

    The batch term is 0 (each view's only key is the other view). Memory term, row 0 with keys
    {z1, m}: lp01 = 0 - log(1 + e^0.6), lp0m = 0.6 - log(1 + e^0.6). With m of the same label:
    dominant set {m (sup), z1 (unsup)}, partner set (partner = itself) {z1 (sup), m (sup),
    z1 (unsup)}: row0 = -(0.75 (lp01 + lp0m)/2 + 0.25 (2 lp01 + lp0m)/3) = 0.762488; likewise
    row1 with s = 0.8: 0.804434; loss = 0.783461. With m of another label both sets reduce to
    the other view: loss = (log(1 + e^0.6) + log(1 + e^0.8)) / 2 = 1.104294.
    """
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    m = torch.tensor([[0.6, 0.8]])
    y, perm = torch.tensor([0]), torch.tensor([0])
    kw = dict(temperature=1.0, memory_z=m)
    same = interpolated_supcon(z, y, y, perm, 0.75, memory_labels=torch.tensor([0]), **kw)
    other = interpolated_supcon(z, y, y, perm, 0.75, memory_labels=torch.tensor([1]), **kw)
    assert same.item() == pytest.approx(0.783461, abs=1e-6)
    assert other.item() == pytest.approx(1.104294, abs=1e-6)
    a, c = math.log(1 + math.exp(0.6)), math.log(1 + math.exp(0.8))
    row0 = -(0.75 * ((-a) + (0.6 - a)) / 2 + 0.25 * (2 * (-a) + (0.6 - a)) / 3)
    row1 = -(0.75 * ((-c) + (0.8 - c)) / 2 + 0.25 * (2 * (-c) + (0.8 - c)) / 3)
    assert same.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 3])
def test_matches_the_definition_with_memory(seed):
    z, ya, yb, perm, lam = random_case(seed=seed)
    g = torch.Generator().manual_seed(seed + 10)
    mem_z, mem_y = torch.randn(7, 5, generator=g), torch.randint(0, 3, (7,), generator=g)
    got = interpolated_supcon(z, ya, yb, perm, lam, temperature=0.5)
    assert got.item() == pytest.approx(reference(z, ya, yb, perm, lam, 0.5), rel=1e-5)
    got = interpolated_supcon(
        z, ya, yb, perm, lam, temperature=0.5, memory_z=mem_z, memory_labels=mem_y
    )
    want = reference(z, ya, yb, perm, lam, 0.5, mem_z, mem_y)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_empty_memory_repeats_the_batch_term_and_memory_gets_no_gradient():
    z, ya, yb, perm, lam = random_case()
    base = interpolated_supcon(z, ya, yb, perm, lam)
    empty = interpolated_supcon(
        z, ya, yb, perm, lam, memory_z=torch.zeros(0, 5), memory_labels=torch.zeros(0).long()
    )
    assert empty.item() == pytest.approx(2 * base.item(), rel=1e-6)
    mem = torch.randn(4, 5, requires_grad=True)
    zz = z.clone().requires_grad_(True)
    interpolated_supcon(zz, ya, yb, perm, lam, memory_z=mem, memory_labels=ya[:4]).backward()
    assert mem.grad is None and zz.grad is not None and torch.isfinite(zz.grad).all()


def test_bad_shapes_are_refused():
    z, ya, yb, perm, lam = random_case()
    with pytest.raises(ValueError, match="2B"):
        interpolated_supcon(z[:-1], ya, yb, perm, lam)
    with pytest.raises(ValueError, match="perm"):
        interpolated_supcon(z, ya, yb, perm[:5], lam)
    with pytest.raises(ValueError, match="memory_labels"):
        interpolated_supcon(z, ya, yb, perm, lam, memory_z=torch.randn(3, 5))
