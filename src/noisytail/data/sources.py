"""Every data source, registered in `DATASETS`, and the two calls the rest of noisytail uses.

Importing this module registers ``fashion_mnist``, ``digits``, ``cifar10``, ``cifar100``,
``image_folder``, ``csv``, ``list_file`` (e.g. ImageNet-LT), ``clothing1m``, ``isic2019`` and
``arrays`` (in-memory arrays held by `noisytail.data.arrays.hold_arrays`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from noisytail.data import (  # noqa: F401
    arrays,
    cifar,
    clothing1m,
    csv_source,
    digits,
    fashion_mnist,
    image_folder,
    isic2019,
    list_file,
    random_images,
)
from noisytail.data.types import DatasetBundle
from noisytail.registry import DATASETS


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
    ``how`` (how to get the data, or what to pass).
    """
    located = {
        "fashion_mnist": (fashion_mnist.find_fashion_mnist(), fashion_mnist.HOW_TO_GET),
        "cifar10": (cifar.find_cifar("cifar10"), cifar.how_to_get("cifar10")),
        "cifar100": (cifar.find_cifar("cifar100"), cifar.how_to_get("cifar100")),
        "digits": (digits.digits_location(), "Ships with scikit-learn; nothing to get."),
        "random_images": ("(generated)", "Generated on the fly (for speed checks only)."),
    }
    needs_root = {
        "image_folder": "Needs data.root=<folder> with <class>/<image> or train/ and test/ "
        "class folders.",
        "csv": "Needs data.options.train_csv=<file.csv> ('path,label' rows or numeric features "
        "plus 'label'); data.root sets where relative paths start.",
        "list_file": "Needs data.options.train_list=<file> ('relative/path label' lines, e.g. "
        "ImageNet_LT_train.txt; test_list / val_list likewise) and data.root=<image root>.",
        "clothing1m": clothing1m.HOW_TO_GET,
        "isic2019": isic2019.HOW_TO_GET,
        "arrays": "In-memory arrays from Python: noisytail.data.arrays.hold_arrays(x, y).",
    }
    rows = []
    for name in DATASETS.names():
        if name in located:
            where, how = located[name]
            found = where is not None
            rows.append(
                {
                    "name": name,
                    "found": found,
                    "location": str(where) if found else None,
                    "how": how,
                }
            )
        else:
            how = needs_root.get(name, "Reads whatever data.root and data.options name.")
            rows.append({"name": name, "found": None, "location": None, "how": how})
    return rows
