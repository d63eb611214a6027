"""MOIT's Interpolated Contrastive Learning loss (ICL; Ortego et al., CVPR 2021,
arXiv 2012.04462, Sec. 3.1; official code ``utils_labelNoise/utils_noise.py``,
``InterpolatedContrastiveLearning_loss`` and the mask builders beside it).

Each of the two view batches is mixed with its own permutation: row ``r`` of ``z [2B, D]`` is the
embedding of ``lam_r * x_i + (1 - lam_r) * x_{perm_r}`` (``i = r mod B``; the dominant sample ``i``
has ``lam_r >= 0.5``). With ``s`` the cosine similarity and ``t`` the temperature, the
log-probability of key ``c`` for anchor ``r`` is ``lp(r, c) = s_rc/t - log sum_{c' != r}
exp(s_rc'/t)`` (the anchor itself is out of the denominator, positives are in it). Two positive
sets, as the official masks:

- dominant set: ``Sup_a(r) = {c : y_a[c mod B] == y_a[i], c mod B != i}`` (same noisy label, both
  views of ``i`` left out) and ``Uns_a(r) = {the other view of i}``;
- partner set: ``Sup_b(r) = {c != r : y_a[c mod B] == y_b[r]}`` (label of the partner) and
  ``Uns_b(r) = {c != r : c mod B == perm_r}`` (both views of the partner).

``mean_X(r) = (sum_{Sup_X} lp + sum_{Uns_X} lp) / (|Sup_X| + |Uns_X|)`` — the sets are added as
multisets, so in the partner set the partner's views (which are in both ``Sup_b`` and ``Uns_b``)
count twice, as in the official code. The loss is

    ICL = mean_r  -[ lam_r * mean_a(r) + (1 - lam_r) * mean_b(r) ].

With ``lam = 1`` the dominant set is every other row with the same label: the loss is SupCon's
``L_out`` (`info_nce` with ``ids = labels``).

**Cross-batch memory (XBM).** With ``memory_z [M, D]`` / ``memory_labels [M]`` (earlier batches'
embeddings, detached) the same loss is computed again with the batch as queries against the keys
``[z.detach(); memory_z]`` and added (weight 1). Over the batch part of the keys the masks are the
ones above; a memory key is a positive of the dominant (partner) set when its label equals
``y_a[i]`` (``y_b[r]``), and never an unsupervised positive. This is the official computation,
whose memory holds the current batch at the write pointer (pass only the *other* entries here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .contrastive import similarity


def _per_row(x: torch.Tensor | float, b: int, what: str, device: torch.device) -> torch.Tensor:
    """Broadcast a scalar, a ``[B]`` (same for both views) or a ``[2B]`` tensor to ``[2B]``."""
    t = torch.as_tensor(x, device=device)
    if t.dim() == 0:
        return t.expand(2 * b)
    if t.shape == (b,):
        return t.repeat(2)
    if t.shape == (2 * b,):
        return t
    raise ValueError(
        f"interpolated_supcon: {what} must be a scalar, [B] or [2B] with B={b}, "
        f"got shape {tuple(t.shape)}"
    )


def _mean_log_prob(log_prob: torch.Tensor, sup: torch.Tensor, uns: torch.Tensor) -> torch.Tensor:
    """``(sum_sup lp + sum_uns lp) / (|sup| + |uns|)`` per row (0 where both sets are empty)."""
    lp = torch.where(sup | uns, log_prob, torch.zeros_like(log_prob))  # no 0 * -inf
    total = (lp * sup).sum(1) + (lp * uns).sum(1)
    count = sup.sum(1) + uns.sum(1)
    return total / count.clamp_min(1)


def interpolated_supcon(
    z: torch.Tensor,
    labels_a: torch.Tensor,
    labels_b: torch.Tensor,
    perm: torch.Tensor,
    lam: torch.Tensor | float,
    *,
    temperature: float = 0.1,
    memory_z: torch.Tensor | None = None,
    memory_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """MOIT's ICL loss (see the module docstring), plus its XBM term when a memory is given.

    ``z [2B, D]``: embeddings of the two mixed view batches (view 1 rows ``0..B-1``, view 2 rows
    ``B..2B-1``); rows are L2-normalised here. ``labels_a [B]``: noisy labels of the dominant
    samples. ``perm``: the partner of each row, an index in ``[0, B)``; ``[B]`` when both views
    share one permutation, ``[2B]`` when each view has its own (MOIT). ``labels_b``: the partner's
    labels, ``[B]`` or ``[2B]`` like ``perm`` (normally ``labels_a[perm]``). ``lam``: the dominant
    weight, a scalar, ``[B]`` or ``[2B]`` (MOIT: one scalar per view, i.e. ``[2B]``).
    ``memory_z [M, D]``, ``memory_labels [M]``: the cross-batch memory (treated as constants).
    Computed in float32; returns a scalar.
    """
    if z.dim() != 2 or z.shape[0] % 2:
        raise ValueError(f"interpolated_supcon: z must be [2B, D], got {tuple(z.shape)}")
    if temperature <= 0:
        raise ValueError(f"interpolated_supcon: temperature must be positive, got {temperature}")
    b = z.shape[0] // 2
    dev = z.device
    if labels_a.shape != (b,):
        raise ValueError(
            f"interpolated_supcon: labels_a must be [B] with B={b}, got {tuple(labels_a.shape)}"
        )
    ya = labels_a.to(dev).long()
    yb = _per_row(labels_b.long(), b, "labels_b", dev)
    pr = _per_row(perm.long(), b, "perm", dev)
    if bool(((pr < 0) | (pr >= b)).any()):
        raise ValueError(f"interpolated_supcon: perm entries must lie in [0, {b})")
    lam_r = _per_row(lam, b, "lam", dev).float()

    z = F.normalize(z.float(), dim=1)
    rows = torch.arange(2 * b, device=dev)
    sample = rows % b  # sample index of each row (and of each batch key)
    ya_rows = ya[sample]
    self_mask = rows[:, None] == rows[None, :]
    same_sample = sample[:, None] == sample[None, :]
    sup_a = (ya_rows[:, None] == ya_rows[None, :]) & ~same_sample
    uns_a = same_sample & ~self_mask
    sup_b = (yb[:, None] == ya_rows[None, :]) & ~self_mask
    uns_b = (pr[:, None] == sample[None, :]) & ~self_mask

    def term(keys: torch.Tensor, masks: tuple[torch.Tensor, ...], self_cols: torch.Tensor):
        logits = similarity(z, keys) / temperature
        logits = logits.masked_fill(self_cols, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        sa, ua, sb, ub = masks
        mean_a = _mean_log_prob(log_prob, sa, ua)
        mean_b = _mean_log_prob(log_prob, sb, ub)
        return -(lam_r * mean_a + (1.0 - lam_r) * mean_b).mean()

    loss = term(z, (sup_a, uns_a, sup_b, uns_b), self_mask)
    if memory_z is None:
        return loss
    if memory_labels is None or memory_z.dim() != 2 or memory_labels.shape != memory_z.shape[:1]:
        raise ValueError("interpolated_supcon: memory_z [M, D] needs memory_labels [M]")
    if memory_z.shape[1] != z.shape[1]:
        raise ValueError(
            f"interpolated_supcon: memory_z has dim {memory_z.shape[1]}, z has {z.shape[1]}"
        )
    mz = F.normalize(memory_z.detach().float().to(dev), dim=1)
    my = memory_labels.to(dev).long()
    keys = torch.cat([z.detach(), mz])
    no = torch.zeros(2 * b, mz.shape[0], dtype=torch.bool, device=dev)
    masks = (
        torch.cat([sup_a, ya_rows[:, None] == my[None, :]], dim=1),
        torch.cat([uns_a, no], dim=1),
        torch.cat([sup_b, yb[:, None] == my[None, :]], dim=1),
        torch.cat([uns_b, no], dim=1),
    )
    return loss + term(keys, masks, torch.cat([self_mask, no], dim=1))
