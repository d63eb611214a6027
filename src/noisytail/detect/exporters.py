"""What ``noisytail detect`` writes: the output files, each from a finished verdict.

- ``label_issues.csv`` (`write_issues_csv`): one row per scored sample, most suspect first, with
  columns `CSV_COLUMNS`: ``sample_id`` (index in the source's training split), ``row`` (for a
  CSV source: the sample's **0-based** data row in the training CSV, the header not counted and
  blank lines skipped, as ``pandas.read_csv`` numbers rows; empty for other sources), ``path``
  (the file, empty where samples are not files), ``given_label``, ``suggested_label`` (class
  names), ``score`` (suspicion: higher = more likely wrong) and ``flagged`` (0/1);
- ``suspects.png`` (`write_suspects_png`): the most suspect images, titled "given -> suggested";
- ``<manifest>.cleaned.csv`` (`write_clean_manifest`): the user's CSV without the flagged rows;
- ``detection.json`` (`write_detection_json`).

Every writer takes the verdict in pool order plus the ranking; none trains or scores.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError
from ..data.csv_table import read_csv_rows
from ..data.prepare import PreparedData
from ..runfolder import write_json, write_text
from .base import DetectorOutput

CSV_COLUMNS = ("sample_id", "row", "path", "given_label", "suggested_label", "score", "flagged")
ISSUES_FILE = "label_issues.csv"
PICTURE_FILE = "suspects.png"
JSON_FILE = "detection.json"


def json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def write_detection_json(info: dict[str, Any], path: Path) -> Path:
    write_json(info, path, default=json_default)
    return path


def write_issues_csv(
    path: Path,
    prepared: PreparedData,
    output: DetectorOutput,
    order: np.ndarray,
    rows: np.ndarray | None = None,
) -> Path:
    """``label_issues.csv`` (columns `CSV_COLUMNS`), one line per pool position in ``order``;
    ``rows [N]`` (pool order): each sample's data row in the user's CSV, or None."""
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
                int(rows[pos]) if rows is not None else "",
                paths[j] if paths is not None else "",
                names[labels[pos]],
                names[output.suggested[pos]],
                f"{output.suspicion[pos]:.9g}",
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

    from ..figures import save_figure

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
        save_figure(fig, path, dpi=110)
    return path


def clean_target(manifest: Path, out_dir: Path, target: str | os.PathLike | bool) -> Path:
    """Where the cleaned copy goes: ``out_dir/<stem>.cleaned.csv`` for True, else ``target``;
    `ConfigError` if that file exists (or is the manifest itself)."""
    dest = out_dir / f"{manifest.stem}.cleaned.csv" if target is True else Path(target)
    if dest.exists() or dest.resolve() == manifest.resolve():
        raise ConfigError(
            f"{dest} already exists: the cleaned manifest is written to a new file only."
        )
    return dest


def write_clean_manifest(
    manifest: Path,
    drop_rows: np.ndarray,
    dest: Path,
    *,
    path_column: str | None = None,
    root: Path | None = None,
) -> dict[str, int | str]:
    """A copy of the CSV ``manifest`` without its data rows ``drop_rows`` (0-based, as in
    ``label_issues.csv``'s ``row``), written to the new file ``dest`` (never overwritten; the
    manifest is only read). Blank lines are dropped as the CSV source skips them. A relative
    image path in ``path_column`` (taken from ``root``, as the CSV source read it) is written
    absolute, so the copy trains from its new folder. Returns the accounting: ``rows`` in the
    manifest, ``dropped``, ``kept`` and the ``file`` written."""
    header, data = read_csv_rows(manifest)
    col = header.index(path_column) if path_column in header and root is not None else None
    drop = set(np.asarray(drop_rows, dtype=np.int64).tolist())
    if drop and not drop <= set(range(len(data))):
        raise ValueError(f"rows to drop lie outside the {len(data)} data rows of {manifest}.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "x", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i, (_, row) in enumerate(data):
            if i in drop:
                continue
            if col is not None and row[col] and not os.path.isabs(row[col]):
                row = [*row[:col], os.path.abspath(Path(root) / row[col]), *row[col + 1 :]]
            w.writerow(row)
    return {
        "file": str(dest),
        "rows": len(data),
        "dropped": len(drop),
        "kept": len(data) - len(drop),
    }
