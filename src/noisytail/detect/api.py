"""``detect_label_issues``: "which of my labels are wrong?" on any data source or a finished run.

It trains what the detector needs (or loads a finished run folder with ``from_run``), scores every
sample of the training pool and writes into ``out_dir``:

- ``label_issues.csv``: one row per training-pool sample, most suspect first, with columns
  ``sample_id`` (index in the source's training split), ``path`` (empty where the source has no
  files), ``given_label``, ``suggested_label`` (class names), ``score`` (suspicion: higher = more
  likely wrong) and ``flagged`` (0/1);
- ``suspects.png``: the most suspect images with "given -> suggested" titles (image data only);
- ``detection.json``: the detector and its settings, per-class counts and, when the true labels
  are known (synthetic noise or a real-noise label file), `detection_metrics` of the flags;
- optionally a cleaned copy of a CSV manifest without the flagged rows (``clean_csv``).

The user's files are never modified. Samples held out for validation (``data.val_fraction``) or
test are not scored: by default the validation fraction is set to 0 so the whole training split is
scored (``keep_val=True`` keeps the config's value).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, ConfigError, from_dict, validate
from ..data.locations import check_outside_data
from ..data.prepare import PreparedData, prepare_data
from ..data.types import DataError
from ..registry import DETECTORS, RegistryError, keyword_parameters
from ..runfolder import CheckpointError, read_run_config, write_json, write_text
from ..train import Run, setup_runtime
from .detectors import DetectionTask, DetectorOutput
from .metrics import detection_metrics, per_class_detection

CSV_COLUMNS = ("sample_id", "path", "given_label", "suggested_label", "score", "flagged")
ISSUES_FILE = "label_issues.csv"
PICTURE_FILE = "suspects.png"
JSON_FILE = "detection.json"


@dataclass
class DetectionResult:
    """What `detect_label_issues` found and wrote. Arrays are in ranked order (most suspect
    first) except ``output``, which is in training-pool order."""

    detector: str
    output: DetectorOutput
    order: np.ndarray  # pool positions, most suspect first
    sample_ids: np.ndarray  # [N] source train-split ids, ranked
    metrics: dict[str, Any] | None  # detection_metrics when the truth is known
    per_class: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.order)

    @property
    def n_flagged(self) -> int:
        return int(self.output.flagged.sum())

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [f"{self.detector}: {self.n_flagged} of {self.n} samples flagged"]
        if self.metrics is not None:
            m = self.metrics
            auroc = "n/a" if m["auroc"] is None else f"{m['auroc']:.3f}"
            lines.append(
                f"  against the true labels: precision {m['precision']:.3f}, recall "
                f"{m['recall']:.3f}, F1 {m['f1']:.3f}, AUROC {auroc}"
            )
        for name, path in self.files.items():
            lines.append(f"  {name:15s} {path}")
        return "\n".join(lines)


def parse_detector_args(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["k=50", "selection=agreement"]`` -> ``{"k": 50, "selection": "agreement"}`` (values
    parsed as YAML), for ``noisytail detect --arg KEY=VALUE``."""
    from ..config import parse_override

    out: dict[str, Any] = {}
    for text in items:
        keys, value = parse_override(text)
        if len(keys) != 1:
            raise ConfigError(f"Detector argument {text!r} must look like name=value, e.g. k=50.")
        out[keys[0]] = value
    return out


