"""The one training loop: data -> corruption -> method -> epochs -> run folder.

``fit(cfg, out_dir)`` writes the run folder (its files: `noisytail.runfolder`) and the report.
``fit(..., resume=True)`` continues an interrupted run, with the precision and memory layout it
started with, to the same result as an uninterrupted one: batches, augmentation and method
randomness are seeded per epoch (`noisytail.runtime.seed_epoch`). Under ``torchrun`` it runs
data-parallel with DistributedDataParallel (gloo on CPU, NCCL on GPU).

`Run` holds one run; `Run.train_epochs` is the one epoch driver (``fit``, detection, benchmarks)
and `Run.from_folder` the one way back from a run folder (resume, ``evaluate``,
``detect --from-run``). Data preparation lives in `noisytail.data.prepare`, the runtime in
`noisytail.runtime`, the optimiser, schedule, backbone freezing and the loss guard in
`noisytail.optim`, the epoch metrics in `noisytail.evaluate`, and what the run writes in
`noisytail.runfolder` and `noisytail.summary`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .build import build_model, code_defaults, predict_probs
from .config import Config, ConfigError, validate
from .data.checked import meta_set_advice
from .data.fingerprint import check_data
from .data.loader import CyclingLoader, PoolData, TrainLoader
from .data.locations import check_outside_data
from .data.meta_set import MetaSets
from .data.prepare import PreparedData, prepare_data
from .errors import TrainingError
from .evaluate import epoch_metrics
from .methods import Batch, Context, Method, TaskInfo
from .optim import (
    BackboneFreeze,
    build_optimizer,
    check_finite_losses,
    clip_gradients,
    learning_rate,
    scale_backbone_groups,
    set_learning_rate,
)
from .registry import METHODS
from .runfolder import (
    METRICS_FILE,
    CheckpointError,
    checkpoint_at_stop,
    checkpoint_path,
    drop_stale_best,
    epoch_writer,
    load_state,
    method_state,
    pin_execution,
    prepare_out_dir,
    read_run_config,
    start_run_folder,
    training_state,
    write_metrics,
)
from .runtime import (
    Runtime,
    autocast_factory,
    provenance,
    reopened_here,
    resolve_channels_last,
    resolve_precision,
    seed_epoch,
    seed_init,
    setup_runtime,
)
from .summary import RunSummary, UnfinishedRun, evaluate_checkpoint, finish_run

__all__ = ["Run", "TrainingError", "evaluate_run", "fit"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# The run


class Run:
    """Everything one training run holds: data, method, optimizer, history."""

    def __init__(
        self,
        cfg: Config,
        out_dir: Path,
        runtime: Runtime,
        prepared: PreparedData,
        *,
        for_checkpoint: bool = False,
    ) -> None:
        self.cfg = cfg
        self.out = out_dir
        self.rt = runtime
        self.data = prepared
        bundle = prepared.bundle
        corr = prepared.corruption
        t = cfg.train
        self.channels_last = resolve_channels_last(runtime.device, t.channels_last, bundle.is_image)
        self.pool_options = pool = dict(  # every PoolData over this run's stores
            mean=bundle.mean,
            std=bundle.std,
            device=runtime.device,
            on_device=t.data_on_device,
            channels_last=self.channels_last,
        )
        self.train_data = PoolData(bundle.train.images, corr.train_idx, **pool)
        self.val_data = (
            PoolData(bundle.train.images, corr.val_idx, **pool) if len(corr.val_idx) else None
        )
        self.test_data = PoolData(bundle.test.images, np.arange(len(bundle.test)), **pool)
        self.precision = resolve_precision(runtime.device, t.precision)
        self.autocast = autocast_factory(runtime.device, self.precision)

        seed_init(cfg.seed)  # model (and method) initialisation
        model = build_model(cfg, bundle, for_checkpoint=for_checkpoint)
        method_cls = METHODS.get(cfg.method.name)
        pseudo_meta_set = cfg.meta.source == "pseudo"
        if method_cls.needs_meta and len(corr.meta_idx) == 0 and not pseudo_meta_set:
            raise ConfigError(
                f"Method {cfg.method.name!r} needs a clean meta set: {meta_set_advice(cfg)}"
            )
        if t.batch_size % runtime.world_size:
            raise ConfigError(
                f"train.batch_size={t.batch_size} (the global batch) must divide by the "
                f"{runtime.world_size} processes."
            )
        if runtime.distributed and method_cls.contrasts_within_batch and runtime.is_main:
            log.warning(
                f"{cfg.method.name} contrasts each rank's slice of the batch only: "
                f"{t.batch_size // runtime.world_size} images, not {t.batch_size}."
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
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        staged = t.freeze_backbone_epochs > 0 or t.backbone_lr_scale != 1.0
        if staged and len(self.method.predict_networks) > 1:
            raise ConfigError(
                f"{cfg.method.name} trains {len(self.method.predict_networks)} networks, and "
                "train.freeze_backbone_epochs / train.backbone_lr_scale act on the first only: "
                "leave them at 0 and 1."
            )
        self.freeze = BackboneFreeze(self.method.model, t.freeze_backbone_epochs)
        groups = self.method.parameter_groups()
        if t.backbone_lr_scale != 1.0:
            groups = scale_backbone_groups(groups, self.freeze.params, t.backbone_lr_scale)
        self.optimizer = build_optimizer(cfg, groups)
        self.engine: torch.nn.Module = self.method
        if runtime.distributed and self.method.updates_outside_backward:
            raise ConfigError(
                f"{cfg.method.name} steps parameters outside the backward pass, and those updates "
                "are not averaged across torchrun's processes yet: run it in one process."
            )
        if runtime.distributed:
            self.engine = torch.nn.parallel.DistributedDataParallel(
                self.method,
                device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        if t.compile:
            self.method.model.compile()
        self.meta_sets = MetaSets(
            bundle.train.images,
            pool,
            batch_size=per_rank_batch,
            full_batch=t.batch_size,
            augment=cfg.data.augment,
            seed=cfg.seed,
            rank=runtime.rank,
            world_size=runtime.world_size,
        )
        self.meta_cycle: CyclingLoader | None = None
        if len(corr.meta_idx):  # true labels: clean by construction
            self.meta_cycle = self.meta_sets.cycle(*corr.split("meta"))
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
        self.start_epoch = 0  # the next epoch to train
        self._started = False

    @classmethod
    def from_folder(
        cls,
        run_dir: str | os.PathLike,
        checkpoint: str = "last",
        *,
        resume: bool = False,
        cfg: Config | None = None,
        runtime: Runtime | None = None,
        prepared: PreparedData | None = None,
    ) -> Run:
        """The run saved in ``run_dir`` with ``checkpoints/<checkpoint>.pt`` loaded: its config
        (``config.yaml``, unless ``cfg``), its data prepared again (unless ``prepared``) and
        refused if it changed since (`noisytail.data.fingerprint.check_data`), then
        `load_checkpoint` (``resume``: the whole training state, to continue training)."""
        out = Path(run_dir)
        cfg = cfg if cfg is not None else read_run_config(out)
        path = checkpoint_path(out, checkpoint)
        if not path.exists():
            raise CheckpointError(f"{path}: not found: the run has no '{checkpoint}' checkpoint.")
        runtime = runtime if runtime is not None else setup_runtime(reopened_here(cfg))
        prepared = prepared if prepared is not None else prepare_data(cfg)
        check_data(out, prepared.fingerprint(), prepared.corruption)
        run = cls(cfg, out, runtime, prepared, for_checkpoint=True)
        run.load_checkpoint(path, resume=resume)
        return run

    def start(self) -> None:
        """Once, before the first epoch trained in this process: `Method.on_train_start`, then
        restrict the loader to the method's `Method.train_subset` (if any), which sets the
        epoch's steps."""
        if self._started:
            return
        self._started = True
        self.method.on_train_start(self.ctx)
        subset = self.method.train_subset()
        if subset is not None:
            self.loader.restrict(subset)
            self.info.steps_per_epoch = len(self.loader)

    # -- helpers --------------------------------------------------------------------------
    def _next_meta_batch(self) -> Batch:
        return self.meta_cycle.next_batch()

    def _pseudo_meta_cycle(self) -> CyclingLoader:
        """``meta.source=pseudo``: this epoch's meta set (`noisytail.data.meta_set.MetaSets`)."""
        probs = self._predict_train(lambda x: torch.softmax(self.method.predict(x).float(), dim=1))
        m, data = self.cfg.meta, self.data
        cycle = self.meta_sets.pseudo(
            probs.cpu().numpy(),
            data.train_labels,
            data.corruption.train_idx,
            per_class=m.per_class,
            total=m.total,
        )
        if cycle is None:
            raise TrainingError(
                "meta.source=pseudo: the model agrees with no training label, so there is no "
                "meta set to draw; start from a trained model (model.init)."
            )
        return cycle

    @torch.no_grad()
    def _predict_train(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``fn`` over the training pool, un-augmented, in eval mode; every module's mode is
        restored on return (a frozen backbone stays in eval mode)."""
        modes = [(m, m.training) for m in self.method.modules()]
        self.method.eval()
        outs = []
        for x, _ in self.train_data.iter_plain(self.cfg.train.eval_batch_size):
            with self.autocast():
                outs.append(fn(x).float())
        for module, mode in modes:
            module.training = mode
        return torch.cat(outs)

    # -- checkpoints ----------------------------------------------------------------------
    def weights_state(self, epoch: int) -> dict[str, Any]:
        """``best.pt``: the method's whole state (`noisytail.runfolder.method_state`)."""
        return method_state(self.method, self.cfg, self.data.bundle, epoch)

    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        """``last.pt``: `weights_state`, the optimizer, the history and the best epoch."""
        return training_state(
            self.method, self.optimizer, self.cfg, self.data.bundle, epoch, self.history, self.best
        )

    def load_checkpoint(self, path: Path, *, resume: bool = False) -> None:
        """Load the method's state and extra state from ``path`` (``last.pt`` or ``best.pt``);
        ``resume``: also the optimizer, history, best epoch and the epoch to continue from
        (`noisytail.runfolder.load_state`)."""
        optimizer = self.optimizer if resume else None
        state = load_state(path, self.method, optimizer, self.rt.device, self.cfg.train.epochs)
        if resume:
            self.history, self.best = state["history"], state["best"]
            self.start_epoch = state["epoch"]

    # -- epochs ---------------------------------------------------------------------------
    def train_epochs(
        self,
        n: int | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        *,
        progress: bool = False,
        evaluate: bool = True,
    ) -> list[dict[str, Any]]:
        """Train the next ``n`` epochs (all that remain of ``train.epochs`` if None), from
        ``start_epoch``. Each epoch: `train_epoch`, then (``evaluate``) the validation and test
        metrics; its record (``epoch``, losses, ``lr``, ``seconds``, ``images``, the metrics,
        ``precision``, ``channels_last``) joins ``history``, ``best`` follows the select metric, and
        ``on_epoch(record)`` is called. Returns the new records."""
        self.start()
        cfg, records = self.cfg, []
        last = cfg.train.epochs if n is None else min(cfg.train.epochs, self.start_epoch + n)
        for epoch in range(self.start_epoch, last):
            start = time.perf_counter()
            record = self.train_epoch(epoch, progress)
            if self.rt.device.type == "cuda":
                torch.cuda.synchronize(self.rt.device)
            seconds = time.perf_counter() - start
            evals = self.evaluate() if evaluate else {}
            if evaluate:
                self.last_test_probs = evals.pop("_probs")
            record = {"epoch": epoch + 1, **record, "seconds": seconds, **evals}
            record.update(precision=self.precision, channels_last=self.channels_last)
            record["images"] = len(self.loader) * self.loader.batch_size * self.rt.world_size
            self.history.append(record)
            key = cfg.train.select_metric
            if key not in record or record[key] >= self.best.get(key, -1.0):
                kept = ("epoch", "val_accuracy", "val_balanced_accuracy", "test_accuracy")
                self.best = {k: record[k] for k in kept if k in record}
            self.start_epoch = epoch + 1
            records.append(record)
            if on_epoch is not None:
                on_epoch(record)
        return records

    def train_epoch(self, epoch: int, progress: bool = False) -> dict[str, float]:
        """One epoch of training steps; returns the mean of each step output (``train_loss``
        for ``loss``) and the epoch's last ``lr``."""
        cfg, method, ctx = self.cfg, self.method, self.ctx
        steps = len(self.loader)
        ctx.generator = seed_epoch(cfg.seed, epoch)
        ctx.epoch = epoch
        if cfg.meta.source == "pseudo":
            self.meta_cycle = self._pseudo_meta_cycle()
        if self.meta_cycle is not None:
            self.meta_cycle.reset(epoch)
        method.train()
        ctx.frozen_parameters = self.freeze.begin_epoch(epoch)
        method.on_epoch_start(ctx)
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
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
            set_learning_rate(self.optimizer, lr)
            with self.freeze.step():
                with self.autocast():
                    out = self.engine(batch, ctx)
                loss = out["loss"]
                losses[i] = loss.detach().float()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            clip_gradients(method, cfg.train.grad_clip)
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
                counts[key] = counts.get(key, 0) + 1
            if i % 20 == 19 or i == steps - 1:
                check_finite_losses(losses[: i + 1], epoch, steps, checkpoint_path(self.out))
                if progress:
                    bar.set_postfix(loss=f"{float(losses[i]):.3f}", lr=f"{lr:.3g}")
        bar.close()
        self.rt.share_batchnorm(method)  # every rank ends the epoch with rank 0's statistics
        # a value reported on some steps only (a meta step every 4th) is its mean over those
        record = {
            ("train_loss" if k == "loss" else k): float(v) / counts[k] for k, v in sums.items()
        }
        record["lr"] = learning_rate(cfg, (epoch + 1) * steps - 1, steps)
        record.update(self.freeze.record())
        return self.rt.reduce_mean(record)

    def evaluate(self) -> dict[str, Any]:
        """`noisytail.evaluate.epoch_metrics` of the model now (validation against the noisy
        labels); ``_probs``: the test probabilities ``[N_test, K]``."""
        bs, corr = self.cfg.train.eval_batch_size, self.data.corruption
        val: dict[str, Any] = {}
        if self.val_data is not None:
            val["val_labels"] = corr.noisy_labels[corr.val_idx]
            val["val_probs"] = predict_probs(self.method, self.val_data, bs, self.autocast)
        probs = predict_probs(self.method, self.test_data, bs, self.autocast)
        test = (self.data.bundle.test.labels, probs, self.data.true_class_counts)
        return {**epoch_metrics(*test, **val), "_probs": probs}


# --------------------------------------------------------------------------------------------
# fit


def fit(
    cfg: Config,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool | None = None,
    write_report: bool = True,
    stop_after_epochs: int | None = None,
) -> RunSummary | UnfinishedRun:
    """Train ``cfg`` into ``out_dir`` and return its typed summary: the `RunSummary` written to
    ``summary.json`` (read ``summary.test_accuracy``; ``.to_dict()`` gives the JSON object), or an
    `UnfinishedRun` (``finished`` False, ``epochs_done``) if it stopped early; see the module
    docstring.

    ``stop_after_epochs`` ends the run early after that many epochs *in this call* (for tests of
    resume, and for a time-boxed session); the checkpoint then resumes it.
    """
    out = Path(out_dir)
    validate(cfg)  # before anything is written (a config built in code skips load_config)
    rt = setup_runtime(cfg)
    resume = prepare_out_dir(out, cfg, resume, rt.is_main)
    cfg = pin_execution(cfg, out) if resume else cfg
    rt.barrier()
    progress = cfg.train.progress if progress is None else progress
    progress = progress and rt.is_main
    prepared = prepare_data(cfg)
    check_outside_data(out, prepared.bundle, extra_files=[cfg.data.label_file])
    if resume:
        run = Run.from_folder(out, resume=True, cfg=cfg, runtime=rt, prepared=prepared)
        log.info("resuming %s after epoch %d of %d", out, run.start_epoch, cfg.train.epochs)
        if rt.is_main:  # drop epochs logged after the checkpoint was saved
            write_metrics(run.history, out / METRICS_FILE)
            drop_stale_best(run)
    else:
        run = Run(cfg, out, rt, prepared)
        if rt.is_main:
            record = {**provenance(), "code_defaults": code_defaults(cfg)}
            start_run_folder(out, cfg, prepared, record)
    run.train_epochs(
        stop_after_epochs, epoch_writer(run, progress) if rt.is_main else None, progress=progress
    )
    finished = bool(run.history) and run.history[-1]["epoch"] == cfg.train.epochs
    if not finished and rt.is_main:
        checkpoint_at_stop(run)
    summary = finish_run(run) if finished else UnfinishedRun(epochs_done=len(run.history))
    rt.barrier()
    if finished and rt.is_main and write_report:
        from .report import write_report as render

        render(out)
    return summary


def evaluate_run(run_dir: str | os.PathLike, *, checkpoint: str = "last") -> dict[str, Any]:
    """Re-evaluate a finished (or interrupted) run's checkpoint on its test set
    (`noisytail.summary.evaluate_checkpoint`: ``evaluation_<checkpoint>.json``); refuses a run
    whose data changed since."""
    return evaluate_checkpoint(Run.from_folder(run_dir, checkpoint), checkpoint)
