"""One contract test over every registered data source (as tests/methods/test_contract.py does
for methods): each declares itself with ``@data_source`` and loads as the loop expects."""

import inspect
import os

import numpy as np
import pytest

from noisytail.data import sources  # noqa: F401  (registration)
from noisytail.data.source_info import SourceInfo
from noisytail.data.types import DatasetBundle
from noisytail.registry import DATASETS


def _found(name: str) -> bool:
    info = getattr(DATASETS.get(name), "source_info", None)
    return info is not None and info.locate is not None and info.locate() is not None


@pytest.mark.parametrize("name", DATASETS.names())
def test_declares_display_name_and_where_to_get_it(name):
    loader = DATASETS.get(name)
    info = getattr(loader, "source_info", None)
    assert isinstance(info, SourceInfo), f"{name}: register it with @data_source(...)"
    assert info.display_name.strip() and info.how_to_get.strip()
    if info.locate is not None:  # looks, never loads: cheap and silent
        where = info.locate()
        assert where is None or isinstance(where, (str, os.PathLike))
    row = next(r for r in sources.find_datasets() if r["name"] == name)
    assert row["how"] == info.how_to_get
    assert row["found"] is (None if info.locate is None else info.locate() is not None)
    assert sources.display_name(name) == info.display_name


@pytest.mark.parametrize("name", DATASETS.names())
def test_signature_is_root_then_keyword_options(name):
    loader = DATASETS.get(name)
    assert loader.__doc__ and loader.__doc__.strip()
    params = list(inspect.signature(loader).parameters.values())
    assert params[0].name == "root" and params[0].default is None
    for p in params[1:]:
        assert p.kind is p.KEYWORD_ONLY, f"{name}: {p.name} must be keyword-only"
        assert p.default is not p.empty, f"{name}: {p.name} needs a default"


@pytest.mark.parametrize("name", [n for n in DATASETS.names() if _found(n)])
def test_found_sources_load_a_valid_bundle(name):
    opts = {"num_train": 40, "num_test": 20} if name == "random_images" else None
    bundle = sources.load_dataset(name, options=opts)
    assert isinstance(bundle, DatasetBundle)
    k = bundle.num_classes
    assert k == len(bundle.class_names) >= 2
    for split in (bundle.train, bundle.test):
        labels = np.asarray(split.labels)
        assert labels.dtype.kind == "i" and len(labels) == len(split)
        assert labels.min() >= 0 and labels.max() < k
    x = bundle.train.images.get(np.arange(2))
    assert x.shape[0] == 2 and len(bundle.mean) == len(bundle.std) == x.shape[1]
