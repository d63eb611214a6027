"""Checks of a user's labels that a procedure needs before it starts, each a one-line `DataError`.

(A single class and unreadable images are refused where the data are read:
`noisytail.data.image_folder.check_classes` and `noisytail.data.image_folder.decode_image`.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from noisytail.data.types import DataError


def check_fold_sizes(
    labels: np.ndarray, class_names: Sequence[str], folds: int, fix: str = "use fewer folds"
) -> None:
    """Refuse labels ``[N]`` (ints in ``[0, len(class_names))``) in which a class has fewer
    samples than ``folds``: stratified K-fold cross-fitting needs one sample of every class in
    each fold. The message names the smallest such class, how many classes are short, and the
    ways out (``fix`` names the setting that lowers the folds)."""
    if folds < 2:
        raise DataError(f"Cross-fitting needs at least 2 folds, got {folds}.")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    short = np.flatnonzero(counts < folds)
    if len(short) == 0:
        return
    worst = int(short[np.argmin(counts[short])])
    others = f" (and {len(short) - 1} more classes)" if len(short) > 1 else ""
    raise DataError(
        f"Class {class_names[worst]!r} has {int(counts[worst])} sample(s){others}, fewer than "
        f"the {folds} folds of cross-fitting (each fold needs one of every class): add samples "
        f"to it, remove the class, or {fix}."
    )


def check_present_fold_sizes(
    labels: np.ndarray,
    folds: int,
    class_names: Sequence[str] | None = None,
    fix: str = "use fewer folds",
) -> None:
    """`check_fold_sizes` over the classes that occur in ``labels`` ``[N]`` (a class absent
    from the data is no fold's concern); ``class_names`` indexed by class id (default: the ids
    as text) name the short class."""
    y = np.asarray(labels, dtype=np.int64)
    present = np.unique(y)
    names = [str(c) if class_names is None else class_names[c] for c in present]
    check_fold_sizes(np.searchsorted(present, y), names, folds, fix=fix)
