"""What every detector shares: the `DetectionTask` it is given (the training pool, its labels and
inputs, and lazily models of it), the `Detector` interface, and its `DetectorOutput`. A new
detector is one file: a `Detector` subclass registered in ``DETECTORS`` (ARCHITECTURE.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from ..build import predict_probs
from ..config import Config, ConfigError
from ..data.loader import PoolData
from ..data.prepare import PreparedData
from ..data.types import DataError
from ..runtime import Runtime
from ..train import Run
from . import scores as sc


@dataclass
class DetectorOutput:
    """One detector's verdict on the training pool, every array ``[N]`` in pool order."""

    suspicion: np.ndarray  # float, higher = more likely mislabelled
    flagged: np.ndarray  # bool
    suggested: np.ndarray  # int, the label the detector would give
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able details (k, thresholds, ...)
    tiebreak: np.ndarray | None = None  # float [N], ranks equal suspicions (higher first)

    def __post_init__(self) -> None:
        self.suspicion = np.asarray(self.suspicion, dtype=np.float64)
        self.flagged = np.asarray(self.flagged, dtype=bool)
        self.suggested = np.asarray(self.suggested, dtype=np.int64)
        n = len(self.suspicion)
        if self.flagged.shape != (n,) or self.suggested.shape != (n,):
            raise ValueError("suspicion, flagged and suggested must all be [N]")
        if not np.isfinite(self.suspicion).all():
            raise ValueError("the detector produced NaN or infinite scores")
        if self.tiebreak is not None:
            self.tiebreak = np.asarray(self.tiebreak, dtype=np.float64)
            if self.tiebreak.shape != (n,):
                raise ValueError("tiebreak must be [N] like suspicion")


def train_run(
    run: Run, *, progress: bool = False, on_epoch: Callable[[int], None] | None = None
) -> Run:
    """Train ``run`` for ``cfg.train.epochs`` epochs in memory (no run folder is written)."""
    each = None if on_epoch is None else (lambda record: on_epoch(record["epoch"] - 1))
    run.train_epochs(on_epoch=each, progress=progress, evaluate=False)
    return run


