"""Losses as small functions ``(logits, labels, *, reduction="mean", ...)``, registered in
``LOSSES``; ``build_loss`` turns a config spec into a callable (with a weighted-sum combinator)."""

from .build import BuiltLoss, LossFn, SumLoss, build_loss
from .classification import (
    cross_entropy,
    focal,
    label_smoothing_ce,
    mixup_ce,
    soft_target_ce,
)
from .imbalance import (
    as_class_counts,
    balanced_softmax,
    class_balanced_ce,
    class_balanced_focal,
    class_balanced_weights,
    cosine_logits,
    drw_class_weights,
    ldam,
    ldam_margins,
    logit_adjusted_ce,
    logit_adjusted_gce,
)
from .robust import bootstrap_hard, bootstrap_soft, generalized_ce, symmetric_ce

__all__ = [
    "BuiltLoss",
    "LossFn",
    "SumLoss",
    "as_class_counts",
    "balanced_softmax",
    "bootstrap_hard",
    "bootstrap_soft",
    "build_loss",
    "class_balanced_ce",
    "class_balanced_focal",
    "class_balanced_weights",
    "cosine_logits",
    "cross_entropy",
    "drw_class_weights",
    "focal",
    "generalized_ce",
    "label_smoothing_ce",
    "ldam",
    "ldam_margins",
    "logit_adjusted_ce",
    "logit_adjusted_gce",
    "mixup_ce",
    "soft_target_ce",
    "symmetric_ce",
]
