"""The ``noisytail`` command: a thin layer that wires a config to library calls.

Exit codes: 0 success, 1 a run failed (e.g. NaN loss), 2 bad input (config, data, arguments).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .cli_errors import BAD_INPUT, RUN_FAILED, CliGroup, NoteHandler, fail, guard
from .config import ConfigError, load_config

if TYPE_CHECKING:
    from .summary import RunSummary, UnfinishedRun


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="noisytail")
def main() -> None:
    """noisytail: train robust classifiers from noisy, long-tailed labels."""
    logger = logging.getLogger("noisytail")
    if not any(isinstance(h, NoteHandler) for h in logger.handlers):
        logger.addHandler(NoteHandler())
        logger.setLevel(logging.INFO)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key."
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Run folder (default runs/<name>-<time>)."
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--no-progress", is_flag=True, help="No progress bars (one line per epoch instead).")
@click.option("--no-report", is_flag=True, help="Skip report.md and plots.")
@guard
def train(config, overrides, out, resume, no_progress, no_report) -> None:  # type: ignore[no-untyped-def]
    """Train a method on a data set described by CONFIG (YAML) and --set overrides."""
    from .defaults import apply_defaults
    from .train import fit

    # settings left unset are chosen from a user's own data, one printed line each
    cfg = apply_defaults(
        load_config(config, list(overrides)),
        config,
        overrides,
        click.echo,
        run_dir=out if resume else None,
    )
    if out is None:
        import os

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(
                "Under torchrun, name the run folder with --out (all ranks share it)."
            )
        if resume:
            raise ConfigError("--resume needs --out RUN_DIR (the run to continue).")
        stem = Path(config).stem if config else "run"
        out = new_run_dir(f"{stem}-{cfg.method.name}-seed{cfg.seed}")
    summary = fit(
        cfg, out, resume=resume, progress=False if no_progress else None, write_report=not no_report
    )
    _print_summary(summary, Path(out))


def new_run_dir(name: str, parent: Path = Path("runs")) -> Path:
    """``runs/<name>-<date>-<time>`` for a run without --out; a folder that already exists (two
    runs started in the same second) gets ``-2``, ``-3``, ... so no run is refused or mixed."""
    base = parent / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


#: How `pretrain` names `export_pretrained`'s probe training sets.
_PROBE_SETS = {"pool": "the run's training pool", "source": "the source's training split"}


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _print_summary(summary: RunSummary | UnfinishedRun, out: Path) -> None:
    if not summary.finished:
        click.echo(f"stopped after {summary.epochs_done} epochs; resume with --resume --out {out}")
        return
    noise = summary.noise
    realised = noise.get("realised_rate")
    realised_text = "unknown" if realised is None else f"{realised:.1%}"
    click.echo(
        f"\n{summary.method} on {summary.dataset} "
        f"(noise {noise['kind']} {noise['rate']:.0%}, realised {realised_text}; "
        f"imbalance ratio {summary.imbalance_ratio:g})"
    )
    click.echo(f"  test accuracy        {_pct(summary.test_accuracy)}")
    click.echo(f"  balanced accuracy    {_pct(summary.balanced_accuracy)}")
    click.echo(
        f"  many / medium / few  {_pct(summary.many_shot_accuracy)} / "
        f"{_pct(summary.medium_shot_accuracy)} / {_pct(summary.few_shot_accuracy)}"
    )
    ece, speed = summary.ece, summary.images_per_second
    click.echo(f"  ECE                  {'n/a' if ece is None else f'{ece:.4f}'}")
    click.echo(
        f"  training             {summary.train_seconds or 0:.1f}s, "
        f"{'n/a' if speed is None else f'{speed:.0f}'} images/s on {summary.device}"
    )
    click.echo(f"run folder: {out}")
    if (out / "report.md").exists():
        click.echo(f"report:     {out / 'report.md'}")


def _detector_names() -> list[str]:
    """The registered detectors."""
    from .detect import detectors  # noqa: F401  (registration)
    from .registry import DETECTORS

    return DETECTORS.names()


class _RegistryHelpOption(click.Option):
    """An option whose help ends with the names a registry holds, read only when help is shown
    (the registry's modules are not imported for other commands)."""

    def __init__(self, *args, names, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._names, self._help = names, self.help or ""

    def get_help_record(self, ctx):  # type: ignore[no-untyped-def]
        self.help = f"{self._help} One of: {', '.join(self._names())}."
        return super().get_help_record(ctx)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key."
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Run folder (default runs/pretrain-...)."
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option(
    "--probe-epochs", type=int, default=100, show_default=True, help="Final linear-probe epochs."
)
@click.option(
    "--probe-train",
    type=click.Choice(list(_PROBE_SETS)),
    default="pool",
    show_default=True,
    help="What the final probes train on: the run's (long-tailed) training pool, or the source's "
    "whole training split before the imbalance and the noise, with its own labels (MTTV's "
    "balanced protocol).",
)
@click.option("--no-progress", is_flag=True, help="No progress bars (one line per epoch instead).")
@guard
def pretrain(config, overrides, out, resume, probe_epochs, probe_train, no_progress) -> None:  # type: ignore[no-untyped-def]
    """Self-supervised pre-training (default: simclr with SimCLR augmentation, also in place of a
    supervised method named by CONFIG). Writes
    OUT/encoder.pt and OUT/ssl_evaluation.json (linear probe + kNN on frozen features);
    fine-tune with `noisytail train ... --set model.init=OUT/encoder.pt --set method.loss=cb_focal`
    (the fine-tuning loss chosen by measurement: BENCHMARKS.md)."""
    from .defaults import apply_defaults
    from .evaluate_ssl import (
        FINETUNE_LOSS,
        export_pretrained,
        pretrain_overrides,
        self_supervised_methods,
    )
    from .train import fit

    if probe_epochs < 1:
        raise ConfigError(
            f"--probe-epochs must be >= 1 (the linear probe's training epochs), got {probe_epochs}."
        )
    given = pretrain_overrides(config, overrides, click.echo) + list(overrides)
    # the model `train` picks for this data (the encoder must fit it), pre-training's own epochs
    cfg = load_config(config, given)
    cfg = apply_defaults(
        cfg, config, given, click.echo, run_dir=out if resume else None, epochs=False
    )
    if cfg.method.name not in self_supervised_methods():
        raise ConfigError(
            f"pretrain: method.name must be one of {', '.join(self_supervised_methods())}, "
            f"got {cfg.method.name!r} (use `train` for supervised methods)."
        )
    if out is None:
        if resume:
            raise ConfigError("--resume needs --out RUN_DIR (the run to continue).")
        out = new_run_dir(f"pretrain-{cfg.method.name}-seed{cfg.seed}")
    summary = fit(cfg, out, resume=resume, progress=False if no_progress else None)
    if not summary.finished:
        _print_summary(summary, Path(out))
        return
    res = export_pretrained(out, probe_epochs=probe_epochs, probe_train=probe_train)
    lp, knn = res["linear_probe"], res["knn"]
    thirds = lp.get("thirds_accuracy")  # MTTV's many / medium / few: thirds by frequency
    groups = (
        f" (many / medium / few thirds {' / '.join(_pct(thirds[g]) for g in thirds)})"
        if thirds
        else ""
    )
    click.echo(
        f"\n{cfg.method.name} pre-training on {cfg.data.name}: linear probe "
        f"{_pct(lp['accuracy'])}{groups}, kNN {_pct(knn['accuracy'])} (trained on "
        f"{_PROBE_SETS[probe_train]}, {res['probe_train']['size']} samples)"
    )
    click.echo(f"encoder:   {res['encoder']}")
    click.echo(
        f"fine-tune: noisytail train CONFIG --set model.init={res['encoder']} "
        f"--set method.loss={FINETUNE_LOSS}"
    )


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--checkpoint", type=click.Choice(["last", "best"]), default="last", show_default=True
)
@guard
def evaluate(run_dir, checkpoint) -> None:  # type: ignore[no-untyped-def]
    """Re-evaluate a run's checkpoint on its test set (writes evaluation_<checkpoint>.json)."""
    from .train import evaluate_run

    metrics = evaluate_run(run_dir, checkpoint=checkpoint)
    keys = ("accuracy", "balanced_accuracy", "many_shot_accuracy", "medium_shot_accuracy")
    keys += ("few_shot_accuracy", "ece")
    for key in keys:
        value = metrics.get(key)
        click.echo(f"{key:22s} {'n/a' if value is None else f'{value:.4f}'}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@guard
def report(run_dir) -> None:  # type: ignore[no-untyped-def]
    """(Re)write report.md and the plots of a finished run."""
    from .data.types import DataError
    from .report import write_report
    from .summary import SUMMARY_FILE

    if not (Path(run_dir) / SUMMARY_FILE).exists():
        for marker, kind in (("detection.json", "detection"), ("results.jsonl", "bench")):
            if (Path(run_dir) / marker).exists():
                raise DataError(f"{run_dir} is a {kind} folder, not a training run.")
        raise DataError(f"{run_dir} has no {SUMMARY_FILE}: the run has not finished.")
    click.echo(write_report(Path(run_dir)))


@main.command()
@click.argument("grid", type=click.Path(dir_okay=False))
@click.option(
    "--out", type=click.Path(file_okay=False), help="Bench folder (default runs/bench-<grid>)."
)
@click.option("--jobs", type=int, help="Runs at once (default: the grid's `jobs`).")
@click.option("--threads", type=int, help="Torch threads per run (default: cores / jobs).")
@click.option(
    "--seeds",
    type=int,
    multiple=True,
    help="Run only this seed of the grid's (repeat for several; default: all).",
)
@guard
def bench(grid, out, jobs, threads, seeds) -> None:  # type: ignore[no-untyped-def]
    """Run a grid of runs (methods x corruptions x seeds) and aggregate mean +- std.

    Finished runs are skipped and interrupted ones resumed, so rerunning continues a grid.
    """
    from .bench import run_grid
    from .bench_lock import BenchBusyError

    out = Path(out) if out else Path("runs") / f"bench-{Path(grid).stem}"
    try:
        run_grid(grid, out, jobs=jobs, threads=threads, seeds=list(seeds) or None, echo=click.echo)
    except BenchBusyError as err:
        fail(str(err), BAD_INPUT)
    except RuntimeError as err:
        fail(str(err), RUN_FAILED)
    click.echo(f"results: {out / 'results.md'}")


@main.command()
@click.argument("config", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key."
)
@click.option(
    "--from-run",
    type=click.Path(file_okay=False),
    help="Use a finished run folder (its config and checkpoint) instead of CONFIG.",
)
@click.option(
    "--checkpoint", type=click.Choice(["last", "best"]), default="last", show_default=True
)
@click.option(
    "--detector",
    "-d",
    default=None,
    cls=_RegistryHelpOption,
    names=_detector_names,
    help="A registered detector. Default: auto (no training), or knn in the run's feature space "
    "with --from-run.",
)
@click.option(
    "--arg", "args", multiple=True, metavar="KEY=VALUE", help="Detector argument, e.g. --arg k=50."
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Output folder (default runs/detect-...)."
)
@click.option("--clean", is_flag=True, help="Write <manifest>.cleaned.csv (flagged rows dropped).")
@click.option(
    "--clean-csv", type=click.Path(dir_okay=False), help="Write the cleaned manifest here."
)
@click.option("--suspects", "n_suspects", type=int, default=24, show_default=True)
@click.option(
    "--keep-val", is_flag=True, help="Keep data.val_fraction (those samples are not scored)."
)
@click.option("--overwrite", is_flag=True, help="Replace an earlier detection in --out.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@guard
def detect(  # type: ignore[no-untyped-def]
    config,
    overrides,
    from_run,
    checkpoint,
    detector,
    args,
    out,
    clean,
    clean_csv,
    n_suspects,
    keep_val,
    overwrite,
    no_progress,
):
    """Find likely label errors in a data set: label_issues.csv (most suspect first),
    suspects.png and detection.json. Your files are never modified."""
    from .defaults import apply_defaults
    from .detect.task import (
        detect_label_issues,
        detector_fold_share,
        detector_trains_network,
        parse_detector_args,
        whole_data_config,
    )

    if from_run is not None and (config is not None or overrides):
        raise ConfigError("--from-run uses the run's own config: drop CONFIG and --set.")
    cfg = None
    detector_args = parse_detector_args(args)
    if from_run is None:  # settings left unset are chosen from a user's own data
        training = detector_trains_network(detector, detector_args)
        share = detector_fold_share(detector, detector_args)
        cfg = apply_defaults(
            load_config(config, list(overrides)),
            config,
            overrides,
            click.echo,
            training=training,
            fold_share=share,
            # every sample is checked: the defaults see the whole data, not a training split
            scope=lambda c: whole_data_config(c, keep_val),
        )
    if out is None:
        name = detector or ("knn" if from_run else "auto")
        out = new_run_dir(f"detect-{name}")
    result = detect_label_issues(
        cfg,
        out,
        detector=detector,
        detector_args=detector_args,
        from_run=from_run,
        checkpoint=checkpoint,
        clean_csv=clean_csv or (True if clean else None),
        n_suspects=n_suspects,
        keep_val=keep_val,
        overwrite=overwrite,
        progress=not no_progress,
    )
    click.echo(result.summary())


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--images",
    "inputs",
    multiple=True,
    required=True,
    metavar="DIR|CSV|FILE",
    help="Image files, folders of them, or a CSV with a 'path' column (repeatable); for a "
    "tabular model, a CSV of its feature columns.",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Default RUN/predictions.csv.")
@click.option("--top-k", type=int, default=3, show_default=True, help="Classes listed per input.")
@click.option(
    "--checkpoint", type=click.Choice(["last", "best"]), default="last", show_default=True
)
@guard
def predict(run_dir, inputs, out, top_k, checkpoint) -> None:  # type: ignore[no-untyped-def]
    """Classify new images with a run's model: OUT gets one row per input with its class, the
    probability and the top-k classes. Images must have the model's size and channel count
    (runs trained on image files resize them as in training)."""
    from .prediction import predict_files

    if top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {top_k}.")
    out = out or Path(run_dir) / "predictions.csv"  # in the run folder, never among the inputs
    click.echo(predict_files(run_dir, inputs, out, top_k=top_k, checkpoint=checkpoint))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["torchscript", "onnx"]),
    default="torchscript",
    show_default=True,
)
@click.option("--out", type=click.Path(dir_okay=False), help="Default RUN/model.<pt|onnx>.")
@click.option(
    "--checkpoint", type=click.Choice(["last", "best"]), default="last", show_default=True
)
@guard
def export(run_dir, fmt, out, checkpoint) -> None:  # type: ignore[no-untyped-def]
    """Write a run's model as TorchScript or ONNX (normalised float32 input, logits out), with
    OUT.json holding the class names, input shape and normalisation."""
    from .prediction import export_run

    out = out or Path(run_dir) / ("model.onnx" if fmt == "onnx" else "model.pt")
    click.echo(export_run(run_dir, fmt, out, checkpoint=checkpoint))


@main.command(name="list")
@click.argument(
    "what",
    type=click.Choice(["all", "methods", "losses", "models", "datasets", "detectors"]),
    default="all",
)
def list_(what) -> None:  # type: ignore[no-untyped-def]
    """List the registered methods, losses, models and data sets."""
    from . import losses, methods, models  # noqa: F401  (registration)
    from .data import sources  # noqa: F401
    from .detect import detectors  # noqa: F401
    from .registry import DATASETS, DETECTORS, LOSSES, METHODS, MODELS

    for name, reg in (
        ("methods", METHODS),
        ("losses", LOSSES),
        ("models", MODELS),
        ("datasets", DATASETS),
        ("detectors", DETECTORS),
    ):
        if what in ("all", name):
            click.echo(f"{name}: {', '.join(reg.names())}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def data(as_json) -> None:  # type: ignore[no-untyped-def]
    """Show which data sets are found on this machine, and how to get the others."""
    from .data.sources import find_datasets

    found = find_datasets()
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for entry in found:
        found = entry.get("found")
        mark = "found  " if found else ("by path" if found is None else "missing")
        click.echo(f"{entry['name']:14s} {mark} {entry.get('location') or entry.get('how', '')}")


if __name__ == "__main__":
    main()
