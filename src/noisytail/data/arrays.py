"""In-memory arrays as a data source (``data.name=arrays``), and the one place that turns a user's
array into model inputs.

Training on one's own numpy (or torch) arrays needs no registration of a loader:

    key = hold_arrays(x, y)                      # any number of times, one key each
    cfg = from_dict({"data": {"name": "arrays", "options": {"key": key}}})
    fit(cfg, "runs/mine"); release_arrays(key)

(`arrays_dataset` is the same as a context manager.) A config keeps only the key, so a run
folder's ``config.yaml`` stays plain YAML; the arrays live in this process only.

Layouts (`as_model_inputs`): ``[N, H, W]`` and ``[N, H, W, C]`` (channels last, C in 1..4) are
images, ``[N, D]`` a table. uint8 images are kept as uint8 and normalised per channel by the
loader (pixel / 255, then mean/std of the training pixels); float images are pixel values in
[0, 1] (others are refused) and float tables are taken as they are (in float64): both are
standardised per channel (per column) with the training statistics, which the bundle's ``mean``
/ ``std`` record (`normalise_inputs` applies them to new inputs).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from noisytail.data.source_info import data_source
from noisytail.data.types import DataError, DatasetBundle, DataSplit, TensorStore

#: Without test arrays, the run's per-epoch test metrics use at most this many training samples
#: (with their given labels): a check that training fits them, not a test.
FIT_CHECK_SAMPLES = 256


def _describe(x: np.ndarray) -> str:
    return f"shape {tuple(x.shape)}, dtype {x.dtype}"


def as_model_inputs(x: Any, what: str = "X") -> np.ndarray:
    """``x`` as model inputs: uint8 / float32 ``[N, C, H, W]`` images or float32 ``[N, D]``.

    ``[N, H, W]`` gains a channel axis; ``[N, H, W, C]`` (C <= 4) becomes ``[N, C, H, W]``;
    ``[N, D]`` stays. bool and integer tables become float32; integer images other than uint8
    must lie in 0..255. Raises `DataError` (a ValueError) naming what is wrong and what is
    expected: another number of dimensions, a non-numeric dtype, NaN or infinity, no samples.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as err:
        raise DataError(f"{what} cannot be read as an array ({err}).") from None
    expected = "[N, D] features, [N, H, W] or [N, H, W, C] images"
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise DataError(f"{what} has dtype {arr.dtype}: expected numbers ({expected}).")
    if np.iscomplexobj(arr):
        raise DataError(
            f"Complex data not supported: {what} is {arr.dtype}; expected real numbers."
        )
    if arr.ndim not in (2, 3, 4):
        raise DataError(f"{what} has {_describe(arr)}: expected {expected}.")
    if arr.shape[0] == 0:
        raise DataError(f"{what} has {_describe(arr)}: expected at least one sample.")
    if arr[0].size == 0:
        raise DataError(
            f"{what} has 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    if arr.ndim == 4 and not 1 <= arr.shape[3] <= 4:
        raise DataError(
            f"{what} has {_describe(arr)}: a 4-D array is [N, H, W, C] images with 1 to 4 "
            f"channels last, not {arr.shape[3]}."
        )
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(1))[0])
        raise DataError(f"{what} holds NaN or infinity (first in sample {bad}): expected finite.")
    if arr.ndim == 2:  # float64 until standardised: a column of timestamps keeps its signal
        return np.ascontiguousarray(arr, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[:, :, :, None]
    arr = np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        if arr.min() < 0 or arr.max() > 255:
            raise DataError(
                f"{what} holds integer pixels outside 0..255 ({_describe(arr)}): expected uint8 "
                "pixels or floats in [0, 1]."
            )
        return arr.astype(np.uint8)
    low, high = float(arr.min()), float(arr.max())
    if low < 0.0 or high > 1.0:  # 0..255 floats would train, then image files come in 255x darker
        raise DataError(
            f"{what} holds float pixels in [{low:g}, {high:g}]: float images are pixel values in "
            "[0, 1] (divide by 255, or pass uint8 pixels); noisytail standardises them itself."
        )
    return arr.astype(np.float32)


def input_statistics(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (images, uint8 in [0, 1] units) or per-column (tables) mean and standard
    deviation of model inputs ``x``; a constant channel or column gets std 1."""
    if x.ndim == 4:
        flat = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1).astype(np.float64)
        if x.dtype == np.uint8:
            flat /= 255.0
    else:
        flat = x.T.astype(np.float64)
    mean, std = flat.mean(axis=1), flat.std(axis=1)
    std = np.where(std > 1e-8, std, 1.0)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def normalise_inputs(
    x: np.ndarray | torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Model inputs ``[N, ...]`` (from `as_model_inputs`) as the float32 tensor the model takes:
    uint8 images / 255, then ``(x - mean) / std`` per channel (axis 1) or per column, in float64
    for float64 inputs (a column far from 0, such as a timestamp, would lose its spread in
    float32); empty ``mean`` / ``std`` leave floats as they are."""
    t = torch.as_tensor(x)
    t = t.float().div(255.0) if t.dtype == torch.uint8 else t
    t = t if t.dtype == torch.float64 else t.float()
    if len(mean):
        shape = (1, -1) + (1,) * (t.dim() - 2)
        m = torch.tensor(tuple(mean), dtype=t.dtype).view(shape)
        s = torch.tensor(tuple(std), dtype=t.dtype).view(shape)
        t = (t - m) / s
    return t.float()


@dataclass(frozen=True)
class _Held:
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...] | None = None


_HELD: dict[str, _Held] = {}
_LOCK = threading.Lock()
_COUNTER = itertools.count()


def _labels(y: Any, n: int, what: str) -> np.ndarray:
    arr = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y)
    if arr.ndim != 1 or len(arr) != n:
        raise DataError(f"{what} has shape {arr.shape}: expected one label per sample, [{n}].")
    if not np.issubdtype(arr.dtype, np.integer) or (n and arr.min() < 0):
        raise DataError(
            f"{what} must hold integer class ids >= 0 (got dtype {arr.dtype}); encode other "
            "labels first (noisytail.NoisyTailClassifier does it for you)."
        )
    return arr.astype(np.int64)


