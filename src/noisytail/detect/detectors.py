"""Label-issue detectors behind one interface, registered in ``DETECTORS``.

A detector is built from the user's keyword arguments (``DETECTORS.build(name, args=...)``) and
has one call, ``detect(task) -> DetectorOutput``. The `DetectionTask` gives it the training pool
(the given labels, the inputs) and, lazily, a model trained on the whole pool with the run's config
(or loaded from a finished run folder), or models trained on folds of it.

Registered: ``auto`` (the default: a kNN vote and a cross-fitted linear model on the raw inputs,
stacked, plus a cross-fitted network for tables), ``knn`` (MOIT's kNN agreement in a trained
model's feature space, or in the input space), ``small_loss``, ``loss_trajectory``,
``confident_learning`` (k-fold out-of-sample probabilities) and ``method_scores`` (any method's
``sample_scores``).

Which samples are out of sample: ``auto`` (leave-one-out kNN, ``folds`` linear models and, on
tables, ``folds`` networks) and ``confident_learning`` (``folds`` models) score every sample
with a model that did not train on it; ``knn`` with ``space=input`` leaves each sample out of
its own vote; ``small_loss``, ``loss_trajectory``, ``method_scores`` and ``knn`` with
``space=model`` score the samples the model trained on (the Fashion-MNIST protocol of
BENCHMARKS.md).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from .. import neighbors as knn_lib
from ..config import ConfigError
from ..data.checks import check_present_fold_sizes
from ..data.types import DataError
from ..defaults import fold_train_size, longer_budget, network_for_inputs
from ..registry import DETECTORS, import_modules_declaring
from . import crossfit as cf
from . import scores as sc
from .base import DetectionTask, Detector, DetectorOutput

_log = logging.getLogger(__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _checked_flag(rule: Any, who: str) -> str | float:
    """``rule`` if it is ``"gmm"`` or a fraction in (0, 1); else `ConfigError`, when the
    detector is built (before any training)."""
    if rule == "gmm" or (_is_number(rule) and 0 < rule < 1):
        return rule
    raise ConfigError(f"{who}: flag must be 'gmm' or a fraction in (0, 1), got {rule!r}.")


def _flag_by(suspicion: np.ndarray, rule: str | float, seed: int) -> np.ndarray:
    """``"gmm"``: DivideMix's two-component rule; a number in (0, 1): that top fraction."""
    if rule == "gmm":
        return sc.two_component_flags(suspicion, seed=seed)[0]
    n_flag = int(round(rule * len(suspicion)))
    flagged = np.zeros(len(suspicion), dtype=bool)
    flagged[np.argsort(-suspicion, kind="stable")[:n_flag]] = True
    return flagged


#: When `AutoDetector` adds its cross-fitted network: for tables (feature vectors) only, always,
#: or never.
NETWORK_USES = ("tables", "always", "never")
#: `AutoDetector`'s ``budgets``: ``"auto"`` also cross-fits a longer budget on small tables
#: (`defaults.longer_budget`) and keeps the better one by held-out likelihood; ``"one"`` does not.
BUDGETS = ("auto", "one")
#: PyTorch threads of `AutoDetector`'s network part when ``train.num_threads`` is unset. A
#: table's MLP steps are too small to share: ``noisytail detect`` on a 3,000-row CSV took
#: 16 s on one thread and 90-207 s on two, on the loaded 2-core machine (BENCHMARKS.md).
NETWORK_THREADS = 1


