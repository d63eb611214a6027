"""A trained model on its own: rebuilt from a run folder without the training data, applied to
new inputs, and exported (TorchScript, ONNX).

`TrainedModel.from_run(run_dir)` reads the run's ``config.yaml`` (the model's name and options)
and checkpoint (weights, class names, input shape and normalisation:
`noisytail.runfolder.inference_record`).
`TrainedModel.predict_proba` takes model inputs as `noisytail.data.arrays.as_model_inputs`
returns them; `read_images` decodes image files into them. New images must have the model's
size and channel count (`check_shape`), except for runs trained on image files (an image folder,
a CSV or list of paths), whose images were resized when read: their new images are resized the
same way (`noisytail.runfolder.RESIZING_SOURCES`).

The exported model takes the *normalised* float32 batch ``[B, *input_shape]`` and returns
logits ``[B, K]``; ``<file>.json`` beside it holds the class names, input shape, mean and std.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import methods as _methods  # noqa: F401  (registration)
from . import models as _models  # noqa: F401  (registration)
from .data.arrays import normalise_inputs
from .data.types import DataError
from .errors import short_error
from .registry import METHODS, MODELS
from .runfolder import (  # the checkpoint's inference record and weights: runfolder's schema
    CheckpointError,
    checkpoint_path,
    model_weights,
    read_checkpoint,
    read_run_config,
)

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("torchscript", "onnx")


def _describe_shape(shape: Sequence[int]) -> str:
    if len(shape) == 3:
        c, h, w = shape
        kind = {1: "grayscale", 3: "RGB"}.get(c, f"{c}-channel")
        return f"{h}x{w} {kind} ({c} channel{'s' if c != 1 else ''})"
    return f"{int(np.prod(shape))} features"


def check_shape(
    x: np.ndarray, input_shape: Sequence[int], what: str = "X", who: str = "the model"
) -> None:
    """Raise `DataError` (a ValueError) unless model inputs ``x`` ``[N, ...]`` have samples of
    ``input_shape``, naming both."""
    if tuple(x.shape[1:]) == tuple(input_shape):
        return
    if len(input_shape) == 1 and x.ndim == 2:
        raise DataError(
            f"{what} has {x.shape[1]} features, but {who} is expecting {input_shape[0]} "
            "features as input."
        )
    raise DataError(
        f"{what} holds {_describe_shape(x.shape[1:])} inputs, but {who} takes "
        f"{_describe_shape(input_shape)}: give inputs of that shape."
    )


class LogitMean(torch.nn.Module):
    """The mean of several networks' logits ``[B, K]``: the prediction of a method that keeps
    more than one network (`noisytail.methods.base.Method.predict_networks`; DivideMix averages
    its two networks' logits, docs/methods.md)."""

    def __init__(self, networks: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.networks = torch.nn.ModuleList(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x) for net in self.networks]).mean(0)


def network_weights(state: dict[str, Any], method: str) -> list[dict[str, torch.Tensor]]:
    """The weights of each network that ``method`` predicts with (its ``predict_networks``, in
    order) in a checkpoint dict: ``[model_weights(state)]`` for the usual single network; a
    network whose weights are absent gets an empty dict."""
    names = METHODS.get(method).predict_networks if method in METHODS else ("model",)
    if tuple(names) == ("model",):
        return [model_weights(state)]
    saved = state.get("method") if isinstance(state.get("method"), dict) else {}
    return [
        {k[len(name) + 1 :]: v for k, v in saved.items() if k.startswith(name + ".")}
        for name in names
    ]


