"""The data sets of the own-data detection benchmark (issue 10,
`noisytail.benchmarks.own_data_detection`): clean inputs and true labels, built from what
scikit-learn and this machine have.

**Data sets** (`DATASETS`), which `noisytail.benchmarks.own_data_detection` writes to disk as a
user would bring them:

- ``digits``: scikit-learn's 8x8 digits as a PNG class-folder tree, long-tailed (`long_tail`:
  class ``c`` keeps ``n_max * ratio**(-c / (K - 1))`` images, ratio 10), 714 images;
- ``fmnist``: Fashion-MNIST training images as a PNG class-folder tree, long-tailed the same way
  with at most 300 a class, 1,222 images;
- ``breast_cancer``: scikit-learn's breast-cancer table (569 rows, 30 columns) as a CSV;
- ``blobs24``: ``make_classification`` with 24 classes (2,400 rows, 30 columns) as a CSV.

**Held-out data sets** (`HELD_OUT`), never used to choose the default's settings:

- ``wine``: scikit-learn's wine table (178 rows, 13 columns, 3 classes) as a CSV;
- ``cls30``: ``make_classification`` with 30 imbalanced classes (3,000 rows, 40 columns: 20
  informative, 6 redundant, 2 repeated, 12 noise; class weights ``10**(-c / 29)``, head 10
  times the tail, ``class_sep`` 1.0) as a CSV;
- ``fmnist_test``: Fashion-MNIST's *test* images as a PNG class-folder tree, long-tailed with
  at most 250 a class, ratio 20 and the classes' order reversed (class 9 the head).

``wine`` and ``cls30`` were then used to design the default's third part for tables (the
cross-fitted network); four tables were added as held out from that design, run once after it
was frozen:

- ``digits_table``: scikit-learn's digits as a 64-column CSV (1,797 rows, 10 classes);
- ``quantiles``: ``make_gaussian_quantiles`` (1,200 rows, 6 columns, 6 classes as nested
  shells: no linear boundary);
- ``iris``: scikit-learn's iris table (150 rows, 4 columns, 3 classes);
- ``clusters12``: ``make_classification`` with 12 classes of 3 clusters each (1,800 rows, 20
  columns: 12 informative, 4 redundant; ``class_sep`` 1.5).

The small tables were then used to design the default's longer network budget on small
tables (`noisytail.defaults.longer_budget`: iris, wine, breast_cancer; all the tables above are
design data from there on); three small tables were added as held out from that design, run
once after it was frozen (each small enough for the rule to apply):

- ``cls_small``: ``make_classification`` (300 rows, 10 columns: 6 informative, 2 redundant;
  4 classes of 2 clusters each, ``class_sep`` 1.2);
- ``quantiles_small``: ``make_gaussian_quantiles`` (400 rows, 4 columns, 4 classes as nested
  shells);
- ``blobs_small``: ``make_blobs`` (250 rows, 8 columns, 5 overlapping blobs, std 2.5).

The longer budget's gate was then widened to every table where the epoch cap leaves a fold
model under 400 steps (a 1,200-row table, ``quantiles``, gained); two tables in that range were
added as held out from that change, run once after it was frozen:

- ``hastie``: ``make_hastie_10_2`` (1,000 rows, 10 columns, 2 classes split by a sphere);
- ``cls8``: ``make_classification`` (1,400 rows, 16 columns: 8 informative, 2 redundant; 8
  classes of 2 clusters each, ``class_sep`` 1.0).

Then the stack's class-prior part (`noisytail.detect.crossfit.stack`) was adopted, ``hastie``
having shown the need (design data from there on); two more tables were held out from it,
defined before any run:

- ``circles``: ``make_circles`` (800 rows, noise 0.2, factor 0.5) plus 4 columns of Gaussian
  noise (6 columns, 2 classes: one ring inside the other);
- ``cls5``: ``make_classification`` (900 rows, 12 columns: 5 informative, 2 redundant; 5
  classes of 3 clusters each, ``class_sep`` 0.8).
"""

from __future__ import annotations

import numpy as np

DATASETS = ("digits", "fmnist", "breast_cancer", "blobs24")
HELD_OUT = (
    "wine",
    "cls30",
    "fmnist_test",
    "digits_table",
    "quantiles",
    "iris",
    "clusters12",
    "cls_small",
    "quantiles_small",
    "blobs_small",
    "hastie",
    "cls8",
    "circles",
    "cls5",
)
ALL_DATASETS = DATASETS + HELD_OUT


