"""noisytail: robust classification from noisy, long-tailed labels."""

__version__ = "0.1.0"

__all__ = ["LabelIssues", "NoisyTailClassifier", "find_label_issues", "load_model"]


def __getattr__(name: str):  # lazy: `import noisytail` stays light (no torch)
    if name in ("find_label_issues", "LabelIssues"):
        from noisytail.detect import find

        return getattr(find, name)
    if name in ("NoisyTailClassifier", "load_model"):
        from noisytail import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module 'noisytail' has no attribute {name!r}")
