"""One bench at a time per output folder: an ``flock`` on ``OUT/.bench.lock`` naming its holder
(`noisytail.bench`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCK_FILE = ".bench.lock"


class BenchBusyError(RuntimeError):
    """Another bench process holds the output folder's lock."""


@dataclass(frozen=True)
class HeldLock:
    """A held bench lock: its file and the descriptor whose ``flock`` it is. A bench passes
    ``fd`` to the runs it starts, so the lock stays held while any of them is still going, even
    if the bench itself is killed."""

    path: Path
    fd: int


@contextlib.contextmanager
def folder_lock(out: Path, echo: Any = None) -> Iterator[HeldLock]:
    """Hold an exclusive lock on the bench folder ``out`` (``out/.bench.lock``) while inside.

    The lock is an ``flock`` on the file, which the system drops when the last process holding
    its descriptor ends (the bench, and the runs it passed `HeldLock.fd` to), so a lock left by a
    killed bench whose runs have ended is taken over (saying so); the file records the holder's
    pid, host and start time, which a refused second bench names (`BenchBusyError`). ``echo``
    (default: this module's logger at INFO) gets the take-over note.
    """
    import fcntl

    echo = log.info if echo is None else echo
    path = out / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise BenchBusyError(
                f"{out} is in use by another noisytail bench ({holder}); wait for it to finish "
                "or choose another --out."
            ) from None
        except OSError as err:
            os.close(fd)
            raise BenchBusyError(f"Cannot lock {path}: {err.strerror or err}.") from None
        try:  # the file may have been removed by a holder that just finished: lock the new one
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        stale = os.read(fd, 4096).decode(errors="replace").strip()
        if stale:
            echo(f"taking over the lock of a bench that is no longer running ({_describe(stale)})")
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        yield HeldLock(path, fd)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        return _describe(os.pread(fd, 4096, 0).decode(errors="replace"))
    except OSError:
        return "holder unknown"


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        held = f"pid {info['pid']} on {info['host']}, since {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "starting up" if not text.strip() else "holder unknown"
    if info["host"] == socket.gethostname() and not _alive(info["pid"]):
        held += "; that bench has ended, but runs it started still hold the folder"
    return held


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError, TypeError):  # another user's process, or not a pid
        return True
    return True
