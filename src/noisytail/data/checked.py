"""Where a meta set may come from on a user's own data (issue 10, item 6).

The true labels of an image folder or CSV of one's own are unknown: a "clean" meta set drawn from
them (``meta.source: train``) is as noisy as the rest, so it is refused unless the labels are
made the truth by synthetic noise (``noise.kind``) or real noisy labels come from
``data.label_file``. The way out is ``meta.source: file``: ``meta.file`` names a CSV of samples
whose labels a person checked, which the source (``meta_csv``,
`noisytail.data.csv_source.read_checked`) makes its meta split and removes from the training
data; ``prepare_data`` then uses it as it uses a provided split.
"""

from __future__ import annotations

from typing import Any

from noisytail.config import Config, ConfigError

#: Sources of a user's own data: their labels are unverified.
USER_SOURCES = ("image_folder", "csv")


def source_options(cfg: Config) -> dict[str, Any]:
    """The keyword options for ``cfg``'s data source: ``data.options``, plus ``meta_csv`` with
    ``meta.source: file``. A `ConfigError` refuses ``meta.source: file`` for other sources and a
    meta set drawn from a user's own unverified labels."""
    meta, name = cfg.meta, cfg.data.name
    if meta.source == "file":
        if name not in USER_SOURCES:
            raise ConfigError(
                f"meta.source=file reads checked samples of image_folder or csv data, not of "
                f"{name!r}: use meta.source=provided (the source's clean split) or train."
            )
        return {**cfg.data.options, "meta_csv": meta.file}
    if meta.source == "train" and meta.active and own_labels_unverified(cfg):
        raise ConfigError(
            f"meta.source=train would draw the meta set from your own, unverified {name} labels, "
            f"as noisy as the rest: {_CHECKED_ADVICE}"
        )
    return dict(cfg.data.options)


_CHECKED_ADVICE = (
    "list samples whose labels a person checked in a CSV (path,label rows, or the feature "
    "columns plus label) and set meta.source=file meta.file=<checked.csv>, or use "
    "meta.source=pseudo."
)


def own_labels_unverified(cfg: Config) -> bool:
    """A user's own labels, taken as given: no synthetic noise made them the truth."""
    return cfg.data.name in USER_SOURCES and cfg.noise.kind == "none" and not cfg.data.label_file


def meta_set_advice(cfg: Config) -> str:
    """How to give a meta method the clean meta set it lacks: on a user's own unverified labels
    a checked file or pseudo-labels (a meta set drawn from them would be refused), else a
    share of the training data."""
    if own_labels_unverified(cfg):
        return _CHECKED_ADVICE
    return "set meta.per_class (e.g. meta.per_class=10) or meta.total."
