"""Issue-5 benchmark: self-supervised pre-training on long-tailed data, then the two-stage recipe
(pre-train, then fine-tune with an imbalance- and noise-resistant loss) under label noise.

Usage:
    python scripts/bench_ssl.py [--part all|pretrain|finetune|cost] [--seeds 0 1 2]
        [--out runs/bench-ssl] [--quick] [--data fashion_mnist] [--jobs 1] [...]

Data: a stratified pool of ``--pool`` training images (default 20,000 of Fashion-MNIST), made
long-tailed with our ``imbalance`` config (ratio ``--ratio`` 100, exponential profile; on a
20,000 pool: 1,800 ... 18 training images per class after the 10 % validation split), tested on
``--test-subset`` test images. Every seed gets its own subset, corruption and initialisation.

Parts:
- ``pretrain`` (a): SimCLR (2 views), k-view multiview (k = ``--views``, 4) and MTTV encoders,
  same backbone (small_cnn, ``--width``), trained with ``noisytail.train.fit`` exactly as
  ``noisytail pretrain`` does. **Equal budget = equal number of views encoded with a gradient**:
  SimCLR and MTTV encode 2 views per image with gradient (MTTV also runs 2 no-grad EMA passes),
  k-view encodes k, so k-view gets ``epochs * 2 / k`` epochs (at least 1). MTTV draws each
  anchor's partner from the whole training pool (``--mttv-partner dataset``, the official code;
  ``batch`` = from the same batch) with the loss form ``--mttv-loss`` (``clean`` by default;
  ``mean_log`` with ``batch`` is this benchmark's first version). Evaluation: the frozen
  backbone's features, a linear probe (``evaluate_ssl.linear_probe``, AdamW lr 0.005, cosine) and
  a weighted kNN trained on a **balanced** labelled split (``--probe-per-class`` images per class
  of the pool, true labels) and tested on the test set; accuracy, balanced accuracy, and
  many / medium / few accuracy by the classes' frequency in the long-tailed pre-training set, as
  **thirds** (3 / 4 / 3 classes: `evaluate_ssl.frequency_groups`). The fixed >100 / <20
  thresholds of ``evaluate.shot_thresholds`` are reported too, but at ratio 100 on this pool
  their few-shot group holds only the last class. A "random" row probes an untrained encoder.
- ``finetune`` (b): symmetric noise ``--noise-rates`` (20 %, 40 %) added to the long-tailed
  labels; ERM with each loss of ``--losses`` starting from that seed's SimCLR encoder
  (``--init-from``; backbone only, the online probe's head, trained on clean labels, is dropped),
  head-only for ``--freeze-epochs`` epochs then everything at backbone lr x
  ``--backbone-lr-scale``; against the losses of ``--scratch-losses`` from a random
  initialisation, same epochs, same optimiser. Reports last-epoch test accuracy, balanced
  accuracy, few-third accuracy and test accuracy at the best noisy-validation epoch, and names
  the best loss of each initialisation by mean test accuracy.
- ``cost`` (c): pre-training throughput per method on ``--device`` with the batch-level
  augmentation (``data/views.py``) on that device, median over ``--cost-steps`` steps of (i)
  making the views (indexing, conversion, augmentation: the loader's batch) and (ii) forward,
  backward and optimiser step, timed separately (CUDA synchronised); images/s counts anchor
  images per second of (i) + (ii). MTTV's partners drawn from the data set are made inside its
  step, so their views count in (ii), not (i) (``views_built`` counts the loader's only).

Pre-trained encoders are cached in ``OUT/pretrain/<method>-seed<s>/`` and fine-tuning runs in
``OUT/finetune/...``; a re-run skips finished runs (delete the folder to redo them). Rows go to
``OUT/results.jsonl``, the Markdown tables (mean +- sample std over seeds) to stdout and
``OUT/tables.md`` (the rows of this invocation; ``--part all`` after the parts rebuilds the
full tables from the cache). ``--quick`` is a smoke run (1 epoch, small pool, two losses).
``--estimate`` times a few steps of every kind of run on this machine, now, and prints the
extrapolated wall time of the plan: run it first, on the machine and load the benchmark will see.

Budget: the defaults (pool 20,000, width 16; SimCLR and MTTV 30 epochs, k-view 15; fine-tuning
15 epochs at lr 0.1 without head-only epochs, 6 losses x 2 initialisations x 2 noise rates) take
about an hour for 3 seeds on 2 quiet CPU cores with ``--jobs 2 --threads 1``: about 20 minutes of
pre-training, 40 of fine-tuning. The fine-tuning recipe was chosen on seed 0 at 40 % noise
(BENCHMARKS.md): head-only epochs and a backbone lr scale of 0.1 did worse than fine-tuning
everything from the start. Under load, cut ``--scratch-losses`` (e.g. ``ce cb_focal``) or the
epochs.
Not a test: its figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import shutil
import statistics
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisytail.config import load_config
from noisytail.data.loader import PoolData
from noisytail.evaluate_ssl import (
    balanced_indices,
    extract_features,
    frequency_groups,
    group_accuracy,
    knn_classify,
    linear_probe,
    load_trained_run,
    save_encoder,
)
from noisytail.train import Run, TrainingError, fit, prepare_data, setup_runtime

SSL_METHODS = ("simclr", "multiview", "mttv")
LOSSES = ("ce", "gce", "sce", "logit_adjustment", "cb_focal", "la_gce")


# ---------------------------------------------------------------------------------------------
# Options and configs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["all", "pretrain", "finetune", "cost"], default="all")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/bench-ssl")
    p.add_argument("--quick", action="store_true", help="A smoke run of seconds.")
    p.add_argument("--data", default="fashion_mnist")
    p.add_argument("--pool", type=int, default=20000, help="Training images before imbalance.")
    p.add_argument("--test-subset", type=int, default=5000)
    p.add_argument("--ratio", type=float, default=100.0)
    p.add_argument("--width", type=int, default=16, help="small_cnn width (features = 2x).")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process.")
    p.add_argument("--jobs", type=int, default=1, help="Runs in parallel (processes).")
    p.add_argument(
        "--estimate", action="store_true", help="Time a few steps, print the plan's wall time."
    )
    # pre-training
    p.add_argument("--methods", nargs="+", default=list(SSL_METHODS), choices=SSL_METHODS)
    p.add_argument("--pretrain-epochs", type=int, default=30, help="SimCLR's (2-view) epochs.")
    p.add_argument("--views", type=int, default=4, help="k of the k-view method.")
    p.add_argument("--ssl-batch", type=int, default=256)
    p.add_argument("--ssl-lr", type=float, default=0.3)
    p.add_argument(
        "--mttv-partner",
        choices=["dataset", "batch"],
        default="dataset",
        help="MTTV's partner draw (the official code: dataset).",
    )
    p.add_argument(
        "--mttv-loss",
        choices=["clean", "official", "mean_log"],
        default="clean",
        help="MTTV's loss form (docs/methods.md, MTTV).",
    )
    p.add_argument("--probe-per-class", type=int, default=300)
    p.add_argument("--probe-epochs", type=int, default=100)
    # fine-tuning
    p.add_argument("--noise-rates", type=float, nargs="+", default=[0.2, 0.4])
    p.add_argument("--losses", nargs="+", default=list(LOSSES))
    p.add_argument("--scratch-losses", nargs="+", default=list(LOSSES))
    p.add_argument("--init-from", default="simclr", choices=SSL_METHODS)
    p.add_argument("--finetune-epochs", type=int, default=15)
    p.add_argument("--freeze-epochs", type=int, default=0)
    p.add_argument("--backbone-lr-scale", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=0.1)
    # cost
    p.add_argument("--cost-steps", type=int, default=15)
    p.add_argument("--cost-warmup", type=int, default=3)
    args = p.parse_args(argv)
    if args.quick:
        args.pool = min(args.pool, 1500)
        args.test_subset = min(args.test_subset, 300)
        args.pretrain_epochs = 1
        args.ssl_batch = min(args.ssl_batch, 64)
        args.probe_per_class = min(args.probe_per_class, 20)
        args.probe_epochs = 2
        args.losses = ["ce", "la_gce"]
        args.scratch_losses = ["ce", "la_gce"]
        args.finetune_epochs = 2
        args.cost_steps, args.cost_warmup = 2, 1
    return args


def base_overrides(args: argparse.Namespace, seed: int) -> list[str]:
    return [
        f"seed={seed}",
        f"data.name={args.data}",
        f"data.train_subset={args.pool}",
        f"data.test_subset={args.test_subset}",
        "data.val_fraction=0.1",
        f"imbalance.ratio={args.ratio}",
        "imbalance.profile=exponential",
        "model.name=small_cnn",
        f"model.options.width={args.width}",
        f"train.device={args.device}",
        "train.progress=false",
        f"train.num_threads={args.threads}" if args.threads else "train.num_threads=null",
    ]


def pretrain_epochs(args: argparse.Namespace, method: str) -> int:
    """Equal views-with-gradient budget: SimCLR and MTTV 2 per image, k-view k per image."""
    if method == "multiview":
        return max(1, round(args.pretrain_epochs * 2 / args.views))
    return args.pretrain_epochs


def grad_views(args: argparse.Namespace, method: str) -> int:
    return args.views if method == "multiview" else 2


def pretrain_config(args: argparse.Namespace, method: str, seed: int) -> Any:
    extra = [f"method.num_views={args.views}"] if method == "multiview" else []
    if method == "mttv":
        extra = [f"method.partner={args.mttv_partner}", f"method.loss_form={args.mttv_loss}"]
    return load_config(
        None,
        base_overrides(args, seed)
        + [
            f"method.name={method}",
            *extra,
            "data.augment=simclr",
            "noise.kind=none",
            f"train.epochs={pretrain_epochs(args, method)}",
            f"train.batch_size={args.ssl_batch}",
            f"train.lr={args.ssl_lr}",
            "train.weight_decay=1.0e-4",
            "train.schedule=cosine",
            "train.checkpoint_every=1000",
        ],
    )


def finetune_config(
    args: argparse.Namespace, seed: int, rate: float, loss: str, init: str | None
) -> Any:
    extra = (
        [
            f"model.init={init}",
            f"train.freeze_backbone_epochs={args.freeze_epochs}",
            f"train.backbone_lr_scale={args.backbone_lr_scale}",
        ]
        if init
        else []
    )
    return load_config(
        None,
        base_overrides(args, seed)
        + [
            "method.name=erm",
            f"method.loss={loss}",
            "data.augment=crop_flip",
            "noise.kind=symmetric",
            f"noise.rate={rate}",
            f"train.epochs={args.finetune_epochs}",
            "train.batch_size=128",
            f"train.lr={args.lr}",
            "train.weight_decay=5.0e-4",
            "train.schedule=cosine",
            "train.checkpoint_every=1000",
            *extra,
        ],
    )


# ---------------------------------------------------------------------------------------------
# (a) pre-training and frozen-feature evaluation


def _shot_fields(prefix: str, metrics: dict[str, Any], counts: np.ndarray) -> dict[str, Any]:
    thirds = group_accuracy(metrics["per_class_accuracy"], frequency_groups(counts))
    return {
        f"{prefix}accuracy": metrics["accuracy"],
        f"{prefix}balanced_accuracy": metrics["balanced_accuracy"],
        f"{prefix}many_third": thirds["many"],
        f"{prefix}medium_third": thirds["medium"],
        f"{prefix}few_third": thirds["few"],
        f"{prefix}many_shot": metrics["many_shot_accuracy"],
        f"{prefix}medium_shot": metrics["medium_shot_accuracy"],
        f"{prefix}few_shot": metrics["few_shot_accuracy"],
    }


def probe_encoder(args: argparse.Namespace, run: Run, seed: int) -> dict[str, Any]:
    """Linear probe and kNN of ``run``'s frozen backbone: balanced labelled split -> test set."""
    bundle = run.data.bundle
    counts = np.asarray(run.data.true_class_counts)  # long-tailed pre-training frequencies
    idx = balanced_indices(bundle.train.labels, args.probe_per_class, seed=seed)
    labelled = PoolData(
        bundle.train.images, idx, mean=bundle.mean, std=bundle.std, device=run.rt.device
    )
    bs = run.cfg.train.eval_batch_size
    ftr = extract_features(run.method.model, labelled, batch_size=bs)
    fte = extract_features(run.method.model, run.test_data, batch_size=bs)
    ytr, yte = bundle.train.labels[idx], bundle.test.labels
    k = bundle.num_classes
    lp = linear_probe(
        ftr, ytr, fte, yte, epochs=args.probe_epochs, num_classes=k, class_counts=counts, seed=seed
    )
    knn = knn_classify(ftr, ytr, fte, yte, k=min(200, len(idx)), num_classes=k, class_counts=counts)
    return {
        **_shot_fields("probe_", lp, counts),
        "knn_accuracy": knn["accuracy"],
        "knn_few_third": group_accuracy(knn["per_class_accuracy"], frequency_groups(counts))["few"],
        "probe_labelled": int(len(idx)),
        "pretrain_class_counts": counts.tolist(),
    }


