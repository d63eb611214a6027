import pytest

from noisytail.config import load_config


@pytest.fixture
def digits_config():
    """A tiny, fast run: scikit-learn's digits, small CNN, a few epochs (seconds on a CPU)."""

    def make(*overrides: str):
        base = [
            "data.name=digits",
            "data.val_fraction=0.1",
            "model.name=small_cnn",
            "model.options.width=16",
            "train.epochs=3",
            "train.batch_size=32",
            "train.lr=0.05",
            "train.progress=false",
        ]
        return load_config(None, base + list(overrides))

    return make
