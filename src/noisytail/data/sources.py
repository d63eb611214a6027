"""Every data source, registered in `DATASETS`, and the two calls the rest of noisytail uses.

Importing this module registers the built-in sources: every module of ``noisytail.data`` that
declares one with a top-level ``@data_source(...)`` (`import_source_modules`), so that a new
built-in source is one new file there and no list names them. Today: ``fashion_mnist``,
``digits``, ``cifar10``, ``cifar100``, ``image_folder``, ``csv``, ``list_file`` (e.g.
ImageNet-LT), ``clothing1m``, ``isic2019``, ``random_images`` and ``arrays`` (in-memory arrays
held by `noisytail.data.arrays.hold_arrays`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from noisytail.data.source_info import display_name, source_info
from noisytail.data.types import DatasetBundle
from noisytail.registry import DATASETS, import_modules_declaring

__all__ = ["display_name", "find_datasets", "import_source_modules", "load_dataset", "source_info"]


def import_source_modules(package: str = "noisytail.data") -> list[str]:
    """Import every module of ``package`` that declares a data source (a line starting with
    ``@data_source(``), which registers it; returns their names, sorted. Modules that declare
    none (helpers, the corruption, the loader) are not imported
    (`noisytail.registry.import_modules_declaring`)."""
    return import_modules_declaring(package, "@data_source(")


import_source_modules()


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> DatasetBundle:
    """Build the registered source ``name`` with its keyword ``options`` and check its labels.

    Unknown names and unknown option keys raise `RegistryError` with suggestions; missing or bad
    data raise `DataError` saying how to fix it.
    """
    root = os.fspath(root) if root is not None else None
    bundle = DATASETS.build(name, args=options, root=root)
    bundle.validate()
    return bundle


def find_datasets() -> list[dict[str, Any]]:
    """Where each registered source's data are on this machine, without loading them.

    One dict per source, sorted by name: ``name``; ``found`` (True/False, or None for sources
    that read a folder or file the user names); ``location`` (the folder found, or None);
    ``how`` (how to get the data, or what to pass): each source's declaration
    (`noisytail.data.source_info.SourceInfo`).
    """
    rows = []
    for name in DATASETS.names():
        info = source_info(name)
        where = info.locate() if info.locate is not None else None
        found = None if info.locate is None else where is not None
        rows.append(
            {
                "name": name,
                "found": found,
                "location": str(where) if where is not None else None,
                "how": info.how_to_get,
            }
        )
    return rows
