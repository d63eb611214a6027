"""Atomic file writes, below every module that saves a file (the run folder, ``config.yaml``,
``corruption.npz``): a temporary file beside the target, flushed to disk, then renamed over it,
so a crash or a full disk leaves the old file whole. `noisytail.runfolder` re-exports them."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class WriteError(RuntimeError):
    """A file of a run folder could not be written (disk full, no permission); the previous
    version of the file, if any, is left as it was."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Permissions of a written file: what ``open(path, "w")`` would give under this process' umask.
FILE_MODE = 0o666 & ~_umask()


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a new temporary file beside it, fsync, rename (may raise
    OSError). The temporary file is created afresh (``O_EXCL``), and the rename replaces ``path``
    itself: a symbolic link planted in a received run folder is replaced, never followed."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), FILE_MODE)
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
    """Atomically write UTF-8 ``text`` (see `write_bytes`); a file name in it that is not
    UTF-8 (read by Python as surrogate escapes) is written as its own bytes."""
    return write_bytes(text.encode("utf-8", "surrogateescape"), path)


def write_json(obj: Any, path: str | os.PathLike, *, default: Callable | None = None) -> Path:
    """Atomically write ``obj`` as indented JSON (see `write_bytes`)."""
    return write_text(json.dumps(obj, indent=2, default=default), path)


def write_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Atomically write a compressed ``.npz`` of ``arrays`` at exactly ``path``."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return write_bytes(buf.getvalue(), path)
