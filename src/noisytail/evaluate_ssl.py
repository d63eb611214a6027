"""Evaluation of a (pre-trained) encoder on frozen features: linear probe and weighted kNN.

- `extract_features(model, data)`: ``model.features`` over a `PoolData`, un-augmented, in eval
  mode, under ``torch.no_grad`` -> CPU float32 ``[N, D]`` without a graph.
- `linear_probe(...)`: a fresh linear layer trained on the frozen features (AdamW, cosine schedule;
  MTTV's protocol: lr 0.005, weight decay 0, 100 epochs) and tested.
- `knn_classify(...)`: the weighted kNN monitor of Wu et al. 2018 / MoCo (k=200, t=0.1): cosine
  similarities to the training features, top-k neighbours vote with weight ``exp(s / t)``.
- `evaluate_encoder(...)`: both, for a model and train/test pools.
- `save_encoder(model, path)`: ``{"model": state_dict}``, read by ``model.init=...``
  (``noisytail.train.load_init``).
- `export_pretrained(run_dir)`: for a finished pre-training run, ``encoder.pt`` (no head) plus
  ``ssl_evaluation.json`` (both of the above on the run's own data).
- `frequency_groups(counts)` / `group_accuracy(per_class, groups)`: many / medium / few classes as
  thirds by training frequency, and their mean accuracies (for when the fixed shot thresholds
  leave a group empty); `balanced_indices(labels, per_class)`: a balanced labelled probe split.

Results are `noisytail.evaluate.classification_metrics` dicts (accuracy, balanced accuracy,
many / medium / few-shot accuracy, ...). Shot groups come from ``class_counts``: pass the
training-set class frequencies (by true class where known); by default they are counted from
``train_labels``. Never from the test set.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import seeds
from .data.loader import PoolData
from .evaluate import classification_metrics
from .neighbors import weighted_knn_scores
from .runfolder import write_checkpoint, write_json

#: The loss the two-stage recipe fine-tunes a pre-trained encoder with (``method.loss`` of ERM):
#: the class-balanced focal loss. Chosen by measurement, not taken from a paper (we could not read
#: Karthik et al.'s loss; docs/methods.md, Two-stage recipe): the best mean test accuracy of six
#: candidates (CE, GCE, SCE, logit adjustment, class-balanced focal, logit-adjusted GCE)
#: fine-tuning SimCLR encoders on
#: long-tailed Fashion-MNIST with 20 % and 40 % symmetric noise, 3 seeds (BENCHMARKS.md,
#: ``scripts/bench_ssl.py --part finetune``).
FINETUNE_LOSS = "cb_focal"


def _as_tensor(x: Any, dtype: torch.dtype) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.detach().to("cpu", dtype)


@torch.no_grad()
def extract_features(model: nn.Module, data: PoolData, *, batch_size: int = 512) -> torch.Tensor:
    """Frozen features ``[N, D]`` (CPU float32, ``requires_grad=False``) of every sample of
    ``data`` in order; the model is put in eval mode and returned to its previous mode."""
    features = getattr(model, "features", None)
    if features is None:
        raise TypeError(f"{type(model).__name__} has no features(x) method")
    was_training = model.training
    model.eval()
    try:
        out = [features(x).float().cpu() for x, _ in data.iter_plain(batch_size)]
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros(0, int(getattr(model, "feature_dim", 0)))
    return torch.cat(out)


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
    return classification_metrics(test_labels.numpy(), probs.numpy(), counts)


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


def evaluate_encoder(
    model: nn.Module,
    train_data: PoolData,
    train_labels: Any,
    test_data: PoolData,
    test_labels: Any,
    *,
    num_classes: int | None = None,
    class_counts: Any = None,
    probe_epochs: int = 100,
    probe_lr: float = 0.005,
    knn_k: int = 200,
    knn_t: float = 0.1,
    batch_size: int = 512,
    seed: int = 0,
) -> dict[str, Any]:
    """Linear probe and kNN of ``model``'s frozen features: ``{"linear_probe": ..., "knn": ...}``.

    ``train_labels`` are the labels the probe may use (noisy ones in a noisy run; the clean ones
    for MTTV's protocol); ``class_counts`` the training-set frequencies for the shot groups.
    """
    ftr = extract_features(model, train_data, batch_size=batch_size)
    fte = extract_features(model, test_data, batch_size=batch_size)
    common = dict(num_classes=num_classes, class_counts=class_counts)
    return {
        "linear_probe": linear_probe(
            ftr,
            train_labels,
            fte,
            test_labels,
            epochs=probe_epochs,
            lr=probe_lr,
            seed=seed,
            **common,
        ),
        "knn": knn_classify(ftr, train_labels, fte, test_labels, k=knn_k, t=knn_t, **common),
    }


def save_encoder(model: nn.Module, path: str | os.PathLike, *, include_head: bool = True) -> Path:
    """Write ``{"model": state_dict}`` (CPU tensors) of a backbone (or of a method's ``model``) to
    ``path`` atomically; returns the path. Fine-tune from it with ``--set model.init=<path>``.

    ``include_head=False`` leaves out the linear ``head`` (``head.*`` keys), so that fine-tuning
    starts from a fresh classifier: use it when the head (e.g. SimCLR's online probe) was trained
    on labels the fine-tuning run must not see, such as clean labels of the same images."""
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module) and hasattr(inner, "features"):
        model = inner  # a Method: save its backbone, whose keys model.init expects
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().cpu()
        for k, v in model.state_dict().items()
        if include_head or not k.startswith("head.")
    }
    return write_checkpoint({"model": state}, p)


def frequency_groups(class_counts: Any, parts: int = 3) -> np.ndarray:
    """``[K]`` array of ``"many"`` / ``"medium"`` / ``"few"``: the classes sorted by training
    frequency (largest first, ties by class id) and cut into thirds (MTTV's many/medium/few
    split). With K = 10: 3 many, 4 medium, 3 few. Use it where the fixed >100 / <20 thresholds of
    `noisytail.evaluate.shot_thresholds` leave a group empty (e.g. Fashion-MNIST at ratio 100,
    whose smallest class still has about 60 images)."""
    if parts != 3:
        raise ValueError(f"only thirds are supported, got parts={parts}")
    counts = np.asarray(class_counts)
    k = len(counts)
    if k < 3:
        raise ValueError(f"frequency thirds need at least 3 classes, got {k}")
    order = np.lexsort((np.arange(k), -counts))  # by count descending, then class id
    n_many = n_few = int(round(k / 3))
    groups = np.full(k, "medium", dtype=object)
    groups[order[:n_many]] = "many"
    groups[order[k - n_few :]] = "few"
    return groups.astype(str)


def group_accuracy(per_class_accuracy: Any, groups: Any) -> dict[str, float | None]:
    """Mean per-class accuracy of each group: ``{"many": ..., "medium": ..., "few": ...}``
    (None for an empty group or one whose classes were never tested, i.e. NaN accuracies)."""
    acc = np.asarray([np.nan if a is None else a for a in per_class_accuracy], dtype=np.float64)
    groups = np.asarray(groups)
    out: dict[str, float | None] = {}
    for name in ("many", "medium", "few"):
        vals = acc[(groups == name) & ~np.isnan(acc)]
        out[name] = float(vals.mean()) if len(vals) else None
    return out


def balanced_indices(labels: Any, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``per_class`` samples of every class of ``labels`` (all of a smaller
    class), drawn without replacement with ``seed``: a balanced labelled split for a probe."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(np.random.SeedSequence([seed, seeds.PROBE_SPLIT]))
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picked.append(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def load_trained_run(run_dir: str | os.PathLike, *, checkpoint: str = "last") -> Any:
    """A run folder's `noisytail.train.Run` (its data prepared, its config) with the weights of
    ``checkpoints/<checkpoint>.pt`` loaded into its method."""
    from .data.prepare import prepare_data
    from .runfolder import CheckpointError, checkpoint_path, read_run_config
    from .train import Run, setup_runtime

    out = Path(run_dir)
    cfg = read_run_config(out)
    ckpt = checkpoint_path(out, checkpoint)
    if not ckpt.exists():
        raise CheckpointError(f"{ckpt}: not found: the run has no '{checkpoint}' checkpoint.")
    rt = setup_runtime(cfg)
    prepared = prepare_data(cfg)
    prepared.check_against(out)
    run = Run(cfg, out, rt, prepared)
    run.load_weights(ckpt)
    return run


def export_pretrained(
    run_dir: str | os.PathLike,
    *,
    checkpoint: str = "last",
    probe_epochs: int = 100,
    probe_lr: float = 0.005,
    knn_k: int = 200,
    knn_t: float = 0.1,
) -> dict[str, Any]:
    """For a (pre-training) run folder: write ``encoder.pt`` (`save_encoder` of the backbone,
    without its ``head``: fine-tuning starts from a fresh classifier) and
    ``ssl_evaluation.json`` (linear probe + kNN on its frozen features, trained on the run's
    training pool with the labels the run trained on, i.e. noisy ones in a noisy run, tested on
    its test set; shot groups by the training-set class counts by true class). Returns the
    evaluation, with ``"encoder"`` (its path)."""
    out = Path(run_dir)
    run = load_trained_run(out, checkpoint=checkpoint)
    cfg, prepared = run.cfg, run.data
    ckpt = out / "checkpoints" / f"{checkpoint}.pt"
    # Backbone only: the head is the online probe, trained on this run's labels (often the clean
    # labels of the very images a noisy fine-tuning run then trains on), so it must not travel.
    encoder = save_encoder(run.method.model, out / "encoder.pt", include_head=False)
    counts = getattr(prepared, "true_class_counts", prepared.class_counts)
    result = evaluate_encoder(
        run.method.model,
        run.train_data,
        prepared.train_labels,
        run.test_data,
        prepared.bundle.test.labels,
        num_classes=prepared.bundle.num_classes,
        class_counts=counts,
        probe_epochs=probe_epochs,
        probe_lr=probe_lr,
        knn_k=knn_k,
        knn_t=knn_t,
        batch_size=cfg.train.eval_batch_size,
        seed=cfg.seed,
    )
    result["encoder"] = str(encoder)
    result["checkpoint"] = str(ckpt)
    write_json(result, out / "ssl_evaluation.json")
    return result
