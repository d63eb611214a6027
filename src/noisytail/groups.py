"""Class groups by training frequency when fixed shot thresholds do not fit the data.

`frequency_groups(counts)`: many / medium / few classes as thirds by training frequency (MTTV's
split); `group_accuracy(per_class, groups)`: each group's mean per-class accuracy. Use them where
`noisytail.evaluate.shot_thresholds` (>100 / <20 images) leaves a group empty.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def frequency_groups(class_counts: Any, parts: int = 3) -> np.ndarray:
    """``[K]`` array of ``"many"`` / ``"medium"`` / ``"few"``: the classes sorted by training
    frequency (largest first, ties by class id) and cut into thirds (MTTV's many/medium/few
    split). With K = 10: 3 many, 4 medium, 3 few. Use it where the fixed >100 / <20 thresholds of
    `noisytail.evaluate.shot_thresholds` leave a group empty (e.g. Fashion-MNIST at ratio 100,
    whose smallest class still has about 60 images)."""
    if parts != 3:
        raise ValueError(f"only thirds are supported, got parts={parts}")
    counts = np.asarray(class_counts)
    k = len(counts)
    if k < 3:
        raise ValueError(f"frequency thirds need at least 3 classes, got {k}")
    order = np.lexsort((np.arange(k), -counts))  # by count descending, then class id
    n_many = n_few = int(round(k / 3))
    groups = np.full(k, "medium", dtype=object)
    groups[order[:n_many]] = "many"
    groups[order[k - n_few :]] = "few"
    return groups.astype(str)


def group_accuracy(per_class_accuracy: Any, groups: Any) -> dict[str, float | None]:
    """Mean per-class accuracy of each group: ``{"many": ..., "medium": ..., "few": ...}``
    (None for an empty group or one whose classes were never tested, i.e. NaN accuracies)."""
    acc = np.asarray([np.nan if a is None else a for a in per_class_accuracy], dtype=np.float64)
    groups = np.asarray(groups)
    out: dict[str, float | None] = {}
    for name in ("many", "medium", "few"):
        vals = acc[(groups == name) & ~np.isnan(acc)]
        out[name] = float(vals.mean()) if len(vals) else None
    return out