@DETECTORS.register("auto")
class AutoDetector(Detector):
    """The default detector: every sample scored out of sample; no network on images.

    Out-of-sample probabilities from parts (`crossfit`), mixed by stacking:

    - ``"knn"``: a leave-one-out similarity-weighted kNN vote on the raw inputs (images
      area-pooled to at most ``max_side`` pixels a side, a CSV's standardised feature columns;
      `crossfit.input_features`, `crossfit.knn_probs`, ``k`` as `neighbors.default_k`);
    - ``"linear"``: a strongly regularised logistic regression on the same inputs, cross-fitted
      over ``folds`` folds (`crossfit.linear_probs`);
    - ``"network"``, for tables only by default (``network``: `NETWORK_USES`): the run's network
      cross-fitted over the same folds (`DetectionTask.crossfit_probs`; the CLI chooses the model
      and epochs from the data, `noisytail.defaults`: an ``mlp`` at about 400 steps), on
      `NETWORK_THREADS` PyTorch thread unless ``train.num_threads`` is set. On a small table,
      where the epoch cap leaves a fold model fewer than ``TARGET_STEPS`` steps, a second
      network with 4x the epochs is cross-fitted too (`defaults.longer_budget`; ``budgets``
      ``"one"``: not) and the one whose probabilities give the given labels the higher
      held-out likelihood is kept (`crossfit.best_by_likelihood`; detection.json's
      ``network.epochs_tried``).

    ``model`` ``"ensemble"`` (default) mixes the parts with the weights on a simplex grid that
    best predict the given labels out of sample (`crossfit.stack_weights`; recorded in
    detection.json's ``details`` as ``<part>_weight``); ``"knn"`` or ``"linear"`` take one part.
    Suspicion ``1 - p_y``, ties broken by the normalized margin; flagged by ``flag``
    (`scores.verdict_from_probs`; default: pruning by noise rate, the rule of cleanlab's
    ``find_label_issues``). The rule was chosen on the own-data detection benchmark
    (BENCHMARKS.md, "Label issues in your own data"): on tables the network part closed the gap
    to cleanlab on our network's probabilities; on images it costs minutes and was not needed.
    """

    description = "default: kNN vote + cross-fitted linear model (+ network on tables), stacked"

    def __init__(
        self,
        *,
        model: str = "ensemble",
        k: int | None = None,
        folds: int = cf.DEFAULT_FOLDS,
        flag: str = "noise_rate",
        max_side: int = cf.MAX_SIDE,
        network: str = "tables",
        budgets: str = "auto",
    ) -> None:
        if model not in cf.FAST_MODELS:
            raise ConfigError(f"auto: model must be one of {cf.FAST_MODELS}, got {model!r}.")
        if flag not in sc.FLAG_RULES:
            raise ConfigError(f"auto: flag must be one of {sc.FLAG_RULES}, got {flag!r}.")
        if k is not None and k < 1:
            raise ConfigError(f"auto: k must be a positive integer, got {k}.")
        if folds < 2:
            raise ConfigError(f"auto: folds must be >= 2, got {folds}.")
        if max_side < 1:
            raise ConfigError(
                f"auto: max_side must be a positive number of pixels, got {max_side}."
            )
        if network not in NETWORK_USES:
            raise ConfigError(f"auto: network must be one of {NETWORK_USES}, got {network!r}.")
        self.model, self.k, self.folds, self.flag, self.max_side = model, k, folds, flag, max_side
        if budgets not in BUDGETS:
            raise ConfigError(f"auto: budgets must be one of {BUDGETS}, got {budgets!r}.")
        self.network, self.budgets = network, budgets

    def trains_network(self, is_image: bool | None = None) -> bool:
        if self.model != "ensemble" or self.network == "never":
            return False
        return self.network == "always" or is_image is False

    def detect(self, task: DetectionTask) -> DetectorOutput:
        y = task.labels
        check_present_fold_sizes(
            y, self.folds, task.prepared.bundle.class_names, fix="use fewer folds (--arg folds=N)"
        )
        x = cf.input_features(task.pool_inputs(flatten=False), max_side=self.max_side)
        parts = cf.fast_parts(
            x,
            y,
            task.num_classes,
            model=self.model,
            k=self.k,
            folds=self.folds,
            seed=task.cfg.seed,
        )
        network_cfg = longer = None
        if self.trains_network(task.prepared.bundle.is_image):
            n_fold = fold_train_size(len(y), self.fold_share())
            shape = tuple(task.prepared.bundle.input_shape)
            network_cfg = network_for_inputs(task.cfg, shape, len(y), fold_share=self.fold_share())
            threads = torch.get_num_threads()
            if task.cfg.train.num_threads is None:  # unset: one thread (NETWORK_THREADS)
                torch.set_num_threads(NETWORK_THREADS)
            longer = longer_budget(network_cfg, n_fold) if self.budgets == "auto" else None
            try:
                parts["network"] = task.crossfit_probs(self.folds, network_cfg)
                if longer is not None:  # a small table: the longer budget if it predicts better
                    tried = [parts["network"], task.crossfit_probs(self.folds, longer)]
                    epochs_tried = [network_cfg.train.epochs, longer.train.epochs]
                    if cf.best_by_likelihood(tried, y) == 1:
                        parts["network"], network_cfg = tried[1], longer
                    _log.info(
                        "auto: network epochs %s tried on a small table, kept %d (held-out "
                        "likelihood)",
                        epochs_tried,
                        network_cfg.train.epochs,
                    )
            finally:
                torch.set_num_threads(threads)
        probs, weights = cf.stack(parts, y)
        _log.info(
            "auto: stacking weights %s (held-out likelihood)",
            ", ".join(f"{n} {w:.2f}" for n, w in weights.items()),
        )
        suspicion, tiebreak, flagged, suggested = sc.verdict_from_probs(probs, y, flag=self.flag)
        info: dict = {"features": list(x.shape[1:])}
        if network_cfg is not None:
            info["network"] = {
                "model": network_cfg.model.name,
                "options": dict(network_cfg.model.options),
                "epochs": network_cfg.train.epochs,
            }
            if longer is not None:
                info["network"]["epochs_tried"] = epochs_tried
                info["network"]["held_out_log_likelihood"] = [
                    round(cf.held_out_log_likelihood(p, y), 6) for p in tried
                ]
        # the stacking weights on the simplex (crossfit.stack_weights), by part
        info.update({f"{n}_weight": round(w, 6) for n, w in weights.items()})
        info["out_of_sample_accuracy"] = float((probs.argmax(1) == y).mean())
        return DetectorOutput(suspicion, flagged, suggested, info=info, tiebreak=tiebreak)


