"""Issue-5 benchmark: self-supervised pre-training on long-tailed data, then the two-stage recipe
(pre-train, then fine-tune with an imbalance- and noise-resistant loss) under label noise.

The driver is ``scripts/bench_ssl.py`` (its flags are the fields of `SslOptions`); the
options and run configs are in `noisytail.benchmarks.ssl_options`, part (c) in
`noisytail.benchmarks.ssl_cost`, the tables in `noisytail.benchmarks.ssl_tables`.

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
  backbone's features, a linear probe (``probes.linear_probe``, AdamW lr 0.005, cosine) and
  a weighted kNN trained on a **balanced** labelled split (``--probe-per-class`` images per class
  of the pool, true labels) and tested on the test set; accuracy, balanced accuracy, and
  many / medium / few accuracy by the classes' frequency in the long-tailed pre-training set, as
  **thirds** (3 / 4 / 3 classes: `groups.frequency_groups`). The fixed >100 / <20
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
``OUT/finetune/...``; a re-run skips finished runs (delete the folder to redo them) and resumes
an interrupted pre-training from its last checkpoint (every 5 epochs). Rows go to
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

import json
import logging
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisytail.benchmarks.ssl_cost import build_run, cost_one, time_steps
from noisytail.benchmarks.ssl_options import (
    SslOptions,
    clear_unfinished,
    finetune_config,
    grad_views,
    pretrain_config,
    pretrain_epochs,
    set_threads,
)
from noisytail.benchmarks.ssl_tables import tables
from noisytail.config import Config
from noisytail.data.loader import PoolData
from noisytail.data.prepare import prepare_data
from noisytail.data.splits import balanced_indices
from noisytail.evaluate_ssl import extract_features, save_encoder
from noisytail.groups import frequency_groups, group_accuracy
from noisytail.probes import knn_classify, linear_probe
from noisytail.runfolder import METRICS_FILE, read_metrics
from noisytail.runtime import setup_runtime
from noisytail.summary import read_summary
from noisytail.train import Run, TrainingError, fit

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# (a) pre-training and frozen-feature evaluation


def _shot_fields(
    prefix: str, metrics: dict[str, Any], thirds: dict[str, float | None]
) -> dict[str, Any]:
    """The result fields of ``metrics`` (`classification_metrics`) and its frequency ``thirds``
    (`groups.group_accuracy`; the probes' ``thirds_accuracy``)."""
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


def probe_encoder(args: SslOptions, run: Run, seed: int) -> dict[str, Any]:
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
        **_shot_fields("probe_", lp, lp["thirds_accuracy"]),  # thirds of `counts`
        "knn_accuracy": knn["accuracy"],
        "knn_few_third": knn["thirds_accuracy"]["few"],
        "probe_labelled": int(len(idx)),
        "pretrain_class_counts": counts.tolist(),
    }


ROW_FILE = "bench_row.json"  # a finished, probed pre-training run's row


def pretrain_dir(args: SslOptions, method: str, seed: int) -> Path:
    return Path(args.out) / "pretrain" / f"{method}-seed{seed}"


# Cost of an epoch relative to SimCLR's, for the pool's order alone (quiet ``--estimate``: MTTV
# 1.29-1.40x SimCLR at widths 16-64 on the AVX512-BF16 machine, 1.32x in fp32 on an AVX2 one).
_EPOCH_COST = {"mttv": 1.3}


def pretrain_work(args: SslOptions, method: str, seed: int) -> float:
    """Work left in one pre-training run, in SimCLR epochs: the epochs not yet in its
    ``metrics.jsonl`` (none once probed) times `_EPOCH_COST`. Orders the pool only."""
    out = pretrain_dir(args, method, seed)
    if (out / ROW_FILE).exists():
        return 0.0
    done = len(read_metrics(out / METRICS_FILE)) if (out / METRICS_FILE).is_file() else 0
    return max(0, pretrain_epochs(args, method) - done) * _EPOCH_COST.get(method, 1.0)


