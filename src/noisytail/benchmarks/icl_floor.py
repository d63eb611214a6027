"""Where MOIT's contrastive loss can go: its chance value, its floor, and what a run reached.

`noisytail.losses.interpolated.interpolated_supcon` is a *supervised* contrastive loss: every key
with the anchor's label is a positive. Its smallest value is therefore not 0. For one anchor with
``P`` positives among its keys, ``-mean_p log p(p) >= -log mean_p p(p) >= log P`` (Jensen; the
key probabilities sum to one), with equality when all positives share the anchor's embedding and
the negatives are far. With 10 balanced classes, ``B = 128`` (``2B = 256`` rows) and MOIT's
memory of 2,000, the batch term alone can fall to about ``log 25`` and the memory term to about
``log 200``: together about 8.5, against 13.1 at chance. Mixup raises the floor further (a mixed
row's partner set pulls it towards a second class). So "under one nat below chance" is a
statement about the loss's range as much as about the network.

`icl_floor` measures that range by optimising free embeddings (one ``[D]`` vector per row, no
network) for batches drawn like MOIT's (labels, one permutation and one ``lam = max(l, 1 - l)``,
``l ~ Beta(alpha, alpha)`` per view), each batch using the other batches' rows as its cross-batch
memory. No network can do better on those batches than free embeddings, so the result is a lower
bound on the logged ``icl_loss``; `icl_progress` places a run's value between chance and floor.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.noise import symmetric_noise
from ..losses.interpolated import interpolated_supcon
from ..methods.moit import draw_mixup


def icl_chance(batch_size: int, memory_size: int = 0) -> float:
    """The loss when every similarity is equal: ``log(2B - 1)`` for the batch term plus
    ``log(2B - 1 + M)`` for the memory term when ``memory_size = M > 0`` (the anchor itself is
    never a key)."""
    keys = 2 * batch_size - 1
    return math.log(keys) + (math.log(keys + memory_size) if memory_size > 0 else 0.0)


def _draw_batches(
    num_batches: int,
    batch_size: int,
    class_probs: np.ndarray,
    alpha: float,
    rng: np.random.Generator,
    gen: torch.Generator,
) -> list[dict[str, torch.Tensor]]:
    """Labels from ``class_probs`` (``rng``), and per view MOIT's permutation and dominant
    ``lam`` (`noisytail.methods.moit.draw_mixup`, ``gen``): ``perm`` and ``lam`` are ``[2B]``."""
    out = []
    for _ in range(num_batches):
        y = torch.as_tensor(rng.choice(len(class_probs), size=batch_size, p=class_probs))
        views = [draw_mixup(batch_size, alpha, gen) for _ in range(2)]
        perm = torch.cat([p for p, _ in views])
        lam = torch.cat([torch.full((batch_size,), v) for _, v in views])
        out.append({"y": y, "perm": perm, "lam": lam})
    return out


def icl_floor(
    num_classes: int = 10,
    batch_size: int = 128,
    memory_size: int = 1744,
    *,
    temperature: float = 0.1,
    dim: int = 128,
    alpha: float = 1.0,
    num_batches: int = 8,
    steps: int = 300,
    lr: float = 0.1,
    class_probs: Any = None,
    seed: int = 0,
) -> dict[str, float]:
    """A lower bound on MOIT's logged ICL loss (batch term plus memory term), found by Adam on
    free embeddings ``[num_batches, 2B, dim]`` (see the module docstring).

    ``memory_size``: the memory keys each batch sees (MOIT: ``xbm_per_class * K * 2 - 2B``, i.e.
    1,744 for K = 10, B = 128; 0 for the batch term alone); the memory of batch ``t`` is the
    newest ``memory_size`` rows of batches ``t - 1, t - 2, ...`` (cyclically), so
    ``(num_batches - 1) * 2B >= memory_size`` is required. ``alpha <= 0``: no mixup
    (``lam = 1``). ``class_probs``: label distribution (uniform by default).

    Returns ``chance`` (`icl_chance`), ``floor`` (the optimised mean loss),
    ``jensen_bound_no_mixup`` (``mean log P`` over anchors for ``lam = 1``, the exact lower
    bound of the loss without mixup on the same labels) and ``start`` (the loss at the random
    initial embeddings).
    """
    if memory_size > (num_batches - 1) * 2 * batch_size:
        raise ValueError(
            f"icl_floor: memory_size {memory_size} needs more than {num_batches} batches of "
            f"{2 * batch_size} rows"
        )
    probs = (
        np.full(num_classes, 1.0 / num_classes)
        if class_probs is None
        else np.asarray(class_probs, dtype=float) / np.sum(class_probs)
    )
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    batches = _draw_batches(num_batches, batch_size, probs, alpha, rng, gen)
    emb = torch.randn(num_batches, 2 * batch_size, dim, generator=gen).requires_grad_()
    rows_y = torch.stack([bt["y"].repeat(2) for bt in batches])  # memory labels: dominant

    def memory_of(t: int, z: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if memory_size == 0:
            return None, None
        order = [(t - s) % num_batches for s in range(1, num_batches)]
        mz = torch.cat([z[s] for s in order])[:memory_size]
        my = torch.cat([rows_y[s] for s in order])[:memory_size]
        return mz, my

    def mean_loss(z: torch.Tensor) -> torch.Tensor:
        total = z.new_zeros(())
        for t, bt in enumerate(batches):
            mz, my = memory_of(t, z)
            y = bt["y"]
            total = total + interpolated_supcon(
                z[t],
                y,
                y[bt["perm"]],
                bt["perm"],
                bt["lam"],
                temperature=temperature,
                memory_z=mz,
                memory_labels=my,
            )
        return total / num_batches

    with torch.no_grad():
        start = float(mean_loss(emb))
    opt = torch.optim.Adam([emb], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        mean_loss(emb).backward()
        opt.step()
    with torch.no_grad():
        floor = float(mean_loss(emb))
    return {
        "chance": icl_chance(batch_size, memory_size),
        "floor": floor,
        "jensen_bound_no_mixup": _jensen_bound(batches, memory_size, rows_y),
        "start": start,
    }


def _jensen_bound(
    batches: list[dict[str, torch.Tensor]], memory_size: int, rows_y: torch.Tensor
) -> float:
    """``mean_r log P_r`` (batch term, plus the memory term's when there is a memory) for
    ``lam = 1``: ``P_r`` = rows with the anchor's label other than itself (plus memory keys with
    its label)."""
    n = len(batches)
    total = 0.0
    for t, bt in enumerate(batches):
        y = bt["y"].repeat(2)
        same = (y[:, None] == y[None, :]).sum(1) - 1
        value = torch.log(same.clamp_min(1).double())
        if memory_size:
            order = [(t - s) % n for s in range(1, n)]
            my = torch.cat([rows_y[s] for s in order])[:memory_size]
            in_mem = (y[:, None] == my[None, :]).sum(1)
            value = value + torch.log((same + in_mem).clamp_min(1).double())
        total += float(value.mean())
    return total / n


def icl_of_true_classes(
    num_classes: int = 10,
    batch_size: int = 128,
    memory_size: int = 1744,
    *,
    noise_rate: float = 0.0,
    temperature: float = 0.1,
    alpha: float = 1.0,
    repeats: int = 10,
    seed: int = 0,
) -> float:
    """The logged ICL (batch plus memory term) of an ideal encoder for the *true* classes: each
    image at its true class's corner of a simplex (one-hot directions, ``dim = num_classes``),
    a mixed image at the normalised mix of its two images' corners, under labels with
    ``noise_rate`` exact symmetric flips in each batch (`noisytail.data.noise.symmetric_noise`,
    MOIT's: a flipped label is another class, uniformly) that define the positive sets. Batches
    drawn as in `icl_floor` (uniform classes), the memory of ``memory_size`` rows embedded the
    same way; mean over ``repeats`` batches.

    With clean labels and no mixup this is about `icl_floor`'s Jensen bound; with noisy labels
    the flipped positives sit at other corners, so a network that learns the true classes
    *raises* the loss, above chance at 40 % noise: the logged value cannot show learning there.
    """
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    corners = torch.eye(num_classes)
    uniform = np.full(num_classes, 1.0 / num_classes)

    def draw() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        (bt,) = _draw_batches(1, batch_size, uniform, alpha, rng, gen)
        true = bt["y"]
        noisy = symmetric_noise(true.numpy(), num_classes=num_classes, rate=noise_rate, rng=rng)
        given = torch.as_tensor(noisy)
        mix = bt["lam"][:, None] * corners[true.repeat(2)]
        z = F.normalize(mix + (1 - bt["lam"][:, None]) * corners[true[bt["perm"]]], dim=1)
        return z, given, bt["perm"], bt["lam"]

    values = []
    for _ in range(repeats):
        z, given, perm, lam = draw()
        mz, my = None, None
        if memory_size:
            rows = [draw() for _ in range(-(-memory_size // (2 * batch_size)))]
            mz = torch.cat([r[0] for r in rows])[:memory_size]
            my = torch.cat([r[1].repeat(2) for r in rows])[:memory_size]
        loss = interpolated_supcon(
            z, given, given[perm], perm, lam, temperature=temperature, memory_z=mz, memory_labels=my
        )
        values.append(float(loss))
    return float(np.mean(values))


def icl_progress(logged: float, chance: float, floor: float) -> float:
    """The share of the way from chance (0) to the floor (1) that a logged loss has gone."""
    if chance <= floor:
        raise ValueError(f"icl_progress: chance {chance} must exceed the floor {floor}")
    return (chance - logged) / (chance - floor)


def read_moit_run(run_dir: Any, *, checkpoint: str = "last", knn_k: int = 200) -> dict[str, Any]:
    """A finished MOIT run folder: its last logged ``icl_loss`` and test accuracy, and the
    weighted-kNN test accuracy (`noisytail.probes.knn_classify`, ``k = knn_k``, ``t = 0.1``) of
    its L2-normalised 128-d projection (``MOIT.embed``, the space its detection uses), with the
    training pool's given labels as the vote. Needs the run's data set on this machine."""
    from ..methods.moit import MOIT
    from ..probes import knn_classify
    from ..runfolder import read_metrics
    from ..train import Run

    run = Run.from_folder(run_dir, checkpoint)
    method = run.method
    if not isinstance(method, MOIT):
        raise TypeError(f"{run_dir}: a {type(method).__name__} run has no MOIT projection")
    bs = run.cfg.train.eval_batch_size

    @torch.no_grad()
    def embed(data: Any) -> torch.Tensor:
        method.eval()
        return torch.cat([method.embed(x).cpu() for x, _ in data.iter_plain(bs)])

    prepared = run.data
    knn = knn_classify(
        embed(run.train_data),
        prepared.train_labels,
        embed(run.test_data),
        prepared.bundle.test.labels,
        k=knn_k,
        t=0.1,
        num_classes=prepared.bundle.num_classes,
    )
    records = [r for r in read_metrics(f"{run_dir}/metrics.jsonl") if "icl_loss" in r]
    last = records[-1] if records else {}
    noise = run.cfg.noise
    return {
        "noise": "none" if noise.kind == "none" else f"{noise.kind} {noise.rate:g}",
        "epoch": last.get("epoch"),
        "icl_loss": last.get("icl_loss"),
        "test_accuracy": last.get("test_accuracy", last.get("test_acc")),
        "projection_knn_accuracy": float(knn["accuracy"]),
    }
