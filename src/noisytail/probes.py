"""Probes of frozen features: a linear probe and the weighted-kNN classifier.

- `linear_probe(...)`: a fresh linear layer trained on the frozen features (AdamW, cosine
  schedule; MTTV's protocol: lr 0.005, weight decay 0, 100 epochs) and tested.
- `knn_classify(...)` / `knn_predict(...)`: the weighted kNN monitor of Wu et al. 2018 / MoCo
  (k=200, t=0.1) on `noisytail.neighbors.weighted_knn_scores`: cosine similarities to the training
  features, the top-k neighbours vote with weight ``exp(s / t)``.

Inputs are features ``[N, D]`` and labels ``[N]`` (tensors or arrays; copied to the CPU, detached).
Results are `noisytail.evaluate.classification_metrics` dicts (accuracy, balanced accuracy,
many / medium / few-shot accuracy by the fixed >100 / <20 thresholds, ...) plus, with 3 classes
or more, ``thirds_accuracy``: ``{"many", "medium", "few"}`` by thirds of the classes sorted by
training frequency (MTTV's split, `noisytail.groups.frequency_groups`; no group is ever empty,
unlike the thresholds on CIFAR-10-LT, whose smallest class has 50 images). Both come from
``class_counts``: pass the
training-set class frequencies (by true class where known); by default they are counted from
``train_labels``. Never from the test set. `noisytail.evaluate_ssl` runs both on an encoder.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .evaluate import classification_metrics
from .groups import frequency_groups, group_accuracy
from .neighbors import weighted_knn_scores


def _as_tensor(x: Any, dtype: torch.dtype) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.detach().to("cpu", dtype)


def _metrics(
    test_labels: torch.Tensor,
    probs: torch.Tensor,
    class_counts: Any,
    train_labels: torch.Tensor,
    num_classes: int,
) -> dict[str, Any]:
    counts = (
        np.bincount(train_labels.numpy(), minlength=num_classes)
        if class_counts is None
        else np.asarray(class_counts)
    )
    metrics = classification_metrics(test_labels.numpy(), probs.numpy(), counts)
    if len(counts) >= 3:  # MTTV's split: thirds by training frequency, never an empty group
        metrics["thirds_accuracy"] = group_accuracy(
            metrics["per_class_accuracy"], frequency_groups(counts)
        )
    return metrics


def _num_classes(num_classes: int | None, class_counts: Any, *labels: torch.Tensor) -> int:
    if num_classes is not None:
        return int(num_classes)
    if class_counts is not None:
        return len(class_counts)
    return int(max(int(lab.max()) for lab in labels if lab.numel()) + 1)


def linear_probe(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    *,
    epochs: int = 100,
    lr: float = 0.005,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    num_classes: int | None = None,
    class_counts: Any = None,
    standardize: bool = True,
    seed: int = 0,
    return_probe: bool = False,
) -> dict[str, Any]:
    """Train a linear classifier on frozen features and test it.

    AdamW with a per-step cosine schedule from ``lr`` to 0, cross-entropy, shuffled mini-batches
    (seeded). ``standardize`` centres and scales each feature by the training mean/std first (an
    affine map folded into the probe; still a linear classifier of the features). The features
    are detached copies: nothing flows back into an encoder. Returns
    `classification_metrics` plus ``probe_epochs`` and ``train_accuracy``; with ``return_probe``
    also ``"probe"``: ``(layer, mean, std)``.
    """
    xtr = _as_tensor(train_feats, torch.float32)
    xte = _as_tensor(test_feats, torch.float32)
    ytr = _as_tensor(train_labels, torch.long)
    yte = _as_tensor(test_labels, torch.long)
    k = _num_classes(num_classes, class_counts, ytr, yte)
    if standardize:
        mu = xtr.mean(0, keepdim=True)
        sd = xtr.std(0, keepdim=True).clamp_min(1e-6) if len(xtr) > 1 else torch.ones_like(mu)
    else:
        mu, sd = torch.zeros(1, xtr.shape[1]), torch.ones(1, xtr.shape[1])
    xtr_s, xte_s = (xtr - mu) / sd, (xte - mu) / sd
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(xtr.shape[1], k)
    with torch.no_grad():
        bound = 1.0 / math.sqrt(xtr.shape[1])
        layer.weight.uniform_(-bound, bound, generator=gen)
        layer.bias.zero_()
    opt = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(xtr_s)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = max(1, epochs * steps_per_epoch)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for s in range(steps_per_epoch):
            sel = order[s * batch_size : (s + 1) * batch_size]
            if len(sel) == 0:
                continue
            for g in opt.param_groups:
                g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(layer(xtr_s[sel]), ytr[sel])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        probs = torch.softmax(layer(xte_s), dim=1)
        train_acc = float((layer(xtr_s).argmax(1) == ytr).float().mean()) if n else 0.0
    out = _metrics(yte, probs, class_counts, ytr, k)
    out["probe_epochs"] = epochs
    out["train_accuracy"] = train_acc
    if return_probe:
        out["probe"] = (layer, mu, sd)
    return out


@torch.no_grad()
def knn_predict(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    *,
    k: int = 200,
    t: float = 0.1,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Weighted-kNN class probabilities ``[M, K]`` of the test features: the scores of
    `noisytail.neighbors.weighted_knn_scores` (cosine similarity, top-``k`` training neighbours,
    weights ``exp((s - 1) / t)``) normalised to sum to one."""
    xtr = _as_tensor(train_feats, torch.float32)
    ytr = _as_tensor(train_labels, torch.long)
    nc = int(num_classes) if num_classes is not None else int(ytr.max()) + 1
    scores = weighted_knn_scores(
        _as_tensor(test_feats, torch.float32), xtr, ytr, nc, k=k, t=t, block_size=chunk
    )
    return scores / scores.sum(1, keepdim=True).clamp_min(1e-30)


def knn_classify(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    *,
    k: int = 200,
    t: float = 0.1,
    num_classes: int | None = None,
    class_counts: Any = None,
) -> dict[str, Any]:
    """`knn_predict` on the test features, scored by `classification_metrics` (plus ``k``,
    ``t``)."""
    ytr = _as_tensor(train_labels, torch.long)
    yte = _as_tensor(test_labels, torch.long)
    nc = _num_classes(num_classes, class_counts, ytr, yte)
    probs = knn_predict(train_feats, ytr, test_feats, k=k, t=t, num_classes=nc)
    out = _metrics(yte, probs, class_counts, ytr, nc)
    out["k"], out["t"] = k, t
    return out