@dataclass
class TrainedModel:
    """A model in eval mode with what it needs to classify: class names, input shape
    ``[C, H, W]`` or ``[D]``, normalisation, and whether image files are resized to fit."""

    model: torch.nn.Module
    class_names: list[str]
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    resize: bool = False
    feature_names: tuple[str, ...] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    _cast: tuple[torch.dtype, torch.nn.Module] | None = field(default=None, repr=False)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, checkpoint: str = "last") -> TrainedModel:
        """The model of a run folder's ``checkpoints/<checkpoint>.pt`` (needs no data set); a
        self-supervised pre-training run (its head only an online probe) is refused."""
        run = Path(run_dir)
        cfg = read_run_config(run)
        if cfg.method.name in METHODS and METHODS.get(cfg.method.name).self_supervised:
            raise DataError(
                f"{run} is a {cfg.method.name} pre-training run: it learned an encoder, not a "
                "classifier; fine-tune it first (noisytail train --set "
                f"model.init={run / 'encoder.pt'})."
            )
        path = checkpoint_path(run, checkpoint)
        state = read_checkpoint(path)
        record = state.get("inference")
        if not isinstance(record, dict):
            raise CheckpointError(
                f"{path}: holds no inference record (class names, input shape, normalisation): "
                "it was written by an older noisytail; train the run again to classify new data."
            )
        weights = network_weights(state, cfg.method.name)
        if not all(weights):
            raise CheckpointError(f"{path}: holds no model weights.")
        try:
            trained = cls.from_record(record, weights)
        except (KeyError, TypeError, RuntimeError, ValueError) as err:
            raise CheckpointError(
                f"{path}: its model cannot be rebuilt ({short_error(err)})."
            ) from None
        trained.source = {"run": str(run), "checkpoint": str(path), "method": cfg.method.name}
        return trained

    @classmethod
    def from_record(
        cls,
        record: dict[str, Any],
        weights: dict[str, torch.Tensor] | Sequence[dict[str, torch.Tensor]],
    ) -> TrainedModel:
        """The model described by a `noisytail.runfolder.inference_record` with its ``weights``
        loaded: one state dict, or one per network (`network_weights`), whose logits are then
        averaged (`LogitMean`)."""
        shape = tuple(int(s) for s in record["input_shape"])
        names = [str(c) for c in record["class_names"]]
        spec = record["model"]
        options = dict(spec.get("options") or {})
        if options.get("pretrained"):  # ImageNet weights would be fetched, then overwritten
            options["pretrained"] = False
        networks = []
        for state in [weights] if isinstance(weights, dict) else weights:
            with torch.random.fork_rng():  # its random initialisation is overwritten: draw nothing
                net = MODELS.build(
                    spec["name"],
                    args=options,
                    num_classes=len(names),
                    input_shape=shape,
                )
            net.load_state_dict(state)
            networks.append(net)
        model = networks[0] if len(networks) == 1 else LogitMean(networks)
        model.eval()
        return cls(
            model,
            names,
            shape,
            tuple(float(m) for m in record.get("mean") or ()),
            tuple(float(s) for s in record.get("std") or ()),
            bool(record.get("resize", False)),
            _names_or_none(record.get("feature_names")),
        )

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    @torch.no_grad()
    def logits(
        self, x: np.ndarray, batch_size: int = 512, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Logits ``[N, K]`` of model inputs ``x`` ``[N, *input_shape]``, computed in ``dtype``.

        float64 makes each sample's output independent of the batch it is in (to ~1e-15);
        float32 is what an exported model computes."""
        check_shape(x, self.input_shape)
        model = self.model.eval()
        if dtype != torch.float32:
            if self._cast is None or self._cast[0] != dtype:
                self._cast = (dtype, copy.deepcopy(self.model).to(dtype).eval())
            model = self._cast[1]
        out = []
        for start in range(0, len(x), batch_size):
            batch = normalise_inputs(x[start : start + batch_size], self.mean, self.std)
            out.append(model(batch.to(dtype)))
        if not out:
            return torch.zeros((0, len(self.class_names)), dtype=dtype)
        return torch.cat(out)

    def predict_proba(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Class probabilities ``[N, K]`` (float64, rows sum to 1) of model inputs ``x``,
        computed in float64 (`logits`)."""
        return torch.softmax(self.logits(x, batch_size, torch.float64), dim=1).numpy()

    def read_images(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Image files as model inputs ``[N, C, H, W]`` for this model (see module docstring)."""
        if not self.is_image:
            raise DataError(
                f"the model takes {_describe_shape(self.input_shape)}, not images: give a CSV "
                "of feature columns."
            )
        c, h, w = self.input_shape
        if self.resize:
            from .data.image_folder import LazyImageStore

            store = LazyImageStore([os.fspath(p) for p in paths], image_size=h, channels=c)
            return store.get(np.arange(len(store))).numpy()
        x = read_images(paths, channels=c)
        check_shape(x, self.input_shape, what=f"the images of {os.fspath(paths[0])}'s size")
        return x

    def export(self, fmt: str, path: str | os.PathLike) -> Path:
        """Write the model as ``fmt`` (torchscript | onnx) to ``path``, and ``path.json`` with
        the class names, input shape and normalisation; returns ``path``."""
        if fmt not in EXPORT_FORMATS:
            raise DataError(f"unknown export format {fmt!r}: use {' or '.join(EXPORT_FORMATS)}.")
        out = Path(path)
        _check_export_target(out)
        example = torch.zeros((2, *self.input_shape))
        model = self.model.eval()
        with warnings.catch_warnings():  # torch's notes on its deprecated TorchScript paths
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
            data = self._export(fmt, model, example)
        meta = {
            "format": fmt,
            "input": "float32 [B, " + ", ".join(map(str, self.input_shape)) + "], normalised",
            "output": f"logits [B, {len(self.class_names)}]"
            + (
                f", the mean of {len(self.model.networks)} networks' logits"
                if isinstance(self.model, LogitMean)
                else ""
            ),
            "class_names": self.class_names,
            "input_shape": list(self.input_shape),
            "mean": list(self.mean),
            "std": list(self.std),
            "normalise": (
                "uint8 pixels / 255, then (x - mean) / std per channel"
                if self.is_image
                else "(x - mean) / std per feature column"
                if self.mean
                else "none"
            ),
            "feature_names": None if self.feature_names is None else list(self.feature_names),
            "image_files": (  # how `noisytail predict` turns a file into the input
                f"shorter side resized to {self.input_shape[-1]} (bilinear), centre crop, no "
                "EXIF rotation"
                if self.resize
                else "read at their own size, which must be the input's"
            )
            if self.is_image
            else None,
        }
        # the sidecar first: a model file without one would block every later export there
        _write(out.with_name(out.name + ".json"), json.dumps(meta, indent=2).encode())
        _write(out, data)
        return out

    @staticmethod
    def _export(fmt: str, model: torch.nn.Module, example: torch.Tensor) -> bytes:
        buf = io.BytesIO()
        if fmt == "torchscript":  # weights without gradients: its outputs convert to numpy
            frozen = copy.deepcopy(model).requires_grad_(False)
            with torch.no_grad():
                torch.jit.save(torch.jit.trace(frozen, example), buf)
        else:
            try:
                import onnx  # noqa: F401
            except ImportError:
                raise DataError(
                    "export --format onnx needs the onnx package: pip install 'noisytail[onnx]'."
                ) from None
            torch.onnx.export(
                model,
                (example,),
                buf,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
            )
        return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    from .runfolder import write_bytes

    write_bytes(data, path)


def read_images(paths: Sequence[str | os.PathLike], channels: int | None = None) -> np.ndarray:
    """Image files, at their own size, as uint8 ``[N, C, H, W]``: one channel when every image is
    grayscale (a grey palette counts, as in training), else RGB (alpha dropped); with
    ``channels`` (a model's), each image must be of that kind by itself, whatever the others
    are. All must share one size; a file that cannot be read, or is of another size or kind,
    raises `DataError` naming it."""
    from .data.image_folder import WIDE_GRAY_MODES, is_gray, stretch_to_8bit

    if len(paths) == 0:
        raise DataError("no image files given: expected at least one.")
    decoded = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                im = stretch_to_8bit(im) if im.mode in WIDE_GRAY_MODES else im  # as `decode_image`
                decoded.append((os.fspath(p), im.convert("L" if is_gray(im) else "RGB")))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"Cannot read image {os.fspath(p)}: {short_error(err)}") from None
    gray = all(im.mode == "L" for _, im in decoded) if channels is None else channels == 1
    mode, kind = ("L" if gray else "RGB"), {"L": "grayscale", "RGB": "colour"}
    first_path, first = decoded[0]
    arrays = []
    for path, im in decoded:  # with ``channels``: each of its kind, whatever the others are
        if channels is not None and im.mode != mode:
            raise DataError(f"{path} is a {kind[im.mode]} image; the model takes {kind[mode]}.")
        if im.size != first.size:
            raise DataError(
                f"{path} is {im.size[1]}x{im.size[0]}, {first_path} is "
                f"{first.size[1]}x{first.size[0]}: all images must have one size."
            )
        a = np.asarray(im.convert(mode), dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return np.stack(arrays)


def _names_or_none(names: Any) -> tuple[str, ...] | None:
    return None if names is None else tuple(str(n) for n in names)


def _check_export_target(out: Path) -> None:
    """Refuse (`DataError`) to export over a file that is not an earlier export: the model file
    and its ``.json`` may replace only a model file and ``.json`` written by `export`."""
    sidecar, earlier = out.with_name(out.name + ".json"), False
    with contextlib.suppress(OSError, ValueError, AttributeError):
        earlier = json.loads(sidecar.read_text("utf-8")).get("format") in EXPORT_FORMATS
    for target in (out, sidecar):
        if (target.exists() or target.is_symlink()) and not earlier:
            raise DataError(
                f"--out {out}: {target} exists and is not an earlier export: it is left as it "
                "is; choose another --out."
            )
