"""The toolkit's error types that every layer may raise (bad input, a run that cannot go on),
below every other module so that any of them can raise them."""

from __future__ import annotations

__all__ = ["ConfigError", "TrainingError"]


class ConfigError(ValueError):
    """A bad configuration key or value; the message says what to do."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to do."""
