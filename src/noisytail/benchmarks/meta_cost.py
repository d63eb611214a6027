"""Seconds per training step of the meta-reweighting methods as a ratio to ERM's (same model, same
batch, one process): small_cnn on Fashion-MNIST (the driver: ``scripts/bench_meta_cost.py``).

Each method is built on the same seed (same initial model) and stepped exactly as the training
loop does (autocast, ``method(batch, ctx)``, backward, optional clip, SGD step) on a fixed training
batch and the cycled meta batches, round-robin with the other methods so that a drifting machine
load hits all alike. The step time is the median over ``steps`` steps after ``warmup`` untimed
ones (CUDA synchronised); the mean is reported too, because with ``meta_every=k`` the median is a
non-meta step and only the mean shows the amortised cost. The `VARIANTS` measure the cost-saving
options: the forward-mode meta-gradient (default) against the papers' double backward
(``meta_grad``), the meta step every k iterations (``meta_every``; skipped steps are plain CE)
and the head-only look-ahead (``lookahead=head``). `ROUTES` are issue 15's routes to a meta step
at most 2x ERM (look-ahead on the head, cached weights between meta steps every k-th iteration,
a smaller meta batch), `EVERY` MW-Net and GDW's full step every k-th iteration, `DEFAULTS` every
meta method at its default (head-only) and its full
look-ahead, and `DIVIDEMIX` DivideMix with and without its L2B plug-in (issue 16). A
method's epoch-start work (DivideMix's co-divide: a pass over the training set and two GMM fits)
is timed once, before the steps, and reported per step of an epoch (``amortised``). The loop's
`Method.after_step` (the L2B plug-in step) is inside each step's time.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from noisytail.config import load_config
from noisytail.data.prepare import prepare_data
from noisytail.runtime import setup_runtime
from noisytail.train import Run

#: (method name, method options): the methods whose step cost is compared with ERM's (the first).
METHODS: list[tuple[str, dict[str, Any]]] = [
    ("erm", {}),
    ("l2rw", {}),
    ("mwnet", {}),
    ("gdw", {"mode": "mwnet"}),
    ("l2b", {"warmup_epochs": 0, "lookahead": "all"}),
    ("gdw", {}),
]
#: Issue 15's routes to a cheaper meta step (L2B; ERM first, the full meta step second).
ROUTES: list[tuple[str, dict[str, Any]]] = [
    ("erm", {}),
    ("l2b", {"warmup_epochs": 0, "lookahead": "all"}),
    ("l2b", {"warmup_epochs": 0, "lookahead": "head"}),
    ("l2b", {"warmup_epochs": 0, "meta_every": 2, "lookahead": "all"}),
    ("l2b", {"warmup_epochs": 0, "meta_every": 4, "lookahead": "all"}),
    ("l2b", {"warmup_epochs": 0, "meta_batch": 32, "lookahead": "all"}),
    ("l2b", {"warmup_epochs": 0, "meta_every": 2, "lookahead": "head"}),
]
#: Every meta method at its default route (the look-ahead on the head) and at its full
#: look-ahead (the papers' step), ERM first; then MW-Net and GDW's defaults (the full step every
#: 4th iteration).
DEFAULTS: list[tuple[str, dict[str, Any]]] = [
    ("erm", {}),
    ("l2rw", {"lookahead": "head"}),
    ("l2rw", {"lookahead": "all"}),
    ("l2b", {"warmup_epochs": 0, "lookahead": "head"}),
    ("l2b", {"warmup_epochs": 0, "lookahead": "all"}),
    ("mwnet", {"lookahead": "head", "meta_every": 1}),
    ("mwnet", {"lookahead": "all", "meta_every": 1}),
    ("gdw", {"lookahead": "head", "meta_every": 1}),
    ("gdw", {"lookahead": "all", "meta_every": 1}),
    ("mwnet", {}),
    ("gdw", {}),
]
#: MW-Net and GDW's full look-ahead every k-th iteration (cached weighting between), ERM first:
#: the choice of their default ``meta_every`` on a model (time a multiple of 60 steps, so that
#: every k's mean covers whole cycles).
EVERY: list[tuple[str, dict[str, Any]]] = [("erm", {})] + [
    (name, {"lookahead": "all", "meta_every": k}) for name in ("mwnet", "gdw") for k in (1, 3, 4, 5)
]
#: GDW's full step at every iteration (its default), the head-only step, and the full step every
#: k-th iteration with a head-only meta step between (``between="head"``), ERM first.
GDW_BETWEEN: list[tuple[str, dict[str, Any]]] = [
    ("erm", {}),
    ("gdw", {"lookahead": "all", "meta_every": 1}),
    ("gdw", {"lookahead": "head", "meta_every": 1}),
    ("gdw", {"lookahead": "all", "meta_every": 4, "between": "head"}),
    ("gdw", {"lookahead": "all", "meta_every": 8, "between": "head"}),
]
#: GDW's full step at every iteration (the paper's) against its cheaper approximations, alone and
#: combined: the meta-gradient at θ (``meta_grad="first_order"``), the finite-difference tangent
#: (``tangent="finite_difference"``) and a smaller meta batch (``meta_batch``), ERM first.
FIRST_ORDER: list[tuple[str, dict[str, Any]]] = [("erm", {})] + [
    ("gdw", {"lookahead": "all", "meta_every": 1, **route})
    for route in (
        {},
        {"meta_grad": "first_order"},
        {"tangent": "finite_difference"},
        {"meta_batch": 32},
        {"meta_grad": "first_order", "tangent": "finite_difference", "meta_batch": 32},
        {"meta_grad": "first_order", "tangent": "finite_difference", "meta_batch": 64},
    )
]
#: DivideMix (its MixMatch phase from the first step) with and without the L2B plug-in.
DIVIDEMIX: list[tuple[str, dict[str, Any]]] = [
    ("erm", {}),
    ("dividemix", {"warmup_epochs": 0}),
    ("dividemix", {"warmup_epochs": 0, "l2b": True, "l2b_meta": "labelled"}),
    ("dividemix", {"warmup_epochs": 0, "l2b": True, "l2b_meta": "clean"}),
]
#: The cost-saving options, measured on top of `METHODS`.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("l2rw", {"meta_grad": "double_backward"}),
    ("l2b", {"warmup_epochs": 0, "meta_grad": "double_backward", "lookahead": "all"}),
    ("mwnet", {"meta_grad": "double_backward"}),
    ("gdw", {"meta_grad": "double_backward"}),
    ("l2b", {"warmup_epochs": 0, "meta_every": 4, "lookahead": "all"}),
    ("l2b", {"warmup_epochs": 0, "lookahead": "head"}),
    ("gdw", {"lookahead": "head"}),
]


def build(
    device: str,
    name: str,
    args: dict[str, Any],
    width: int,
    batch_size: int,
    subset: int,
    extra: tuple[str, ...] = (),
) -> Run:
    """The run of method ``name`` with options ``args`` on the benchmark's data and model
    (``extra``: further ``--set`` overrides, e.g. another model or the precision)."""
    overrides = [
        "data.name=fashion_mnist",
        f"data.train_subset={subset}",
        "data.val_fraction=0",
        "meta.per_class=20",
        "noise.kind=uniform",
        "noise.rate=0.4",
        "model.name=small_cnn",
        *(
            [f"model.options.width={width}"]
            if not any(e.startswith("model.") for e in extra)
            else []
        ),
        f"train.batch_size={batch_size}",
        "train.epochs=1",
        f"train.device={device}",
        "train.progress=false",
        f"method.name={name}",
        *extra,
    ] + [f"method.{k}={v}" for k, v in args.items()]
    cfg = load_config(None, overrides)
    return Run(cfg, Path(tempfile.mkdtemp()), setup_runtime(cfg), prepare_data(cfg))


class Stepper:
    """One method's run, stepped exactly as the loop steps it, on the run's first batch."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.batch = next(iter(run.loader.epoch(0)))
        self.cuda = run.rt.device.type == "cuda"
        self.times: list[float] = []
        self.i = 0
        run.method.train()
        start = time.perf_counter()
        run.method.on_epoch_start(run.ctx)  # e.g. DivideMix's co-divide (epoch 0, no warm-up)
        #: seconds of the epoch-start work per step of an epoch
        self.epoch_start = (time.perf_counter() - start) / max(1, len(run.loader))

    def step(self, record: bool) -> None:
        run, ctx = self.run, self.run.ctx
        ctx.step = self.i
        self.i += 1
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with run.autocast():
            out = run.engine(self.batch, ctx)
        run.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        if run.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(run.method.parameters(), run.cfg.train.grad_clip)
        run.optimizer.step()
        with run.autocast():
            run.method.after_step(self.batch, ctx)
        if self.cuda:
            torch.cuda.synchronize()
        if record:
            self.times.append(time.perf_counter() - start)


