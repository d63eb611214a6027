"""Label-issue detection: the orchestration (`task`), the detectors (`detectors`, on
`crossfit`'s out-of-sample probabilities and `scores`), the output writers (`exporters`), the
array API (`find`) and the evaluation against the true flags (`metrics`)."""

from noisytail.detect.metrics import detection_metrics, per_class_detection

__all__ = [
    "DetectionResult",
    "balanced_selection",
    "detect_label_issues",
    "detection_metrics",
    "knn_cosine",
    "moit_detect",
    "per_class_detection",
]


def __getattr__(name: str):  # lazy: the API pulls in the training loop
    if name in ("detect_label_issues", "DetectionResult"):
        from noisytail.detect import task

        return getattr(task, name)
    if name in ("knn_cosine", "moit_detect", "balanced_selection"):
        from noisytail import neighbors

        return getattr(neighbors, name)
    raise AttributeError(f"module 'noisytail.detect' has no attribute {name!r}")
