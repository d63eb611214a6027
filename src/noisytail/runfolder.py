"""The run folder's files: atomic writes, checkpoints, metrics and the data fingerprint.

`noisytail.train.fit` writes ``config.yaml``, ``corruption.npz``, ``data_indices.npz``,
``data_fingerprint.json``, ``metrics.jsonl``, ``checkpoints/{last,best}.pt``, ``predictions.npz``
and ``summary.json``. Every file goes through `write_bytes`: a temporary file beside the target,
flushed to disk, then renamed over it, so a crash or a full disk leaves the old file whole.

A checkpoint holds only tensors, plain containers (dict, list, tuple), numbers, strings and None
(`check_plain` refuses anything else when saving) and is read with
``torch.load(weights_only=True)`` (`read_checkpoint`): a crafted file cannot run code, and every
unreadable file (empty, truncated, not a checkpoint, a refused object, a missing key) is a
one-line `CheckpointError`.

The data fingerprint (`data_fingerprint`) records what a run trained and tested on: per split the
number of samples, a hash of the sample ids (file paths where the samples are files) and of the
labels, and per-class counts; plus the train/validation/meta split and the noisy labels. Resume,
``evaluate`` and ``detect --from-run`` compare it with the data as it is now (`check_data`) and
refuse a run whose data changed, naming the first difference.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import pickle
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .config import Config, ConfigError, load_run_config
from .data.corruption import Corruption
from .data.types import DataError, DatasetBundle

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
FINGERPRINT_FILE = "data_fingerprint.json"
CORRUPTION_FILE = "corruption.npz"
#: The keys of ``checkpoints/last.pt``, the full training state that ``--resume`` continues.
CHECKPOINT_KEYS = ("epoch", "method", "extra", "optimizer", "history", "best", "config")


class CheckpointError(DataError):
    """A checkpoint cannot be used: missing, empty, damaged, refused or incomplete. The message
    reads ``<path>: <what is wrong>``."""


class DataChangedError(DataError):
    """The data a run folder was made on is not the data the config gives now."""


class WriteError(RuntimeError):
    """A file of a run folder could not be written (disk full, no permission); the previous
    version of the file, if any, is left as it was."""


def checkpoint_path(run_dir: str | os.PathLike, name: str = "last") -> Path:
    return Path(run_dir) / "checkpoints" / f"{name}.pt"


# --------------------------------------------------------------------------------------------
# Atomic writes


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``<path>.tmp``, fsync, rename (may raise OSError)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX only)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Atomically replace ``path`` with ``data`` (parents created); an OS error (e.g. a full disk)
    becomes a one-line `WriteError` and leaves the old file intact."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        _write_bytes(p, data)
    except OSError as err:
        reason = err.strerror or os.strerror(err.errno or errno.EIO) or str(err)
        raise WriteError(f"{p}: cannot write it ({reason}).") from err
    return p


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Atomically write UTF-8 ``text`` (see `write_bytes`)."""
    return write_bytes(text.encode("utf-8"), path)


def write_json(obj: Any, path: str | os.PathLike, *, default: Callable | None = None) -> Path:
    """Atomically write ``obj`` as indented JSON (see `write_bytes`)."""
    return write_text(json.dumps(obj, indent=2, default=default), path)


def write_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Atomically write a compressed ``.npz`` of ``arrays`` at exactly ``path``."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return write_bytes(buf.getvalue(), path)


# --------------------------------------------------------------------------------------------
# Checkpoints

