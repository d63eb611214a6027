"""The ``noisytail`` command's error handling: the library's typed errors and click's usage errors
as one ``error: ...`` line on stderr with exit code 2 (bad input) or 1 (a run failed), and the
library's log messages as ``note: ...`` lines."""

from __future__ import annotations

import logging
import sys

import click

from .config import ConfigError
from .registry import RegistryError

BAD_INPUT = 2
RUN_FAILED = 1


def fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def guard(fn):  # type: ignore[no-untyped-def]
    """Turn the library's errors into one-line messages and exit codes."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        import errno

        from .data.types import DataError
        from .runfolder import RunExistsError, WriteError
        from .train import TrainingError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, RegistryError, DataError, RunExistsError) as err:
            fail(str(err), BAD_INPUT)
        except (TrainingError, WriteError) as err:  # WriteError: e.g. a full disk at a save
            fail(str(err), RUN_FAILED)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            fail(f"{err.filename or 'a file'}: no space left on the device.", RUN_FAILED)
        except KeyboardInterrupt:
            resumable = fn.__name__ in ("train", "pretrain")
            hint = (
                "; rerun with --resume to continue from the last checkpoint (or to start afresh "
                "if none was written)"
                if resumable
                else ""
            )
            fail(f"interrupted{hint}.", 130)

    return wrapper


class _BadUsage(click.ClickException):
    """A command-line usage error, shown as one line (click shows three) with exit code 2."""

    exit_code = BAD_INPUT

    def __init__(self, err: click.UsageError) -> None:
        command = err.ctx.command_path if err.ctx is not None else "noisytail"
        super().__init__(f"{err.format_message()} (see {command} --help)")

    def show(self, file=None) -> None:  # type: ignore[no-untyped-def]
        click.echo(f"error: {self.format_message()}", err=True)


class CliGroup(click.Group):
    def make_context(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return super().make_context(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as err:
            raise _BadUsage(err) from None

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as err:
            raise _BadUsage(err) from None


class NoteHandler(logging.Handler):
    """The library's log messages (e.g. data reinterpreted) as ``note: ...`` lines on stderr;
    the epoch lines of a run without progress bars (``noisytail.epochs``) as they are, on
    stdout like the lines above the bars."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "noisytail.epochs":
            click.echo(record.getMessage())
        else:
            click.echo(f"note: {record.getMessage()}", err=True)
