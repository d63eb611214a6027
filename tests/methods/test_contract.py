"""One contract test over every registered method (timm / scikit-learn check_estimator style)."""

import inspect

import pytest

import noisytail.methods  # noqa: F401  (registration)
from noisytail.methods.base import Method
from noisytail.registry import METHODS
from noisytail.runfolder import CHECKPOINT_KEYS, read_checkpoint
from noisytail.train import Run, fit


@pytest.mark.parametrize("name", METHODS.names())
def test_signature_is_explicit(name):
    cls = METHODS.get(name)
    assert issubclass(cls, Method)
    assert cls.__doc__ and cls.__doc__.strip()
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in params[:2]] == ["model", "info"]
    for p in params[2:]:
        assert p.kind is p.KEYWORD_ONLY, f"{name}: {p.name} must be keyword-only"
        assert p.default is not p.empty, f"{name}: {p.name} needs the paper's default"
        assert p.kind is not p.VAR_KEYWORD


@pytest.mark.parametrize("name", METHODS.names())
def test_runs_in_the_loop(name, tmp_path, digits_config):
    cls = METHODS.get(name)
    overrides = [f"method.name={name}", "train.epochs=2", "noise.kind=symmetric", "noise.rate=0.2"]
    if cls.needs_meta:
        overrides.append("meta.per_class=5")
    summary = fit(digits_config(*overrides), tmp_path / "run", write_report=False)
    assert summary.finished
    assert summary.test_accuracy > 0.2  # 10 classes, chance 0.1: it learned something
    # its checkpoint reads back under torch.load(weights_only=True)
    state = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", required=CHECKPOINT_KEYS)
    assert state["epoch"] == 2
    # train.grad_clip's groups cover each of its parameters once
    method = Run.from_folder(tmp_path / "run").method
    ids = [id(p) for group in method.clip_groups() for p in group]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in method.parameters()}


@pytest.mark.parametrize("name", [n for n in METHODS.names() if METHODS.get(n).needs_meta])
def test_meta_methods_refuse_without_meta_set(name, tmp_path, digits_config):
    from noisytail.config import ConfigError

    with pytest.raises(ConfigError, match="meta set"):
        fit(digits_config(f"method.name={name}"), tmp_path / "run", write_report=False)


def test_batch_has_no_true_labels():
    from noisytail.methods.base import Batch

    assert set(Batch.__dataclass_fields__) == {"x", "labels", "idx"}
