"""The toolkit's input-error type, below every other module so that any of them can raise it."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A bad configuration key or value; the message says what to do."""