def pretrain_one(args: SslOptions, method: str, seed: int) -> dict[str, Any]:
    """Pre-train (or reuse) one encoder, save its backbone, probe it; returns the row."""
    out = pretrain_dir(args, method, seed)
    row_path = out / ROW_FILE
    if row_path.exists():
        return json.loads(row_path.read_text())
    set_threads(args)
    cfg = pretrain_config(args, method, seed)
    resume = clear_unfinished(out)
    start = time.perf_counter()
    try:
        summary = fit(cfg, out, resume=resume, write_report=False, progress=False)
    except TrainingError as err:  # e.g. a NaN loss: report it, let the other runs go on
        log.warning("pretrain %s seed %s failed: %s", method, seed, err)
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
    run = Run.from_folder(out)
    save_encoder(run.method.model, out / "backbone.pt", include_head=False)
    epochs = cfg.train.epochs
    n, b = summary.num_train, cfg.train.batch_size
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
        "train_seconds": summary.train_seconds,
        "images_per_second": summary.images_per_second,
        **probe_encoder(args, run, seed),
    }
    row_path.write_text(json.dumps(row))
    return row


def random_encoder_row(args: SslOptions, seed: int) -> dict[str, Any]:
    """The probe of an untrained encoder (same seed's initialisation): the floor."""
    set_threads(args)
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


def encoder_path(args: SslOptions, seed: int) -> Path:
    return pretrain_dir(args, args.init_from, seed) / "backbone.pt"


def finetune_one(
    args: SslOptions, seed: int, rate: float, loss: str, pretrained: bool
) -> dict[str, Any]:
    init = str(encoder_path(args, seed)) if pretrained else None
    tag = args.init_from if pretrained else "scratch"
    out = Path(args.out) / "finetune" / f"noise{round(100 * rate)}-{tag}-{loss}-seed{seed}"

    def failed(error: str) -> dict[str, Any]:
        return {
            "part": "finetune",
            "noise_rate": rate,
            "init": tag,
            "loss": loss,
            "seed": seed,
            "error": error,
        }

    set_threads(args)
    summary = read_summary(out)
    if summary is None:
        resume = clear_unfinished(out)
        if pretrained and not Path(init).exists():
            return failed(f"no encoder {init} (its pre-training failed?)")
        try:
            cfg = finetune_config(args, seed, rate, loss, init)
            summary = fit(cfg, out, resume=resume, write_report=False)
        except TrainingError as err:
            log.warning("finetune %s %s %s seed %s failed: %s", tag, loss, rate, seed, err)
            return failed(str(err))
    counts = np.asarray(summary.train_class_counts)
    metrics = {
        "accuracy": summary.test_accuracy,
        "balanced_accuracy": summary.balanced_accuracy,
        "per_class_accuracy": summary.per_class_accuracy,
        "many_shot_accuracy": summary.many_shot_accuracy,
        "medium_shot_accuracy": summary.medium_shot_accuracy,
        "few_shot_accuracy": summary.few_shot_accuracy,
    }
    return {
        "part": "finetune",
        "noise_rate": rate,
        "init": tag,
        "loss": loss,
        "seed": seed,
        "epochs": summary.epochs,
        **_shot_fields(
            "test_", metrics, group_accuracy(summary.per_class_accuracy, frequency_groups(counts))
        ),
        "test_accuracy_at_best_val": summary.test_accuracy_at_best_val,
        "realised_noise_rate": summary.noise["realised_rate"],
        "train_seconds": summary.train_seconds,
    }


# ---------------------------------------------------------------------------------------------
# (c) cost of pre-training: augmentation against forward/backward


def estimate_parts(args: SslOptions, steps: int = 4) -> list[dict[str, Any]]:
    """One dict per kind of run of the plan: ``part``, ``runs`` per seed, ``epochs``,
    ``steps_per_epoch``, ``step_seconds`` (median of ``steps`` timed steps), ``eval_seconds``
    (one timed evaluation; a probe's whole time for ``part`` "probes") and ``seconds`` for all
    seeds, measured here and now in one process."""
    set_threads(args)
    parts: list[dict[str, Any]] = []
    n_seeds = len(args.seeds)

    def add(name: str, runs: int, cfg: Config) -> None:
        run = build_run(args, cfg)
        make, step, _ = time_steps(run, steps, 1)
        per_step = statistics.median([a + b for a, b in zip(make, step)])
        t0 = time.perf_counter()
        run.evaluate()
        ev = time.perf_counter() - t0
        epochs = cfg.train.epochs
        secs = n_seeds * runs * epochs * (len(run.loader) * per_step + ev)
        parts.append(
            {
                "part": name,
                "runs": runs,
                "epochs": epochs,
                "steps_per_epoch": len(run.loader),
                "step_seconds": per_step,
                "eval_seconds": ev,
                "seconds": secs,
            }
        )

    if args.part in ("all", "pretrain", "finetune"):
        methods = list(args.methods) if args.part != "finetune" else [args.init_from]
        if args.part == "finetune" and not args.losses:
            methods = []
        for m in methods:
            add(f"pre-train {m}", 1, pretrain_config(args, m, 0))
        probes = (len(methods) + 1) if args.part != "finetune" else 0
        if probes:
            run = build_run(args, pretrain_config(args, methods[0], 0))
            t0 = time.perf_counter()
            probe_encoder(args, run, 0)
            took = time.perf_counter() - t0
            parts.append(
                {
                    "part": "probes",
                    "runs": probes,
                    "eval_seconds": took,
                    "seconds": n_seeds * probes * took,
                }
            )
    if args.part in ("all", "finetune"):
        runs = len(args.noise_rates) * (len(args.losses) + len(args.scratch_losses))
        if runs:
            add("fine-tune", runs, finetune_config(args, 0, args.noise_rates[0], "ce", None))
    if args.part in ("all", "cost"):
        secs = len(args.methods) * (args.cost_steps + args.cost_warmup) * 1.0
        parts.append({"part": "cost", "runs": 0, "seconds": secs, "guess": True})
    return parts


