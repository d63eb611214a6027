"""Data preparation: load a source, take the subsets, and corrupt the training labels.

`prepare_data` turns a config's ``data`` / ``noise`` / ``imbalance`` / ``meta`` sections into a
`PreparedData`: the (sub-set) bundle, the seeded `Corruption` record, and the ids of the kept
samples in the source's own splits. With ``meta.source=provided`` the source's clean meta split is
appended after its training split, and ``corrupt`` keeps it apart; with ``data.label_file`` the
file's labels are the noisy training labels (noise kind 'label_file', the file recorded).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisytail import seeds
from noisytail.config import Config, ConfigError
from noisytail.data.checked import source_options
from noisytail.data.corruption import Corruption, corrupt
from noisytail.data.fingerprint import check_data, data_fingerprint
from noisytail.data.label_file import read_label_file
from noisytail.data.noise_kinds import noise_kind
from noisytail.data.sources import load_dataset
from noisytail.data.splits import stratified_split
from noisytail.data.types import DatasetBundle, DataSplit, TensorStore, concat_splits


@dataclass
class PreparedData:
    """A data set after sub-setting and corruption: everything a run trains and tests on."""

    bundle: DatasetBundle
    corruption: Corruption
    # [N_train_split] ids in the source's train split; with meta.source=provided, ids from
    # len(source train) on are the source's meta split
    train_source_idx: np.ndarray
    test_source_idx: np.ndarray  # [N_test] ids in the source's test split

    @property
    def train_idx(self) -> np.ndarray:
        return self.corruption.train_idx

    @property
    def train_labels(self) -> np.ndarray:
        """The labels methods train on (noisy), aligned with ``train_idx``."""
        return self.corruption.noisy_labels[self.corruption.train_idx]

    @property
    def class_counts(self) -> np.ndarray:
        """Training samples per class by the (noisy) training labels: what a method may see."""
        return np.bincount(self.train_labels, minlength=self.bundle.num_classes)

    @property
    def true_class_counts(self) -> np.ndarray:
        """Training samples per class by true class: the class sizes evaluation groups by."""
        return self.corruption.class_counts("train", "true")

    def fingerprint(self) -> dict[str, Any]:
        """What the run trains and tests on (`noisytail.data.fingerprint.data_fingerprint`)."""
        return data_fingerprint(
            self.bundle, self.corruption, self.train_source_idx, self.test_source_idx
        )

    def check_against(self, run_dir: Path) -> None:
        """Refuse (`DataChangedError`) if the run in ``run_dir`` was made on other data."""
        check_data(run_dir, self.fingerprint(), self.corruption)


def _stratified_subset(labels: np.ndarray, size: int | None, seed: int, what: str) -> np.ndarray:
    n = len(labels)
    if size is None or size >= n:
        return np.arange(n)
    if size < 1:
        raise ConfigError(f"{what} must be a positive number of samples, got {size}.")
    rng = np.random.default_rng(np.random.SeedSequence([seed, seeds.SUBSET]))
    held, _ = stratified_split(labels, fraction=size / n, rng=rng)
    return np.sort(held)


def _instance_features(bundle: DatasetBundle) -> np.ndarray:
    """Unit-norm flattened inputs ``[N, D]``, for instance-dependent noise (Xia et al. 2020)."""
    n = len(bundle.train)
    feats = []
    for start in range(0, n, 4096):
        x = bundle.train.images.get(np.arange(start, min(start + 4096, n))).float()
        feats.append(x.reshape(x.shape[0], -1))
    f = torch.cat(feats)
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return f.numpy()


def prepare_data(cfg: Config) -> PreparedData:
    """Load the source, take the subsets, and corrupt the training labels (seeded, eager)."""
    # meta.source=file: the source reads the checked samples (noisytail.data.checked)
    bundle = load_dataset(cfg.data.name, root=cfg.data.root, options=source_options(cfg))
    if bundle.labels_are_noisy and cfg.meta.source == "train" and cfg.meta.active:
        raise ConfigError(
            f"meta.source=train would draw the meta set from {cfg.data.name}'s training labels, "
            "which carry real noise: use meta.source=provided (its clean split) or pseudo."
        )
    seed = cfg.effective_corruption_seed
    label_file, given_noisy, noise = None, None, cfg.noise
    if cfg.data.label_file:  # the config has checked that noise.kind is none (or label_file)
        label_file = read_label_file(bundle, cfg.data.label_file, key=cfg.data.label_file_key)
        given_noisy, noise = label_file.labels, replace(cfg.noise, kind="label_file")
    train_src = _stratified_subset(
        bundle.train.labels, cfg.data.train_subset, seed, "data.train_subset"
    )
    test_src = _stratified_subset(
        bundle.test.labels,
        cfg.data.test_subset,
        seed + seeds.TEST_SUBSET_OFFSET,
        "data.test_subset",
    )
    n_source_train = len(bundle.train)
    bundle = subset_bundle(bundle, train_src, test_src)
    provided_meta = None
    if cfg.meta.source in ("provided", "file"):
        if bundle.meta is None:
            raise ConfigError(
                f"meta.source=provided, but the data source {cfg.data.name!r} offers no clean meta "
                "split (clothing1m offers clean_val; isic2019 takes data.options.meta_list). Use "
                "meta.source=train to hold clean samples out of the training pool instead."
            )
        # the source's clean split goes after the training split; corrupt() keeps it apart
        n_pool, n_meta = len(bundle.train), len(bundle.meta)
        bundle = replace(bundle, train=concat_splits(bundle.train, bundle.meta), meta=None)
        provided_meta = np.arange(n_pool, n_pool + n_meta)
        train_src = np.concatenate([train_src, n_source_train + np.arange(n_meta)])
        if given_noisy is not None:
            given_noisy = np.concatenate([given_noisy, np.full(n_meta, -1, dtype=np.int64)])
    needs = noise_kind(noise.kind).needs
    corruption = corrupt(
        bundle.train.labels,
        num_classes=bundle.num_classes,
        noise=noise,
        imbalance=cfg.imbalance,
        meta=cfg.meta,  # meta.source=pseudo: no clean split, the loop draws one every epoch
        val_fraction=cfg.data.val_fraction,
        seed=seed,
        features=_instance_features(bundle) if "features" in needs else None,
        asymmetric_map=bundle.asymmetric_map or None,
        coarse_labels=bundle.coarse_labels,
        provided_meta=provided_meta,
        given_labels=None if given_noisy is None else given_noisy[train_src],
        label_source=None if label_file is None else label_file.source(),
    )
    return PreparedData(bundle, corruption, train_src, test_src)


def subset_bundle(
    bundle: DatasetBundle, train_idx: np.ndarray, test_idx: np.ndarray
) -> DatasetBundle:
    """The bundle restricted to the given train/test ids (in-memory stores are materialised)."""

    def cut(split: Any, idx: np.ndarray) -> Any:
        if len(idx) == len(split):
            return split
        if isinstance(split.images, TensorStore):
            paths = [split.paths[i] for i in idx] if split.paths is not None else None
            return DataSplit(TensorStore(split.images.get(idx)), split.labels[idx], paths)
        return split.subset(idx)

    return replace(bundle, train=cut(bundle.train, train_idx), test=cut(bundle.test, test_idx))
