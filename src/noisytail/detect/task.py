"""``detect_label_issues``: "which of my labels are wrong?" on any data source or a finished run.

The orchestration: it checks the settings, prepares the data, hands the detector a
`DetectionTask`, ranks its verdict and calls the exporters (`noisytail.detect.exporters`), which
write into ``out_dir``: ``label_issues.csv``, ``suspects.png`` (image data), ``detection.json``
(the detector, its settings, per-class counts and, when the true labels are known,
`detection_metrics`) and, on request, a cleaned copy of a CSV manifest. The user's files are
never modified.

**Which samples are scored.** Every sample of the data the user asked to check:

- a user's own data (`noisytail.defaults.USER_SOURCES`: an image folder, a CSV) is checked
  whole: no test split is carved out of it (``data.options.test_fraction`` is set to 0), no
  validation split (``data.val_fraction`` 0) and no long-tailed subsampling (an ``imbalance``
  setting is not applied, saying so). A separate ``test/`` folder or ``test_csv`` is
  not checked. ``label_issues.csv`` has one row per image or CSV row, and ``--clean`` writes
  every row that is not flagged;
- the standard benchmarks (Fashion-MNIST, CIFAR, ...) keep their protocol: the training split
  is scored, the official test set is not (so BENCHMARKS.md's detection figures reproduce);
- ``from_run``: the run's training pool, under the run's own split.

**Ranking.** Most suspect first by the detector's suspicion, ties by its ``tiebreak`` (the
default detector's second signal), then by position (`scores.ranking`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, ConfigError, from_dict, validate
from ..data.csv_source import PATH_COLUMN
from ..data.locations import check_outside_data, check_outside_inputs, data_locations
from ..data.prepare import PreparedData, prepare_data
from ..data.types import DataError
from ..defaults import USER_SOURCES
from ..registry import DETECTORS
from ..runfolder import read_run_config
from ..runtime import setup_runtime
from ..train import Run
from . import detectors as _detectors  # noqa: F401  (registers the detectors in DETECTORS)
from . import exporters as ex
from .base import DetectionTask, DetectorOutput
from .metrics import detection_metrics, per_class_detection
from .scores import ranking

#: The detector ``noisytail detect`` runs when none is named (chosen by the own-data detection
#: benchmark, BENCHMARKS.md); with ``from_run``, `RUN_DETECTOR` (it uses the run's model).
DEFAULT_DETECTOR = "auto"
RUN_DETECTOR = "knn"

_log = logging.getLogger(__name__)


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
    cleaned: dict[str, Any] | None = None  # the cleaned copy's accounting of rows

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
        if self.cleaned is not None:
            c = self.cleaned
            lines.append(
                f"  cleaned copy: {c['kept']} of {c['rows']} rows kept, {c['dropped']} flagged "
                "rows dropped"
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


def list_detectors() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every registered detector."""
    return [(name, DETECTORS.get(name).description) for name in DETECTORS.names()]


def truth_known(cfg: Config) -> bool:
    """True labels are known when the noise is synthetic or real noisy labels come from a file."""
    return cfg.noise.kind != "none" or bool(cfg.data.label_file)


def detector_trains_network(
    detector: str | None, detector_args: dict[str, Any] | None
) -> Callable[[bool], bool]:
    """Whether the detector (default: `DEFAULT_DETECTOR`) trains a network on the data, asked
    with whether the data are images (`Detector.trains_network`; the default trains one on
    tables only): `noisytail.defaults.choose_defaults`'s ``training``."""
    return _check_detector(detector or DEFAULT_DETECTOR, detector_args).trains_network


def detector_fold_share(detector: str | None, detector_args: dict[str, Any] | None) -> float:
    """The share of the checked data one of the detector's networks trains on
    (`Detector.fold_share`): `noisytail.defaults.choose_defaults`'s ``fold_share``."""
    return _check_detector(detector or DEFAULT_DETECTOR, detector_args).fold_share()


