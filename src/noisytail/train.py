"""The one training loop: data -> corruption -> method -> epochs -> run folder.

``fit(cfg, out_dir)`` writes ``config.yaml``, ``corruption.npz``, ``data_indices.npz``,
``metrics.jsonl``, ``checkpoints/{last,best}.pt``, ``predictions.npz``, ``summary.json`` and the
report. ``fit(..., resume=True)`` continues an interrupted run to the same result as an
uninterrupted one: batches, augmentation and method randomness are seeded per epoch.
Under ``torchrun`` it runs data-parallel with DistributedDataParallel (gloo on CPU, NCCL on GPU).

Two-stage fine-tuning (``model.init=<encoder.pt>``): ``train.freeze_backbone_epochs=N`` trains only
the model's ``head`` for the first N epochs (backbone gradients dropped before each step, backbone
modules in eval mode so BatchNorm statistics stay put); then everything trains, the backbone at
``lr * train.backbone_lr_scale``. Whether an epoch is frozen depends on its number only, so resume
mid-freeze or after it gives the uninterrupted result.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from . import __version__, seeds
from . import models as _models  # noqa: F401  (registration)
from .config import Config, ConfigError, dump_config, to_dict, validate
from .data.loader import CyclingLoader, PoolData, TrainLoader, epoch_generator
from .data.locations import check_outside_data
from .data.prepare import PreparedData, prepare_data
from .data.splits import meta_counts, pseudo_meta
from .data.types import DataError, DatasetBundle
from .evaluate import classification_metrics, per_class_accuracy
from .inference import inference_record
from .methods import Batch, Context, Method, TaskInfo
from .registry import METHODS, MODELS
from .runfolder import (
    CHECKPOINT_KEYS,
    CONFIG_FILE,
    CORRUPTION_FILE,
    METRICS_FILE,
    CheckpointError,
    WriteError,
    append_metrics,
    checkpoint_path,
    read_checkpoint,
    read_run_config,
    write_checkpoint,
    write_fingerprint,
    write_json,
    write_metrics,
    write_npz,
)

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to do."""


class RunExistsError(FileExistsError):
    """The output folder already holds a run."""


# --------------------------------------------------------------------------------------------
# Devices, distribution, provenance


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_runtime(cfg: Config) -> Runtime:
    """Pick the device and, under torchrun (``WORLD_SIZE`` > 1), join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = cfg.train.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device asks for CUDA but no GPU is visible; use train.device=cpu.")
    device = torch.device(f"cuda:{local_rank}" if want == "cuda" and world > 1 else want)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, rank, world, local_rank)


def provenance() -> dict[str, Any]:
    commit = None
    with contextlib.suppress(Exception):
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            or None
        )
    return {
        "noisytail": __version__,
        "git_commit": commit,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": " ".join(sys.argv),
    }


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 autocast trains
    the small CNN about 2x as fast as fp32 (BENCHMARKS.md); elsewhere it is emulated and slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        if probe is not None:
            try:
                if probe():
                    return True
            except RuntimeError:
                pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(device: torch.device, precision: str) -> str:
    """``train.precision`` as run: ``auto`` is bf16 on a GPU and on a CPU with native bf16
    (``cpu_has_bf16``), fp32 elsewhere; ``fp32`` / ``bf16`` are taken as given."""
    if precision != "auto":
        return precision
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()):
        return "bf16"
    return "fp32"


def _autocast_factory(device: torch.device, precision: str) -> Callable[[], Any]:
    """A zero-argument context factory: bf16 autocast when ``precision`` is ``bf16``."""
    if precision != "bf16":
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# --------------------------------------------------------------------------------------------
# Building blocks


def build_model(cfg: Config, bundle: DatasetBundle) -> torch.nn.Module:
    model = MODELS.build(
        cfg.model.name,
        args=cfg.model.options,
        num_classes=bundle.num_classes,
        input_shape=tuple(bundle.input_shape),
    )
    if cfg.model.init:
        load_init(model, cfg.model.init)
    return model


def load_init(model: torch.nn.Module, path: str) -> None:
    """Start from a checkpoint or encoder file; a head of another shape is left fresh."""
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "last.pt"
    if not p.is_file():
        raise ConfigError(
            f"model.init: {str(p)!r} not found (give an encoder .pt or a run folder)."
        )
    state = read_checkpoint(p, "cpu", what="model.init")
    if "model" in state:
        state = state["model"]
    elif "method" in state:
        state = state["method"]
        if isinstance(state, dict):
            state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    if not isinstance(state, dict):
        raise CheckpointError(
            f"model.init: {p}: its weights are a {type(state).__name__}, not a dict."
        )
    own = model.state_dict()
    usable = {
        k: v
        for k, v in state.items()
        if k in own and isinstance(v, torch.Tensor) and own[k].shape == v.shape
    }
    if not usable:
        raise ConfigError(
            f"model.init: {p} holds no weights that fit model {type(model).__name__}."
        )
    model.load_state_dict(usable, strict=False)


def backbone_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable parameters of ``model`` outside its linear ``head``: what
    ``train.freeze_backbone_epochs`` freezes and ``train.backbone_lr_scale`` scales."""
    head = getattr(model, "head", None)
    skip = {id(p) for p in head.parameters()} if isinstance(head, torch.nn.Module) else set()
    return [p for p in model.parameters() if p.requires_grad and id(p) not in skip]