def label(name: str, args: dict[str, Any]) -> str:
    shown = {k: v for k, v in args.items() if k != "warmup_epochs"}
    return name + (" (" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else "")


def measure(
    device: str,
    todo: list[tuple[str, dict[str, Any]]],
    *,
    steps: int,
    warmup: int,
    width: int,
    batch_size: int,
    subset: int,
    extra: tuple[str, ...] = (),
) -> tuple[list[list[float]], list[float]]:
    """Seconds of each of ``steps`` timed steps (after ``warmup`` untimed ones) of every method
    of ``todo`` on ``device``, stepped round-robin (one list per entry of ``todo``), and each
    method's epoch-start seconds per step (`Stepper.epoch_start`)."""
    steppers = [Stepper(build(device, n, a, width, batch_size, subset, extra)) for n, a in todo]
    for i in range(warmup + steps):  # round-robin: a drifting load hits every method alike
        for s in steppers:
            s.step(record=i >= warmup)
    return [s.times for s in steppers], [s.epoch_start for s in steppers]


def table(
    todo: list[tuple[str, dict[str, Any]]],
    times: list[list[float]],
    epoch_start: list[float] | None = None,
) -> str:
    """Markdown rows: median and mean ms per step of each method, as ratios to the first (ERM);
    with ``epoch_start`` (seconds per step, `measure`) also the mean plus it ("amortised")."""
    extra = epoch_start is not None and any(epoch_start)
    head = "| method | median ms / step | ratio to ERM | mean ms / step | ratio (means) |"
    lines = [head + (" amortised ratio |" if extra else ""), "|---|---|---|---|---|"]
    lines[1] += "---|" if extra else ""
    base_med, base_mean = statistics.median(times[0]), statistics.fmean(times[0])
    base_all = base_mean + (epoch_start[0] if extra else 0.0)
    for i, ((name, margs), t) in enumerate(zip(todo, times)):
        med, mean = statistics.median(t), statistics.fmean(t)
        row = (
            f"| {label(name, margs)} | {1000 * med:.1f} | {med / base_med:.2f} | "
            f"{1000 * mean:.1f} | {mean / base_mean:.2f} |"
        )
        if extra:
            row += f" {(mean + epoch_start[i]) / base_all:.2f} |"
        lines.append(row)
    return "\n".join(lines)