def _check_detector(detector: str, detector_args: dict[str, Any] | None) -> Any:
    DETECTORS.get(detector)  # unknown name: RegistryError with suggestions
    return DETECTORS.build(detector, args=detector_args or {})


def _earlier_detection(out: Path) -> bool:
    """Whether ``out/detection.json`` is one that `detect_label_issues` wrote."""
    try:
        info = json.loads((out / ex.JSON_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and {"detector", "n", "n_flagged", "files"} <= set(info)


def _precheck(out: Path, cfg: Config, overwrite: bool, clean_csv: Any, from_run: bool) -> None:
    """Refuse bad output settings before any data are loaded or models trained. Files of the
    names detect writes are replaced only with ``overwrite``, and only when they belong to an
    earlier detection (never a user's own file of the same name)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder.")
    names = (ex.ISSUES_FILE, ex.PICTURE_FILE, ex.JSON_FILE)
    present = [name for name in names if (out / name).exists()]
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
                "--clean writes a cleaned copy of a CSV manifest (data.options.train_csv); for "
                "other data, label_issues.csv lists the flagged samples."
            )
        if from_run:
            raise ConfigError(
                "clean_csv needs every row of the CSV scored, but a run's pool leaves its test "
                "and validation rows out: run detect on the CSV itself (without --from-run)."
            )
        if clean_csv is not True and Path(clean_csv).exists():
            raise ConfigError(
                f"{clean_csv} already exists: the cleaned manifest is written to a new file only."
            )


def whole_data_config(cfg: Config, keep_val: bool = False) -> Config:
    """``cfg`` set to score every sample (module docstring): no validation split (unless
    ``keep_val``) and, for `USER_SOURCES`, no test split carved out of the data and no
    long-tailed subsampling."""
    changes: dict[str, Any] = {}
    if not keep_val and cfg.data.val_fraction > 0:
        changes["val_fraction"] = 0.0
    section: dict[str, Any] = {}
    if cfg.data.name in USER_SOURCES:
        changes["options"] = {**dict(cfg.data.options), "test_fraction": 0}
        if cfg.imbalance.ratio > 1 or cfg.imbalance.n_max is not None:
            _log.warning(
                f"imbalance (ratio {cfg.imbalance.ratio:g}) is not applied: detect checks every "
                "sample of your data."
            )
            section["imbalance"] = {"ratio": 1.0, "n_max": None}
    if changes:
        section["data"] = changes
    return from_dict(section, cfg) if section else cfg


def _run_loader(run_dir: Path, cfg: Config, prepared: PreparedData, rt: Any, checkpoint: str):
    def load() -> Run:
        return Run.from_folder(run_dir, checkpoint, cfg=cfg, runtime=rt, prepared=prepared)

    return load


def _csv_rows(cfg: Config, prepared: PreparedData, from_run: bool) -> np.ndarray | None:
    """Each pool sample's 0-based data row in the training CSV ``[N]``, or None when the
    source is not a CSV or a run's split hides the rows. With the whole CSV in the training
    split (`whole_data_config`), a sample's id in that split is its row, unless checked rows
    (``meta.source=file``) left it: then the source's ``train_rows`` maps ids to rows."""
    if cfg.data.name != "csv" or from_run:
        return None
    ids = prepared.train_source_idx[prepared.train_idx]
    rows = prepared.bundle.train_rows
    return ids if rows is None else rows[ids]


def detect_label_issues(
    cfg: Config | None,
    out_dir: str | os.PathLike,
    *,
    detector: str | None = None,
    detector_args: dict[str, Any] | None = None,
    from_run: str | os.PathLike | None = None,
    checkpoint: str = "last",
    clean_csv: str | os.PathLike | bool | None = None,
    n_suspects: int = 24,
    keep_val: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> DetectionResult:
    """Score every sample (module docstring) with ``detector`` and write the files.

    ``cfg`` describes the data, model and training; with ``from_run`` (a run folder written by
    ``fit``) the run's own config and ``checkpoint`` are used instead and ``cfg`` must be None
    (``confident_learning`` then trains its fold models with that config; ``loss_trajectory``
    needs training and refuses ``from_run``). ``detector_args`` are checked against the
    detector's signature. ``clean_csv``: True writes ``<manifest stem>.cleaned.csv`` into
    ``out_dir``, a path writes there (never over an existing file); only for ``data.name=csv``.
    ``detector`` None: `DEFAULT_DETECTOR`, or `RUN_DETECTOR` with ``from_run``.
    """
    out = Path(out_dir)
    if detector is None:
        detector = RUN_DETECTOR if from_run is not None else DEFAULT_DETECTOR
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
        _precheck(out, cfg, overwrite, clean_csv, from_run=True)
        prepared = prepare_data(cfg)
        prepared.check_against(run_dir)
        check_outside_data(out, prepared.bundle, extra_files=[cfg.data.label_file])
        rt = setup_runtime(cfg)
        loader = _run_loader(run_dir, cfg, prepared, rt, checkpoint)
    else:
        if cfg is None:
            raise ConfigError("detect_label_issues needs a config or from_run.")
        cfg = whole_data_config(cfg, keep_val)
        validate(cfg)
        _precheck(out, cfg, overwrite, clean_csv, from_run=False)
        prepared = prepare_data(cfg)
        check_outside_data(out, prepared.bundle, extra_files=[cfg.data.label_file])
        if clean_csv not in (None, False, True):  # a named file: never among the data either
            folders, files = data_locations(prepared.bundle, [cfg.data.label_file])
            check_outside_inputs(clean_csv, [*folders, *files], option="--clean-csv")
        rt = setup_runtime(cfg)
    out.mkdir(parents=True, exist_ok=True)
    task = DetectionTask(cfg, prepared, rt, out, progress=progress, loader=loader)
    output = det.detect(task)
    n = len(task.labels)
    if len(output.suspicion) != n:
        raise ValueError(f"detector {detector!r} scored {len(output.suspicion)} of {n} samples.")

    corr = prepared.corruption
    order = ranking(output.suspicion, output.tiebreak)
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
    rows = _csv_rows(cfg, prepared, from_run is not None)
    result.files["issues"] = ex.write_issues_csv(
        out / ex.ISSUES_FILE, prepared, output, order, rows
    )
    if prepared.bundle.is_image and n_suspects > 0:
        result.files["picture"] = ex.write_suspects_png(
            out / ex.PICTURE_FILE, prepared, output, order, n_suspects
        )
    if clean_csv not in (None, False):
        assert rows is not None  # _precheck: a CSV source, not from a run
        manifest = Path(prepared.bundle.data_files[0])
        dest = ex.clean_target(manifest, out, clean_csv)
        result.cleaned = ex.write_clean_manifest(
            manifest,
            rows[output.flagged],
            dest,
            path_column=cfg.data.options.get("path_column", PATH_COLUMN),
            root=Path(prepared.bundle.root),  # where the CSV source took relative paths from
        )
        result.cleaned["not_checked"] = result.cleaned["rows"] - n
        result.files["cleaned_csv"] = dest
    info = {
        "detector": detector,
        "description": type(det).description,
        "args": det.args(),
        "details": output.info,
        "data": cfg.data.name,
        "from_run": str(from_run) if from_run is not None else None,
        "whole_data": from_run is None and cfg.data.name in USER_SOURCES,
        "n": n,
        "n_flagged": result.n_flagged,
        "truth_known": truth_known(cfg),
        "metrics": result_metrics,
        "per_class": per_class,
        "cleaned": result.cleaned,
        "files": {k: str(v) for k, v in result.files.items()},
    }
    result.files["json"] = ex.write_detection_json(info, out / ex.JSON_FILE)
    return result