def scale_backbone_groups(
    groups: list[dict[str, Any]], backbone: list[torch.nn.Parameter], scale: float
) -> list[dict[str, Any]]:
    """Split each optimizer group into its non-backbone and backbone parameters; the backbone
    part gets ``lr_scale`` multiplied by ``scale`` (other group options are kept)."""
    ids = {id(p) for p in backbone}
    out: list[dict[str, Any]] = []
    for group in groups:
        params = list(group["params"])
        opts = {k: v for k, v in group.items() if k != "params"}
        rest = [p for p in params if id(p) not in ids]
        body = [p for p in params if id(p) in ids]
        if rest:
            out.append({**opts, "params": rest})
        if body:
            out.append({**opts, "params": body, "lr_scale": opts.get("lr_scale", 1.0) * scale})
    return out


def set_backbone_eval(model: torch.nn.Module) -> None:
    """Put every module of ``model`` except its ``head`` in eval mode (BatchNorm uses and keeps
    its running statistics, dropout is off): the frozen backbone is a fixed feature extractor."""
    head = getattr(model, "head", None)
    skip = {id(m) for m in head.modules()} if isinstance(head, torch.nn.Module) else set()
    for module in model.modules():
        if id(module) not in skip:
            module.training = False


def build_optimizer(cfg: Config, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=t.nesterov
        )
    return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)


def learning_rate(cfg: Config, step: int, steps_per_epoch: int) -> float:
    """The learning rate at global ``step``: linear warm-up, then cosine / step / constant."""
    t = cfg.train
    total = t.epochs * steps_per_epoch
    warm = int(t.warmup_epochs * steps_per_epoch)
    if step < warm:
        return t.lr * (step + 1) / warm
    if t.schedule == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * t.lr * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if t.schedule == "step":
        epoch = step // steps_per_epoch
        return t.lr * t.gamma ** sum(epoch >= m for m in t.milestones)
    return t.lr


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