_PLAIN = (str, int, float, bool, type(None), torch.Size, torch.dtype, torch.device)


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise TypeError unless ``obj`` is made of what ``torch.load(weights_only=True)`` reads
    back: tensors, dict / list / tuple, str, int, float, bool, None (and torch sizes, dtypes,
    devices). numpy arrays and scalars, RNG states and dataclasses must be converted first."""
    if isinstance(obj, torch.Tensor) or (
        isinstance(obj, _PLAIN) and not isinstance(obj, np.generic)
    ):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key of type {type(key).__name__}: use str or int.")
            check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}: a checkpoint holds only "
        "tensors, dict/list/tuple, str, int, float, bool and None (convert it, e.g. to a tensor)."
    )


def write_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """Atomically ``torch.save`` ``obj`` (checked by `check_plain`, so that `read_checkpoint`
    can read it back under ``weights_only=True``)."""
    check_plain(obj)
    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_bytes(buf.getvalue(), path)


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def read_checkpoint(
    path: str | os.PathLike,
    map_location: Any = "cpu",
    *,
    required: Sequence[str] = (),
    what: str | None = None,
) -> dict[str, Any]:
    """The dict saved at ``path``, loaded with ``torch.load(weights_only=True)`` (no code runs).

    Every failure is a one-line `CheckpointError` ``"[what: ]<path>: <what is wrong>"``: not
    found, a folder, 0 bytes, truncated or not a PyTorch file, holding Python objects that
    ``weights_only`` refuses, holding something other than a dict (e.g. a bare tensor), or
    lacking one of the ``required`` keys.
    """
    p = Path(path)
    prefix = f"{what}: " if what else ""

    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f"{prefix}{p}: {problem}")

    if not p.exists():
        raise fail("not found.")
    if p.is_dir():
        raise fail("is a folder, not a checkpoint file.")
    if p.stat().st_size == 0:
        raise fail(
            "is empty (0 bytes): it was cut off while being written, or is not a checkpoint."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on an unusual pickle protocol
            state = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        held = f" ({found.group(1)})" if found else ""
        raise fail(
            f"refused: it holds a Python object{held} or is damaged; noisytail loads only "
            "tensors, numbers, strings and plain containers (torch.load weights_only=True), "
            "because loading objects can run code."
        ) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError, TypeError) as err:
        raise fail(
            f"cannot be read: it is truncated, damaged or not a PyTorch checkpoint ({_short(err)})."
        ) from None
    if isinstance(state, torch.Tensor):
        raise fail(
            "holds a bare tensor, not a dict of weights (save {'model': model.state_dict()})."
        )
    if not isinstance(state, dict):
        raise fail(f"holds a {type(state).__name__}, not a checkpoint dict.")
    missing = [k for k in required if k not in state]
    if missing:
        raise fail(
            f"lacks {', '.join(repr(k) for k in missing)}: not a complete noisytail checkpoint."
        )
    return state


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
        raise DataError(f"{p}: cannot be read ({_short(err)}).") from None
    except yaml.YAMLError as err:
        raise DataError(f"{p}: not valid YAML ({_short(err)}).") from None
    if not isinstance(shape, dict):
        raise DataError(f"{p}: holds a {type(shape).__name__}, not a run's config (a mapping).")
    try:
        return load_run_config(p)
    except ConfigError as err:
        raise ConfigError(f"{p}: {err}") from None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (one JSON object a line)."""
    lines = Path(path).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


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


# --------------------------------------------------------------------------------------------
# Data fingerprint


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ints(a: Any) -> bytes:
    return np.ascontiguousarray(np.asarray(a, dtype=np.int64)).tobytes()


def _split_print(split: Any, ids: np.ndarray, num_classes: int) -> dict[str, Any]:
    if split.paths is not None:
        id_hash = _sha("\n".join(str(p) for p in split.paths).encode("utf-8"))
    else:
        id_hash = _sha(_ints(ids))
    labels = np.asarray(split.labels)
    return {
        "samples": len(labels),
        "ids_sha256": id_hash,
        "labels_sha256": _sha(_ints(labels)),
        "class_counts": np.bincount(labels[labels >= 0], minlength=num_classes).tolist(),
    }


def data_fingerprint(
    bundle: DatasetBundle,
    corruption: Corruption,
    train_source_idx: np.ndarray,
    test_source_idx: np.ndarray,
) -> dict[str, Any]:
    """What a run trains and tests on, as plain JSON data (see the module docstring).

    ``bundle`` is the data after sub-setting (its ``train`` the training split the corruption
    indexes), ``train_source_idx`` / ``test_source_idx`` the ids in the source's splits.
    """
    k = bundle.num_classes
    return {
        "format": 1,
        "dataset": bundle.name,
        "classes": [str(c) for c in bundle.class_names],
        "input_shape": [int(s) for s in bundle.input_shape],
        "train": _split_print(bundle.train, train_source_idx, k),
        "test": _split_print(bundle.test, test_source_idx, k),
        "corruption": {
            "train": len(corruption.train_idx),
            "val": len(corruption.val_idx),
            "meta": len(corruption.meta_idx),
            "split_sha256": _sha(
                b"|".join(
                    _ints(a)
                    for a in (corruption.train_idx, corruption.val_idx, corruption.meta_idx)
                )
            ),
            "noisy_labels_sha256": _sha(_ints(corruption.noisy_labels)),
        },
    }


