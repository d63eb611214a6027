"""A finished run's ``summary.json`` (`RunSummary`) and ``predictions.npz`` (`finish_folder`).

`summarise` computes the summary from the run's final test probabilities and its history
(`finish_run`: both files for a `noisytail.train.Run`); `noisytail.train.fit` returns it (or an
`UnfinishedRun`). ``report``, ``bench``, the benchmarks and the CLI read a run folder's summary
back with `read_summary`, the one reader.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .build import predict_probs
from .config import Config
from .data.checked import own_labels_unverified
from .data.prepare import PreparedData
from .data.types import DataError
from .errors import short_error
from .evaluate import classification_metrics
from .runfolder import checkpoint_path, write_json, write_npz

if TYPE_CHECKING:
    from .train import Run

SUMMARY_FILE = "summary.json"
PREDICTIONS_FILE = "predictions.npz"


def evaluation_file(checkpoint: str) -> str:
    """The file `evaluate_checkpoint` writes for ``checkpoint`` (``last`` / ``best``)."""
    return f"evaluation_{checkpoint}.json"


@dataclass(kw_only=True)
class RunSummary:
    """``summary.json``: a finished run's final metrics and set-up. Accuracies are fractions;
    ``noise`` is ``{"kind", "rate", "realised_rate"}`` (``realised_rate`` None for real noise);
    ``best_*`` and ``test_accuracy_at_best_val`` are at the epoch ``select_metric`` picked (None
    without a validation split); ``per_class_accuracy`` holds None for a class not tested. Keys
    of an older or newer summary that are not fields are kept in ``extra`` (`from_dict` /
    `to_dict` round-trip a file)."""

    finished: bool = True
    method: str
    method_args: dict[str, Any] = field(default_factory=dict)
    dataset: str
    model: str
    seed: int
    corruption_seed: int | None = None
    noise: dict[str, Any] = field(default_factory=dict)
    imbalance_ratio: float | None = None
    realised_imbalance_ratio: float | None = None
    num_train: int | None = None
    num_val: int | None = None
    num_meta: int | None = None
    num_test: int | None = None
    epochs: int
    test_accuracy: float
    balanced_accuracy: float
    many_shot_accuracy: float | None = None
    medium_shot_accuracy: float | None = None
    few_shot_accuracy: float | None = None
    shot_thresholds: dict[str, Any] | None = None
    ece: float | None = None
    nll: float | None = None
    best_epoch: int | None = None
    select_metric: str | None = None
    best_val_accuracy: float | None = None
    best_val_balanced_accuracy: float | None = None
    test_accuracy_at_best_val: float | None = None
    last5_test_accuracy_mean: float | None = None
    best_test_accuracy_any_epoch: float | None = None
    train_seconds: float | None = None
    images_per_second: float | None = None
    device: str | None = None
    precision: str | None = None
    channels_last: bool | None = None
    world_size: int | None = None
    per_class_accuracy: list[float | None] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    train_class_counts: list[int] = field(default_factory=list)
    train_class_counts_noisy: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``summary.json`` (field order, then ``extra``'s keys)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunSummary:
        """Read what `to_dict` wrote (unknown keys go to ``extra``); a summary lacking a
        required field is a `DataError`."""
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in values.items() if k in names}
        try:
            return cls(**known, extra={k: v for k, v in values.items() if k not in names})
        except TypeError as err:
            raise DataError(f"not a run summary ({short_error(err)}).") from None


@dataclass(frozen=True)
class UnfinishedRun:
    """What `noisytail.train.fit` returns for a run that stopped before ``train.epochs``
    (``stop_after_epochs``): the epochs trained so far; its checkpoint resumes it. ``finished``
    is False here and True on a `RunSummary`, so either answers ``result.finished``."""

    epochs_done: int
    finished: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"finished": False, "epochs_done": self.epochs_done}


def write_summary(summary: RunSummary, run_dir: str | os.PathLike) -> Path:
    return write_json(summary.to_dict(), Path(run_dir) / SUMMARY_FILE)


def read_summary(run_dir: str | os.PathLike) -> RunSummary | None:
    """The `RunSummary` of ``run_dir`` (None if the run has not finished: no ``summary.json``);
    an unreadable file is a one-line `DataError` naming it."""
    p = Path(run_dir) / SUMMARY_FILE
    if not p.is_file():
        return None
    try:
        values = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(values, dict):
            raise ValueError(f"holds a {type(values).__name__}, not an object")
        return RunSummary.from_dict(values)
    except (OSError, ValueError, DataError) as err:
        raise DataError(f"{p}: cannot be read ({short_error(err)}).") from None


def summarise(
    cfg: Config,
    data: PreparedData,
    probs: np.ndarray,
    history: list[dict[str, Any]],
    best: dict[str, Any],
    **run: Any,
) -> RunSummary:
    """The summary of a run of ``cfg`` on ``data`` whose last epoch gave the test probabilities
    ``probs`` ``[N_test, K]``; ``history``: its epoch records, ``best``: the best epoch's;
    ``run``: ``device``, ``precision``, ``channels_last`` and ``world_size``."""
    metrics = classification_metrics(data.bundle.test.labels, probs, data.true_class_counts)
    corr = data.corruption
    train_seconds = sum(r["seconds"] for r in history)
    images = sum(r["images"] for r in history)
    validated = cfg.train.select_metric in best
    return RunSummary(
        method=cfg.method.name,
        method_args=cfg.method.args,
        dataset=cfg.data.name,
        model=cfg.model.name,
        seed=cfg.seed,
        corruption_seed=cfg.effective_corruption_seed,
        noise={
            "kind": cfg.noise.kind,
            "rate": cfg.noise.rate,
            # real noise (Clothing1M): the true labels are unknown, so the rate is too
            "realised_rate": None if data.bundle.labels_are_noisy else corr.noise_rate(),
            # the labels are taken as given and nobody knows how many are wrong: a source
            # with real noise, or a user's own data without synthetic noise
            "unverified": bool(data.bundle.labels_are_noisy or own_labels_unverified(cfg)),
        },
        imbalance_ratio=cfg.imbalance.ratio,
        realised_imbalance_ratio=corr.summary().get("imbalance_ratio_realised"),
        num_train=int(len(corr.train_idx)),
        num_val=int(len(corr.val_idx)),
        num_meta=int(len(corr.meta_idx)),
        num_test=int(len(data.bundle.test.labels)),
        epochs=cfg.train.epochs,
        test_accuracy=metrics["accuracy"],
        balanced_accuracy=metrics["balanced_accuracy"],
        many_shot_accuracy=metrics["many_shot_accuracy"],
        medium_shot_accuracy=metrics["medium_shot_accuracy"],
        few_shot_accuracy=metrics["few_shot_accuracy"],
        shot_thresholds=metrics.get("shot_thresholds"),
        ece=metrics["ece"],
        nll=metrics.get("nll"),
        # without a validation split the loop's "best" is merely the last epoch: not a choice
        best_epoch=best.get("epoch") if validated else None,
        select_metric=cfg.train.select_metric,
        best_val_accuracy=best.get("val_accuracy"),
        best_val_balanced_accuracy=best.get("val_balanced_accuracy"),
        test_accuracy_at_best_val=best.get("test_accuracy") if validated else None,
        last5_test_accuracy_mean=float(np.mean([r["test_accuracy"] for r in history[-5:]])),
        best_test_accuracy_any_epoch=max(r["test_accuracy"] for r in history),
        train_seconds=train_seconds,
        images_per_second=images / train_seconds if train_seconds > 0 else None,
        per_class_accuracy=metrics["per_class_accuracy"],
        class_names=list(data.bundle.class_names),
        train_class_counts=[int(c) for c in data.true_class_counts],
        train_class_counts_noisy=[int(c) for c in data.class_counts],
        **run,
    )


def finish_folder(
    run_dir: str | os.PathLike, summary: RunSummary, data: PreparedData, probs: np.ndarray
) -> None:
    """Write ``predictions.npz`` (the test labels, ``probs`` ``[N_test, K]``, the training class
    counts by true class, the class names) and ``summary.json``."""
    write_npz(
        Path(run_dir) / PREDICTIONS_FILE,
        y_true=data.bundle.test.labels,
        probs=probs.astype(np.float32),
        train_class_counts=data.true_class_counts,
        class_names=np.array(data.bundle.class_names),
    )
    write_summary(summary, run_dir)


def evaluate_checkpoint(run: Run, checkpoint: str) -> dict[str, Any]:
    """`noisytail.evaluate.classification_metrics` of ``run`` (its ``checkpoint`` loaded) on its
    test set, also written to ``evaluation_<checkpoint>.json`` with the device and precision
    it ran in."""
    probs = predict_probs(run.method, run.test_data, run.cfg.train.eval_batch_size, run.autocast)
    metrics = classification_metrics(run.data.bundle.test.labels, probs, run.data.true_class_counts)
    metrics["checkpoint"] = str(checkpoint_path(run.out, checkpoint))
    metrics.update(device=str(run.rt.device), precision=run.precision)  # they move the last digits
    write_json(metrics, run.out / evaluation_file(checkpoint))
    return metrics


def finish_run(run: Run) -> RunSummary:
    """A finished `noisytail.train.Run`'s final evaluation, ``predictions.npz`` and
    ``summary.json``."""
    probs = run.last_test_probs
    if probs is None:  # resumed after the last epoch: nothing evaluated in this process yet
        probs = run.evaluate()["_probs"]
    summary = summarise(
        run.cfg,
        run.data,
        probs,
        run.history,
        run.best,
        device=str(run.rt.device),
        precision=run.precision,
        channels_last=run.channels_last,
        world_size=run.rt.world_size,
    )
    if run.rt.is_main:
        finish_folder(run.out, summary, run.data, probs)
    return summary