def long_tail(
    y: np.ndarray, n_max: int, ratio: float, seed: int = 0, reverse: bool = False
) -> np.ndarray:
    """Sorted indices keeping ``round(n_max * ratio**(-r / (K - 1)))`` random members of class
    ``c`` (all of them if it has fewer), its rank ``r`` being ``c`` (``K - 1 - c`` if
    ``reverse``)."""
    rng = np.random.default_rng(seed)
    k = int(y.max()) + 1
    keep = []
    for c in range(k):
        members = np.flatnonzero(y == c)
        rank = k - 1 - c if reverse else c
        n = min(len(members), int(round(n_max * ratio ** (-rank / (k - 1)))))
        keep.append(rng.choice(members, n, replace=False))
    return np.sort(np.concatenate(keep))


#: ``make_classification`` tables: rows, columns, informative, redundant, classes, clusters a
#: class, ``class_sep``, seed (no label flips of its own).
_CLASSIFICATION = {
    "clusters12": (1800, 20, 12, 4, 12, 3, 1.5, 3),
    "cls_small": (300, 10, 6, 2, 4, 2, 1.2, 7),
    "cls8": (1400, 16, 8, 2, 8, 2, 1.0, 17),
    "cls5": (900, 12, 5, 2, 5, 3, 0.8, 23),
}
#: ``make_gaussian_quantiles`` tables (nested shells): rows, columns, classes, seed.
_QUANTILES = {"quantiles": (1200, 6, 6, 2), "quantiles_small": (400, 4, 4, 5)}


def clean_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: uint8 images ``[N, H, W]`` or float tables ``[N, D]``, true labels ``[N]``."""
    from sklearn import datasets as skd

    if name == "digits":
        d = skd.load_digits()
        x = np.round(d.images * 255 / 16).astype(np.uint8)
        keep = long_tail(d.target, 180, 10.0)
        return x[keep], d.target[keep]
    if name == "fmnist":
        from noisytail.data.sources import load_dataset

        b = load_dataset("fashion_mnist")
        y = b.train.labels
        keep = long_tail(y, 300, 10.0)
        return b.train.images.get(keep)[:, 0].numpy(), y[keep]
    if name == "breast_cancer":
        d = skd.load_breast_cancer()
        return d.data, d.target
    if name == "blobs24":
        x, y = skd.make_classification(
            n_samples=2400,
            n_features=30,
            n_informative=20,
            n_redundant=5,
            n_classes=24,
            n_clusters_per_class=1,
            class_sep=1.5,
            random_state=0,
        )
        return x, y
    if name == "wine":
        d = skd.load_wine()
        return d.data, d.target
    if name == "cls30":
        weights = 10.0 ** (-np.arange(30) / 29)
        x, y = skd.make_classification(
            n_samples=3000,
            n_features=40,
            n_informative=20,
            n_redundant=6,
            n_repeated=2,
            n_classes=30,
            n_clusters_per_class=1,
            weights=list(weights / weights.sum()),
            flip_y=0.0,
            class_sep=1.0,
            random_state=1,
        )
        return x, y
    if name == "fmnist_test":
        from noisytail.data.sources import load_dataset

        b = load_dataset("fashion_mnist")
        y = b.test.labels
        keep = long_tail(y, 250, 20.0, seed=1, reverse=True)
        return b.test.images.get(keep)[:, 0].numpy(), y[keep]
    if name == "digits_table":
        d = skd.load_digits()
        return d.data, d.target
    if name == "iris":
        d = skd.load_iris()
        return d.data, d.target
    if name == "hastie":  # labels -1 / 1 -> 0 / 1
        x, y = skd.make_hastie_10_2(n_samples=1000, random_state=13)
        return x, (y > 0).astype(np.int64)
    if name == "circles":
        x, y = skd.make_circles(n_samples=800, noise=0.2, factor=0.5, random_state=19)
        noise = np.random.default_rng(19).normal(size=(len(y), 4))
        return np.hstack([x, noise]), y
    if name in _CLASSIFICATION:
        rows, cols, informative, redundant, k, clusters, sep, seed = _CLASSIFICATION[name]
        return skd.make_classification(
            n_samples=rows,
            n_features=cols,
            n_informative=informative,
            n_redundant=redundant,
            n_classes=k,
            n_clusters_per_class=clusters,
            flip_y=0.0,
            class_sep=sep,
            random_state=seed,
        )
    if name in _QUANTILES:
        rows, cols, k, seed = _QUANTILES[name]
        return skd.make_gaussian_quantiles(
            n_samples=rows, n_features=cols, n_classes=k, random_state=seed
        )
    if name == "blobs_small":
        return skd.make_blobs(
            n_samples=250, centers=5, n_features=8, cluster_std=2.5, random_state=11
        )
    raise ValueError(f"unknown data set {name!r}; choose from {ALL_DATASETS}")