def pretrain_one(args: argparse.Namespace, method: str, seed: int) -> dict[str, Any]:
    """Pre-train (or reuse) one encoder, save its backbone, probe it; returns the row."""
    out = Path(args.out) / "pretrain" / f"{method}-seed{seed}"
    row_path = out / "bench_row.json"
    if row_path.exists():
        return json.loads(row_path.read_text())
    _threads(args)
    cfg = pretrain_config(args, method, seed)
    _clear_unfinished(out)
    start = time.perf_counter()
    try:
        summary = fit(cfg, out, write_report=False, progress=False)
    except TrainingError as err:  # e.g. a NaN loss: report it, let the other runs go on
        print(f"pretrain {method} seed {seed} failed: {err}", file=sys.stderr)
        return {
            "part": "pretrain",
            "method": method,
            "seed": seed,
            "error": str(err),
            "epochs": cfg.train.epochs,
            "grad_views_per_image": grad_views(args, method),
            "grad_views_seen": 0,
            "pretrain_seconds": time.perf_counter() - start,
        }
    seconds = time.perf_counter() - start
    run = load_trained_run(out)
    save_encoder(run.method.model, out / "backbone.pt", include_head=False)
    epochs = cfg.train.epochs
    n, b = summary["num_train"], cfg.train.batch_size
    items = max(1, n // b) * min(n, b) * epochs  # the loader drops the last partial batch
    row = {
        "part": "pretrain",
        "method": method,
        "seed": seed,
        "method_args": dict(cfg.method.args),
        "epochs": epochs,
        "grad_views_per_image": grad_views(args, method),
        "grad_views_seen": items * grad_views(args, method),
        "pretrain_seconds": seconds,
        "train_seconds": summary["train_seconds"],
        "images_per_second": summary["images_per_second"],
        **probe_encoder(args, run, seed),
    }
    row_path.write_text(json.dumps(row))
    return row


def random_encoder_row(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The probe of an untrained encoder (same seed's initialisation): the floor."""
    _threads(args)
    cfg = pretrain_config(args, "simclr", seed)
    run = Run(cfg, Path(args.out) / "unused", setup_runtime(cfg), prepare_data(cfg))
    return {
        "part": "pretrain",
        "method": "random",
        "seed": seed,
        "epochs": 0,
        "grad_views_per_image": 0,
        "grad_views_seen": 0,
        "pretrain_seconds": 0.0,
        **probe_encoder(args, run, seed),
    }


# ---------------------------------------------------------------------------------------------
# (b) two-stage fine-tuning under noise


def encoder_path(args: argparse.Namespace, seed: int) -> Path:
    return Path(args.out) / "pretrain" / f"{args.init_from}-seed{seed}" / "backbone.pt"


def finetune_one(
    args: argparse.Namespace, seed: int, rate: float, loss: str, pretrained: bool
) -> dict[str, Any]:
    init = str(encoder_path(args, seed)) if pretrained else None
    tag = args.init_from if pretrained else "scratch"
    out = Path(args.out) / "finetune" / f"noise{round(100 * rate)}-{tag}-{loss}-seed{seed}"
    summary_path = out / "summary.json"
    _threads(args)
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
    else:
        _clear_unfinished(out)
        if pretrained and not Path(init).exists():
            return {
                "part": "finetune",
                "noise_rate": rate,
                "init": tag,
                "loss": loss,
                "seed": seed,
                "error": f"no encoder {init} (its pre-training failed?)",
            }
        try:
            summary = fit(finetune_config(args, seed, rate, loss, init), out, write_report=False)
        except TrainingError as err:
            print(f"finetune {tag} {loss} {rate} seed {seed} failed: {err}", file=sys.stderr)
            return {
                "part": "finetune",
                "noise_rate": rate,
                "init": tag,
                "loss": loss,
                "seed": seed,
                "error": str(err),
            }
    counts = np.asarray(summary["train_class_counts"])
    metrics = {
        "accuracy": summary["test_accuracy"],
        "balanced_accuracy": summary["balanced_accuracy"],
        "per_class_accuracy": summary["per_class_accuracy"],
        "many_shot_accuracy": summary["many_shot_accuracy"],
        "medium_shot_accuracy": summary["medium_shot_accuracy"],
        "few_shot_accuracy": summary["few_shot_accuracy"],
    }
    return {
        "part": "finetune",
        "noise_rate": rate,
        "init": tag,
        "loss": loss,
        "seed": seed,
        "epochs": summary["epochs"],
        **_shot_fields("test_", metrics, counts),
        "test_accuracy_at_best_val": summary["test_accuracy_at_best_val"],
        "realised_noise_rate": summary["noise"]["realised_rate"],
        "train_seconds": summary["train_seconds"],
    }


# ---------------------------------------------------------------------------------------------
# (c) cost of pre-training: augmentation against forward/backward


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


def _build(args: argparse.Namespace, cfg: Any) -> Run:
    return Run(cfg, Path(args.out) / "unused", setup_runtime(cfg), prepare_data(cfg))


def cost_one(args: argparse.Namespace, method: str) -> dict[str, Any]:
    _threads(args)
    run = _build(args, pretrain_config(args, method, 0))
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


def estimate(args: argparse.Namespace, steps: int = 4) -> str:
    """Wall time of the planned parts, extrapolated from ``steps`` timed steps of each kind of
    run and one timed evaluation, here and now (one process; divide by about ``--jobs``)."""
    _threads(args)
    lines = [
        "| part | runs per seed | epochs | steps / epoch | s / step | eval s | est. s, all seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    total = 0.0
    n_seeds = len(args.seeds)

    def add(name: str, runs: int, cfg: Any) -> None:
        nonlocal total
        run = _build(args, cfg)
        make, step, _ = time_steps(run, steps, 1)
        per_step = statistics.median([a + b for a, b in zip(make, step)])
        t0 = time.perf_counter()
        run.evaluate()
        ev = time.perf_counter() - t0
        epochs = cfg.train.epochs
        secs = n_seeds * runs * epochs * (len(run.loader) * per_step + ev)
        total += secs
        lines.append(
            f"| {name} | {runs} | {epochs} | {len(run.loader)} | {per_step:.3f} | {ev:.2f} "
            f"| {secs:.0f} |"
        )

    if args.part in ("all", "pretrain", "finetune"):
        methods = list(args.methods) if args.part != "finetune" else [args.init_from]
        for m in methods:
            add(f"pre-train {m}", 1, pretrain_config(args, m, 0))
        probes = (len(methods) + 1) if args.part != "finetune" else 0
        if probes:
            run = _build(args, pretrain_config(args, methods[0], 0))
            t0 = time.perf_counter()
            probe_encoder(args, run, 0)
            secs = n_seeds * probes * (time.perf_counter() - t0)
            total += secs
            lines.append(f"| probes | {probes} | - | - | - | - | {secs:.0f} |")
    if args.part in ("all", "finetune"):
        runs = len(args.noise_rates) * (len(args.losses) + len(args.scratch_losses))
        add("fine-tune", runs, finetune_config(args, 0, args.noise_rates[0], "ce", None))
    if args.part in ("all", "cost"):
        secs = len(args.methods) * (args.cost_steps + args.cost_warmup) * 1.0
        lines.append(f"| cost | - | - | - | - | - | ~{secs:.0f} (at 1 s / step) |")
        total += secs
    lines.append(f"\nEstimated total: {total / 60:.1f} min in one process ({n_seeds} seeds).")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Tables


def _clear_unfinished(out: Path) -> None:
    """Remove a run folder left by an interrupted benchmark (no summary yet): it is redone."""
    if out.exists() and not (out / "summary.json").exists():
        shutil.rmtree(out)


def _threads(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def _fmt(values: Iterable[float | None], scale: float = 100.0, digits: int = 2) -> str:
    vals = [scale * v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _stat_cells(
    rows: list[dict[str, Any]], keys: tuple[str, ...], scale: float = 100.0, digits: int = 2
) -> str:
    """Table cells ``a | b | ...``: `_fmt` (mean +- std) of each key over ``rows``."""
    return " | ".join(_fmt([r.get(k) for r in rows], scale, digits) for k in keys)


def _group(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def pretrain_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| encoder | epochs | grad views / image | grad views seen | pre-train s | probe acc. "
        "| probe bal. acc. | many third | medium third | few third | few (<20 thr.) | kNN acc. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {m: i for i, m in enumerate(("random", *SSL_METHODS))}
    groups = _group(rows, ("method",))
    for (method,), rs in sorted(groups.items(), key=lambda kv: order.get(kv[0][0], 99)):
        failed = sum("error" in r for r in rs)
        name = f"{method} ({failed} failed)" if failed else method
        seen = max(r["grad_views_seen"] for r in rs)
        probe = ("accuracy", "balanced_accuracy", "many_third", "medium_third", "few_third")
        accuracies = _stat_cells(rs, (*(f"probe_{k}" for k in probe), "probe_few_shot"))
        lines.append(
            f"| {name} | {rs[0]['epochs']} | {rs[0]['grad_views_per_image']} | {seen:,} "
            f"| {_stat_cells(rs, ('pretrain_seconds',), 1.0, 0)} "
            f"| {accuracies} | {_stat_cells(rs, ('knn_accuracy',))} |"
        )
    return "\n".join(lines)


def finetune_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| noise | init | loss | test acc. (last) | balanced acc. | few third | many third "
        "| test acc. at best noisy-val |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups = _group(rows, ("noise_rate", "init", "loss"))
    best: dict[tuple, tuple[float, str]] = {}
    for (rate, init, loss), rs in groups.items():
        accs = [r["test_accuracy"] for r in rs if r.get("test_accuracy") is not None]
        if not accs:
            continue
        mean = statistics.mean(accs)
        if (rate, init) not in best or mean > best[(rate, init)][0]:
            best[(rate, init)] = (mean, loss)
    order = {loss: i for i, loss in enumerate(LOSSES)}

    def key(kv: tuple) -> tuple:
        rate, init, loss = kv[0]
        return (rate, init == "scratch", order.get(loss, 99), loss)

    for (rate, init, loss), rs in sorted(groups.items(), key=key):
        acc = _stat_cells(rs, ("test_accuracy",))
        failed = sum("error" in r for r in rs)
        if failed:
            acc += f" ({failed} failed)"
        if (rate, init) in best and best[(rate, init)][1] == loss and len(groups) > 1:
            acc = f"**{acc}**"
        rest = _stat_cells(
            rs,
            (
                "test_balanced_accuracy",
                "test_few_third",
                "test_many_third",
                "test_accuracy_at_best_val",
            ),
        )
        lines.append(f"| sym. {round(100 * rate)} % | {init} | {loss} | {acc} | {rest} |")
    lines.append("")
    for (rate, init), (mean, loss) in sorted(best.items()):
        lines.append(
            f"- best by mean last-epoch test accuracy, {round(100 * rate)} % noise, "
            f"{init}: {loss} ({100 * mean:.2f})"
        )
    return "\n".join(lines)


def cost_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | device, threads | batch | views built | ms views (augment) | ms fwd+bwd+step "
        "| augment share | images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['device']}, {r['threads']} | {r['batch']} | {r['views_built']} "
            f"| {r['ms_views']:.1f} | {r['ms_step']:.1f} | {100 * r['augment_share']:.1f} % "
            f"| {r['images_per_second']:.0f} |"
        )
    return "\n".join(lines)


def tables(rows: list[dict[str, Any]]) -> str:
    parts = []
    pre = [r for r in rows if r["part"] == "pretrain"]
    fine = [r for r in rows if r["part"] == "finetune"]
    cost = [r for r in rows if r["part"] == "cost"]
    if pre:
        parts.append("### (a) Linear probe of frozen encoders (balanced labelled split)\n")
        parts.append(pretrain_table(pre))
    if fine:
        parts.append("\n### (b) Two-stage fine-tuning under symmetric noise\n")
        parts.append(finetune_table(fine))
    if cost:
        parts.append("\n### (c) Pre-training cost (medians)\n")
        parts.append(cost_table(cost))
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# Driver


def _map(args: argparse.Namespace, fn: Any, calls: list[tuple]) -> list[dict[str, Any]]:
    """``fn(*call)`` for every call, in ``--jobs`` spawned processes (``--threads`` each)."""
    if args.jobs <= 1 or len(calls) <= 1:
        return [fn(*c) for c in calls]
    ctx = multiprocessing.get_context("spawn")  # no fork of a process whose torch has threads
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        return list(pool.map(fn, *zip(*calls)))


def run_bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the parts asked for; returns every row (also appended to OUT/results.jsonl)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cost_threads = args.threads or torch.get_num_threads()  # the cost part runs alone
    if args.jobs > 1 and not args.threads:
        args.threads = max(1, torch.get_num_threads() // args.jobs)
    _threads(args)
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    part = args.part
    if part in ("all", "pretrain", "finetune"):
        start = time.perf_counter()
        methods = list(args.methods) if part != "finetune" else [args.init_from]
        if args.init_from not in methods and part == "all":
            methods.append(args.init_from)
        calls = [(args, m, s) for s in args.seeds for m in methods]
        pre = _map(args, pretrain_one, calls)
        if part != "finetune":
            pre += [random_encoder_row(args, s) for s in args.seeds]
            rows += pre
        timings["pretrain"] = time.perf_counter() - start
    if part in ("all", "finetune"):
        start = time.perf_counter()
        calls = [
            (args, s, rate, loss, pretrained)
            for s in args.seeds
            for rate in args.noise_rates
            for pretrained, losses in ((True, args.losses), (False, args.scratch_losses))
            for loss in losses
        ]
        rows += _map(args, finetune_one, calls)
        timings["finetune"] = time.perf_counter() - start
    if part in ("all", "cost"):
        start = time.perf_counter()
        cost_args = argparse.Namespace(**{**vars(args), "threads": cost_threads})
        rows += [cost_one(cost_args, m) for m in args.methods]
        timings["cost"] = time.perf_counter() - start
    with open(out / "results.jsonl", "a") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    text = tables(rows)
    text += "\nWall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + "\n"
    (out / "tables.md").write_text(text)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.estimate:
        print(estimate(args))
        return 0
    rows = run_bench(args)
    print(Path(args.out, "tables.md").read_text())
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
