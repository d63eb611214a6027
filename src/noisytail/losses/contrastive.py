"""Contrastive losses on embeddings (not classification losses, so not in ``LOSSES``).

- `info_nce`: one InfoNCE over ``N`` embeddings with integer ``ids``; every other row with the same
  id is a positive. ``ids`` = sample index over 2 views is SimCLR's NT-Xent (Chen et al. 2020,
  arXiv 2002.05709); over ``k`` views it is the k-view generalisation (all other views positive);
  ``ids`` = labels is SupCon's ``L_out`` (Khosla et al. 2020, arXiv 2004.11362).
- `nt_xent`: the two-view case.
- `mttv_loss`: MTTV's NT-Xent with "extreme-feature filtering" (arXiv 2509.08469, official code
  ``Loss/loss.py::Our_xent_loss``): similarities with ``|s| > high`` or ``|s| < low`` are dropped.
  Three forms (see `mttv_loss` and docs/methods.md, MTTV): ``"clean"`` (the official objective
  with its double removal of the self term fixed), ``"official"`` (exact, can be NaN) and
  ``"mean_log"`` (a per-anchor InfoNCE, noisytail's earlier default).

All functions compute in float32 whatever the input dtype (bf16 autocast is safe).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

INFO_NCE_REDUCTIONS = ("mean_log", "log_mean")


def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` in float32 ``[N, M]`` even under autocast, which would run it in bf16: at a
    temperature of 0.1 the logits' rounding error is large once positives align."""
    with torch.autocast(a.device.type, enabled=False):
        return a.float() @ b.float().t()