@DETECTORS.register("knn")
class KnnDetector(Detector):
    """MOIT's kNN agreement (k nearest by cosine, two-pass vote, median-balanced selection).

    ``space``: ``"model"`` (features of a model trained on the pool, or of ``from_run``'s model)
    or ``"input"`` (the normalised inputs themselves: pre-computed embeddings, tabular data; no
    training). ``k`` defaults to `knn.default_k`.

    ``selection``: ``"agreement"`` (default: flagged = the second vote disagrees with the label)
    or ``"balanced"`` (MOIT's per-class median selection, which MOIT uses to pick a class-balanced
    clean *training* set; on long-tailed data it flags many correct head-class samples, so it
    is not the default for reporting label issues). ``backend`` of the neighbour search:
    ``"auto"``, ``"torch"`` or ``"faiss"`` (`knn.knn_search`; faiss is optional).
    """

    description = "MOIT kNN agreement in feature space"

    def __init__(
        self,
        *,
        k: int | None = None,
        space: str = "model",
        selection: str = "agreement",
        block_size: int = 1024,
        backend: str = "auto",
    ) -> None:
        if space not in ("model", "input"):
            raise ConfigError(f"knn: space must be 'model' or 'input', got {space!r}.")
        if selection not in ("balanced", "agreement"):
            raise ConfigError(
                f"knn: selection must be 'balanced' or 'agreement', got {selection!r}."
            )
        if k is not None and k < 1:
            raise ConfigError(f"knn: k must be a positive integer, got {k}.")
        if backend not in knn_lib.BACKENDS:
            raise ConfigError(f"knn: backend must be one of {knn_lib.BACKENDS}, got {backend!r}.")
        if backend == "faiss" and not knn_lib.faiss_available():
            raise ConfigError("knn: backend='faiss' needs the faiss package: pip install faiss-cpu")
        self.k, self.space, self.selection, self.block_size = k, space, selection, block_size
        self.backend = backend

    def trains_network(self, is_image: bool | None = None) -> bool:
        return self.space == "model"

    def detect(self, task: DetectionTask) -> DetectorOutput:
        if self.space == "input":
            features = task.pool_inputs()
        else:
            features = task.pool_features(task.trained())
        n = features.shape[0]
        k = (
            self.k
            if self.k is not None
            else knn_lib.default_k(np.bincount(task.labels, minlength=task.num_classes))
        )
        if k > n - 1:
            raise ConfigError(f"knn: k={k} but the training pool has only {n} samples.")
        det = knn_lib.moit_detect(
            features,
            task.labels,
            task.num_classes,
            k=k,
            selection=self.selection,
            block_size=self.block_size,
            backend=self.backend,
        )
        return DetectorOutput(
            suspicion=det.suspicion,
            flagged=det.flagged,
            suggested=det.vote.suggested.numpy(),
            info={
                "k": det.k,
                "agreement_rate": float(det.vote.agreement.float().mean()),
                "backend": knn_lib.resolve_backend(self.backend, n, features.device),
            },
        )


@DETECTORS.register("small_loss")
class SmallLossDetector(Detector):
    """Per-sample cross-entropy under the trained model; ``flag``: ``"gmm"`` (DivideMix's
    two-component mixture) or the top fraction in (0, 1)."""

    description = "per-sample loss under the trained model"

    def __init__(self, *, flag: str | float = "gmm") -> None:
        self.flag = _checked_flag(flag, "small_loss")

    def detect(self, task: DetectionTask) -> DetectorOutput:
        probs = task.pool_probs(task.trained())
        loss = sc.per_sample_nll(probs, task.labels)
        return DetectorOutput(loss, _flag_by(loss, self.flag, task.cfg.seed), probs.argmax(1))


@DETECTORS.register("loss_trajectory")
class LossTrajectoryDetector(Detector):
    """Mean per-sample loss over the training epochs from ``start`` on (needs training here,
    not ``from_run``); ``flag`` as for ``small_loss``."""

    description = "mean per-sample loss over training"

    def __init__(self, *, start: int = 0, flag: str | float = "gmm") -> None:
        if start < 0:
            raise ConfigError(f"loss_trajectory: start must be >= 0, got {start}.")
        self.start, self.flag = start, _checked_flag(flag, "loss_trajectory")

    def detect(self, task: DetectionTask) -> DetectorOutput:
        run = task.trained(record_losses=True)
        assert task.loss_history is not None
        start = min(self.start, task.loss_history.shape[0] - 1)
        score = sc.loss_trajectory(task.loss_history, start=start)
        suggested = task.pool_probs(run).argmax(1)
        return DetectorOutput(score, _flag_by(score, self.flag, task.cfg.seed), suggested)