def hold_arrays(
    x: Any,
    y: Any,
    *,
    x_test: Any = None,
    y_test: Any = None,
    class_names: Sequence[str] | None = None,
    model_layout: bool = False,
    feature_names: Sequence[str] | None = None,
) -> str:
    """Keep ``x`` ``[N, ...]`` and integer labels ``y`` ``[N]`` (and optionally a test split) in
    this process; return the key for ``data.options.key``. Each call gets a new key.

    ``model_layout``: ``x`` (and ``x_test``) are already model inputs (`as_model_inputs`'s
    output, images channels first) and are kept as they are. ``feature_names`` ``[D]``: a
    table's column names, recorded with the run (`noisytail predict` reads a CSV by them)."""

    def inputs(a: Any, what: str) -> np.ndarray:
        return np.asarray(a) if model_layout else as_model_inputs(a, what)

    xs = inputs(x, "x")
    ys = _labels(y, len(xs), "y")
    xt = yt = None
    if (x_test is None) != (y_test is None):
        raise DataError("give both x_test and y_test, or neither.")
    if x_test is not None:
        xt = inputs(x_test, "x_test")
        if xt.shape[1:] != xs.shape[1:] or xt.dtype != xs.dtype:
            raise DataError(
                f"x_test has samples of shape {xt.shape[1:]} ({xt.dtype}), x of shape "
                f"{xs.shape[1:]} ({xs.dtype}): they must match."
            )
        yt = _labels(y_test, len(xt), "y_test")
    k = int(max(ys.max(), -1 if yt is None else yt.max())) + 1
    names = tuple(str(c) for c in (class_names if class_names is not None else range(k)))
    if len(names) < k:
        raise DataError(f"{len(names)} class names for labels up to {k - 1}: give {k}.")
    key = f"arrays-{next(_COUNTER)}"
    with _LOCK:
        _HELD[key] = _Held(xs, ys, xt, yt, names, _columns(feature_names, xs))
    return key


def _columns(names: Sequence[str] | None, x: np.ndarray) -> tuple[str, ...] | None:
    if names is None:
        return None
    if x.ndim != 2 or len(names) != x.shape[1]:
        raise DataError(f"{len(names)} feature names for inputs of shape {x.shape[1:]}.")
    return tuple(str(n) for n in names)


def release_arrays(key: str) -> None:
    """Forget the arrays held under ``key`` (a key not held is ignored)."""
    with _LOCK:
        _HELD.pop(key, None)


@contextlib.contextmanager
def arrays_dataset(x: Any, y: Any, **kwargs: Any) -> Iterator[str]:
    """`hold_arrays` for the duration of a ``with`` block; yields the key."""
    key = hold_arrays(x, y, **kwargs)
    try:
        yield key
    finally:
        release_arrays(key)


@data_source(
    "arrays",
    display_name="in-memory arrays",
    how_to_get="In-memory arrays from Python: noisytail.data.arrays.hold_arrays(x, y).",
)
def load_arrays(root: str | None = None, *, key: str = "") -> DatasetBundle:
    """The arrays held under ``key`` (`hold_arrays`) as a bundle. ``root`` is ignored.

    Float inputs are standardised with the training split's statistics (recorded in ``mean`` /
    ``std``); uint8 images keep their pixels and the loader normalises them. Without test arrays
    the test split is every ``ceil(N / FIT_CHECK_SAMPLES)``-th training sample.
    """
    with _LOCK:
        held = _HELD.get(key)
    if held is None:
        raise DataError(
            f"data.name=arrays: no arrays are held under key {key!r} in this process; hold them "
            "first with noisytail.data.arrays.hold_arrays(x, y) and pass the key it returns (a "
            "NoisyTailClassifier's run: noisytail.load_model(run).score(X, y) evaluates it)."
        )
    mean, std = input_statistics(held.x)

    def store(x: np.ndarray) -> TensorStore:
        if x.dtype == np.uint8:
            return TensorStore(torch.from_numpy(x))
        return TensorStore(normalise_inputs(x, mean, std))

    train = DataSplit(store(held.x), held.y)
    if held.x_test is not None:
        test = DataSplit(store(held.x_test), held.y_test)
    else:
        step = -(-len(held.y) // FIT_CHECK_SAMPLES)
        test = train.subset(np.arange(0, len(held.y), step))
    return DatasetBundle(
        name="arrays",
        train=train,
        test=test,
        class_names=list(held.class_names),
        mean=mean,
        std=std,
        feature_names=None if held.feature_names is None else list(held.feature_names),
    )