def info_nce(
    z: torch.Tensor, ids: torch.Tensor, *, temperature: float = 0.5, reduction: str = "mean_log"
) -> torch.Tensor:
    """Multi-positive InfoNCE over the anchors that have a positive.

    ``z [N, D]`` embeddings (rows are L2-normalised here; already-normalised input is unchanged),
    ``ids [N]`` integers. For anchor ``a`` with positives ``P(a) = {p != a : ids[p] == ids[a]}``
    and ``P_ap = exp(s_ap / t) / sum_{j != a} exp(s_aj / t)`` (``s`` the cosine similarity):

        "mean_log" (default, SimCLR's NT-Xent):  mean_a  -1/|P(a)| sum_{p in P(a)} log P_ap
        "log_mean" (MTTV's SimCLR baseline):     -log( mean_a 1/|P(a)| sum_{p in P(a)} P_ap )

    Anchors without a positive are left out of the mean; if no anchor has one the result is a
    zero that still carries a graph.
    """
    if reduction not in INFO_NCE_REDUCTIONS:
        raise ValueError(
            f"info_nce: reduction must be one of {INFO_NCE_REDUCTIONS}, got {reduction!r}"
        )
    if z.dim() != 2 or ids.shape != (z.shape[0],):
        raise ValueError(
            f"info_nce: z must be [N, D] and ids [N], got {tuple(z.shape)}, {tuple(ids.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"info_nce: temperature must be positive, got {temperature}")
    z = F.normalize(z.float(), dim=1)
    n = z.shape[0]
    logits = similarity(z, z) / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (ids.view(-1, 1) == ids.view(1, -1)) & ~self_mask
    n_pos = pos.sum(1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return z.sum() * 0.0
    if reduction == "log_mean":
        lp = log_prob[has_pos].masked_fill(~pos[has_pos], float("-inf"))
        per_anchor = torch.logsumexp(lp, dim=1) - torch.log(n_pos[has_pos].float())
        return math.log(per_anchor.shape[0]) - torch.logsumexp(per_anchor, dim=0)
    pos_log_prob = log_prob.masked_fill(~pos, 0.0).sum(1)
    per_anchor = -pos_log_prob[has_pos] / n_pos[has_pos]
    return per_anchor.mean()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent for two views ``z1, z2 [B, D]`` (row i of each is the same sample):
    mean over the ``2B`` anchors of ``-log softmax`` of the other view among the ``2B - 1``."""
    if z1.shape != z2.shape:
        raise ValueError(f"nt_xent: views differ in shape {tuple(z1.shape)} vs {tuple(z2.shape)}")
    ids = torch.arange(z1.shape[0], device=z1.device)
    return info_nce(torch.cat([z1, z2]), torch.cat([ids, ids]), temperature=temperature)


def interleave(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``[u0, v0, u1, v1, ...]``: MTTV's layout (positives are rows 2i and 2i+1)."""
    if u.shape != v.shape:
        raise ValueError(f"u and v differ in shape: {tuple(u.shape)} vs {tuple(v.shape)}")
    return torch.stack([u, v], dim=1).reshape(-1, u.shape[1])


def cosine_matrix(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarities ``[N, N]`` of rows of ``x``, norms clamped at ``eps`` as in the official
    code."""
    x = x.float()
    n = x.norm(dim=1, keepdim=True)
    return similarity(x, x) / (n * n.t()).clamp(min=eps)


def mttv_mask(sim: torch.Tensor, *, low: float = 0.1, high: float = 0.9) -> torch.Tensor:
    """True where a similarity is "extreme" and is filtered out: ``|s| > high`` or ``|s| < low``."""
    a = sim.abs()
    return (a > high) | (a < low)


MTTV_LOSS_FORMS = ("clean", "official", "mean_log")


def mttv_loss(
    u: torch.Tensor,
    v: torch.Tensor,
    *,
    temperature: float = 0.3,
    low: float = 0.1,
    high: float = 0.9,
    form: str = "clean",
) -> torch.Tensor:
    """MTTV's filtered contrastive loss for fused embeddings ``u, v [B, D]`` (``(u_i, v_i)`` are
    positives, every other row of the ``2B`` is a negative).

    ``S`` is the cosine matrix of the ``n = 2B`` interleaved rows, ``M = mttv_mask(S)`` the
    filtered entries, ``p(j)`` the positive of row ``j`` and ``e_ij = exp(s_ij / t)``.

    ``form="clean"`` (default): the official objective, a log of the mean, with the self term
    removed exactly once:

        r_j = e_{j,p(j)} [not M_{j,p(j)}] / sum_{i != j, not M_ij} e_ij,
        loss = -log( (1/n) sum_j r_j ).

    An anchor whose positive is filtered contributes ``r_j = 0`` but still counts in the mean, as
    in the official code. The denominator holds the positive whenever ``r_j > 0``, so it is never
    zero there. If every positive is filtered the loss is a zero with a graph (the official form
    gives ``inf``). Computed in log space (``logsumexp``).

    ``form="official"``: the official code's exact form. Masked entries of ``e^{S/t}`` are set to
    zero (the self term is masked already, since ``|1| > high``), then
    ``r_j = e_{j,p(j)}[unmasked] / (sum_i e_ij[unmasked] - e^{1/t})`` and
    ``loss = -log(mean_j r_j)``. Subtracting ``e^{1/t}`` removes the self term a second time, so
    the denominator can be zero or negative: NaN or inf when the batch is small or the
    similarities are extreme. With ``high >= 1`` the self term is not masked, the subtraction
    removes it once, and the form equals ``"clean"`` (the mask is then only ``|s| < low``: the
    official code's ImageNet variant).

    ``form="mean_log"``: InfoNCE over the unmasked entries, a mean of per-anchor logs,
    ``loss = mean_j -log r_j`` over the anchors whose positive is not filtered (the others are
    dropped). Not the official objective: it weighs anchors differently (noisytail's earlier
    default, kept for comparison).
    """
    if temperature <= 0:
        raise ValueError(f"mttv_loss: temperature must be positive, got {temperature}")
    if form not in MTTV_LOSS_FORMS:
        raise ValueError(f"mttv_loss: form must be one of {MTTV_LOSS_FORMS}, got {form!r}")
    x = interleave(u, v)
    n = x.shape[0]
    sim = cosine_matrix(x)
    with torch.no_grad():
        mask = mttv_mask(sim, low=low, high=high)
    partner = torch.arange(n, device=x.device) ^ 1  # 2i <-> 2i+1
    cols = torch.arange(n, device=x.device)
    if form == "official":
        e = torch.exp(sim / temperature).masked_fill(mask, 0.0)
        numer = e[partner, cols]
        denom = e.sum(0) - math.exp(1.0 / temperature)
        return -torch.log((numer / denom).mean())
    pos_kept = ~mask[cols, partner]
    if not bool(pos_kept.any()):
        return sim.sum() * 0.0
    self_mask = torch.eye(n, dtype=torch.bool, device=x.device)
    logits = (sim / temperature).masked_fill(mask | self_mask, float("-inf"))
    kept = pos_kept.nonzero().squeeze(1)
    # Rows of the kept anchors only: each holds its (unmasked) positive, so logsumexp is finite.
    log_den = torch.logsumexp(logits[kept], dim=1)
    log_ratio = (sim / temperature)[kept, partner[kept]] - log_den
    if form == "mean_log":
        return -log_ratio.mean()
    return math.log(n) - torch.logsumexp(log_ratio, dim=0)