@contextlib.contextmanager
def _unfit(path: Path) -> Any:
    """Turn a state that does not fit the run's model, method or optimizer into a one-line
    `CheckpointError` naming ``path``."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as err:
        if isinstance(err, (ConfigError, DataError)):
            raise
        detail = " ".join(str(err).split())
        detail = detail if len(detail) <= 200 else detail[:197] + "..."
        raise CheckpointError(
            f"{path}: does not fit this run's model, method or optimizer ({detail})."
        ) from None


# --------------------------------------------------------------------------------------------
# The run


class Run:
    """Everything one training run holds; ``fit`` drives it."""

    def __init__(
        self, cfg: Config, out_dir: Path, runtime: Runtime, prepared: PreparedData
    ) -> None:
        self.cfg = cfg
        self.out = out_dir
        self.rt = runtime
        self.data = prepared
        bundle = prepared.bundle
        corr = prepared.corruption
        t = cfg.train
        channels_last = (
            t.channels_last if t.channels_last is not None else runtime.device.type == "cuda"
        )
        pool = dict(
            mean=bundle.mean,
            std=bundle.std,
            device=runtime.device,
            on_device=t.data_on_device,
            channels_last=channels_last and bundle.is_image,
        )
        self.train_data = PoolData(bundle.train.images, corr.train_idx, **pool)
        self.val_data = (
            PoolData(bundle.train.images, corr.val_idx, **pool) if len(corr.val_idx) else None
        )
        self.test_data = PoolData(bundle.test.images, np.arange(len(bundle.test)), **pool)
        self.precision = resolve_precision(runtime.device, t.precision)
        self.autocast = _autocast_factory(runtime.device, self.precision)

        torch.manual_seed(cfg.seed)  # model (and method) initialisation
        model = build_model(cfg, bundle)
        method_cls = METHODS.get(cfg.method.name)
        pseudo_meta_set = cfg.meta.source == "pseudo"
        if method_cls.needs_meta and len(corr.meta_idx) == 0 and not pseudo_meta_set:
            raise ConfigError(
                f"Method {cfg.method.name!r} needs a clean meta set: set meta.per_class "
                "(e.g. meta.per_class=10) or meta.total."
            )
        per_rank_batch = max(1, t.batch_size // runtime.world_size)
        self.loader = TrainLoader(
            self.train_data,
            prepared.train_labels,
            batch_size=per_rank_batch,
            augment_kind=cfg.data.augment,
            views=method_cls.views_for(dict(cfg.method.args)),
            include_plain_view=method_cls.include_plain_view,
            sampler=t.sampler,
            seed=cfg.seed,
            rank=runtime.rank,
            world_size=runtime.world_size,
        )
        self.info = TaskInfo(
            num_classes=bundle.num_classes,
            class_counts=prepared.class_counts,
            num_train=len(corr.train_idx),
            input_shape=tuple(bundle.input_shape),
            epochs=t.epochs,
            steps_per_epoch=len(self.loader),
            train_labels=prepared.train_labels.copy(),
        )
        self.method: Method = METHODS.build(
            cfg.method.name, args=cfg.method.args, model=model, info=self.info
        )
        self.method.to(runtime.device)
        if channels_last and bundle.is_image:
            self.method.to(memory_format=torch.channels_last)
        # train.freeze_backbone_epochs: frozen epochs drop these gradients (see train_epoch).
        self.backbone = backbone_parameters(self.method.model)
        self.frozen = False  # whether the current epoch trains the head only
        groups = self.method.parameter_groups()
        if t.backbone_lr_scale != 1.0:
            groups = scale_backbone_groups(groups, self.backbone, t.backbone_lr_scale)
        self.optimizer = build_optimizer(cfg, groups)
        self.engine: torch.nn.Module = self.method
        if runtime.distributed:
            self.engine = torch.nn.parallel.DistributedDataParallel(
                self.method,
                device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        if t.compile:
            self.method.model.compile()
        self._pool_kw, self._per_rank_batch = pool, per_rank_batch
        self.meta_cycle: CyclingLoader | None = None
        if len(corr.meta_idx):
            meta_idx, meta_labels = corr.split("meta")  # true labels: clean by construction
            self.meta_cycle = self._meta_cycle(meta_idx, meta_labels)
        self.ctx = Context(
            info=self.info,
            optimizer=self.optimizer,
            device=runtime.device,
            generator=torch.Generator(),
            meta_batches=(self._next_meta_batch if self.meta_cycle or pseudo_meta_set else None),
            predict_train=self._predict_train,
            autocast=self.autocast,
            pool_batch=self.loader.make_batch,
        )
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.last_test_probs: np.ndarray | None = None  # [N_test, K] of the last evaluated epoch
        self.start_epoch = 0

    def start(self) -> None:
        """Before the first epoch (and after a resume): `Method.on_train_start`, then restrict
        the loader to the method's `Method.train_subset` (if any), which sets the epoch's steps."""
        self.method.on_train_start(self.ctx)
        subset = self.method.train_subset()
        if subset is not None:
            self.loader.restrict(subset)
            self.info.steps_per_epoch = len(self.loader)

    # -- helpers --------------------------------------------------------------------------
    def _meta_cycle(self, store_idx: np.ndarray, labels: np.ndarray) -> CyclingLoader:
        """Endless augmented batches of a meta set: ids in the train store and their labels."""
        n, t = len(store_idx), self.cfg.train
        loader = TrainLoader(
            PoolData(self.data.bundle.train.images, store_idx, **self._pool_kw),
            labels,
            batch_size=min(self._per_rank_batch, n),
            augment_kind=self.cfg.data.augment,
            seed=self.cfg.seed,
            stream=seeds.META_ORDER,
            rank=self.rt.rank,
            world_size=self.rt.world_size if n >= t.batch_size else 1,
        )
        return CyclingLoader(loader)

    def _next_meta_batch(self) -> Batch:
        return self.meta_cycle.next_batch()

    def _pseudo_meta_cycle(self) -> CyclingLoader:
        """``meta.source=pseudo``: this epoch's meta set, the pool samples on which the current
        model and the noisy label agree most confidently (`noisytail.data.splits.pseudo_meta`)."""
        m, k = self.cfg.meta, self.data.bundle.num_classes
        counts = (
            meta_counts(k, per_class=m.per_class) if m.per_class else meta_counts(k, total=m.total)
        )
        probs = self._predict_train(lambda x: torch.softmax(self.method.predict(x).float(), dim=1))
        pos, labels = pseudo_meta(probs.cpu().numpy(), self.data.train_labels, counts)
        if len(pos) == 0:
            raise TrainingError(
                "meta.source=pseudo: the model agrees with no training label, so there is no "
                "meta set to draw; start from a trained model (model.init)."
            )
        return self._meta_cycle(self.data.corruption.train_idx[pos], labels)

    @torch.no_grad()
    def _predict_train(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        was_training = self.method.training
        self.method.eval()
        outs = []
        for x, _ in self.train_data.iter_plain(self.cfg.train.eval_batch_size):
            with self.autocast():
                outs.append(fn(x).float())
        self.method.train(was_training)
        if was_training and self.frozen:
            set_backbone_eval(self.method.model)
        return torch.cat(outs)

    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "method": self.method.state_dict(),
            "extra": self.method.extra_state(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "best": self.best,
            "config": to_dict(self.cfg),
            "inference": inference_record(self.cfg, self.data.bundle),
        }

    def restore(self, path: Path) -> None:
        """Continue from the full training state in ``path`` (``checkpoints/last.pt``)."""
        state = read_checkpoint(path, self.rt.device, required=CHECKPOINT_KEYS)
        epoch, history = state["epoch"], state["history"]
        if not (
            isinstance(epoch, int)
            and 0 < epoch <= self.cfg.train.epochs
            and isinstance(history, list)
            and len(history) == epoch
            and all(isinstance(r, dict) and r.get("epoch") == i + 1 for i, r in enumerate(history))
            and isinstance(state["best"], dict)
        ):
            raise CheckpointError(
                f"{path}: its epoch ({epoch!r}) and history do not agree with each other or with "
                f"train.epochs={self.cfg.train.epochs}: the file is damaged."
            )
        with _unfit(path):
            self.method.load_state_dict(state["method"])
            self.method.load_extra_state(state["extra"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.history = history
        self.best = state["best"]
        self.start_epoch = epoch

    def load_weights(self, path: Path) -> None:
        """Load the weights (and the method's extra state) of a ``last.pt`` or ``best.pt`` for
        evaluation: ``evaluate``, ``detect --from-run``, the SSL export."""
        state = read_checkpoint(path, self.rt.device)
        with _unfit(path):
            if "method" in state:
                self.method.load_state_dict(state["method"])
                self.method.load_extra_state(state.get("extra", {}))
            elif "model" in state:
                self.method.model.load_state_dict(state["model"])
            else:
                raise CheckpointError(f"{path}: lacks 'method' or 'model': it holds no weights.")

    def _reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        if not self.rt.distributed:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.rt.device)
        dist.all_reduce(t)
        t /= self.rt.world_size
        return dict(zip(keys, t.tolist()))

    # -- one epoch -----------------------------------------------------------------------
    def train_epoch(self, epoch: int, progress: bool) -> dict[str, float]:
        cfg, method, ctx = self.cfg, self.method, self.ctx
        steps = len(self.loader)
        torch.manual_seed(int(epoch_generator(cfg.seed, epoch, seeds.EPOCH_TORCH).initial_seed()))
        ctx.generator = epoch_generator(cfg.seed, epoch, seeds.METHOD)
        ctx.epoch = epoch
        if cfg.meta.source == "pseudo":
            self.meta_cycle = self._pseudo_meta_cycle()
        if self.meta_cycle is not None:
            self.meta_cycle.reset(epoch)
        frozen = self.frozen = epoch < cfg.train.freeze_backbone_epochs
        ctx.frozen_parameters = tuple(self.backbone) if frozen else ()
        method.train()
        if frozen:
            set_backbone_eval(method.model)
        method.on_epoch_start(ctx)
        sums: dict[str, torch.Tensor] = {}
        losses = torch.zeros(steps, device=self.rt.device)
        bar = tqdm(
            self.loader.epoch(epoch),
            total=steps,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            leave=False,
            disable=not progress,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        for i, batch in enumerate(bar):
            ctx.step = epoch * steps + i
            ctx.step_in_epoch = i
            lr = learning_rate(cfg, ctx.step, steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            if frozen:  # again each step, in case a method reset the modes
                set_backbone_eval(method.model)
            with self.autocast():
                out = self.engine(batch, ctx)
            loss = out["loss"]
            losses[i] = loss.detach().float()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if frozen:
                # No update at all: SGD/AdamW skip a parameter without a gradient (no momentum,
                # no weight decay). Gradients are still computed: some methods need them inside
                # their step, and DDP's all-reduce expects every rank to produce them.
                for p in self.backbone:
                    p.grad = None
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.train.grad_clip)
            self.optimizer.step()
            with self.autocast():
                out = {**out, **method.after_step(batch, ctx)}
            for key, value in out.items():
                v = (
                    value.detach().float()
                    if isinstance(value, torch.Tensor)
                    else torch.tensor(float(value))
                )
                sums[key] = sums.get(key, 0.0) + v.to(self.rt.device)
            if i % 20 == 19 or i == steps - 1:
                self._check_finite(losses[: i + 1], epoch, steps)
                if progress:
                    bar.set_postfix(loss=f"{float(losses[i]):.3f}", lr=f"{lr:.3g}")
        bar.close()
        record = {("train_loss" if k == "loss" else k): float(v) / steps for k, v in sums.items()}
        record["lr"] = learning_rate(cfg, (epoch + 1) * steps - 1, steps)
        if cfg.train.freeze_backbone_epochs > 0:
            record["backbone_frozen"] = float(frozen)
        return self._reduce_mean(record)

    def _check_finite(self, losses: torch.Tensor, epoch: int, steps: int) -> None:
        finite = torch.isfinite(losses)
        if bool(finite.all()):
            return
        first = int((~finite).nonzero()[0])
        last_good = self.out / "checkpoints" / "last.pt"
        kept = (
            f"the last good checkpoint is {last_good}"
            if last_good.exists()
            else "no checkpoint was written yet"
        )
        raise TrainingError(
            f"The loss became {float(losses[first])} at epoch {epoch + 1}, step {first + 1} "
            f"(global step {epoch * steps + first + 1}); training stopped and {kept}. "
            "Lower train.lr or set train.grad_clip."
        )

    def evaluate(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        eval_bs = self.cfg.train.eval_batch_size
        if self.val_data is not None:
            probs = predict_probs(self.method, self.val_data, eval_bs, self.autocast)
            labels = self.data.corruption.noisy_labels[self.data.corruption.val_idx]
            pred = probs.argmax(1)
            out["val_accuracy"] = float((pred == labels).mean())
            # Mean recall over the classes in the (noisy, long-tailed) validation labels.
            recall = per_class_accuracy(labels, pred, probs.shape[1])
            out["val_balanced_accuracy"] = float(np.nanmean(recall))
        probs = predict_probs(self.method, self.test_data, eval_bs, self.autocast)
        test_labels = self.data.bundle.test.labels
        out["test_accuracy"] = float((probs.argmax(1) == test_labels).mean())
        m = classification_metrics(test_labels, probs, self.data.true_class_counts)
        out["test_balanced_accuracy"] = m["balanced_accuracy"]
        out["_probs"] = probs
        return out


def _prepare_out_dir(out_dir: Path, cfg: Config, resume: bool, is_main: bool) -> bool:
    """Check ``out_dir`` for a new run or for ``resume``; return whether to resume from a
    checkpoint. ``--resume`` on a run that stopped before its first checkpoint (a ``config.yaml``
    but no ``checkpoints/last.pt``) starts it afresh, saying so in one line, with ``cfg``."""
    if resume:
        if not (out_dir / CONFIG_FILE).exists() and not checkpoint_path(out_dir).exists():
            raise RunExistsError(
                f"--resume: {out_dir} holds no run (no config.yaml, no checkpoint); start it "
                "without --resume."
            )
        if not checkpoint_path(out_dir).exists():  # its config.yaml is replaced, even if damaged
            if is_main:
                log.warning(
                    f"--resume: {out_dir} holds no checkpoint (the run stopped before its first "
                    "one); starting it afresh."
                )
                for stale in (out_dir / METRICS_FILE, checkpoint_path(out_dir, "best")):
                    stale.unlink(missing_ok=True)
            return False
        saved = read_run_config(out_dir)  # one-line error if missing or damaged
        if to_dict(saved) != to_dict(cfg):
            raise ConfigError(
                f"--resume: the config differs from the one saved in {out_dir / CONFIG_FILE}; "
                "resume with the same config and overrides."
            )
        return True
    if (out_dir / CONFIG_FILE).exists():
        raise RunExistsError(
            f"{out_dir} already holds a run; pass --resume to continue it, or choose another --out."
        )
    if out_dir.exists() and any(out_dir.iterdir()):
        raise RunExistsError(f"{out_dir} exists and is not empty; choose another --out.")
    return False


def fit(
    cfg: Config,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool | None = None,
    write_report: bool = True,
    stop_after_epochs: int | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``out_dir`` and return the summary (see module docstring).

    ``stop_after_epochs`` ends the run early after that many epochs *in this call* (for tests of
    resume, and for a time-boxed session); the checkpoint then resumes it.
    """
    out = Path(out_dir)
    validate(cfg)  # before anything is written (a config built in code skips load_config)
    rt = setup_runtime(cfg)
    resume = _prepare_out_dir(out, cfg, resume, rt.is_main)
    if rt.distributed:
        dist.barrier()
    progress = cfg.train.progress if progress is None else progress
    progress = progress and rt.is_main
    prepared = prepare_data(cfg)
    check_outside_data(out, prepared.bundle, extra_files=[cfg.data.label_file])
    if resume:
        prepared.check_against(out)
    run = Run(cfg, out, rt, prepared)
    if resume:
        run.restore(checkpoint_path(out))
        if rt.is_main:  # drop epochs logged after the checkpoint was saved
            write_metrics(run.history, out / METRICS_FILE)
    elif rt.is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, out / CONFIG_FILE, extra=provenance())
            prepared.corruption.save(out / CORRUPTION_FILE)
        except OSError as err:
            raise WriteError(
                f"{out}: cannot write the run folder ({err.strerror or err})."
            ) from err
        write_npz(
            out / "data_indices.npz",
            train_source_idx=prepared.train_source_idx,
            test_source_idx=prepared.test_source_idx,
        )
        write_fingerprint(prepared.fingerprint(), out)
    run.start()
    last_epoch = cfg.train.epochs
    if stop_after_epochs is not None:
        last_epoch = min(last_epoch, run.start_epoch + stop_after_epochs)
    for epoch in range(run.start_epoch, last_epoch):
        start = time.perf_counter()
        record = run.train_epoch(epoch, progress)
        if rt.device.type == "cuda":
            torch.cuda.synchronize(rt.device)
        seconds = time.perf_counter() - start
        evals = run.evaluate()
        run.last_test_probs = evals.pop("_probs")
        record = {"epoch": epoch + 1, **record, "seconds": seconds, **evals}
        record["images"] = len(run.loader) * run.loader.batch_size * rt.world_size
        run.history.append(record)
        key = cfg.train.select_metric
        improved = key not in record or record[key] >= run.best.get(key, -1.0)
        if improved:
            run.best = {
                k: record[k]
                for k in ("epoch", "val_accuracy", "val_balanced_accuracy", "test_accuracy")
                if k in record
            }
        if rt.is_main:
            try:
                append_metrics(record, out / METRICS_FILE)
                if improved:
                    write_checkpoint(
                        {
                            "model": run.method.model.state_dict(),
                            "inference": inference_record(cfg, run.data.bundle),
                        },
                        checkpoint_path(out, "best"),
                    )
                if (epoch + 1) % cfg.train.checkpoint_every == 0 or epoch + 1 == cfg.train.epochs:
                    write_checkpoint(run.checkpoint_state(epoch + 1), checkpoint_path(out))
            except WriteError as err:
                raise WriteError(
                    f"{err} Training stopped in epoch {epoch + 1}; free some space, then rerun "
                    "with --resume to continue from the last checkpoint."
                ) from err
            if progress:
                shown = {
                    k: record[k]
                    for k in ("train_loss", "val_accuracy", "test_accuracy")
                    if k in record
                }
                tqdm.write(
                    f"epoch {epoch + 1}/{cfg.train.epochs} "
                    + " ".join(f"{k}={v:.4f}" for k, v in shown.items())
                    + f" ({seconds:.1f}s)"
                )
    finished = bool(run.history) and run.history[-1]["epoch"] == cfg.train.epochs
    summary: dict[str, Any] = {"finished": finished, "epochs_done": len(run.history)}
    if finished:
        summary = finish_run(run)
    if rt.distributed:
        dist.barrier()
    if finished and rt.is_main and write_report:
        from .report import write_report as render

        render(out)
    return summary


