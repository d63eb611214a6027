"""noisytail: robust classification from noisy, long-tailed labels."""

__version__ = "0.1.0"