def estimate(args: SslOptions, steps: int = 4) -> str:
    """Wall time of the planned parts, extrapolated from ``steps`` timed steps of each kind of
    run and one timed evaluation, here and now (one process; divide by about ``--jobs``)."""
    lines = [
        "| part | runs per seed | epochs | steps / epoch | s / step | eval s | est. s, all seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    parts = estimate_parts(args, steps)
    for p in parts:
        if p["part"] == "cost":
            lines.append(f"| cost | - | - | - | - | - | ~{p['seconds']:.0f} (at 1 s / step) |")
        elif p["part"] == "probes":
            lines.append(f"| probes | {p['runs']} | - | - | - | - | {p['seconds']:.0f} |")
        else:
            lines.append(
                f"| {p['part']} | {p['runs']} | {p['epochs']} | {p['steps_per_epoch']} "
                f"| {p['step_seconds']:.3f} | {p['eval_seconds']:.2f} | {p['seconds']:.0f} |"
            )
    total = sum(p["seconds"] for p in parts)
    n_seeds = len(args.seeds)
    lines.append(f"\nEstimated total: {total / 60:.1f} min in one process ({n_seeds} seeds).")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Driver


def longest_first(work: list[float]) -> list[int]:
    """Indices of the calls, the most work first (ties keep their order): a pool that starts
    its longest runs first finishes sooner (LPT scheduling)."""
    return sorted(range(len(work)), key=lambda i: -work[i])


def _map(
    args: SslOptions, fn: Any, calls: list[tuple], work: list[float] | None = None
) -> list[dict[str, Any]]:
    """``fn(*call)`` for every call, in ``--jobs`` spawned processes (``--threads`` each), started
    in `longest_first` order of ``work`` (one figure a call); the rows come back in call order."""
    order = longest_first(work) if work is not None else list(range(len(calls)))
    ordered = [calls[i] for i in order]
    if args.jobs <= 1 or len(calls) <= 1:
        results = [fn(*c) for c in ordered]
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process whose torch has threads
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            results = list(pool.map(fn, *zip(*ordered)))
    rows: list[dict[str, Any]] = [{}] * len(calls)
    for i, row in zip(order, results):
        rows[i] = row
    return rows


def run_bench(args: SslOptions) -> list[dict[str, Any]]:
    """Run the parts asked for; returns every row (also appended to OUT/results.jsonl)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cost_threads = args.threads or torch.get_num_threads()  # the cost part runs alone
    if args.jobs > 1 and not args.threads:
        args = replace(args, threads=max(1, torch.get_num_threads() // args.jobs))
    set_threads(args)
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    part = args.part
    if part in ("all", "pretrain", "finetune"):
        start = time.perf_counter()
        methods = list(args.methods) if part != "finetune" else [args.init_from]
        if args.init_from not in methods and part == "all":
            methods.append(args.init_from)
        if part == "finetune" and not args.losses:  # scratch runs only: no encoder needed
            methods = []
        calls = [(args, m, s) for s in args.seeds for m in methods]
        pre = _map(args, pretrain_one, calls, [pretrain_work(*c) for c in calls])
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
        cost_args = replace(args, threads=cost_threads)
        rows += [cost_one(cost_args, m) for m in args.methods]
        timings["cost"] = time.perf_counter() - start
    with open(out / "results.jsonl", "a") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    text = tables(rows)
    text += "\nWall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + "\n"
    (out / "tables.md").write_text(text)
    return rows