def detect_command(
    config: str | os.PathLike | None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    out: str | os.PathLike | None = None,
    detector: str = "knn",
    args: list[str] | tuple[str, ...] = (),
    from_run: str | os.PathLike | None = None,
    checkpoint: str = "last",
    clean_csv: str | os.PathLike | bool | None = None,
    n_suspects: int = 24,
    keep_val: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> DetectionResult:
    """What ``noisytail detect`` does: a config file plus ``--set`` overrides, or ``--from-run``
    (then neither may be given); ``--arg KEY=VALUE`` detector arguments; ``out`` defaults to
    ``runs/detect-<detector>-<time>``."""
    import time

    from ..config import load_config

    if from_run is not None and (config is not None or overrides):
        raise ConfigError("--from-run uses the run's own config: drop CONFIG and --set.")
    cfg = None if from_run is not None else load_config(config, list(overrides))
    if out is None:
        out = Path("runs") / f"detect-{detector}-{time.strftime('%Y%m%d-%H%M%S')}"
    return detect_label_issues(
        cfg,
        out,
        detector=detector,
        detector_args=parse_detector_args(args),
        from_run=from_run,
        checkpoint=checkpoint,
        clean_csv=clean_csv,
        n_suspects=n_suspects,
        keep_val=keep_val,
        overwrite=overwrite,
        progress=progress,
    )


def list_detectors() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every registered detector."""
    return [(name, DETECTORS.get(name).description) for name in DETECTORS.names()]


def truth_known(cfg: Config) -> bool:
    """True labels are known when the noise is synthetic or real noisy labels come from a file."""
    return cfg.noise.kind != "none" or bool(cfg.data.label_file)


def _check_detector(detector: str, detector_args: dict[str, Any] | None) -> Any:
    DETECTORS.get(detector)  # unknown name: RegistryError with suggestions
    return DETECTORS.build(detector, args=detector_args or {})


def _earlier_detection(out: Path) -> bool:
    """Whether ``out/detection.json`` is one that `detect_label_issues` wrote."""
    try:
        info = json.loads((out / JSON_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and {"detector", "n", "n_flagged", "files"} <= set(info)


def _precheck(out: Path, cfg: Config, overwrite: bool, clean_csv: Any) -> None:
    """Refuse bad output settings before any data are loaded or models trained. Files of the
    names detect writes are replaced only with ``overwrite``, and only when they belong to an
    earlier detection (never a user's own file of the same name)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder.")
    present = [name for name in (ISSUES_FILE, PICTURE_FILE, JSON_FILE) if (out / name).exists()]
    if present and not overwrite:
        raise ConfigError(
            f"{out / present[0]} already exists: choose another output folder, or overwrite an "
            "earlier detection there."
        )
    if present and not _earlier_detection(out):
        raise ConfigError(
            f"{out} holds {', '.join(present)} but no detection.json of an earlier noisytail "
            "detection: overwrite replaces only that; choose another output folder."
        )
    if clean_csv not in (None, False):
        if cfg.data.name != "csv":
            raise ConfigError(
                "clean_csv writes a cleaned copy of a CSV manifest: use data.name=csv."
            )
        if clean_csv is not True and Path(clean_csv).exists():
            raise ConfigError(
                f"{clean_csv} already exists: the cleaned manifest is written to a new file only."
            )


def _run_loader(run_dir: Path, cfg: Config, prepared: PreparedData, rt: Any, checkpoint: str):
    def load() -> Run:
        ckpt = run_dir / "checkpoints" / f"{checkpoint}.pt"
        if not ckpt.exists():
            raise CheckpointError(f"{ckpt}: not found: the run has no '{checkpoint}' checkpoint.")
        run = Run(cfg, run_dir, rt, prepared)
        run.load_weights(ckpt)
        return run

    return load


def _load_from_run(run_dir: Path, cfg: Config) -> PreparedData:
    prepared = prepare_data(cfg)
    prepared.check_against(run_dir)
    return prepared


def detect_label_issues(
    cfg: Config | None,
    out_dir: str | os.PathLike,
    *,
    detector: str = "knn",
    detector_args: dict[str, Any] | None = None,
    from_run: str | os.PathLike | None = None,
    checkpoint: str = "last",
    clean_csv: str | os.PathLike | bool | None = None,
    n_suspects: int = 24,
    keep_val: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> DetectionResult:
    """Score every training sample with ``detector`` and write the files (module docstring).

    ``cfg`` describes the data, model and training; with ``from_run`` (a run folder written by
    ``fit``) the run's own config and ``checkpoint`` are used instead and ``cfg`` must be None
    (``confident_learning`` then trains its fold models with that config; ``loss_trajectory``
    needs training and refuses ``from_run``). ``detector_args`` are checked against the
    detector's signature. ``clean_csv``: True writes ``<manifest stem>.cleaned.csv`` into
    ``out_dir``, a path writes there (never over an existing file); only for ``data.name=csv``.
    """
    out = Path(out_dir)
    det = _check_detector(detector, detector_args)
    if n_suspects < 0:
        raise ConfigError(f"n_suspects must be >= 0, got {n_suspects}.")
    loader = None
    if from_run is not None:
        if cfg is not None:
            raise ConfigError("Give either a config or from_run (a finished run folder), not both.")
        run_dir = Path(from_run)
        if not run_dir.is_dir():
            raise DataError(f"Run folder {run_dir} does not exist.")
        cfg = read_run_config(run_dir)
        _precheck(out, cfg, overwrite, clean_csv)
        prepared = _load_from_run(run_dir, cfg)
        check_outside_data(out, prepared.bundle, extra_files=[cfg.data.label_file])
        rt = setup_runtime(cfg)
        loader = _run_loader(run_dir, cfg, prepared, rt, checkpoint)
    else:
        if cfg is None:
            raise ConfigError("detect_label_issues needs a config or from_run.")
        if not keep_val and cfg.data.val_fraction > 0:
            cfg = from_dict({"data": {"val_fraction": 0.0}}, cfg)
        validate(cfg)
        _precheck(out, cfg, overwrite, clean_csv)
        prepared = prepare_data(cfg)
        check_outside_data(out, prepared.bundle, extra_files=[cfg.data.label_file])
        rt = setup_runtime(cfg)
    out.mkdir(parents=True, exist_ok=True)
    task = DetectionTask(cfg, prepared, rt, out, progress=progress, loader=loader)
    output = det.detect(task)
    n = len(task.labels)
    if len(output.suspicion) != n:
        raise ValueError(f"detector {detector!r} scored {len(output.suspicion)} of {n} samples.")

    corr = prepared.corruption
    order = np.lexsort((np.arange(n), -output.suspicion))  # most suspect first, ties by position
    source_ids = prepared.train_source_idx[corr.train_idx]  # [N] pool -> source train id
    result_metrics = None
    is_noisy = corr.is_noisy()[corr.train_idx]
    names = list(prepared.bundle.class_names)
    if truth_known(cfg):
        result_metrics = detection_metrics(is_noisy, output.flagged, output.suspicion)
        per_class = per_class_detection(is_noisy, output.flagged, task.labels, len(names))
    else:
        per_class = [
            {k: v for k, v in row.items() if k in ("class", "n", "n_flagged")}
            for row in per_class_detection(
                np.zeros(n, bool), output.flagged, task.labels, len(names)
            )
        ]
    for row in per_class:
        row["name"] = names[row["class"]]
    result = DetectionResult(
        detector=detector,
        output=output,
        order=order,
        sample_ids=source_ids[order],
        metrics=result_metrics,
        per_class=per_class,
    )
    result.files["issues"] = write_issues_csv(out / ISSUES_FILE, prepared, output, order)
    if prepared.bundle.is_image and n_suspects > 0:
        result.files["picture"] = write_suspects_png(
            out / PICTURE_FILE, prepared, output, order, n_suspects
        )
    if clean_csv not in (None, False):
        flagged_ids = source_ids[output.flagged]
        result.files["cleaned_csv"] = write_clean_manifest(cfg, flagged_ids, out, clean_csv)
    info = {
        "detector": detector,
        "description": type(det).description,
        "args": det.args(),
        "details": output.info,
        "data": cfg.data.name,
        "from_run": str(from_run) if from_run is not None else None,
        "n": n,
        "n_flagged": result.n_flagged,
        "truth_known": truth_known(cfg),
        "metrics": result_metrics,
        "per_class": per_class,
        "files": {k: str(v) for k, v in result.files.items()},
    }
    write_json(info, out / JSON_FILE, default=json_default)
    result.files["json"] = out / JSON_FILE
    return result


def json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def write_issues_csv(
    path: Path, prepared: PreparedData, output: DetectorOutput, order: np.ndarray
) -> Path:
    """``label_issues.csv`` (columns `CSV_COLUMNS`), rows in ``order``."""
    corr = prepared.corruption
    names = list(prepared.bundle.class_names)
    paths = prepared.bundle.train.paths
    labels = prepared.train_labels
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for pos in order.tolist():
        j = int(corr.train_idx[pos])  # index in the (sub-setted) train split
        w.writerow(
            [
                int(prepared.train_source_idx[j]),
                paths[j] if paths is not None else "",
                names[labels[pos]],
                names[output.suggested[pos]],
                f"{output.suspicion[pos]:.6g}",
                int(output.flagged[pos]),
            ]
        )
    write_text(buf.getvalue(), path)
    return path


def write_suspects_png(
    path: Path,
    prepared: PreparedData,
    output: DetectorOutput,
    order: np.ndarray,
    n_suspects: int = 24,
) -> Path:
    """A grid of the ``n_suspects`` most suspect images, titled "given → suggested"."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    top = order[:n_suspects]
    names = list(prepared.bundle.class_names)
    labels = prepared.train_labels
    images = prepared.bundle.train.images.get(prepared.train_idx[top])  # uint8 [B, C, H, W]
    cols = min(6, max(1, len(top)))
    rows = max(1, -(-len(top) // cols))
    with matplotlib.rc_context({"font.size": 8}):
        fig = Figure(figsize=(2.0 * cols, 2.2 * rows), dpi=110)
        FigureCanvasAgg(fig)
        for i in range(rows * cols):
            ax = fig.add_subplot(rows, cols, i + 1)
            ax.axis("off")
            if i >= len(top):
                continue
            pos = int(top[i])
            img = images[i].permute(1, 2, 0).numpy()
            if img.shape[2] == 1:
                ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=255)
            else:
                ax.imshow(img)
            given, suggested = names[labels[pos]], names[output.suggested[pos]]
            flag = "" if output.flagged[pos] else " (kept)"
            ax.set_title(f"{given} → {suggested}{flag}", fontsize=8)
        fig.suptitle("Most suspect labels: given → suggested", fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
    return path


def csv_train_rows(cfg: Config) -> tuple[Path, np.ndarray]:
    """The manifest of a ``data.name=csv`` config and, for each id of the source's training
    split, the index of its data row in that file (blank lines not counted)."""
    from ..data.csv_source import _encode_labels, _resolve, _Table, load_csv
    from ..data.image_folder import split_train_test

    opts = dict(cfg.data.options)
    params = keyword_parameters(load_csv)
    unknown = set(opts) - set(params)
    if unknown:
        raise RegistryError(f"dataset 'csv' has no argument(s) {', '.join(sorted(unknown))}.")

    def opt(name: str) -> Any:
        return opts.get(name, params[name].default)

    if opt("train_csv") is None:
        raise DataError("The csv data set needs data.options.train_csv=<file.csv>.")
    base = Path(cfg.data.root).expanduser() if cfg.data.root is not None else None
    train_path = _resolve(opt("train_csv"), base)
    table = _Table(train_path, base, opt("label_column"), opt("path_column"))
    _, y, _ = _encode_labels(table, None)
    if opt("test_csv") is None:
        rows, _ = split_train_test(y, opt("test_fraction"), opt("seed"))
    else:
        rows = np.arange(len(y))
    return train_path, rows


def write_clean_manifest(
    cfg: Config,
    flagged_source_ids: np.ndarray,
    out_dir: Path,
    target: str | os.PathLike | bool = True,
) -> Path:
    """A copy of the config's CSV manifest without the rows of ``flagged_source_ids`` (ids in
    the source's training split). ``target``: True for ``out_dir/<stem>.cleaned.csv``, or a
    path. Never overwrites an existing file; the manifest itself is only read."""
    if cfg.data.name != "csv":
        raise ConfigError("A cleaned manifest needs data.name=csv.")
    manifest, rows = csv_train_rows(cfg)
    dest = out_dir / f"{manifest.stem}.cleaned.csv" if target is True else Path(target)
    if dest.exists() or dest.resolve() == manifest.resolve():
        raise ConfigError(
            f"{dest} already exists: the cleaned manifest is written to a new file only."
        )
    drop = set(rows[np.asarray(flagged_source_ids, dtype=np.int64)].tolist())
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader)
        data = [row for row in reader if row and any(cell.strip() for cell in row)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "x", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i, row in enumerate(data):
            if i not in drop:
                w.writerow(row)
    return dest
