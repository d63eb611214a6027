"""The checkpoint file: what a ``.pt`` file may hold and the one safe way to read it.

`write_checkpoint` refuses what ``torch.load(weights_only=True)`` could not read back
(`check_plain`) and writes atomically; `read_checkpoint` loads with ``weights_only=True`` (no
code runs) and turns every failure into a one-line `CheckpointError`. Which keys a run's
checkpoints hold is `noisytail.runfolder`'s schema; this module sits below ``methods/`` so that a
method reading another run's checkpoint (``moit_plus``'s ``clean_from``) imports nothing above it.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import write_bytes
from .data.types import DataError
from .errors import short_error


class CheckpointError(DataError):
    """A checkpoint cannot be used: missing, empty, damaged, refused or incomplete. The message
    reads ``<path>: <what is wrong>``."""


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
            "cannot be read: it is truncated, damaged or not a PyTorch checkpoint "
            f"({short_error(err)})."
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
