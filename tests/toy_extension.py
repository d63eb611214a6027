"""A toy extension of noisytail in one file: a data source, two methods (one supervised that
ranks its samples, one self-supervised), a detector and a noise kind, each registered here and
nowhere else.

tests/test_extensions.py runs this file into fresh copies of the registries and uses every piece
through the normal entry points (`noisytail.train.fit`, `noisytail.detect.detect_label_issues`,
``noisytail data``, ``noisytail detect --help``): adding one is a one-file change.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from noisytail.data.noise_kinds import NoiseData, register_noise_kind
from noisytail.data.source_info import data_source
from noisytail.data.types import DatasetBundle, DataSplit, TensorStore
from noisytail.detect.base import DetectionTask, Detector, DetectorOutput
from noisytail.methods.base import Batch, Context, Method, TaskInfo
from noisytail.models.base import Backbone
from noisytail.registry import DETECTORS, METHODS

TOY_HOW = "Generated from a seed: nothing to get."


@data_source("toy_blobs", display_name="Toy Blobs", how_to_get=TOY_HOW, locate=lambda: "(toy)")
def load_toy_blobs(root: str | None = None, *, per_class: int = 40, seed: int = 0) -> DatasetBundle:
    """Three classes of 1x4x4 uint8 images: class ``c`` lights up row ``c`` (plus noise), so a
    small model separates them in a few epochs. ``root`` is ignored."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> DataSplit:
        labels = np.repeat(np.arange(3), n)
        images = rng.integers(0, 60, size=(3 * n, 1, 4, 4))
        images[np.arange(3 * n), 0, labels, :] += 180
        return DataSplit(TensorStore(torch.from_numpy(images.astype(np.uint8))), labels)

    return DatasetBundle(
        name="toy_blobs",
        train=split(per_class),
        test=split(per_class // 2),
        class_names=["row0", "row1", "row2"],
        mean=(0.3,),
        std=(0.3,),
    )


@METHODS.register("toy_ce")
class ToyCE(Method):
    """Cross-entropy that remembers each sample's last loss and ranks samples by it."""

    def __init__(self, model: Backbone, info: TaskInfo, *, scale: float = 1.0) -> None:
        super().__init__(model, info)
        self.scale = scale
        self.register_buffer("last_loss", torch.full((info.num_train,), float("nan")))

    def training_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        losses = F.cross_entropy(self.model(batch.x).float(), batch.labels, reduction="none")
        self.last_loss[batch.idx] = losses.detach().to(self.last_loss.device)
        return {"loss": self.scale * losses.mean()}

    def sample_scores(self) -> np.ndarray | None:
        loss = self.last_loss.cpu().numpy()
        return None if np.isnan(loss).all() else -np.nan_to_num(loss, nan=float(np.nanmean(loss)))


@METHODS.register("toy_ssl")
class ToySSL(Method):
    """A label-free objective (features of two views pulled together, kept at unit scale)."""

    views = 2
    self_supervised = True

    def training_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        a, b = (self.model.features(v).float() for v in batch.x)
        return {"loss": (a - b).pow(2).mean() + (a.pow(2).mean() - 1).pow(2)}


@DETECTORS.register("toy_margin")
class ToyMarginDetector(Detector):
    """Suspicion = the trained model's top probability minus that of the given label."""

    description = "toy: probability margin against the given label"

    def __init__(self, *, flag_fraction: float = 0.2) -> None:
        self.flag_fraction = flag_fraction

    def detect(self, task: DetectionTask) -> DetectorOutput:
        probs = task.pool_probs(task.trained())
        suspicion = probs.max(1) - probs[np.arange(len(task.labels)), task.labels]
        n_flag = int(self.flag_fraction * len(suspicion))
        flagged = np.zeros(len(suspicion), dtype=bool)
        flagged[np.argsort(-suspicion, kind="stable")[:n_flag]] = True
        return DetectorOutput(suspicion, flagged, probs.argmax(1))


def _next_class(spec, data: NoiseData) -> np.ndarray:
    """``P(noisy = j | true = i)``: stay with ``1 - rate``, else move to the next class."""
    k = data.num_classes
    return (1 - spec.rate) * np.eye(k) + spec.rate * np.roll(np.eye(k), 1, axis=1)


#: A noise kind: a label moves to the next class (cyclically) with probability ``noise.rate``;
#: sampled from its transition matrix (no sampler of its own).
TOY_NOISE = register_noise_kind("toy_next_class", _next_class)
