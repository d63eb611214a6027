"""noisytail: robust classification from noisy, long-tailed labels."""

__version__ = "0.1.0"

__all__ = ["LabelIssues", "find_label_issues"]


def __getattr__(name: str):  # lazy: `import noisytail` stays light (no torch)
    if name in ("find_label_issues", "LabelIssues"):
        from noisytail.detect import find

        return getattr(find, name)
    raise AttributeError(f"module 'noisytail' has no attribute {name!r}")
