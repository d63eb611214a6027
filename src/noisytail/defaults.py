"""Settings chosen from a user's own data (``image_folder`` and ``csv`` sources) where the config
leaves them unset.

`choose_defaults` looks at the data once and fills in, each only when neither the config file nor
an override names it (explicit settings always win):

- ``data.name``: ``csv`` when ``data.options.train_csv`` is given, ``image_folder`` when
  ``data.root`` holds class folders of images;
- ``data.options.image_size`` / ``channels``: inferred by the source from the image files
  (`noisytail.data.image_folder.infer_image_format`: the median shorter side, capped at
  ``MAX_INFERRED_SIZE``; 1 channel when every image is grayscale);
- ``model.name`` / ``model.options``: `model_for` (``mlp`` for feature vectors, ``small_cnn`` for
  images; narrower below ``SMALL_DATA`` training samples);
- ``train.epochs``: `epochs_for` (about ``TARGET_STEPS`` optimizer steps, within
  ``[MIN_EPOCHS, MAX_EPOCHS]`` epochs).

`network_for_inputs` gives a config built without these choices (a library call) a model that
takes its data's inputs, for the default detector's network part on a table.

Each choice is one `Choice` (key, value, why); the CLI prints one line per choice and the run's
``config.yaml`` records the values, and the reasons under ``inferred``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, from_dict, parse_override, read_yaml_file
from .data.checked import USER_SOURCES, source_options
from .data.locations import holds_class_folders
from .data.types import DataError

log = logging.getLogger(__name__)

#: Optimizer steps `epochs_for` aims at (128-sample batches: about 51,000 samples seen).
TARGET_STEPS = 400
MIN_EPOCHS = 10  # the config's default, kept for large data sets
MAX_EPOCHS = 40
#: Below this many training samples the default model is narrower (`model_for`).
SMALL_DATA = 2000


@dataclass(frozen=True)
class Choice:
    """One setting chosen from the data: dotted config ``key``, its ``value`` and ``why``."""

    key: str
    value: Any
    why: str

    def line(self) -> str:
        return f"chose {self.key}={self.value} ({self.why})"


def epochs_for(n_train: int, batch_size: int, target_steps: int = TARGET_STEPS) -> tuple[int, str]:
    """Epochs for ``n_train`` training samples: ``ceil(target_steps / steps per epoch)``, kept
    within ``[MIN_EPOCHS, MAX_EPOCHS]`` (small data sets get more passes, large ones the usual
    10), with the reason in one line. ``target_steps``: ``TARGET_STEPS`` for the CLI;
    `noisytail.estimator.NoisyTailClassifier` aims higher."""
    steps = max(1, math.ceil(n_train / batch_size))
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(target_steps / steps)))
    return epochs, (
        f"{n_train} training samples make {steps} steps of {batch_size} per epoch; about "
        f"{target_steps} steps, within {MIN_EPOCHS}-{MAX_EPOCHS} epochs"
    )


def fold_train_size(n: int, fold_share: float = 1.0) -> int:
    """The samples one model trains on: the ``fold_share`` of ``n`` (a detector that cross-fits
    over ``F`` folds: ``1 - 1/F``), at least one."""
    return max(1, int(n * fold_share))


def fold_epochs(n: int, batch_size: int, fold_share: float = 1.0) -> tuple[int, str]:
    """`epochs_for` the `fold_train_size` of ``n`` samples, the reason saying so when it is not
    all of them."""
    n_model = fold_train_size(n, fold_share)
    epochs, why = epochs_for(n_model, batch_size)
    return epochs, why + (f" (one fold model's {n_model} of {n})" if n_model != n else "")


#: `longer_budget`: a budget chosen from the data that leaves a fold model fewer than
#: ``TARGET_STEPS`` steps (only where `MAX_EPOCHS` binds: up to 9 batches, 1,152 samples a fold
#: at batch 128, about 1,440 rows at 5 folds; 150 rows at 5 folds get 40 full-batch steps)
#: gets a second candidate with `LONGER_FACTOR` times the epochs. (Until 2026-12-02 the gate
#: was ``TARGET_STEPS // 2``; a 1,200-row table with 320 steps a fold gained from the longer
#: candidate: BENCHMARKS.md.)
LONGER_FACTOR = 4


def longer_budget(cfg: Config, n_train: int) -> Config | None:
    """``cfg`` with `LONGER_FACTOR` times its epochs when those epochs were chosen from the data
    (``train.epochs`` under ``cfg.inferred``; explicit settings win) and give ``n_train``
    training samples fewer than ``TARGET_STEPS`` optimizer steps; otherwise None. The
    default detector cross-fits both budgets on a small table and keeps the one whose
    out-of-sample probabilities predict the given labels better (`noisytail.detect.detectors`)."""
    if "train.epochs" not in cfg.inferred:
        return None
    steps = max(1, math.ceil(n_train / cfg.train.batch_size)) * cfg.train.epochs
    if steps >= TARGET_STEPS:
        return None
    epochs = cfg.train.epochs * LONGER_FACTOR
    why = f"{steps} steps on {n_train} samples < {TARGET_STEPS}: x{LONGER_FACTOR} tried"
    return from_dict(
        {
            "train": {"epochs": epochs},
            "inferred": {**cfg.inferred, "train.epochs": f"{epochs} ({why})"},
        },
        cfg,
    )


def model_for(
    input_shape: tuple[int, ...], n_train: int, narrow: bool | None = None
) -> tuple[str, dict[str, Any], str]:
    """``(model name, options, why)`` for inputs of ``input_shape`` and ``n_train`` samples:
    feature vectors ``[D]`` get an ``mlp`` (hidden ``(64, 64)`` below ``SMALL_DATA`` samples, else
    its default ``(256, 256)``); images ``[C, H, W]`` a ``small_cnn`` (width 16 below
    ``SMALL_DATA``, else its default 32). ``narrow``: the narrower model whatever ``n_train``
    (True), the wider one (False), or by ``n_train`` (None, the CLI's rule)."""
    small = n_train < SMALL_DATA if narrow is None else narrow
    size = f"{n_train} training samples ({'<' if small else '>='} {SMALL_DATA})"
    if narrow is not None:
        size = f"the {'narrower' if small else 'wider'} model asked for"
    if len(input_shape) == 3:
        options = {"width": 16} if small else {}
        width = options.get("width", 32)
        return "small_cnn", options, f"images {list(input_shape)}; width {width} for {size}"
    options = {"hidden": [64, 64]} if small else {}
    hidden = options.get("hidden", [256, 256])
    return "mlp", options, f"feature vectors {list(input_shape)}; hidden {hidden} for {size}"


#: The registered models that take feature vectors ``[D]``; the others take images.
VECTOR_MODELS = ("mlp",)


def network_for_inputs(
    cfg: Config, input_shape: tuple[int, ...], n_train: int, *, fold_share: float = 1.0
) -> Config:
    """``cfg`` unchanged when its model takes inputs of ``input_shape`` (feature vectors: a
    `VECTOR_MODELS` model; images: any other); otherwise (e.g. a config built without
    `choose_defaults`, whose default ``small_cnn`` meets a table) ``cfg`` with `model_for`'s
    model for ``n_train`` samples and `epochs_for`'s epochs for the ``fold_share`` of them one
    model trains on (as in `choose_defaults`), each choice logged and recorded under
    ``inferred``."""
    if (len(input_shape) == 1) == (cfg.model.name in VECTOR_MODELS):
        return cfg
    name, options, why = model_for(tuple(input_shape), n_train)
    epochs, why_epochs = fold_epochs(n_train, cfg.train.batch_size, fold_share)
    choices = [
        Choice("model.name", f"{name} {options}", why),
        Choice("train.epochs", epochs, why_epochs),
    ]
    for c in choices:
        log.info("%s: %s cannot take these inputs", c.line(), cfg.model.name)
    return from_dict(
        {
            "model": {"name": name, "options": options},
            "train": {"epochs": epochs},
            "inferred": {**cfg.inferred, **{c.key: f"{c.value} ({c.why})" for c in choices}},
        },
        cfg,
    )


def explicit_keys(config_path: str | os.PathLike | None, overrides: Iterable[str]) -> set[str]:
    """The dotted keys a config file and ``key=value`` overrides set (e.g. ``train.epochs``,
    ``data.options.image_size``); a mapping value counts each key inside it too."""
    keys: set[str] = set()

    def walk(prefix: str, value: Any) -> None:
        if prefix:
            keys.add(prefix)
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)

    if config_path is not None:
        walk("", read_yaml_file(config_path, "config"))
    for text in overrides:
        path, value = parse_override(text)
        walk(".".join(path), value)
    return keys


