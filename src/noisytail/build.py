"""Build a run's model and run it: the registered ``model.name`` (`build_model`), its start from
saved weights (``model.init``, `load_init`) and its softmax over a data pool (`predict_probs`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from . import losses as _losses  # noqa: F401  (registration)
from . import models as _models  # noqa: F401  (registration)
from .config import Config, ConfigError
from .data.loader import PoolData
from .data.types import DatasetBundle
from .losses.build import build_loss
from .methods import Method
from .registry import LOSSES, METHODS, MODELS, signature_defaults
from .runfolder import read_init_weights


def build_model(
    cfg: Config, bundle: DatasetBundle, *, for_checkpoint: bool = False
) -> torch.nn.Module:
    """The registered ``model.name`` for ``bundle``'s classes and inputs (``model.init``: start
    from saved weights, `load_init`). ``for_checkpoint``: a checkpoint's weights will replace
    the start, so neither ``model.init`` nor downloaded weights (``pretrained``) are read: a
    finished run is evaluated or resumed without its encoder file or a network."""
    options = dict(cfg.model.options)
    if for_checkpoint and options.get("pretrained"):
        options["pretrained"] = False
    model = MODELS.build(
        cfg.model.name,
        args=options,
        num_classes=bundle.num_classes,
        input_shape=tuple(bundle.input_shape),
    )
    if cfg.model.init and not for_checkpoint:
        load_init(model, cfg.model.init)
    return model


def checked_method(cfg: Config) -> Config:
    """``cfg`` once its method's name and arguments, and a loss they name, pass their
    signatures (`RegistryError`, with a suggestion), without building a model or loading data:
    a bench checks every run of its grid before the first starts."""
    METHODS.check(cfg.method.name, cfg.method.args, fixed=("model", "info"))  # as the loop builds
    if cfg.method.args.get("loss") is not None:
        build_loss(cfg.method.args["loss"], class_counts=[1, 1])
    return cfg


def code_defaults(cfg: Config) -> dict[str, dict[str, Any]]:
    """The constructor defaults ``cfg`` leaves to the code (`signature_defaults`): of the
    method, the model and, for a method whose ``loss`` is a registered name (or a mapping naming
    one), the loss. Saved in a run's ``config.yaml`` (``_provenance.code_defaults``) and part of
    a bench run's hash, so a default changed in the code is a new run, not a stale one found
    again."""
    method = METHODS.get(cfg.method.name)
    out = {
        "method": signature_defaults(method, cfg.method.args),
        "model": signature_defaults(MODELS.get(cfg.model.name), cfg.model.options),
    }
    loss = cfg.method.args.get("loss", out["method"].get("loss"))
    name, given = (loss.get("name"), loss) if isinstance(loss, dict) else (loss, {})
    if isinstance(name, str) and name in LOSSES:  # a name, or a mapping with its arguments
        out["loss"] = signature_defaults(LOSSES.get(name), given)
    return out


def load_init(model: torch.nn.Module, path: str) -> None:
    """Start from a checkpoint or encoder file: every weight outside the model's ``head`` must be
    there with its shape (else `ConfigError`, naming the first that is not: the file comes from
    another model); a head of another shape, or none, is left fresh."""
    p, state = read_init_weights(path)
    own = model.state_dict()
    usable = {
        k: v
        for k, v in state.items()
        if k in own and isinstance(v, torch.Tensor) and own[k].shape == v.shape
    }
    body = [k for k in own if not k.startswith("head.") and not k.endswith("num_batches_tracked")]
    unfit = [k for k in body if k not in usable]
    if unfit:
        name = unfit[0]
        saved = state.get(name)
        found = f"saved {list(saved.shape)}" if isinstance(saved, torch.Tensor) else "not saved"
        raise ConfigError(
            f"model.init: {p} does not fit model {type(model).__name__}: {len(unfit)} of its "
            f"{len(body)} weights outside the head differ (first: {name}, {found}, the model's "
            f"{list(own[name].shape)}); build the model that wrote it (model.name, "
            "model.options)."
        )
    model.load_state_dict(usable, strict=False)


@torch.no_grad()
def predict_probs(
    method: Method, data: PoolData, batch_size: int, autocast: Callable[[], Any]
) -> np.ndarray:
    """Softmax probabilities ``[N, K]`` of ``method.predict`` over ``data``, un-augmented."""
    was_training = method.training
    method.eval()
    out = []
    for x, _ in data.iter_plain(batch_size):
        with autocast():
            logits = method.predict(x)
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    method.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