@DETECTORS.register("confident_learning")
class ConfidentLearningDetector(Detector):
    """Confident learning (Northcutt et al. 2021) on out-of-sample probabilities from ``folds``
    models, each trained with the run's config on the other folds.

    Flags the off-diagonal of the confident joint (per-class thresholds ``t_j`` = mean ``p_j``
    over samples labelled ``j``), requiring the argmax to disagree as cleanlab does; ranks by
    ``1 - score`` with ``score`` ``"self_confidence"`` or ``"normalized_margin"``.
    """

    description = "confident learning on k-fold out-of-sample probabilities"

    def __init__(
        self,
        *,
        folds: int = 5,
        score: str = "self_confidence",
        require_disagreement: bool = True,
    ) -> None:
        if folds < 2:
            raise ConfigError(f"confident_learning: folds must be >= 2, got {folds}.")
        if score not in ("self_confidence", "normalized_margin"):
            raise ConfigError(
                "confident_learning: score must be 'self_confidence' or 'normalized_margin', "
                f"got {score!r}."
            )
        self.folds, self.score, self.require_disagreement = folds, score, require_disagreement

    def out_of_sample_probs(self, task: DetectionTask) -> np.ndarray:
        """``[N, K]``: `DetectionTask.crossfit_probs` over ``folds`` folds. A class with fewer
        samples than folds is refused: a fold model that never saw it gives it a near-zero
        threshold, and unsure samples of other classes would count as confidently in it."""
        try:
            check_present_fold_sizes(
                task.labels,
                self.folds,
                task.prepared.bundle.class_names,
                fix="use fewer folds (--arg folds=N)",
            )
            return task.crossfit_probs(self.folds)
        except DataError as e:
            raise DataError(f"confident_learning: {e}") from None

    def detect(self, task: DetectionTask) -> DetectorOutput:
        return self.from_probs(self.out_of_sample_probs(task), task.labels, task.num_classes)

    def from_probs(self, probs: np.ndarray, labels: np.ndarray, num_classes: int) -> DetectorOutput:
        """The verdict from given out-of-sample probabilities ``probs [N, K]`` (e.g. shared with
        another tool) and the given ``labels [N]``; `detect` = this on `out_of_sample_probs`."""
        y = np.asarray(labels, dtype=np.int64)
        flagged, guess = sc.confident_learning_flags(
            probs, y, require_disagreement=self.require_disagreement
        )
        quality = (
            sc.self_confidence(probs, y)
            if self.score == "self_confidence"
            else sc.normalized_margin(probs, y)
        )
        suggested = np.where(flagged, guess, probs.argmax(1))  # flagged implies guess >= 0
        thresholds = sc.class_thresholds(probs, y, num_classes)
        return DetectorOutput(
            1.0 - quality,
            flagged,
            suggested,
            info={
                "folds": self.folds,
                "thresholds": [float(t) if np.isfinite(t) else None for t in thresholds],
                "out_of_sample_accuracy": float((probs.argmax(1) == y).mean()),
            },
        )


@DETECTORS.register("method_scores")
class MethodScoresDetector(Detector):
    """Any method that ranks samples: the trained method's ``sample_scores()`` (higher =
    cleaner). A sample is flagged when its score is below ``threshold``, or by ``"gmm"``."""

    description = "the trained method's own sample_scores"

    def __init__(self, *, threshold: float | str = 0.5) -> None:
        if threshold != "gmm" and not _is_number(threshold):
            raise ConfigError(
                f"method_scores: threshold must be a number or 'gmm', got {threshold!r}."
            )
        self.threshold = threshold

    def detect(self, task: DetectionTask) -> DetectorOutput:
        run = task.trained()
        scores = run.method.sample_scores()
        if scores is None:
            raise ConfigError(
                f"method {task.cfg.method.name!r} does not rank samples (its sample_scores() "
                "returns None): choose a method that does, or another detector."
            )
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.shape != task.labels.shape:
            raise ValueError(
                f"sample_scores() returned {s.shape[0]} scores for {len(task.labels)} samples."
            )
        suspicion = s.max() - s
        if self.threshold == "gmm":
            flagged = _flag_by(suspicion, "gmm", task.cfg.seed)
        else:
            flagged = s < float(self.threshold)
        return DetectorOutput(suspicion, flagged, task.pool_probs(run).argmax(1))


# A detector in a module of its own under detect/ registers when this module is imported.
import_modules_declaring("noisytail.detect", "@DETECTORS.register(")
