"""What a data source declares besides its loader: its display name and where to get its data.

A source is one file: a loader function decorated with `data_source`, which registers it in
``noisytail.registry.DATASETS`` under ``name`` and attaches a `SourceInfo`. ``noisytail data``
(`noisytail.data.sources.find_datasets`) and the run report read that declaration; nothing
else lists sources by name. ``noisytail.data.sources`` imports every built-in source module:
each module of ``noisytail.data`` with a top-level ``@data_source(...)`` line
(`noisytail.data.sources.import_source_modules`), so a new built-in source is one new file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..registry import DATASETS

F = TypeVar("F", bound=Callable[..., Any])

#: What `find_datasets` says of a source that declares nothing (registered with DATASETS only).
GENERIC_HOW = "Reads whatever data.root and data.options name."


@dataclass(frozen=True)
class SourceInfo:
    """A source's declaration.

    ``display_name``: how reports name the data (``"CIFAR-10"``, ``"an image folder"``).
    ``how_to_get``: one or two sentences: where to get the data, or what to pass.
    ``locate``: a call (no arguments, no loading) giving where the data are on this machine, or
    None when they are not there; ``None`` for a source that reads what the user names.
    """

    display_name: str
    how_to_get: str
    locate: Callable[[], str | os.PathLike[str] | None] | None = None


def data_source(
    name: str,
    *,
    display_name: str,
    how_to_get: str,
    locate: Callable[[], str | os.PathLike[str] | None] | None = None,
) -> Callable[[F], F]:
    """Decorator: register a loader as data source ``name`` with its `SourceInfo`.

    The loader takes ``root`` (a folder or None) and keyword options and returns a
    `noisytail.data.types.DatasetBundle`.
    """
    info = SourceInfo(display_name=display_name, how_to_get=how_to_get, locate=locate)

    def decorator(loader: F) -> F:
        loader.source_info = info  # type: ignore[attr-defined]
        return DATASETS.register(name)(loader)

    return decorator


def source_info(name: str) -> SourceInfo:
    """The declaration of the registered source ``name`` (`RegistryError` if unknown); a source
    registered without one reads as its own name with `GENERIC_HOW`."""
    info = getattr(DATASETS.get(name), "source_info", None)
    if isinstance(info, SourceInfo):
        return info
    return SourceInfo(display_name=name, how_to_get=GENERIC_HOW)


def display_name(name: str) -> str:
    """How reports name source ``name``: its declared display name, or ``name`` itself when no
    source of that name is registered (e.g. a run folder written by another version)."""
    return source_info(name).display_name if name in DATASETS else name
