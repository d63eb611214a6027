"""Label-issue detection: scores, detectors and their evaluation against the true flags."""

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
        from noisytail.detect import api

        return getattr(api, name)
    if name in ("knn_cosine", "moit_detect", "balanced_selection"):
        from noisytail.detect import knn

        return getattr(knn, name)
    raise AttributeError(f"module 'noisytail.detect' has no attribute {name!r}")
