"""Label-issue detection: scores, detectors and their evaluation against the true flags."""

from noisytail.detect.metrics import detection_metrics, per_class_detection

__all__ = ["detection_metrics", "per_class_detection"]