def write_fingerprint(fingerprint: dict[str, Any], run_dir: str | os.PathLike) -> Path:
    return write_json(fingerprint, Path(run_dir) / FINGERPRINT_FILE)


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:6])
    return f"[{shown}{', ...' if len(items) > 6 else ''}] ({len(items)})"


def _differing(run_dir: Path, key: str, now: np.ndarray) -> int | None:
    """How many entries of the saved corruption's ``key`` array differ from ``now``."""
    try:
        saved = Corruption.load(run_dir / CORRUPTION_FILE)
    except (OSError, KeyError, ValueError):
        return None
    old = getattr(saved, key)
    if old.shape != now.shape:
        return None
    return int((old != now).sum())


def data_difference(
    saved: dict[str, Any],
    now: dict[str, Any],
    *,
    run_dir: Path | None = None,
    corruption: Corruption | None = None,
) -> str | None:
    """The first difference between two fingerprints, in words, or None if they agree.

    With ``run_dir`` (holding the run's ``corruption.npz``) and the ``corruption`` of now, differing
    labels are counted sample by sample."""
    if saved.get("format") != now.get("format"):
        return (
            f"the run's fingerprint has format {saved.get('format')}, this version writes "
            + str(now.get("format"))
        )
    if saved["dataset"] != now["dataset"]:
        return f"the data set is {now['dataset']!r} now, the run was made on {saved['dataset']!r}"
    if saved["classes"] != now["classes"]:
        return (
            f"the classes are {_names(now['classes'])} now, the run was made on "
            f"{_names(saved['classes'])}"
        )
    if saved["input_shape"] != now["input_shape"]:
        new_shape, old_shape = ("x".join(map(str, f["input_shape"])) for f in (now, saved))
        return f"inputs are {new_shape} now, the run was made on {old_shape}"
    for key, name in (("train", "training split"), ("test", "test split")):
        old, new = saved[key], now[key]
        if old["samples"] != new["samples"]:
            return f"the {name} has {new['samples']} samples, the run was made on {old['samples']}"
        if old["ids_sha256"] != new["ids_sha256"]:
            return (
                f"the {name} holds other samples (files or ids) than the run's, as many "
                f"({new['samples']})"
            )
        if old["labels_sha256"] != new["labels_sha256"]:
            count = None
            if key == "train" and run_dir is not None and corruption is not None:
                count = _differing(run_dir, "true_labels", corruption.true_labels)
            if count:
                return f"labels differ at {count} of {new['samples']} samples of the {name}"
            moved = sum(a != b for a, b in zip(old["class_counts"], new["class_counts"]))
            counts = f" ({moved} classes have other sizes)" if moved else ""
            return f"the {name}'s labels differ from the run's{counts}"
    old, new = saved["corruption"], now["corruption"]
    for key in ("train", "val", "meta"):
        if old[key] != new[key]:
            return f"the {key} set has {new[key]} samples, the run had {old[key]}"
    if old["split_sha256"] != new["split_sha256"]:
        return "the train/validation/meta split differs from the run's"
    if old["noisy_labels_sha256"] != new["noisy_labels_sha256"]:
        count = None
        if run_dir is not None and corruption is not None:
            count = _differing(run_dir, "noisy_labels", corruption.noisy_labels)
        at = f" at {count} samples" if count else ""
        return f"the noisy training labels (synthetic noise or a label file) differ{at}"
    return None


def check_data(
    run_dir: str | os.PathLike, now: dict[str, Any], corruption: Corruption | None = None
) -> None:
    """Raise `DataChangedError` naming the first difference if the run in ``run_dir`` was made on
    other data than fingerprint ``now`` describes (``corruption``: the corruption of now, to count
    differing labels). A run folder without a fingerprint (older versions) is refused too."""
    run = Path(run_dir)
    p = run / FINGERPRINT_FILE
    if not p.is_file():
        raise DataChangedError(
            f"{p}: not found, so the run's data cannot be checked (was the run made by an older "
            "noisytail?); start a new run."
        )
    try:
        saved = json.loads(p.read_text())
        diff = data_difference(saved, now, run_dir=run, corruption=corruption)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{p}: damaged ({_short(err)}); start a new run.") from None
    if diff is not None:
        raise DataChangedError(
            f"{run}: the data changed since the run: {diff}. Restore the run's data, or start a "
            "new run."
        )