def finish_run(run: Run) -> dict[str, Any]:
    """Final evaluation, ``predictions.npz`` and ``summary.json``."""
    cfg, data, out = run.cfg, run.data, run.out
    probs = run.last_test_probs
    if probs is None:  # resumed after the last epoch: nothing evaluated in this process yet
        probs = run.evaluate()["_probs"]
    test_labels = data.bundle.test.labels
    metrics = classification_metrics(test_labels, probs, data.true_class_counts)
    corr_summary = data.corruption.summary()
    history = run.history
    train_seconds = sum(r["seconds"] for r in history)
    images = sum(r["images"] for r in history)
    last5 = [r["test_accuracy"] for r in history[-5:]]
    summary = {
        "finished": True,
        "method": cfg.method.name,
        "method_args": cfg.method.args,
        "dataset": cfg.data.name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "corruption_seed": cfg.effective_corruption_seed,
        "noise": {
            "kind": cfg.noise.kind,
            "rate": cfg.noise.rate,
            # real noise (Clothing1M): the true labels are unknown, so the rate is too
            "realised_rate": None if data.bundle.labels_are_noisy else data.corruption.noise_rate(),
        },
        "imbalance_ratio": cfg.imbalance.ratio,
        "realised_imbalance_ratio": corr_summary.get("realised_imbalance_ratio"),
        "num_train": int(len(data.corruption.train_idx)),
        "num_val": int(len(data.corruption.val_idx)),
        "num_meta": int(len(data.corruption.meta_idx)),
        "num_test": int(len(test_labels)),
        "epochs": cfg.train.epochs,
        "test_accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "many_shot_accuracy": metrics["many_shot_accuracy"],
        "medium_shot_accuracy": metrics["medium_shot_accuracy"],
        "few_shot_accuracy": metrics["few_shot_accuracy"],
        "shot_thresholds": metrics.get("shot_thresholds"),
        "ece": metrics["ece"],
        "nll": metrics.get("nll"),
        "best_epoch": run.best.get("epoch"),
        "select_metric": cfg.train.select_metric,
        "best_val_accuracy": run.best.get("val_accuracy"),
        "best_val_balanced_accuracy": run.best.get("val_balanced_accuracy"),
        "test_accuracy_at_best_val": run.best.get("test_accuracy"),
        "last5_test_accuracy_mean": float(np.mean(last5)),
        "best_test_accuracy_any_epoch": max(r["test_accuracy"] for r in history),
        "train_seconds": train_seconds,
        "images_per_second": images / train_seconds if train_seconds > 0 else None,
        "device": str(run.rt.device),
        "precision": run.precision,
        "world_size": run.rt.world_size,
        "per_class_accuracy": metrics["per_class_accuracy"],
        "class_names": list(data.bundle.class_names),
        "train_class_counts": [int(c) for c in data.true_class_counts],
        "train_class_counts_noisy": [int(c) for c in data.class_counts],
    }
    if run.rt.is_main:
        write_npz(
            out / "predictions.npz",
            y_true=test_labels,
            probs=probs.astype(np.float32),
            train_class_counts=data.true_class_counts,
            class_names=np.array(data.bundle.class_names),
        )
        write_json(summary, out / "summary.json")
    return summary


def evaluate_run(run_dir: str | os.PathLike, *, checkpoint: str = "last") -> dict[str, Any]:
    """Re-evaluate a finished (or interrupted) run's checkpoint on its test set; refuses a run
    whose data changed since (`noisytail.runfolder.check_data`)."""
    out = Path(run_dir)
    cfg = read_run_config(out)
    ckpt = checkpoint_path(out, checkpoint)
    if not ckpt.exists():
        raise CheckpointError(f"{ckpt}: not found: the run has no '{checkpoint}' checkpoint.")
    rt = setup_runtime(cfg)
    prepared = prepare_data(cfg)
    prepared.check_against(out)
    run = Run(cfg, out, rt, prepared)
    run.load_weights(ckpt)
    probs = predict_probs(run.method, run.test_data, cfg.train.eval_batch_size, run.autocast)
    metrics = classification_metrics(run.data.bundle.test.labels, probs, run.data.true_class_counts)
    metrics["checkpoint"] = str(ckpt)
    write_json(metrics, out / f"evaluation_{checkpoint}.json")
    return metrics
