"""Classifying files with a run's model (``noisytail predict``): image files, folders of them and
CSVs of paths (`image_paths`), or a CSV of feature rows (`read_feature_csv`), into a predictions
table (`predictions_table`, `predict_files`) written outside the user's data; and exporting a
run's model (`export_run`), likewise never among its data.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data.arrays import as_model_inputs
from .data.csv_table import read_csv_rows
from .data.locations import check_outside_inputs, run_data_locations
from .data.types import DataError
from .errors import short_error
from .inference import TrainedModel
from .runfolder import read_run_config, write_bytes

log = logging.getLogger(__name__)


def image_paths(source: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files named by ``source``: files, folders (searched recursively, sorted) or
    one CSV whose ``path`` column (else first column) lists them, relative to the CSV's folder."""
    from .data.image_folder import list_images

    out: list[Path] = []
    for item in source:
        p = Path(item)
        if p.is_dir():  # as training lists a folder: no hidden files, no noisytail output
            out += list_images(p)
        elif p.suffix.lower() == ".csv":
            out += _csv_paths(p)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder.")
    if not out:
        raise DataError(f"no images found in {', '.join(map(str, source))}.")
    return out


def _csv_paths(path: Path) -> list[Path]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read ({short_error(err)}).") from None
    if not rows:
        raise DataError(f"{path}: is empty: expected a 'path' column of image files.")
    header = [h.strip().lower() for h in rows[0]]
    column = header.index("path") if "path" in header else 0
    body = rows[1:] if "path" in header else rows
    return [
        (path.parent / r[column].strip())
        if not Path(r[column].strip()).is_absolute()
        else Path(r[column].strip())
        for r in body
        if r and r[column].strip()
    ]


def read_feature_csv(
    path: str | os.PathLike, feature_names: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """A CSV of numeric features as row ids (0-based data-row numbers, header not counted, as
    `pandas.read_csv` and detect's ``row`` number them; blank lines are not rows, as in
    training) and float32 ``[N, D]``. With ``feature_names`` (a model trained on a feature CSV)
    the columns are taken by name, in that order, and any other column (a label,
    an id) is ignored; a missing one raises `DataError`. Without, every column but ``label``,
    ``path`` and ``id`` is a feature, in file order. A non-numeric cell raises `DataError`
    naming its line."""
    p = Path(path)
    header, rows = read_csv_rows(p)
    if feature_names is not None:
        missing = [name for name in feature_names if name not in header]
        if missing:
            raise DataError(
                f"{p} has no column {missing[0]!r}: the model was trained on the columns "
                f"{', '.join(feature_names)} (found: {', '.join(header)})."
            )
        keep = [header.index(name) for name in feature_names]
    else:
        keep = [i for i, h in enumerate(header) if h.lower() not in ("label", "path", "id")]
    values = []
    for line, row in rows:
        try:
            values.append([float(row[i]) for i in keep])
        except ValueError:
            raise DataError(f"{p} line {line}: expected {len(keep)} numbers.") from None
    x = as_model_inputs(np.asarray(values, dtype=np.float64), what=str(p))
    return [str(i) for i in range(len(values))], x


def predictions_table(
    probs: np.ndarray, class_names: Sequence[str], ids: Sequence[str], top_k: int
) -> list[dict[str, Any]]:
    """One row per input: ``input``, ``class`` (the most probable), ``probability`` and the
    ``top_k`` classes with their probabilities (``class_2``, ``probability_2``, ...)."""
    k = max(1, min(int(top_k), probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    rows = []
    for i, input_id in enumerate(ids):
        row: dict[str, Any] = {"input": input_id}
        for rank, c in enumerate(order[i], start=1):
            suffix = "" if rank == 1 else f"_{rank}"
            row[f"class{suffix}"] = class_names[c]
            row[f"probability{suffix}"] = f"{probs[i, c]:.6f}"
        rows.append(row)
    return rows


def _check_predictions_target(out: Path, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse (`DataError`) to write predictions among the ``inputs`` (and the run's data:
    `noisytail.data.locations.check_outside_inputs`) or over a file that is not an earlier
    predictions table (its header starts ``input,class,probability``)."""
    check_outside_inputs(out, inputs)
    if not out.exists():
        return
    try:
        with open(out, encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
    except OSError as err:
        raise DataError(f"--out {out}: cannot be read ({short_error(err)}).") from None
    if not first.startswith("input,class,probability"):
        raise DataError(
            f"--out {out} exists and is not a predictions table: it is left as it is; choose "
            "another --out."
        )


def predict_files(
    run_dir: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    *,
    top_k: int = 3,
    checkpoint: str = "last",
) -> Path:
    """Classify image files (or the rows of a feature CSV, for a tabular model) with a run's
    model and write ``out_csv`` (`predictions_table`); returns its path. An existing
    ``out_csv`` is replaced only if it is an earlier predictions table, never an input."""
    data = run_data_locations(read_run_config(run_dir))  # the run's own data is the user's too
    _check_predictions_target(Path(out_csv), [*inputs, *data])
    trained = TrainedModel.from_run(run_dir, checkpoint)
    if trained.is_image:
        paths = image_paths(inputs)
        ids = [str(p) for p in paths]
        x = trained.read_images(paths)
    else:
        if len(inputs) != 1 or Path(inputs[0]).suffix.lower() != ".csv":
            raise DataError(
                "this run's model takes feature vectors: give one CSV of feature columns."
            )
        ids, x = read_feature_csv(inputs[0], trained.feature_names)
    probs = trained.predict_proba(x)
    rows = predictions_table(probs, trained.class_names, ids, top_k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    out = Path(out_csv)
    write_bytes(buf.getvalue().encode("utf-8", "surrogateescape"), out)  # file names as they are
    log.debug("%d predictions written to %s", len(rows), out)
    return out


def export_run(
    run_dir: str | os.PathLike, fmt: str, out: str | os.PathLike, *, checkpoint: str = "last"
) -> Path:
    """Write a run's model as ``fmt`` (`TrainedModel.export`) to ``out``, never among the run's
    data (`noisytail.data.locations.check_outside_inputs`); returns ``out``."""
    check_outside_inputs(out, run_data_locations(read_run_config(run_dir)))
    return TrainedModel.from_run(run_dir, checkpoint).export(fmt, out)
