"""Where a data set's files live, so that no output lands among them.

A data source declares what it reads on its `DatasetBundle`:

- ``data_folders``: folders whose whole tree is data (an image folder's root, the folders that
  hold listed images). No output folder may lie inside one: the next scan would take it as data
  (a ``runs`` class), and a file written there could replace a data file.
- ``data_files``: single files (a CSV manifest, list files). No output folder may be the folder
  that holds one, where an output named like it would replace it; a sibling folder is fine
  (``project/runs`` beside ``project/data.csv``).

A source that declares neither is taken to own its ``root`` as a data folder. `check_outside_data`
is the one check; `train`, `pretrain` and `detect` call it before they write anything.

`is_output_folder` recognises what noisytail writes (run, detection and bench folders, and a
folder of those such as ``runs/``), so that a source scanning for classes can skip it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from noisytail.data.types import DataError, DatasetBundle

#: Files that, together, mark a folder as noisytail's output: a run, a detection, a bench.
OUTPUT_MARKERS: tuple[frozenset[str], ...] = (
    frozenset({"config.yaml", "metrics.jsonl"}),
    frozenset({"config.yaml", "corruption.npz"}),
    frozenset({"config.yaml", "summary.json"}),
    frozenset({"detection.json", "label_issues.csv"}),
    frozenset({"results.jsonl"}),
    frozenset({".bench.lock"}),
)


#: File endings read as images (by `image_folder`, and here to find the folders that hold images).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def _scan(folder: Path) -> tuple[set[str], list[Path], bool]:
    """The names in ``folder``, its non-hidden sub-folders, and whether it holds an image file
    (one directory listing, no stat per file)."""
    names: set[str] = set()
    children: list[Path] = []
    has_image = False
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                names.add(entry.name)
                if entry.is_dir():
                    if not entry.name.startswith("."):
                        children.append(Path(entry.path))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                    has_image = True
    except OSError:
        pass
    return names, children, has_image


def _marked(names: set[str]) -> bool:
    return any(marker <= names for marker in OUTPUT_MARKERS)


def is_output_folder(folder: Path) -> bool:
    """Whether ``folder`` is a noisytail run, detection or bench folder, or a folder of them
    (e.g. ``runs/``: every non-hidden sub-folder is one, and no image file lies beside them)."""
    names, children, has_image = _scan(folder)
    if _marked(names):
        return True
    if has_image or not children:
        return False
    return all(_marked(_scan(child)[0]) for child in children)


def holds_class_folders(root: str | os.PathLike[str] | None) -> bool:
    """Whether ``root`` (or its ``train/``) holds at least two visible sub-folders with image
    files directly in them: a user's image folder, named by nothing but its path."""
    if not root or not os.path.isdir(root):
        return False
    base = Path(root) / "train" if os.path.isdir(Path(root) / "train") else Path(root)
    with_images = (child for child in _scan(base)[1] if _scan(child)[2])  # lazily: stop at 2
    return next(with_images, None) is not None and next(with_images, None) is not None


def image_parents(paths: Iterable[str] | None) -> tuple[str, ...]:
    """The distinct folders that directly hold the files ``paths`` (sorted)."""
    return tuple(sorted({os.path.dirname(os.path.abspath(p)) for p in paths or ()}))


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def run_data_locations(cfg: Any) -> list[str]:
    """The existing data paths a run's config ``cfg`` names, for `check_outside_inputs`:
    ``data.root``, ``data.label_file``, ``meta.file`` and every ``data.options`` string that
    names an existing file or folder (as given, or inside ``data.root``: a manifest, a list)."""
    root = cfg.data.root
    named = [root, cfg.data.label_file, cfg.meta.file]
    named += [v for v in cfg.data.options.values() if isinstance(v, str) and v.strip()]
    found: list[str] = []
    for item in named:
        if not item:
            continue
        candidates = [os.path.expanduser(item)]
        if root and not os.path.isabs(candidates[0]):
            candidates.append(os.path.join(os.path.expanduser(root), item))
        found += [c for c in candidates if os.path.exists(c) and c not in found]
    return found


def check_outside_inputs(
    out: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    *,
    option: str = "--out",
) -> None:
    """Raise `DataError` if the output file ``out`` (given as ``option``) would go inside one of
    the folders in ``inputs`` (images to classify, a run's data: `run_data_locations`) or beside
    one of its files: a file written among the data it describes is a file in the user's data."""
    target = _real(out).parent
    for item in inputs:
        if not os.path.exists(item):
            continue
        folder = _real(item) if os.path.isdir(item) else _real(item).parent
        if target == folder or (os.path.isdir(item) and _within(target, folder)):
            raise DataError(
                f"{option} {out} lies in {folder}, among your data: write it elsewhere "
                "(noisytail never writes into your data; by default it goes into the run or "
                "detection folder)."
            )


def data_locations(
    bundle: DatasetBundle, extra_files: Sequence[str | os.PathLike[str] | None] = ()
) -> tuple[list[str], list[str]]:
    """``bundle``'s data folders (its ``root`` when it declares neither folders nor files) and
    its data files plus the given ``extra_files`` (e.g. a label file)."""
    folders = [os.fspath(f) for f in bundle.data_folders]
    if not folders and not bundle.data_files and bundle.root:
        folders = [os.fspath(bundle.root)]
    files = [os.fspath(f) for f in (*bundle.data_files, *extra_files) if f]
    return folders, files


def check_outside_data(
    out: str | os.PathLike[str],
    bundle: DatasetBundle,
    *,
    extra_files: Sequence[str | os.PathLike[str] | None] = (),
) -> None:
    """Raise `DataError` if the output folder ``out`` lies inside a data folder of ``bundle``,
    or is the folder of one of its data files or of ``extra_files`` (e.g. a label file)."""
    target = _real(out)
    folders, files = data_locations(bundle, extra_files)
    for folder in folders:
        if _within(target, _real(folder)):
            raise DataError(
                f"The output folder {out} lies inside the data folder {folder}: choose an --out "
                "outside the data (noisytail never writes into your data)."
            )
    for file in files:
        if target == _real(file).parent:
            raise DataError(
                f"The output folder {out} is the folder of the data file {file}: choose an --out "
                "elsewhere, e.g. a new sub-folder (noisytail never writes over your data)."
            )