def choose_defaults(
    cfg: Config,
    explicit: Iterable[str],
    *,
    training: bool | Callable[[bool], bool] = True,
    fold_share: float = 1.0,
    scope: Callable[[Config], Config] | None = None,
    epochs: bool = True,
) -> tuple[Config, list[Choice]]:
    """``cfg`` with the settings of the module docstring chosen from its data where no key in
    ``explicit`` names them, and the choices made (none for sources outside ``USER_SOURCES``).
    ``training=False`` (a detector that trains no network) leaves the model and the epochs
    alone; a callable is asked with whether the data are images (the default detector trains
    a network on tables only). The model follows the training split's size; the epochs follow
    the samples one model trains on, ``fold_share`` of the split (a detector cross-fitting
    over ``F`` folds trains each model on ``1 - 1/F`` of it). ``scope``: applied to the config
    once its source is known, before the data are looked at (``detect``: no test or validation
    split, every sample is checked: `noisytail.detect.task.whole_data_config`). ``epochs=False``
    leaves the epochs alone (``pretrain``: its own budget, the same model as ``train`` picks, so
    that the encoder fits the fine-tuned network). The data are
    loaded once here (files listed, image headers read, a CSV parsed)."""
    from .data.sources import load_dataset

    explicit = set(explicit)
    choices: list[Choice] = []
    if "data.name" not in explicit and "train_csv" in cfg.data.options and cfg.data.name != "csv":
        choices.append(Choice("data.name", "csv", "data.options.train_csv names a CSV"))
        cfg = from_dict({"data": {"name": "csv"}}, cfg)
    elif "data.name" not in explicit and holds_class_folders(cfg.data.root):
        choices.append(Choice("data.name", "image_folder", "data.root holds class folders"))
        cfg = from_dict({"data": {"name": "image_folder"}}, cfg)
    if scope is not None:
        cfg = scope(cfg)
    if cfg.data.name not in USER_SOURCES:
        return cfg, choices
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the run's own load says the source's notes, once
    try:
        bundle = load_dataset(cfg.data.name, root=cfg.data.root, options=source_options(cfg))
    finally:
        logging.disable(previous)
    options = {}
    for name, (value, why) in bundle.inferred.items():
        choices.append(Choice(f"data.options.{name}", value, why))
        options[name] = value
    if callable(training):
        training = training(bundle.is_image)
    n = len(bundle.train)
    if cfg.data.train_subset is not None:
        n = min(n, cfg.data.train_subset)
    n = max(1, int(n * (1.0 - cfg.data.val_fraction)))
    values: dict[str, Any] = {"data": {"options": options}} if options else {}
    if "model.name" not in explicit and training:
        name, model_options, why = model_for(tuple(bundle.input_shape), n)
        if any(k.startswith("model.options") for k in explicit):
            model_options = {}  # the user's own options for the model chosen
        values["model"] = {"name": name, "options": model_options}
        shown = f"{name} {model_options}" if model_options else name
        choices.append(Choice("model.name", shown, why))
    if "train.epochs" not in explicit and training and epochs:
        epochs, why = fold_epochs(n, cfg.train.batch_size, fold_share)
        values["train"] = {"epochs": epochs}
        choices.append(Choice("train.epochs", epochs, why))
    values["inferred"] = {c.key: f"{c.value} ({c.why})" for c in choices}
    return from_dict(values, cfg), choices


