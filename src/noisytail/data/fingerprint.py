"""The data fingerprint: what a run trained and tested on, and whether the data changed since.

`data_fingerprint` records, per split, the number of samples, a hash of the sample ids (file paths
where the samples are files) and of the labels, and per-class counts; plus the
train/validation/meta split and the noisy labels. Resume, ``evaluate`` and ``detect --from-run``
compare it with the data as it is now (`check_data`) and refuse a run whose data changed, naming
the first difference (`data_difference`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from noisytail.data.corruption import Corruption
from noisytail.data.types import DataError, DatasetBundle
from noisytail.errors import short_error

#: The run-folder files that record a run's data: its fingerprint and its corruption record.
FINGERPRINT_FILE = "data_fingerprint.json"
CORRUPTION_FILE = "corruption.npz"


class DataChangedError(DataError):
    """The data a run folder was made on is not the data the config gives now."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ints(a: Any) -> bytes:
    return np.ascontiguousarray(np.asarray(a, dtype=np.int64)).tobytes()


def _split_print(split: Any, ids: np.ndarray, num_classes: int) -> dict[str, Any]:
    if split.paths is not None:
        # a file name that is not UTF-8 hashes as its own bytes (Python's surrogateescape)
        names = "\n".join(str(p) for p in split.paths)
        id_hash = _sha(names.encode("utf-8", "surrogateescape"))
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
        raise DataError(f"{p}: damaged ({short_error(err)}); start a new run.") from None
    if diff is not None:
        raise DataChangedError(
            f"{run}: the data changed since the run: {diff}. Restore the run's data, or start a "
            "new run."
        )
