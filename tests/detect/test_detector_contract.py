"""One contract test over every registered detector (as tests/methods/test_contract.py does for
methods): explicit keyword arguments with defaults, a description, and a valid verdict on every
training sample through `detect_label_issues`, the entry point of ``noisytail detect``."""

import inspect
import json

import numpy as np
import pytest

from noisytail.detect import detectors  # noqa: F401  (registration)
from noisytail.detect.base import Detector, DetectorOutput
from noisytail.detect.task import detect_label_issues
from noisytail.registry import DETECTORS

#: What a detector needs of the run besides the common set-up (method_scores: a method that
#: ranks its samples; its meta set leaves 100 - 30 samples to rank).
NEEDS = {"method_scores": ["method.name=mwnet", "meta.per_class=3"]}
#: Arguments that keep the test short (confident_learning: 2 fold models instead of 5).
ARGS = {"confident_learning": {"folds": 2}}


@pytest.mark.parametrize("name", DETECTORS.names())
def test_signature_is_explicit(name):
    cls = DETECTORS.get(name)
    assert inspect.isclass(cls) and issubclass(cls, Detector)
    assert cls.__doc__ and cls.__doc__.strip()
    assert cls.description.strip(), f"{name}: set description (noisytail list, detection.json)"
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        assert p.kind is p.KEYWORD_ONLY, f"{name}: {p.name} must be keyword-only"
        assert p.default is not p.empty, f"{name}: {p.name} needs a default"
    det = DETECTORS.build(name, {})
    assert set(det.args()) == set(list(inspect.signature(cls.__init__).parameters)[1:])


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("small_loss", {"flag": 10}, "small_loss: flag must be 'gmm' or a fraction"),
        ("loss_trajectory", {"flag": "top"}, "loss_trajectory: flag must be"),
        ("method_scores", {"threshold": "low"}, "method_scores: threshold must be a number"),
    ],
)
def test_bad_arguments_are_refused_before_anything_trains(name, args, message):
    from noisytail.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        DETECTORS.build(name, args)
    assert DETECTORS.build(name, {next(iter(args)): 0.25})  # a fraction, a number: fine


@pytest.mark.parametrize("name", DETECTORS.names())
def test_ranks_every_training_sample(name, tmp_path, digits_config):
    cfg = digits_config(
        "data.train_subset=100",
        "data.test_subset=30",
        "noise.kind=symmetric",
        "noise.rate=0.3",
        "train.epochs=1",
        "train.device=cpu",
        *NEEDS.get(name, []),
    )
    result = detect_label_issues(cfg, tmp_path / "out", detector=name, detector_args=ARGS.get(name))
    out = result.output
    assert isinstance(out, DetectorOutput)
    n = result.n
    assert n >= 65 and out.suspicion.shape == out.flagged.shape == out.suggested.shape == (n,)
    assert np.isfinite(out.suspicion).all()
    assert ((out.suggested >= 0) & (out.suggested < 10)).all()
    assert sorted(result.order.tolist()) == list(range(n))  # a ranking: each sample once
    ranked = out.suspicion[result.order]
    assert (np.diff(ranked) <= 0).all()  # most suspect first
    info = json.loads((tmp_path / "out" / "detection.json").read_text())
    assert info["metrics"]["n"] == n and info["metrics"]["n_noisy"] > 0


def test_a_fresh_process_knows_every_detector():
    """Registration must not depend on what else a process imported: the CLI's detect starts
    from `detect.task` alone (a fresh `noisytail detect --detector knn` once found none)."""
    import subprocess
    import sys

    code = (
        "from noisytail.detect.task import list_detectors; "
        "print(' '.join(sorted(name for name, _ in list_detectors())))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names = set(out.stdout.split())
    assert {"auto", "knn", "small_loss", "confident_learning"} <= names, out.stdout
