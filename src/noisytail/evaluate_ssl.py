"""Evaluation of a (pre-trained) encoder: its frozen features, both probes, its export.

- `extract_features(model, data)`: ``model.features`` over a `PoolData`, un-augmented, in eval
  mode, under ``torch.no_grad`` -> CPU float32 ``[N, D]`` without a graph.
- `evaluate_encoder(...)`: the linear probe and the weighted kNN of `noisytail.probes` on the
  frozen features of a model's train/test pools.
- `save_encoder(model, path)`: ``{"model": state_dict}``, read by ``model.init=...``
  (``noisytail.build.load_init``).
- `export_pretrained(run_dir)`: for a finished pre-training run, ``encoder.pt`` (no head) plus
  ``ssl_evaluation.json`` (both probes on the run's own data: its long-tailed training pool, or
  with ``probe_train="source"`` the source's whole training split, MTTV's protocol).

The probes live in `noisytail.probes`, the frequency thirds in `noisytail.groups`, the balanced
probe split in `noisytail.data.splits.balanced_indices`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data.loader import PoolData
from .errors import ConfigError
from .probes import knn_classify, linear_probe
from .runfolder import write_checkpoint, write_json

#: The loss the two-stage recipe fine-tunes a pre-trained encoder with (``method.loss`` of ERM):
#: the class-balanced focal loss. Chosen by measurement, not taken from a paper (we could not read
#: Karthik et al.'s loss; docs/methods.md, Two-stage recipe): the best mean test accuracy of six
#: candidates (CE, GCE, SCE, logit adjustment, class-balanced focal, logit-adjusted GCE)
#: fine-tuning SimCLR encoders on
#: long-tailed Fashion-MNIST with 20 % and 40 % symmetric noise, 3 seeds (BENCHMARKS.md,
#: ``scripts/bench_ssl.py --part finetune``).
FINETUNE_LOSS = "cb_focal"

#: What `export_pretrained`'s probes train on: ``pool``, the run's own training pool (long-tailed,
#: with the labels the run trained on); ``source``, the source's training split as loaded, before
#: the imbalance profile, the noise and the validation split, with the source's own labels: the
#: full, balanced training set MTTV's linear evaluation trains on (Sharma et al., arXiv
#: 2509.08469; official code ``data/Cifar10/cifar10_dataset_le.py``; docs/methods.md, MTTV).
PROBE_TRAIN_SETS = ("pool", "source")


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


def export_pretrained(
    run_dir: str | os.PathLike,
    *,
    checkpoint: str = "last",
    probe_epochs: int = 100,
    probe_lr: float = 0.005,
    knn_k: int = 200,
    knn_t: float = 0.1,
    probe_train: str = "pool",
) -> dict[str, Any]:
    """For a (pre-training) run folder: write ``encoder.pt`` (`save_encoder` of the backbone,
    without its ``head``: fine-tuning starts from a fresh classifier) and
    ``ssl_evaluation.json`` (linear probe + kNN on its frozen features, trained on the run's
    training pool with the labels the run trained on, i.e. noisy ones in a noisy run, or on the
    ``probe_train`` set of `PROBE_TRAIN_SETS`; tested on its test set; shot groups by the run's
    training-pool class counts by true class, also for ``source``); for another
    ``checkpoint`` than ``last``, ``encoder_<checkpoint>.pt`` and
    ``ssl_evaluation_<checkpoint>.json`` (the last encoder a fine-tuning run may point to stays).
    Returns the evaluation, with ``"encoder"`` (its path)."""
    from .runfolder import checkpoint_path
    from .train import Run  # lazily: train brings the whole training stack

    if probe_train not in PROBE_TRAIN_SETS:
        raise ConfigError(
            f"probe_train must be one of {', '.join(PROBE_TRAIN_SETS)}, got {probe_train!r}."
        )
    out = Path(run_dir)
    run = Run.from_folder(out, checkpoint)
    cfg, prepared = run.cfg, run.data
    ckpt = checkpoint_path(out, checkpoint)
    suffix = "" if checkpoint == "last" else f"_{checkpoint}"
    # Backbone only: the head is the online probe, trained on this run's labels (often the clean
    # labels of the very images a noisy fine-tuning run then trains on), so it must not travel.
    encoder = save_encoder(run.method.model, out / f"encoder{suffix}.pt", include_head=False)
    counts = prepared.true_class_counts
    probe_data, probe_labels = run.train_data, prepared.train_labels
    if probe_train == "source":
        ids = np.arange(len(prepared.bundle.train))
        if cfg.meta.source in ("provided", "file"):  # a clean split appended after the source's
            ids = np.setdiff1d(ids, prepared.corruption.meta_idx)
        probe_data = PoolData(prepared.bundle.train.images, ids, **run.pool_options)
        probe_labels = prepared.bundle.train.labels[ids]
    result = evaluate_encoder(
        run.method.model,
        probe_data,
        probe_labels,
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
    result["probe_train"] = {"set": probe_train, "size": len(probe_labels)}
    result["encoder"] = str(encoder)
    result["checkpoint"] = str(ckpt)
    write_json(result, out / f"ssl_evaluation{suffix}.json")
    return result


def self_supervised_methods() -> list[str]:
    """The registered methods that declare ``self_supervised`` (what ``pretrain`` runs)."""
    from . import methods  # noqa: F401  (registration)
    from .registry import METHODS

    return [name for name in METHODS.names() if METHODS.get(name).self_supervised]


def pretrain_overrides(
    config: str | None, overrides: Sequence[str], echo: Callable[..., Any]
) -> list[str]:
    """Overrides (applied before the user's) that make CONFIG a pre-training config.

    Where neither the file nor an override names them: simclr with SimCLR augmentation. A
    supervised method named by the file (e.g. the demo's ``erm``) is replaced by simclr with
    SimCLR augmentation, saying so through ``echo`` (``err=True``: a note, not output); one
    named by an override is an error later.
    """
    from .config import read_yaml_file

    values = read_yaml_file(config, "config") if config else {}

    def in_file(key: str) -> bool:
        section, name = key.split(".", 1)
        return isinstance(values.get(section), dict) and name in values[section]

    def on_line(key: str) -> bool:
        return any(o.split("=", 1)[0].strip() == key for o in overrides)

    ssl_methods = self_supervised_methods()
    out, replaced = [], None
    if not on_line("method.name"):
        named = values["method"]["name"] if in_file("method.name") else None
        if named is None or named not in ssl_methods:
            out.append("method.name=simclr")
            replaced = named
    if not on_line("data.augment") and (replaced is not None or not in_file("data.augment")):
        out.append("data.augment=simclr")
    if replaced is not None:
        echo(
            f"note: {config} names the supervised method {replaced!r}; pre-training uses simclr "
            f"with SimCLR augmentation instead (choose with --set method.name="
            f"{'|'.join(ssl_methods)}).",
            err=True,
        )
    return out