class DetectionTask:
    """The training pool and the ways to get a model of it (see the module docstring).

    ``loader`` (set by the API) returns a trained `Run` from a finished run folder; without it,
    `trained` trains one with ``cfg``.
    """

    def __init__(
        self,
        cfg: Config,
        prepared: PreparedData,
        runtime: Runtime,
        work_dir: Path,
        *,
        progress: bool = False,
        loader: Callable[[], Run] | None = None,
    ) -> None:
        self.cfg = cfg
        self.prepared = prepared
        self.runtime = runtime
        self.work_dir = work_dir
        self.progress = progress
        self.loader = loader
        self._run: Run | None = None
        self.loss_history: np.ndarray | None = None  # [E, N] when recorded

    @property
    def labels(self) -> np.ndarray:
        """The given labels of the training pool ``[N]``."""
        return self.prepared.train_labels

    @property
    def num_classes(self) -> int:
        return self.prepared.bundle.num_classes

    @property
    def from_run(self) -> bool:
        return self.loader is not None

    def use_run(self, run: Run, loss_history: np.ndarray | None = None) -> None:
        """Attach a model already trained on the whole pool (and its ``loss_history [E, N]``),
        so that `trained` returns it instead of training one (e.g. a benchmark that shares one
        model between several detectors and times the training itself)."""
        self._run = run
        self.loss_history = loss_history

    def new_run(self, prepared: PreparedData | None = None, cfg: Config | None = None) -> Run:
        return Run(cfg or self.cfg, self.work_dir, self.runtime, prepared or self.prepared)

    def trained(self, *, record_losses: bool = False) -> Run:
        """A model trained on the whole pool (once); ``record_losses`` keeps ``loss_history``."""
        if self._run is not None:
            if record_losses and self.loss_history is None:
                raise ConfigError("the loss history was not recorded for this model.")
            return self._run
        if self.loader is not None:
            if record_losses:
                raise ConfigError(
                    "this detector needs the per-epoch losses of training, which a finished run "
                    "folder does not keep: run it without from_run (it trains a model itself)."
                )
            self._run = self.loader()
            return self._run
        run = self.new_run()
        history: list[np.ndarray] = []

        def record(epoch: int) -> None:
            history.append(sc.per_sample_nll(self.pool_probs(run), self.labels))

        train_run(run, progress=self.progress, on_epoch=record if record_losses else None)
        if record_losses:
            self.loss_history = np.stack(history)
        self._run = run
        return run

    def pool_probs(self, run: Run, data: PoolData | None = None) -> np.ndarray:
        """Softmax probabilities ``[N, K]`` of ``run``'s model over the pool (or ``data``)."""
        bs = self.cfg.train.eval_batch_size
        return predict_probs(run.method, data or run.train_data, bs, run.autocast)

    def pool_features(self, run: Run) -> torch.Tensor:
        """Features ``[N, D]`` of the pool on the run's device (the kNN runs there): the method's
        `noisytail.methods.base.Method.embed` (the backbone's features unless the method has its
        own projection)."""
        embed = run.method.embed
        return run.ctx.predict_train(lambda x: embed(x).flatten(1)).float()  # on the run's device

    def pool_inputs(self, flatten: bool = True) -> torch.Tensor:
        """The normalised inputs of the pool, flattened ``[N, D]`` (no model); ``flatten=False``
        keeps each sample's shape (``[N, C, H, W]`` for images)."""
        b = self.prepared.bundle
        data = PoolData(
            b.train.images,
            self.prepared.train_idx,
            mean=b.mean,
            std=b.std,
            device=torch.device("cpu"),
            on_device=False,
        )
        parts = [x.flatten(1) if flatten else x for x, _ in data.iter_plain(1024)]
        return torch.cat(parts).float()

    def crossfit_probs(self, folds: int, cfg: Config | None = None) -> np.ndarray:
        """Out-of-sample probabilities ``[N, K]`` of the run's network: the pool split into
        ``folds`` stratified folds (`crossfit.stratified_folds` with the run's seed), each fold
        scored by a model trained with ``cfg`` (default: the task's) on the other folds (the
        samples of fold ``f`` never reach that model). A class absent from a training fold gets
        probability 0 there."""
        from .crossfit import stratified_folds

        y = self.labels
        if len(y) < folds:
            raise DataError(f"{len(y)} samples cannot be split into {folds} folds.")
        fold = stratified_folds(y, folds, self.cfg.seed)
        probs = np.zeros((len(y), self.num_classes), dtype=np.float64)
        corr = self.prepared.corruption
        epochs = (cfg or self.cfg).train.epochs
        # one bar over every fold's epochs (a fold's epoch can be a single step: a bar each
        # would print hundreds of lines)
        bar = tqdm(
            total=folds * epochs,
            desc=f"network on {folds} folds, {epochs} epochs each",
            unit="epoch",
            leave=False,
            disable=not self.progress,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        with bar:
            for f in range(folds):
                held, rest = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
                fold_corr = replace(corr, train_idx=corr.train_idx[rest])
                prepared = replace(self.prepared, corruption=fold_corr)
                run = train_run(self.new_run(prepared, cfg), on_epoch=lambda _: bar.update(1))
                probs[held] = self.pool_probs(run, self.data_for(run, held))
        return probs

    def data_for(self, run: Run, train_positions: np.ndarray) -> PoolData:
        """A `PoolData` of the given pool positions, laid out like ``run``'s training data."""
        td = run.train_data
        return PoolData(
            self.prepared.bundle.train.images,
            self.prepared.train_idx[train_positions],
            mean=td.mean,
            std=td.std,
            device=td.device,
            on_device=self.cfg.train.data_on_device,
            channels_last=td.channels_last,
        )


class Detector:
    """Base class: ``detect(task) -> DetectorOutput``."""

    description: ClassVar[str] = ""

    def detect(self, task: DetectionTask) -> DetectorOutput:
        raise NotImplementedError

    def trains_network(self, is_image: bool | None = None) -> bool:
        """Whether `detect` trains a network on the data (so the model and epoch budget chosen
        from a user's data matter); False for detectors on the raw inputs. ``is_image``: whether
        the data are images (False: feature vectors; None: not known yet)."""
        return True

    #: ``F`` of a detector that cross-fits its networks over ``F`` folds; None: trained on all.
    folds: int | None = None

    def fold_share(self) -> float:
        """The share of the checked data one of its networks trains on: 1 for a network trained
        on all of it, ``1 - 1/F`` for one of ``F`` cross-fitted folds (`folds`; the epochs chosen
        from a user's data follow it: `noisytail.defaults.choose_defaults`)."""
        return 1.0 - 1.0 / self.folds if self.folds else 1.0

    def args(self) -> dict[str, Any]:
        """The detector's settings, for detection.json."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}
