"""Part (c) of the issue-5 self-supervised benchmark (`noisytail.benchmarks.ssl`): pre-training
throughput, the loader's batch (views and augmentation) timed apart from forward, backward and
optimiser step."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from noisytail.benchmarks.ssl_options import SslOptions, pretrain_config, set_threads
from noisytail.config import Config
from noisytail.data.prepare import prepare_data
from noisytail.runtime import setup_runtime
from noisytail.train import Run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(run: Run, steps: int, warmup: int) -> tuple[list[float], list[float], Any]:
    """Seconds of (i) making each batch (views + augmentation) and (ii) its forward, backward and
    optimiser step, for ``steps`` steps after ``warmup`` untimed ones; and the last batch."""
    dev = run.rt.device
    run.method.train()
    make: list[float] = []
    step: list[float] = []
    done, epoch, batch = 0, 0, None
    while done < warmup + steps:
        batches = iter(run.loader.epoch(epoch))
        for i in range(len(run.loader)):
            run.ctx.epoch, run.ctx.step, run.ctx.step_in_epoch = epoch, done, i
            _sync(dev)
            t0 = time.perf_counter()
            batch = next(batches)  # indexing, uint8 -> float, batch-level augmentation
            _sync(dev)
            t1 = time.perf_counter()
            with run.autocast():
                out = run.engine(batch, run.ctx)
            run.optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            run.optimizer.step()
            _sync(dev)
            t2 = time.perf_counter()
            if done >= warmup:
                make.append(t1 - t0)
                step.append(t2 - t1)
            done += 1
            if done >= warmup + steps:
                break
        epoch += 1
    return make, step, batch


def build_run(args: SslOptions, cfg: Config) -> Run:
    return Run(cfg, Path(args.out) / "unused", setup_runtime(cfg), prepare_data(cfg))


def cost_one(args: SslOptions, method: str) -> dict[str, Any]:
    set_threads(args)
    run = build_run(args, pretrain_config(args, method, 0))
    make, step, batch = time_steps(run, args.cost_steps, args.cost_warmup)
    views = len(batch.x) if isinstance(batch.x, tuple) else 1
    m, s = statistics.median(make), statistics.median(step)
    b = len(batch)
    return {
        "part": "cost",
        "method": method,
        "device": str(run.rt.device),
        "threads": torch.get_num_threads(),
        "batch": b,
        "views_built": views,
        "ms_views": 1000 * m,
        "ms_step": 1000 * s,
        "augment_share": m / (m + s),
        "images_per_second": b / (m + s),
        "steps_timed": len(make),
    }
