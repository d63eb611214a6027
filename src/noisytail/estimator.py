"""`NoisyTailClassifier`: noisytail's training loop as a scikit-learn classifier, and
`load_model`, which gives one back from a run folder.

``fit(X, y)`` holds the arrays in memory (`noisytail.data.arrays`), trains them with
`noisytail.train.fit` into a run folder (``run_dir``, or a temporary one that is removed), and
keeps the trained model (`noisytail.inference.TrainedModel`). The constructor's arguments are the
config's; the defaults train ERM with the symmetric cross-entropy (SCE), the robust loss that won
the short-budget CNN benchmark under both symmetric and asymmetric noise (BENCHMARKS.md, "A short
budget"), for about `FIT_STEPS` optimizer steps, with the model `noisytail.defaults` chooses for
the data (for images, its narrower CNN). ``X`` may be images ``[N, H, W]`` / ``[N, H, W, C]``
(uint8, or floats in [0, 1]), a table ``[N, D]``, or a list of image file paths; ``y`` any
hashable labels, encoded as scikit-learn does (``classes_`` sorted, `numpy.unique`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_feature_names,
    _get_feature_names,
    check_is_fitted,
    column_or_1d,
)

from .data.arrays import as_model_inputs, hold_arrays, input_statistics, release_arrays
from .data.types import DataError
from .defaults import epochs_for, model_for
from .inference import TrainedModel, check_shape, network_weights, read_images
from .registry import RegistryError

#: The estimator's own file in a run folder: its parameters and the original class labels.
ESTIMATOR_FILE = "estimator.json"
#: Optimizer steps ``epochs="auto"`` aims at (`noisytail.defaults.epochs_for`, within its 10 to
#: 40 epochs): three times the CLI's 400. On long-tailed Fashion-MNIST with 40 % noise (4,084
#: images) the CNN trained with SCE reached 54 % at 416 steps and 70 % at 1,280 (BENCHMARKS.md,
#: "NoisyTailClassifier inside cleanlab's CleanLearning").
FIT_STEPS = 1200


def _is_paths(X: Any) -> bool:
    """A list, tuple, 1-D array or Series of image paths."""
    if not isinstance(X, (list, tuple)):
        if getattr(X, "ndim", None) != 1 or getattr(X.dtype, "kind", "") not in ("U", "O"):
            return False
        X = list(X)
    return len(X) > 0 and all(isinstance(p, (str, os.PathLike)) for p in X)


def _inputs(X: Any) -> np.ndarray:
    """``X`` as model inputs (`noisytail.data.arrays.as_model_inputs`), image paths decoded."""
    if hasattr(X, "format") and hasattr(X, "tocsr"):  # scipy.sparse
        raise TypeError(
            "X is a sparse matrix: NoisyTailClassifier needs dense data (use X.toarray())."
        )
    if _is_paths(X):
        return read_images(list(X))
    arr = np.asarray(X.detach().cpu().numpy() if hasattr(X, "detach") else X)
    if arr.ndim == 1:
        raise DataError(
            f"X is 1-D (shape {arr.shape}): expected 2-D [N, D] features or images. Reshape your "
            "data either using array.reshape(-1, 1) if your data has a single feature or "
            "array.reshape(1, -1) if it contains a single sample."
        )
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as err:  # TypeError, as numpy and scikit-learn raise
            raise TypeError(f"X holds a value that is not a number: {err}.") from None
    return as_model_inputs(arr, "X")


@contextlib.contextmanager
def _torch_globals_kept() -> Iterator[None]:
    """Restore torch's process-wide state that a run sets, on exit: the global generator (the
    loop seeds it for initialisation and every epoch, `noisytail.runtime.seed_epoch`; CUDA's
    too) and the thread count (``train.num_threads``). A fit then leaves the caller's random
    stream and threads as they were."""
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng():
            yield
    finally:
        torch.set_num_threads(threads)


def _plain_python(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays made Python numbers and lists, at any depth (a
    parameter grid over ``np.arange``, a seed from ``rng.integers``): the config takes and
    saves plain values only."""
    if isinstance(value, dict):
        return {k: _plain_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_python(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


class NoisyTailClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn classifier trained by noisytail's loop (see the module docstring).

    Parameters are the config's: ``method`` (a registered method, e.g. ``erm``, ``dividemix``),
    ``loss`` (ERM's loss; None for a method without one), ``method_args`` (other method
    arguments), ``model`` (``auto``: `noisytail.defaults.model_for`, the CLI's rule for a user's
    data: ``small_cnn`` for images, always its narrower width 16 here, ``mlp`` for tables,
    narrower below 2,000 samples), ``model_options``, the ``train.*`` settings (``epochs``:
    ``auto`` is about `FIT_STEPS` optimizer steps within 10 to 40 epochs, the CLI's
    `noisytail.defaults.epochs_for` with a larger target; ``batch_size``, ``lr``, ``optimizer``,
    ``weight_decay``, ``schedule``, ``sampler``, ``device``, ``precision``, ``num_threads``),
    ``augment`` (``data.augment``), ``val_fraction`` (a noisy validation split held out of
    training; 0 trains on everything), ``seed``. ``run_dir``: keep the run folder there (then
    `load_model` reads it back); None uses a temporary one. A fit trains beside it and moves the
    finished run in, so a failed fit leaves ``run_dir`` as it was, and a later fit (or a clone's,
    in cross-validation) replaces this classifier's own earlier run there; a folder holding
    anything else is refused. ``verbose``: progress bars.

    Fitted attributes: ``classes_`` ``[K]``, ``model_`` (`noisytail.inference.TrainedModel`),
    ``input_shape_`` and, for tables, ``n_features_in_`` (and ``feature_names_in_``, a
    DataFrame's columns, which ``predict`` checks as scikit-learn does).
    """

    def __init__(
        self,
        method: str = "erm",
        loss: str | None = "sce",
        method_args: dict[str, Any] | None = None,
        model: str = "auto",
        model_options: dict[str, Any] | None = None,
        epochs: int | str = "auto",
        batch_size: int = 128,
        lr: float = 0.05,
        optimizer: str = "sgd",
        weight_decay: float = 5e-4,
        schedule: str = "cosine",
        sampler: str = "random",
        augment: str = "crop_flip",
        val_fraction: float = 0.0,
        seed: int = 0,
        device: str = "auto",
        precision: str = "auto",
        num_threads: int | None = None,
        run_dir: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.method = method
        self.loss = loss
        self.method_args = method_args
        self.model = model
        self.model_options = model_options
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.sampler = sampler
        self.augment = augment
        self.val_fraction = val_fraction
        self.seed = seed
        self.device = device
        self.precision = precision
        self.num_threads = num_threads
        self.run_dir = run_dir
        self.verbose = verbose

    # -- configuration -----------------------------------------------------------------------
    def _model(self, x: np.ndarray) -> tuple[str, dict[str, Any]]:
        """``model`` and ``model_options``; ``auto`` is the CLI's choice for a user's data
        (`noisytail.defaults.model_for`), with the narrower CNN for images whatever their number
        (at equal cost, width 16 for 1,280 steps beat width 32 for 640), and an ``mlp`` for
        images under 4 pixels a side."""
        options = dict(self.model_options or {})
        if self.model != "auto":
            return self.model, options
        if x.ndim == 4 and min(x.shape[2:]) < 4:
            return "mlp", options
        narrow = True if x.ndim == 4 else None
        name, chosen, _ = model_for(tuple(x.shape[1:]), len(x), narrow=narrow)
        return name, {**chosen, **options}

    def _epochs(self, n: int) -> int:
        """``epochs``; ``auto``: `noisytail.defaults.epochs_for` aiming at `FIT_STEPS` steps
        (within 10 to 40 epochs)."""
        if self.epochs != "auto":
            return self.epochs
        return epochs_for(n, self.batch_size, target_steps=FIT_STEPS)[0]

    def config_values(self, key: str, x: np.ndarray) -> dict[str, Any]:
        """The run config (as `noisytail.config.from_dict` takes it) for arrays held under
        ``key`` with model inputs ``x``."""
        method: dict[str, Any] = {"name": self.method}
        if self.loss is not None:
            method["loss"] = self.loss
        method.update(self.method_args or {})
        model, options = self._model(x)
        epochs = self._epochs(len(x))
        return _plain_python(
            {
                "seed": self.seed,
                "data": {
                    "name": "arrays",
                    "options": {"key": key},
                    "val_fraction": self.val_fraction,
                    "augment": self.augment,
                },
                "model": {"name": model, "options": options},
                "method": method,
                "train": {
                    "epochs": epochs,
                    "batch_size": self.batch_size,
                    "lr": self.lr,
                    "optimizer": self.optimizer,
                    "weight_decay": self.weight_decay,
                    "schedule": self.schedule,
                    "sampler": self.sampler,
                    "device": self.device,
                    "precision": self.precision,
                    "num_threads": self.num_threads,
                    "progress": bool(self.verbose),
                    "checkpoint_every": epochs,
                },
            }
        )

    # -- scikit-learn API --------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> NoisyTailClassifier:
        """Train on ``X`` ``[N, ...]`` (see the module docstring) and labels ``y`` ``[N]``;
        returns self. Raises ValueError for bad shapes or values, naming what was expected."""
        from .config import from_dict
        from .train import fit as train_fit

        if y is None:
            raise DataError(
                "NoisyTailClassifier requires y to be passed, but the target y is None: give "
                "one label per sample."
            )
        names = _get_feature_names(X)  # a DataFrame's columns, checked again at predict time
        x = _inputs(X)
        y_arr = np.asarray(y)
        if y_arr.ndim == 2 and y_arr.shape[1] == 1:
            y_arr = column_or_1d(y_arr, warn=True)  # a DataConversionWarning, as sklearn does
        if y_arr.ndim != 1 or len(y_arr) != len(x):
            raise DataError(
                f"y has shape {y_arr.shape}, X has {len(x)} samples: expected one label per "
                f"sample, shape ({len(x)},)."
            )
        check_classification_targets(y_arr)
        classes, encoded = np.unique(y_arr, return_inverse=True)
        if len(classes) < 2:
            raise DataError(
                f"y holds 1 class ({classes[0]!r}) in {len(y_arr)} samples: a classifier needs "
                "samples of at least 2 classes."
            )
        mean, std = input_statistics(x)
        key = hold_arrays(
            x,
            encoded,
            class_names=[str(c) for c in classes],
            model_layout=True,
            feature_names=names,
        )
        with contextlib.ExitStack() as stack:
            stack.callback(release_arrays, key)
            stack.enter_context(_torch_globals_kept())
            target = None if self.run_dir is None else _refittable(Path(self.run_dir))
            where = None if target is None else target.parent
            out = Path(tempfile.mkdtemp(prefix=".noisytail-fit-", dir=where))
            stack.callback(shutil.rmtree, out, ignore_errors=True)
            try:
                cfg = from_dict(self.config_values(key, x))
                train_fit(cfg, out, progress=bool(self.verbose), write_report=False)
            except RegistryError as err:  # a KeyError: scikit-learn expects ValueError
                raise ValueError(str(err)) from None
            from .runfolder import checkpoint_path, read_checkpoint

            record = {
                "model": {"name": cfg.model.name, "options": cfg.model.options},
                "class_names": [str(c) for c in classes],
                "input_shape": list(x.shape[1:]),
                "mean": mean,
                "std": std,
                "feature_names": None if names is None else [str(n) for n in names],
            }
            weights = network_weights(read_checkpoint(checkpoint_path(out)), cfg.method.name)
            model = TrainedModel.from_record(record, weights)
            if target is not None:
                _write_estimator_file(out, _plain_python(self.get_params()), classes)
                _move_run(out, target)
        self.model_ = model  # only now: a fit that failed leaves the earlier model whole
        self.classes_ = classes
        self.input_shape_ = tuple(int(s) for s in x.shape[1:])
        if x.ndim == 2:
            self.n_features_in_ = int(x.shape[1])
        elif hasattr(self, "n_features_in_"):
            del self.n_features_in_
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return self

    def _check_inputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        if _is_paths(X):  # decoded as the run's images were (`TrainedModel.read_images`)
            return self.model_.read_images(list(X))
        _check_feature_names(self, X, reset=False)  # a DataFrame's columns as in fit
        x = _inputs(X)
        try:
            check_shape(x, self.input_shape_, who=type(self).__name__)
        except DataError as err:
            if not getattr(self.model_, "resize", False):
                raise
            raise DataError(
                f"{err} Or pass the files' paths: they are resized as in training."
            ) from None
        return x

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[N, K]`` (float64; columns in the order of ``classes_``)."""
        x = self._check_inputs(X)
        return self.model_.predict_proba(x)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample ``[N]`` (labels from ``classes_``)."""
        probs = self.predict_proba(X)
        return self.classes_[np.argmax(probs, axis=1)]

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.three_d_array = True
        tags.non_deterministic = False
        return tags


def _refittable(target: Path) -> Path:
    """``target`` if a fit may write its run there: absent, empty, or this classifier's own
    earlier run (it has `ESTIMATOR_FILE`); else a ValueError, before anything trains."""
    if target.exists() and not target.is_dir():
        raise ValueError(f"run_dir {target} is a file: give a folder for the run.")
    if target.is_dir() and any(target.iterdir()) and not (target / ESTIMATOR_FILE).is_file():
        raise ValueError(
            f"run_dir {target} holds files that are not a run of NoisyTailClassifier; give an "
            "empty or new folder (nothing there is replaced)."
        )
    if target.is_dir():
        ours = _run_files()
        for path in sorted(target.rglob("*")):
            relative = path.relative_to(target).as_posix()
            if not path.is_dir() and relative not in ours:
                raise ValueError(
                    f"run_dir {target} holds {relative!r}, which is not part of a run: move it "
                    "out of the folder to fit again there (nothing was changed)."
                )
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _run_files() -> frozenset[str]:
    """Every file a run folder of the classifier may hold, relative to it, named by what writes
    it: the training loop, its report, ``noisytail evaluate`` and the classifier itself;
    anything else there is the user's."""
    from .data.fingerprint import CORRUPTION_FILE, FINGERPRINT_FILE
    from .report import REPORT_FILES
    from .runfolder import CONFIG_FILE, INDICES_FILE, METRICS_FILE, checkpoint_path
    from .summary import PREDICTIONS_FILE, SUMMARY_FILE, evaluation_file

    written = (CONFIG_FILE, METRICS_FILE, INDICES_FILE, FINGERPRINT_FILE, CORRUPTION_FILE)
    written += (PREDICTIONS_FILE, SUMMARY_FILE, ESTIMATOR_FILE, *REPORT_FILES)
    checkpoints = ("last", "best")
    written += tuple(evaluation_file(c) for c in checkpoints)
    return frozenset((*written, *(checkpoint_path("", c).as_posix() for c in checkpoints)))


def _move_run(new: Path, target: Path) -> None:
    """Put the finished run ``new`` at ``target``, replacing an earlier run of the classifier
    there (`_refittable` has checked that it holds nothing of the user's; a file added since is
    refused: ValueError, and the earlier run stays)."""
    if target.is_dir() and any(target.iterdir()):
        _refittable(target)
        old = Path(tempfile.mkdtemp(prefix=".noisytail-old-", dir=target.parent))
        target.rename(old / target.name)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if target.is_dir():
            target.rmdir()
        new.rename(target)


def _write_estimator_file(out: Path, params: dict[str, Any], classes: np.ndarray) -> None:
    from .runfolder import write_json

    plain = classes.tolist()
    ok = all(isinstance(c, (str, int, float, bool)) for c in plain)
    write_json(
        {"params": params, "classes": plain if ok else [str(c) for c in plain]},
        out / ESTIMATOR_FILE,
        default=str,
    )


def load_model(run_dir: str | os.PathLike, checkpoint: str = "last") -> NoisyTailClassifier:
    """A fitted `NoisyTailClassifier` from a run folder (of ``noisytail train`` or of
    ``NoisyTailClassifier(run_dir=...)``), without the training data: ``predict`` and
    ``predict_proba`` work at once; ``fit`` would train afresh with the run's settings.

    ``classes_`` are the class names of the run (as integers where every name is one; the
    original labels for an estimator's run).
    Raises `noisytail.runfolder.CheckpointError` (a ValueError) for a folder that is not a
    finished run or whose checkpoint lacks what is needed.
    """
    from .data.types import INTEGER
    from .errors import short_error
    from .runfolder import CheckpointError, read_run_config

    run = Path(run_dir)
    cfg = read_run_config(run)
    trained = TrainedModel.from_run(run, checkpoint)
    saved = run / ESTIMATOR_FILE
    if saved.is_file():
        try:
            info = json.loads(saved.read_text(encoding="utf-8"))
            clf = NoisyTailClassifier(**{**info["params"], "run_dir": None})
            classes = np.asarray(info["classes"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{saved}: not an estimator file ({short_error(err)}).") from None
    else:
        method_args = dict(cfg.method.args)
        loss = method_args.pop("loss") if isinstance(method_args.get("loss"), str) else None
        t = cfg.train
        clf = NoisyTailClassifier(
            method=cfg.method.name,
            loss=loss,
            method_args=method_args or None,
            model=cfg.model.name,
            model_options=dict(cfg.model.options) or None,
            epochs=t.epochs,
            batch_size=t.batch_size,
            lr=t.lr,
            optimizer=t.optimizer,
            weight_decay=t.weight_decay,
            schedule=t.schedule,
            sampler=t.sampler,
            augment=cfg.data.augment,
            val_fraction=cfg.data.val_fraction,
            seed=cfg.seed,
        )
        names = trained.class_names  # integer labels come back as integers, as they were given
        integers = all(INTEGER.fullmatch(str(c)) for c in names)
        classes = np.asarray([int(c) for c in names] if integers else names)
    clf.model_ = trained
    clf.classes_ = classes
    clf.input_shape_ = trained.input_shape
    if len(trained.input_shape) == 1:
        clf.n_features_in_ = int(trained.input_shape[0])
        if trained.feature_names and saved.is_file():  # fitted on a DataFrame: checked as then
            clf.feature_names_in_ = np.asarray(trained.feature_names, dtype=object)
    return clf