def reuse_choices(cfg: Config, run_dir: str | os.PathLike, explicit: Iterable[str]) -> Config:
    """``cfg`` with the choices recorded in the run folder's ``config.yaml`` (its ``inferred``
    keys, except those now set explicitly), so that ``--resume`` continues the run as it was
    chosen and a change of the data is reported as such, not as a changed config."""
    from .runfolder import read_run_config

    saved = read_run_config(run_dir)
    explicit = set(explicit)
    values: dict[str, Any] = {"inferred": {}}
    for key, why in saved.inferred.items():
        if key in explicit:
            continue
        values["inferred"][key] = why
        if key == "data.name":
            values.setdefault("data", {})["name"] = saved.data.name
        elif key.startswith("data.options."):
            name = key.split(".", 2)[2]
            values.setdefault("data", {}).setdefault("options", {})[name] = saved.data.options[name]
        elif key == "model.name":
            values["model"] = {"name": saved.model.name, "options": dict(saved.model.options)}
        elif key == "train.epochs":
            values["train"] = {"epochs": saved.train.epochs}
    return from_dict(values, cfg)


def apply_defaults(
    cfg: Config,
    config_path: str | os.PathLike | None,
    overrides: Iterable[str],
    echo: Callable[[str], Any] | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    training: bool | Callable[[bool], bool] = True,
    fold_share: float = 1.0,
    scope: Callable[[Config], Config] | None = None,
    epochs: bool = True,
) -> Config:
    """`choose_defaults` for a config built from ``config_path`` and ``overrides`` (what the
    CLI's ``train`` and ``detect`` do); one line per choice goes to ``echo`` (default: the
    ``noisytail.defaults`` logger at INFO). ``run_dir``: the run a ``--resume`` continues,
    whose recorded choices are reused (`reuse_choices`) when it has a ``config.yaml``.
    ``training``, ``fold_share``, ``scope``, ``epochs``: as in `choose_defaults`."""
    overrides = list(overrides)
    explicit = explicit_keys(config_path, overrides)
    if run_dir is not None and (Path(run_dir) / "config.yaml").is_file():
        try:
            return reuse_choices(cfg, run_dir, explicit)
        except (ConfigError, DataError):
            pass  # a damaged config.yaml: fit says so, or starts afresh without a checkpoint
    cfg, choices = choose_defaults(
        cfg, explicit, training=training, fold_share=fold_share, scope=scope, epochs=epochs
    )
    for choice in choices:
        (echo or log.info)(choice.line())
    return cfg
