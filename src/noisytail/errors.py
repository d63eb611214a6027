"""The toolkit's error types that every layer may raise (bad input, a run that cannot go on),
below every other module so that any of them can raise them."""

from __future__ import annotations

__all__ = ["ConfigError", "TrainingError", "short_error"]


class ConfigError(ValueError):
    """A bad configuration key or value; the message says what to do."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to do."""


def short_error(err: BaseException) -> str:
    """An exception as one line of at most 160 characters, for one-line error messages (the one
    formatter: every ``... (<cause>).`` in an error message goes through it)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."
