"""The run folder: its paths, atomic writes, the checkpoint schema, the summary and the metrics.

`noisytail.train.fit` writes ``config.yaml``, ``corruption.npz``, ``data_indices.npz``,
``data_fingerprint.json`` (`noisytail.data.fingerprint`), ``metrics.jsonl``,
``checkpoints/{last,best}.pt``, ``predictions.npz`` and ``summary.json`` (`noisytail.summary`).
Every file goes through `write_bytes` (`noisytail.atomic`, re-exported here): a temporary file
beside the target, flushed to disk, then renamed over it, so a crash or a full disk leaves the old
file whole. `epoch_writer` is the loop's per-epoch writer (metrics line, checkpoints).

A checkpoint holds only tensors, plain containers (dict, list, tuple), numbers, strings and None
(`noisytail.checkpoint_file.check_plain` refuses anything else when saving) and is read with
``torch.load(weights_only=True)`` (`read_checkpoint`, from `noisytail.checkpoint_file`, which
sits below ``methods/``; re-exported here): a crafted file cannot run code, and every
unreadable file (empty, truncated, not a checkpoint, a refused object, a missing key) is a
one-line `CheckpointError`. Its schema: ``last.pt`` holds `CHECKPOINT_KEYS` (the whole training
state that ``--resume`` continues), ``best.pt`` holds `WEIGHTS_KEYS` (the whole method state of
the best epoch: both networks of a two-network method). Both carry ``inference``
(`inference_record`: what the model needs to live without the training data).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from tqdm import tqdm

from .atomic import WriteError, write_bytes, write_json, write_npz, write_text  # noqa: F401 (re-exported)
from .checkpoint_file import CheckpointError, read_checkpoint, write_checkpoint
from .config import (
    Config,
    ConfigError,
    dump_config,
    load_run_config,
    to_dict,
    without_execution_settings,
)
from .data.fingerprint import CORRUPTION_FILE, FINGERPRINT_FILE
from .data.types import DataError, DatasetBundle
from .errors import short_error

if TYPE_CHECKING:
    from .data.prepare import PreparedData
    from .train import Run

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
INDICES_FILE = "data_indices.npz"
#: The keys of ``checkpoints/last.pt``, the full training state that ``--resume`` continues.
CHECKPOINT_KEYS = ("epoch", "method", "extra", "optimizer", "history", "best", "config")
#: The keys of ``checkpoints/best.pt``: the method's whole state at the best epoch.
WEIGHTS_KEYS = ("epoch", "method", "extra", "config")
#: Data sources whose images are files resized to ``data.options.image_size`` when read.
RESIZING_SOURCES = ("image_folder", "csv", "list_file", "clothing1m", "isic2019")

log = logging.getLogger(__name__)
#: One line per finished epoch when no progress bar shows them (the CLI prints it as it is).
epoch_log = logging.getLogger("noisytail.epochs")


def checkpoint_path(run_dir: str | os.PathLike, name: str = "last") -> Path:
    return Path(run_dir) / "checkpoints" / f"{name}.pt"


# --------------------------------------------------------------------------------------------
# The run's config and metrics


def read_run_config(run_dir: str | os.PathLike) -> Config:
    """The resolved config saved in ``run_dir/config.yaml``; a missing, unreadable or invalid
    file is a one-line `DataError` / `ConfigError` naming it."""
    p = Path(run_dir) / CONFIG_FILE
    if not p.is_file():
        raise DataError(f"{p}: not found: {Path(run_dir)} is not a run folder.")
    try:
        shape = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{p}: cannot be read ({short_error(err)}).") from None
    except yaml.YAMLError as err:
        raise DataError(f"{p}: not valid YAML ({short_error(err)}).") from None
    if not isinstance(shape, dict):
        raise DataError(f"{p}: holds a {type(shape).__name__}, not a run's config (a mapping).")
    try:
        return load_run_config(p)
    except ConfigError as err:
        raise ConfigError(f"{p}: {err}") from None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (one JSON object a line); a line that is not one (the
    truncated last line of a crashed run) is skipped, a missing file has none."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        with contextlib.suppress(ValueError):
            row = json.loads(line)
            if isinstance(row, dict):
                rows.append(row)
    return rows


def append_metrics(record: dict[str, Any], path: str | os.PathLike) -> None:
    """Append one epoch's record to ``metrics.jsonl`` (flushed to disk)."""
    p = Path(path)
    try:
        with open(p, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        raise WriteError(f"{p}: cannot write it ({err.strerror or err}).") from err


def write_metrics(records: Iterable[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Atomically replace ``metrics.jsonl`` with ``records``: on resume, the checkpoint's history,
    which drops epochs logged after the checkpoint was saved."""
    return write_text("".join(json.dumps(r) + "\n" for r in records), path)


def write_fingerprint(fingerprint: dict[str, Any], run_dir: str | os.PathLike) -> Path:
    return write_json(fingerprint, Path(run_dir) / FINGERPRINT_FILE)


# --------------------------------------------------------------------------------------------
# The checkpoint schema


def inference_record(cfg: Config, bundle: DatasetBundle) -> dict[str, Any]:
    """What a checkpoint needs to classify new inputs without the training data (issue 11: a
    trained model that lives on its own), stored under its ``inference`` key: the model's
    ``{"name", "options"}``, the ``class_names`` ``[K]``, the ``input_shape`` ``[C, H, W]`` (or
    ``[D]`` for feature vectors), the per-channel (per-column) ``mean`` and ``std`` the inputs
    are normalised with (empty for raw features), ``resize``: whether the source resized
    image files to the input size when read (`RESIZING_SOURCES`), so new images are resized
    the same way, and, for a feature CSV, its ``feature_names`` ``[D]`` in input order."""
    record: dict[str, Any] = {
        "model": {"name": cfg.model.name, "options": dict(cfg.model.options)},
        "class_names": [str(c) for c in bundle.class_names],
        "input_shape": [int(s) for s in bundle.input_shape],
        "mean": [float(m) for m in bundle.mean],
        "std": [float(s) for s in bundle.std],
        "resize": cfg.data.name in RESIZING_SOURCES and len(bundle.input_shape) == 3,
    }
    if bundle.feature_names is not None:
        record["feature_names"] = [str(c) for c in bundle.feature_names]
    return record


def model_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's weights (``method.model``'s state dict) in a checkpoint dict: the ``model.*``
    entries of its method state, or the ``model`` of an encoder file or an older ``best.pt``
    (empty if neither)."""
    weights = state.get("model")
    if weights is None and isinstance(state.get("method"), dict):
        weights = {
            k[len("model.") :]: v for k, v in state["method"].items() if k.startswith("model.")
        }
    return weights if isinstance(weights, dict) else {}


def check_training_state(state: dict[str, Any], path: Path, epochs: int) -> None:
    """Refuse (`CheckpointError`) a ``last.pt`` whose ``epoch``, ``history`` and ``best`` do not
    agree with each other or with a run of ``epochs`` epochs: the file is damaged."""
    epoch, history = state["epoch"], state["history"]
    if not (
        isinstance(epoch, int)
        and 0 < epoch <= epochs
        and isinstance(history, list)
        and len(history) == epoch
        and all(isinstance(r, dict) and r.get("epoch") == i + 1 for i, r in enumerate(history))
        and isinstance(state["best"], dict)
    ):
        raise CheckpointError(
            f"{path}: its epoch ({epoch!r}) and history do not agree with each other or with "
            f"train.epochs={epochs}: the file is damaged."
        )


def method_state(method: Any, cfg: Config, bundle: DatasetBundle, epoch: int) -> dict[str, Any]:
    """``best.pt`` (`WEIGHTS_KEYS` and ``inference``): the `noisytail.methods.Method`'s whole
    state after ``epoch`` (every network of a two-network method), its extra state, the config,
    and `inference_record`."""
    return {
        "epoch": epoch,
        "method": method.state_dict(),
        "extra": method.extra_state(),
        "config": to_dict(cfg),
        "inference": inference_record(cfg, bundle),
    }


def training_state(
    method: Any,
    optimizer: torch.optim.Optimizer,
    cfg: Config,
    bundle: DatasetBundle,
    epoch: int,
    history: list[dict[str, Any]],
    best: dict[str, Any],
) -> dict[str, Any]:
    """``last.pt`` (`CHECKPOINT_KEYS` and ``inference``): `method_state` plus the optimizer, the
    epoch records and the best epoch's, which ``--resume`` continues from."""
    state = method_state(method, cfg, bundle, epoch)
    return {**state, "optimizer": optimizer.state_dict(), "history": history, "best": best}


def load_state(
    path: Path,
    method: Any,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: Any = "cpu",
    epochs: int = 0,
) -> dict[str, Any]:
    """Load ``path``'s method state and extra state into ``method`` (an older ``best.pt`` holds
    the model's weights only); with ``optimizer`` (resume), ``path`` must be a whole training
    state of a run of ``epochs`` epochs, and the optimizer's state is loaded too. Returns the
    checkpoint dict."""
    state = read_checkpoint(path, map_location, required=CHECKPOINT_KEYS if optimizer else ())
    if optimizer is not None:
        check_training_state(state, path, epochs)
    with unfit(path):
        if "method" in state:
            method.load_state_dict(state["method"])
            method.load_extra_state(state.get("extra", {}))
        elif "model" in state:
            method.model.load_state_dict(state["model"])
        else:
            raise CheckpointError(f"{path}: lacks 'method' or 'model': it holds no weights.")
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
    return state


@contextlib.contextmanager
def unfit(path: Path) -> Iterator[None]:
    """Turn a state that does not fit the run's model, method or optimizer into a one-line
    `CheckpointError` naming ``path``."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as err:
        if isinstance(err, (ConfigError, DataError)):
            raise
        raise CheckpointError(
            f"{path}: does not fit this run's model, method or optimizer ({short_error(err)})."
        ) from None


def read_init_weights(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """``model.init``: the model weights of an encoder file, a checkpoint, or a run folder (its
    ``checkpoints/last.pt``), as ``(file, state dict)``; one-line errors name the file."""
    p = Path(path)
    if p.is_dir():
        p = checkpoint_path(p)
    if not p.is_file():
        raise ConfigError(
            f"model.init: {str(p)!r} not found (give an encoder .pt or a run folder)."
        )
    state = read_checkpoint(p, "cpu", what="model.init")
    if not isinstance(state.get("model", state.get("method", {})), dict):
        raise CheckpointError(f"model.init: {p}: its weights are not a dict.")
    return p, model_weights(state)


# --------------------------------------------------------------------------------------------
# Starting a run folder


class RunExistsError(FileExistsError):
    """The output folder already holds a run."""


def _written_by_a_run(config_file: Path) -> bool:
    """Whether ``config_file`` is one `start_run_folder` wrote (it has a top-level
    ``_provenance:`` line), read as text so that a damaged file still counts."""
    try:
        text = config_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(line.startswith("_provenance:") for line in text.splitlines())


def prepare_out_dir(out_dir: Path, cfg: Config, resume: bool, is_main: bool) -> bool:
    """Check ``out_dir`` for a new run or for ``resume``; return whether to resume from a
    checkpoint. ``--resume`` on a run that stopped before its first checkpoint (a ``config.yaml``
    but no ``checkpoints/last.pt``) starts it afresh, saying so in one line, with ``cfg``."""
    if resume:
        if not (out_dir / CONFIG_FILE).exists() and not checkpoint_path(out_dir).exists():
            raise RunExistsError(
                f"--resume: {out_dir} holds no run (no config.yaml, no checkpoint); start it "
                "without --resume."
            )
        if not checkpoint_path(out_dir).exists():  # its config.yaml is replaced, even if damaged
            if not _written_by_a_run(out_dir / CONFIG_FILE):
                raise RunExistsError(
                    f"--resume: {out_dir / CONFIG_FILE} is not a run's config (noisytail writes "
                    "a _provenance block in it) and the folder holds no checkpoint: it is left "
                    "as it is; choose another --out."
                )
            if is_main:
                log.warning(
                    f"--resume: {out_dir} holds no checkpoint (the run stopped before its first "
                    "one); starting it afresh."
                )
                for stale in (out_dir / METRICS_FILE, checkpoint_path(out_dir, "best")):
                    stale.unlink(missing_ok=True)
            return False
        saved = read_run_config(out_dir)  # one-line error if missing or damaged
        changed = config_difference(
            comparable_config(to_dict(saved)), comparable_config(to_dict(cfg))
        )
        if changed is not None:
            raise ConfigError(
                f"--resume: the config differs from the one saved in {out_dir / CONFIG_FILE} "
                f"({changed}); resume with the same config and overrides."
            )
        return True
    if (out_dir / CONFIG_FILE).exists():
        raise RunExistsError(
            f"{out_dir} already holds a run; pass --resume to continue it, or choose another --out."
        )
    if out_dir.exists() and any(out_dir.iterdir()):
        raise RunExistsError(f"{out_dir} exists and is not empty; choose another --out.")
    return False


def pin_execution(cfg: Config, out_dir: Path) -> Config:
    """On resume: ``cfg`` with the precision and memory layout the run's last epoch trained with
    (``metrics.jsonl``) where ``cfg`` leaves them to the machine (``train.precision=auto``,
    ``train.channels_last`` unset), so that a run resumed on another machine goes on as it
    started (the resume check has made sure that the config asks the same; what it leaves to the
    machine is taken from the run). Every epoch's record says what it used."""
    records = read_metrics(out_dir / METRICS_FILE)
    last, t, pinned = (records[-1] if records else {}), cfg.train, {}
    if t.precision == "auto" and last.get("precision") in ("fp32", "bf16"):
        pinned["precision"] = last["precision"]
    if t.channels_last is None and isinstance(last.get("channels_last"), bool):
        pinned["channels_last"] = last["channels_last"]
    if pinned:
        log.debug("resuming with the run's own %s", pinned)
    return dataclasses.replace(cfg, train=dataclasses.replace(t, **pinned)) if pinned else cfg


def comparable_config(values: dict[str, Any], *, also: tuple[str, ...] = ()) -> dict[str, Any]:
    """What two runs' configs (`to_dict` results) are compared on (``--resume``; the runs
    paired in a budget gap): without the execution settings, the device (a run may continue
    on another machine), ``inferred`` (the reasons for choices, absent where the user set the
    same value) and the top-level or ``train.`` keys ``also`` names (e.g. ``seed``,
    ``train.epochs``). A new dict."""
    values = without_execution_settings(values)
    values.pop("inferred", None)
    drop = {"device", *(k.removeprefix("train.") for k in also if k.startswith("train."))}
    values["train"] = {k: v for k, v in values.get("train", {}).items() if k not in drop}
    for key in also:
        values.pop(key, None)
    return values


def config_difference(saved: Any, given: Any, prefix: str = "") -> str | None:
    """The first dotted key whose value differs between two nested dicts, as ``"key: saved ->
    given"``; None when they are equal."""
    if isinstance(saved, dict) and isinstance(given, dict):
        for key in sorted(set(saved) | set(given), key=str):
            missing = "(unset)"
            found = config_difference(
                saved.get(key, missing), given.get(key, missing), f"{prefix}{key}."
            )
            if found is not None:
                return found
        return None
    if saved == given:
        return None
    return f"{prefix.rstrip('.')}: {saved!r} -> {given!r}"


def start_run_folder(
    out_dir: Path, cfg: Config, prepared: PreparedData, provenance: dict[str, Any]
) -> None:
    """Write a new run's ``config.yaml`` (with ``_provenance``), and from its ``prepared`` data
    ``corruption.npz``, ``data_indices.npz`` (the source indices of the train and test splits)
    and ``data_fingerprint.json``."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out_dir / CONFIG_FILE, extra=provenance)
        prepared.corruption.save(out_dir / CORRUPTION_FILE)
    except OSError as err:
        raise WriteError(
            f"{out_dir}: cannot write the run folder ({err.strerror or err})."
        ) from err
    write_npz(
        out_dir / INDICES_FILE,
        train_source_idx=prepared.train_source_idx,
        test_source_idx=prepared.test_source_idx,
    )
    write_fingerprint(prepared.fingerprint(), out_dir)


def drop_stale_best(run: Run) -> None:
    """On resume: remove a ``best.pt`` that is not the restored best epoch's (the stopped
    attempt wrote it after its last checkpoint). A replay that reaches that epoch again writes
    it anew; one that does not (a GPU's non-deterministic kernels) would otherwise leave
    ``best.pt`` holding weights of an epoch that is not in the run's history."""
    path = checkpoint_path(run.out, "best")
    if not path.exists():
        return
    saved = read_checkpoint(path).get("epoch")
    if saved != run.best.get("epoch"):
        log.warning(
            f"{path} holds epoch {saved}, but the checkpoint resumed from has its best at epoch "
            f"{run.best.get('epoch')}: it is removed and written again at the next best epoch."
        )
        path.unlink()


def _checkpoints_epoch(epoch: int, train: Any) -> bool:
    """Whether `epoch_writer` writes ``last.pt`` after ``epoch``: every ``checkpoint_every``
    epochs and at the last."""
    return epoch % train.checkpoint_every == 0 or epoch == train.epochs


def checkpoint_at_stop(run: Run) -> None:
    """``last.pt`` for a run stopped early (``stop_after_epochs``) after an epoch that
    `epoch_writer` did not checkpoint, so that ``--resume`` goes on from there instead of
    starting afresh."""
    if run.history:
        epoch = run.history[-1]["epoch"]
        if not _checkpoints_epoch(epoch, run.cfg.train):
            write_checkpoint(run.checkpoint_state(epoch), checkpoint_path(run.out))


def epoch_writer(run: Run, progress: bool) -> Callable[[dict[str, Any]], None]:
    """`noisytail.train.fit`'s ``on_epoch`` for ``run``: the record to ``metrics.jsonl``,
    ``best.pt`` when the epoch is the best so far, ``last.pt`` every ``train.checkpoint_every``
    epochs and at the end, and an ``epoch k/N ...`` line (above the bars with ``progress``, else
    to the ``noisytail.epochs`` logger)."""
    out, t = run.out, run.cfg.train

    def write(record: dict[str, Any]) -> None:
        epoch = record["epoch"]
        try:
            append_metrics(record, out / METRICS_FILE)
            if run.best.get("epoch") == epoch:
                write_checkpoint(run.weights_state(epoch), checkpoint_path(out, "best"))
            if _checkpoints_epoch(epoch, t):
                write_checkpoint(run.checkpoint_state(epoch), checkpoint_path(out))
        except WriteError as err:
            raise WriteError(
                f"{err} Training stopped in epoch {epoch}; free some space, then rerun "
                "with --resume to continue from the last checkpoint."
            ) from err
        shown = {
            k: record[k] for k in ("train_loss", "val_accuracy", "test_accuracy") if k in record
        }
        line = (
            f"epoch {epoch}/{t.epochs} "
            + " ".join(f"{k}={v:.4f}" for k, v in shown.items())
            + f" ({record['seconds']:.1f}s)"
        )
        if progress:  # above the bars
            tqdm.write(line)
        else:  # a log line: the CLI prints it, a notebook shows it only if it asks for INFO
            epoch_log.info(line)

    return write
