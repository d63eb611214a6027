"""Hostile and careless input through the CLI (issue 12): one table, one row per input.

Every row runs ``noisytail <args>`` (click's CliRunner, in-process) and checks:

- the exit code (2 = bad input; 0 where the input is accepted, possibly reinterpreted);
- stderr is exactly one line, matching ``stderr`` (an ``error: ...`` line, or for an accepted
  input the ``note: ...`` line that says how it was reinterpreted), and no exception escaped
  (no traceback);
- the input files are unchanged: every file under the row's input folder ``{in}`` is hashed
  before and after, and none may appear, disappear or change.

To add a row, append a `Case` to `CASES`: ``args`` may use ``{in}`` (the input folder, filled by
``setup(in_dir)``) and ``{out}`` (a fresh folder for outputs, outside ``{in}``). ``cwd`` runs the
command in a folder (``{in}/...``); ``hold`` is a context manager factory ``hold(in_dir)`` held
around the command (e.g. a lock another process would hold). Keep rows fast: the tiny data of
`FAST` trains in a second or two.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from noisytail.cli import main

#: A run that takes a second or two on a CPU.
FAST = [
    "--set", "data.name=digits",
    "--set", "data.train_subset=200",
    "--set", "data.test_subset=100",
    "--set", "train.epochs=1",
    "--set", "train.batch_size=64",
    "--set", "model.options.width=8",
    "--set", "train.device=cpu",
    "--set", "train.progress=false",
]  # fmt: skip
#: The same for a feature CSV at {in}/data/table.csv.
FAST_CSV = [
    "--set", "data.name=csv",
    "--set", "data.options.train_csv={in}/data/table.csv",
    "--set", "model.name=mlp",
    "--set", "model.options.hidden=[8]",
    "--set", "data.augment=none",
    "--set", "train.epochs=1",
    "--set", "train.batch_size=16",
    "--set", "train.device=cpu",
    "--set", "train.progress=false",
]  # fmt: skip
#: An image folder at {in}/photos (3 classes of 8 small images).
PHOTOS = [
    "--set", "data.name=image_folder",
    "--set", "data.root={in}/photos",
    "--set", "data.options.image_size=16",
    "--set", "model.options.width=8",
    "--set", "train.epochs=1",
    "--set", "train.batch_size=8",
    "--set", "train.device=cpu",
    "--set", "train.progress=false",
]  # fmt: skip


@dataclass
class Case:
    name: str
    args: list[str]
    stderr: str  # regex the single stderr line must match
    code: int = 2
    setup: Callable[[Path], Any] | None = None
    cwd: str | None = None
    hold: Callable[[Path], Any] | None = None


# --------------------------------------------------------------------------------------------
# Inputs


def text(relative: str, content: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)

    return make


def table(labels: list[str], name: str = "data/table.csv") -> Callable[[Path], None]:
    """A feature CSV (two numeric columns) with the given label column."""
    rng = np.random.default_rng(0)
    rows = ["f1,f2,label"] + [f"{rng.normal():.3f},{rng.normal():.3f},{label}" for label in labels]
    return text(name, "\n".join(rows) + "\n")


def photos(root: Path) -> None:
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(220, 30, 30), (30, 220, 30), (30, 30, 220)]):
        for i in range(8):
            pixels = np.clip(rng.normal(colour, 20, size=(12, 12, 3)), 0, 255).astype(np.uint8)
            path = root / "photos" / f"class_{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)


def cut_jpeg(root: Path) -> None:
    """photos/class_2/cut.jpg: a JPEG whose second half is missing (its header reads fine)."""
    path = root / "photos" / "class_2" / "cut.jpg"
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def one_class(root: Path) -> None:
    """photos/ with a single class folder."""
    photos(root)
    for c in ("class_1", "class_2"):
        for p in (root / "photos" / c).iterdir():
            p.unlink()
        (root / "photos" / c).rmdir()


def photo_manifest(root: Path) -> None:
    """photos/ plus lists/train.csv naming them (paths relative to photos/)."""
    photos(root)
    rows = [
        f"{p.relative_to(root / 'photos')},{p.parent.name}"
        for p in sorted((root / "photos").rglob("*.png"))
    ]
    text("lists/train.csv", "path,label\n" + "\n".join(rows) + "\n")(root)


def photo_list(root: Path) -> None:
    """photos/ plus lists/train.txt ('path label' lines)."""
    photos(root)
    lines = [
        f"{p.relative_to(root / 'photos')} {p.parent.name[-1]}"
        for p in sorted((root / "photos").rglob("*.png"))
    ]
    text("lists/train.txt", "\n".join(lines) + "\n")(root)


def both(*makers: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        for m in makers:
            m(root)

    return make


# -- run folders (items 1, 2, 5, 8, 10): made by the library in setup, then spoilt

#: FAST for two epochs: a run stopped after epoch 1 can be resumed.
RESUMABLE = [*FAST, "--set", "train.epochs=2"]


class Malicious:
    """A pickle whose loading creates ``marker`` (inside {in}, so the hash check sees it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        import builtins

        return (builtins.open, (self.marker, "w"))


def malicious(relative: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        import torch

        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": Malicious(root / "ran"), "method": Malicious(root / "ran")}, path)

    return make


def tensor_file(relative: str, how: str = "bare") -> Callable[[Path], None]:
    """A bare tensor, an empty file or a checkpoint cut in half at ``{in}/relative``."""

    def make(root: Path) -> None:
        import torch

        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if how == "bare":
            torch.save(torch.ones(3), path)
        elif how == "empty":
            path.write_bytes(b"")
        else:
            torch.save({"model": {"w": torch.randn(64, 64)}}, path)
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return make


def run_folder(
    *spoil: Callable[[Path], None], overrides: list[str] = RESUMABLE
) -> Callable[[Path], None]:
    """``{in}/run``: the ``--set`` values of ``overrides`` trained for one epoch (resumable), then
    each ``spoil(in_dir)``."""

    def make(root: Path) -> None:
        from noisytail.config import load_config
        from noisytail.train import fit

        values = [a.replace("{in}", str(root)) for a in overrides[1::2]]
        fit(load_config(None, values), root / "run", write_report=False, stop_after_epochs=1)
        for s in spoil:
            s(root)

    return make


def drop_key(key: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        import torch

        from noisytail.runfolder import read_checkpoint

        path = root / "run" / "checkpoints" / "last.pt"
        state = read_checkpoint(path)
        del state[key]
        torch.save(state, path)

    return make


def remove(relative: str) -> Callable[[Path], None]:
    return lambda root: (root / relative).unlink()


def relabel(relative: str, row: int) -> Callable[[Path], None]:
    """Flip the 0/1 label of data row ``row`` (1-based, after the header) of a CSV."""

    def make(root: Path) -> None:
        path = root / relative
        lines = path.read_text().splitlines()
        features, label = lines[row].rsplit(",", 1)
        lines[row] = f"{features},{1 - int(label)}"
        path.write_text("\n".join(lines) + "\n")

    return make


def narrow_weights(root: Path) -> None:
    """Cut every weight of the run's last.pt to one column: a checkpoint of another model."""
    import torch

    from noisytail.runfolder import read_checkpoint

    path = root / "run" / "checkpoints" / "last.pt"
    state = read_checkpoint(path)
    state["method"] = {k: v[..., :1] if v.dim() else v for k, v in state["method"].items()}
    torch.save(state, path)


EVEN = [str(i % 2) for i in range(40)]
GRID = "set: [data.name=digits, train.epochs=1]\nseeds: [0]\ngrid:\n  train.lr: [0.1]\n"


def bench_lock(root: Path) -> Any:
    from noisytail.bench_lock import folder_lock

    (root / "bench").mkdir(exist_ok=True)
    return folder_lock(root / "bench", echo=lambda *_: None)


# --------------------------------------------------------------------------------------------
# The table

CASES = [
    # item 3: the bench harness
    Case("bench: grid file missing", ["bench", "{in}/none.yaml"], "Grid file .* not found"),
    Case(
        "bench: empty grid file",
        ["bench", "{in}/grid.yaml", "--out", "{out}/b"],
        "Grid file .*grid.yaml is empty",
        setup=text("grid.yaml", "# nothing yet\n"),
    ),
    Case(
        "bench: repeated key in the grid",
        ["bench", "{in}/grid.yaml", "--out", "{out}/b"],
        "line 3: key 'seeds' is given twice",
        setup=text("grid.yaml", "set: [data.name=digits]\nseeds: [0]\nseeds: [1]\n"),
    ),
    Case(
        "bench: unknown grid key",
        ["bench", "{in}/grid.yaml", "--out", "{out}/b"],
        "Unknown grid keys",
        setup=text("grid.yaml", "grids:\n  train.lr: [0.1]\n"),
    ),
    Case(
        "bench: NaN learning rate in the grid",
        ["bench", "{in}/grid.yaml", "--out", "{out}/b"],
        "train.lr must be a (finite )?number",
        setup=text("grid.yaml", "grid:\n  train.lr: [0.1, .nan]\n"),
    ),
    Case(
        "bench: --seeds names a seed the grid does not have",
        ["bench", "{in}/grid.yaml", "--out", "{out}/b", "--seeds", "0", "--seeds", "7"],
        r"seeds \[7\] are not in the grid's seeds \[0\]",
        setup=text("grid.yaml", GRID),
    ),
    Case(
        "bench: --threads 0",
        ["bench", "{in}/grid.yaml", "--out", "{out}/b", "--threads", "0"],
        "jobs and threads must be at least 1",
        setup=text("grid.yaml", GRID),
    ),
    Case(
        "bench: folder held by another bench",
        ["bench", "{in}/grid.yaml", "--out", "{in}/bench"],
        rf"in use by another noisytail bench \(pid {os.getpid()} on ",
        setup=text("grid.yaml", GRID),
        hold=bench_lock,
    ),
    # item 4: detect never writes among the data
    Case(
        "detect: --out is the folder of a CSV manifest named label_issues.csv",
        ["detect", *FAST_CSV, "--set", "data.options.train_csv={in}/data/label_issues.csv"]
        + ["-d", "knn", "--arg", "space=input", "--out", "{in}/data", "--overwrite"],
        "is the folder of the data file .*label_issues.csv|no detection.json of an earlier",
        setup=table(EVEN, "data/label_issues.csv"),
    ),
    Case(
        "detect: --out is the CSV's folder",
        ["detect", *FAST_CSV, "-d", "knn", "--arg", "space=input", "--out", "{in}/data"],
        "is the folder of the data file .*table.csv",
        setup=table(EVEN),
    ),
    Case(
        "detect: --out inside an image folder",
        [
            "detect",
            *PHOTOS,
            "-d",
            "knn",
            "--arg",
            "space=input",
            "--out",
            "{in}/photos/class_0/issues",
        ],
        "lies inside the data folder .*photos",
        setup=photos,
    ),
    Case(
        "detect: --out inside the images of a CSV manifest",
        ["detect", *PHOTOS, "--set", "data.name=csv", "--set"]
        + ["data.options.train_csv={in}/lists/train.csv", "-d", "knn", "--arg", "space=input"]
        + ["--out", "{in}/photos/class_1/x"],
        "lies inside the data folder .*class_1",
        setup=photo_manifest,
    ),
    Case(
        "detect: --out is the folder of a list file",
        ["detect", *PHOTOS, "--set", "data.name=list_file", "--set"]
        + ["data.options.train_list={in}/lists/train.txt", "-d", "knn", "--arg", "space=input"]
        + ["--out", "{in}/lists"],
        "is the folder of the data file .*train.txt",
        setup=photo_list,
    ),
    Case(
        "detect: --out is the folder of the label file",
        ["detect", *FAST_CSV, "--set", "data.label_file={in}/labels/noisy.csv"]
        + ["-d", "knn", "--arg", "space=input", "--out", "{in}/labels"],
        "is the folder of the data file .*noisy.csv",
        setup=both(table(EVEN), text("labels/noisy.csv", "label\n" + "1\n" * 40)),
    ),
    Case(
        "detect: --overwrite over a user's own detection.json",
        ["detect", *FAST, "-d", "knn", "--arg", "space=input", "--out", "{in}/mine", "--overwrite"],
        "holds detection.json but no detection.json of an earlier noisytail detection",
        setup=text("mine/detection.json", '{"my": "notes"}\n'),
    ),
    Case(
        "detect: a user's label_issues.csv in --out",
        ["detect", *FAST, "-d", "knn", "--arg", "space=input", "--out", "{in}/mine"],
        "label_issues.csv already exists",
        setup=text("mine/label_issues.csv", "id,comment\n1,keep me\n"),
    ),
    Case(
        "detect: --clean-csv over an existing file",
        ["detect", *FAST_CSV, "-d", "knn", "--arg", "space=input", "--out", "{out}/d"]
        + ["--clean-csv", "{in}/data/table.csv"],
        "already exists: the cleaned manifest is written to a new file only",
        setup=table(EVEN),
    ),
    Case(
        "train: a CSV separated by semicolons",
        ["train", *FAST_CSV, "--out", "{out}/r"],
        r"table.csv is separated by ';', not commas .*'f1;f2;label'",
        setup=text("data/table.csv", "f1;f2;label\n" + "0.5;1.5;a\n0.1;0.2;b\n" * 10),
    ),
    Case(
        "train: a manifest whose image column is not called path",
        ["train", *PHOTOS, "--set", "data.name=csv", "--set"]
        + ["data.options.train_csv={in}/lists/named.csv", "--out", "{out}/r"],
        r"column 'filename' holds file names \('class_0/0.png'\), not numbers: name it 'path' "
        "or set data.options.path_column=filename",
        setup=both(
            photos,
            text("lists/named.csv", "filename,label\nclass_0/0.png,a\nclass_1/0.png,b\n"),
        ),
    ),
    Case(
        "detect: --clean-csv beside the CSV manifest",
        ["detect", *FAST_CSV, "-d", "knn", "--arg", "space=input", "--out", "{out}/d"]
        + ["--clean-csv", "{in}/data/table.cleaned.csv"],
        "--clean-csv .*table.cleaned.csv lies in .*data, among your data",
        setup=table(EVEN),
    ),
    Case(
        "detect: --clean-csv among the images of a manifest",
        ["detect", *PHOTOS, "--set", "data.name=csv", "--set"]
        + ["data.options.train_csv={in}/lists/train.csv", "-d", "knn", "--arg", "space=input"]
        + ["--out", "{out}/d", "--clean-csv", "{in}/photos/class_1/clean.csv"],
        "--clean-csv .*clean.csv lies in .*class_1, among your data",
        setup=photo_manifest,
    ),
    Case(
        "export: --out beside the run's training CSV",
        ["export", "{in}/run", "--out", "{in}/data/model.pt"],
        "--out .*model.pt lies in .*data, among your data",
        setup=both(table(EVEN), run_folder(overrides=FAST_CSV)),
    ),
    Case(
        "predict: --out beside the run's training CSV",
        ["predict", "{in}/run", "--images", "{in}/new/rows.csv", "--out", "{in}/data/p.csv"],
        "--out .*p.csv lies in .*data, among your data",
        setup=both(
            table(EVEN), text("new/rows.csv", "f1,f2\n0,0\n"), run_folder(overrides=FAST_CSV)
        ),
    ),
    # item 6: no run folder inside the data
    Case(
        "train: --out inside the image folder",
        ["train", *PHOTOS, "--out", "{in}/photos/runs/x"],
        "lies inside the data folder .*photos",
        setup=photos,
    ),
    Case(
        "train: the default runs/ inside the image folder (working in the data root)",
        ["train", *PHOTOS, "--set", "data.root=."],
        r"The output folder runs/.* lies inside the data folder \.",
        setup=photos,
        cwd="{in}/photos",
    ),
    Case(
        "pretrain: --out inside the image folder",
        ["pretrain", *PHOTOS, "--out", "{in}/photos/ssl", "--probe-epochs", "1"],
        "lies inside the data folder",
        setup=photos,
    ),
    Case(
        "train: --out is the folder of the feature CSV",
        ["train", *FAST_CSV, "--out", "{in}/data"],
        "is the folder of the data file .*table.csv|exists and is not empty",
        setup=table(EVEN),
    ),
    Case(
        "train: a runs/ folder and a hidden folder beside the classes are skipped, saying so",
        ["train", *PHOTOS, "--out", "{out}/r", "--no-report"],
        r"note: image_folder .*photos: not classes, skipped: \.cache \(hidden\), runs \(noisytail",
        code=0,
        setup=both(
            photos,
            text("photos/runs/old/config.yaml", "seed: 0\n"),
            text("photos/runs/old/metrics.jsonl", "{}\n"),
            text("photos/.cache/notes.txt", "x\n"),
        ),
    ),
    # item 7: every float notation
    Case(
        "train: --set train.lr=1e-3 is a number",
        ["train", *FAST, "--set", "train.lr=1e-3", "--set", "train.weight_decay=1E-4"]
        + ["--set", "train.epochs=0"],
        "train.epochs and train.batch_size must be at least 1",  # lr and wd were accepted
    ),
    Case(
        "train: weight_decay: 1e-4 in YAML is a number",
        ["train", "{in}/c.yaml", *FAST, "--set", "train.epochs=0"],
        "train.epochs and train.batch_size must be at least 1",
        setup=text("c.yaml", "train:\n  lr: 5e-2\n  weight_decay: 1e-4\n"),
    ),
    Case(
        "train: scientific notation where an integer is needed",
        ["train", *FAST, "--set", "train.epochs=1e3"],
        "train.epochs must be an integer, got 1000.0",
    ),
    # item 8: one-line errors, checked before the run folder exists
    Case(
        "train: train.device=tpu",
        ["train", *FAST, "--set", "train.device=tpu", "--out", "{out}/r"],
        "train.device='tpu' is not one of",
    ),  # fmt: skip
    Case(
        "train: train.num_threads=-2",
        ["train", *FAST, "--set", "train.num_threads=-2", "--out", "{out}/r"],
        "train.num_threads must be >= 1",
    ),
    Case(
        "train: train.checkpoint_every=0",
        ["train", *FAST, "--set", "train.checkpoint_every=0", "--out", "{out}/r"],
        "train.checkpoint_every is a number of epochs and must be >= 1",
    ),
    Case(
        "detect: --arg k=abc",
        ["detect", *FAST, "-d", "knn", "--arg", "k=abc", "--out", "{out}/d"],
        "detector 'knn': argument 'k' must be an integer or empty, got 'abc'",
    ),
    Case(
        "detect: --arg k=true",
        ["detect", *FAST, "-d", "knn", "--arg", "k=true", "--out", "{out}/d"],
        "argument 'k' must be an integer",
    ),
    Case(
        "detect: --arg without a value",
        ["detect", *FAST, "-d", "knn", "--arg", "k", "--out", "{out}/d"],
        "must look like key=value",
    ),
    Case(
        "detect: --arg space=3",
        ["detect", *FAST, "-d", "knn", "--arg", "space=3", "--out", "{out}/d"],
        "argument 'space' must be a string",
    ),
    Case(
        "detect: --arg k=0",
        ["detect", *FAST, "-d", "knn", "--arg", "k=0", "--out", "{out}/d"],
        "k must be a positive integer",
    ),
    # item 9: silent acceptance
    Case("train: train.lr=.nan", ["train", *FAST, "--set", "train.lr=.nan"], "finite number"),
    Case("train: train.lr=.inf", ["train", *FAST, "--set", "train.lr=.inf"], "finite number"),
    Case(
        "train: method argument NaN",
        ["train", *FAST, "--set", "method.loss={name: gce, q: .nan}"],
        "argument 'q' must be a finite number, got nan",
    ),
    Case(
        "pretrain: --probe-epochs 0",
        ["pretrain", *FAST, "--probe-epochs", "0", "--out", "{out}/p"],
        "--probe-epochs must be >= 1",
    ),
    Case(
        "pretrain: --probe-epochs -3",
        ["pretrain", *FAST, "--probe-epochs", "-3", "--out", "{out}/p"],
        "--probe-epochs must be >= 1",
    ),
    Case(
        "train: an empty config file",
        ["train", "{in}/c.yaml", *FAST],
        "Config file .*c.yaml is empty",
        setup=text("c.yaml", ""),
    ),
    Case(
        "train: a config file of comments only",
        ["train", "{in}/c.yaml", *FAST],
        "is empty .or only comments.",
        setup=text("c.yaml", "# train:\n#   lr: 0.1\n"),
    ),
    Case(
        "train: a repeated key",
        ["train", "{in}/c.yaml", *FAST],
        "c.yaml line 4: key 'lr' is given twice",
        setup=text("c.yaml", "train:\n  lr: 0.1\n  epochs: 1\n  lr: 0.01\n"),
    ),
    Case(
        "train: a repeated section",
        ["train", "{in}/c.yaml", *FAST],
        "line 3: key 'train' is given twice",
        setup=text("c.yaml", "train:\n  lr: 0.1\ntrain:\n  epochs: 1\n"),
    ),
    Case(
        "train: a stray non-integer in an integer label column",
        ["train", *FAST_CSV, "--out", "{out}/r"],
        r"table.csv line 12: label '1O' is not an integer, unlike 39 of the 40",
        setup=table(EVEN[:10] + ["1O"] + EVEN[11:]),
    ),
    Case(
        "train: integer labels with gaps are renumbered, saying so",
        ["train", *FAST_CSV, "--out", "{out}/r", "--no-report"],
        r"note: CSV .*table.csv: the integer labels \{0, 1, 9\} are not 0..2; they are renumbered",
        code=0,
        setup=table([str(v) for v in [0, 1, 9, 1] * 10]),
    ),
    Case(
        "train: names mixed with a few integers are all names, saying so",
        ["train", *FAST_CSV, "--out", "{out}/r", "--no-report"],
        "note: CSV .*the labels mix names and integers .10 of 40.; all are taken as class names",
        code=0,
        setup=table(["cat", "dog", "cat", "10"] * 10),
    ),
    Case(
        "train: a test label that is no training class",
        ["train", *FAST_CSV, "--set", "data.options.test_csv={in}/data/test.csv"],
        "test.csv line 3: label 'eel' does not occur",
        setup=both(table(["cat", "dog"] * 20), table(["cat", "eel"], "data/test.csv")),
    ),
    # item 11: pretrain with the demo's supervised method
    Case(
        "pretrain: a config naming a supervised method pre-trains with simclr, saying so",
        ["pretrain", "configs/demo.yaml", *FAST, "--out", "{out}/p", "--probe-epochs", "1"]
        + ["--no-progress"],
        "note: .*configs/demo.yaml names the supervised method 'erm'; pre-training uses simclr",
        code=0,
    ),
    Case(
        "pretrain: --set method.name=erm",
        ["pretrain", *FAST, "--set", "method.name=erm", "--out", "{out}/p"],
        "pretrain: method.name must be one of mttv, multiview, simclr",
    ),
    # items 1, 2, 5, 8 and 10: checkpoints and run folders (a refused resume leaves the run as it
    # was: it lies inside {in}, whose hashes are checked; a malicious pickle would create {in}/ran)
    Case(
        "train: model.init is a malicious pickle",
        ["train", *FAST, "--set", "model.init={in}/encoder.pt", "--out", "{out}/r"],
        r"model.init: .*encoder.pt: refused: it holds a Python object",
        setup=malicious("encoder.pt"),
    ),
    Case(
        "train --resume: last.pt is a malicious pickle",
        ["train", *RESUMABLE, "--out", "{in}/run", "--resume"],
        r"last.pt: refused: it holds a Python object",
        setup=run_folder(malicious("run/checkpoints/last.pt")),
    ),
    Case(
        "evaluate: last.pt is a malicious pickle",
        ["evaluate", "{in}/run"],
        r"last.pt: refused: it holds a Python object",
        setup=run_folder(malicious("run/checkpoints/last.pt")),
    ),
    Case(
        "detect --from-run: last.pt is a malicious pickle",
        ["detect", "--from-run", "{in}/run", "--out", "{out}/d", "--no-progress"],
        r"last.pt: refused: it holds a Python object",
        setup=run_folder(malicious("run/checkpoints/last.pt")),
    ),
    Case(
        "train: model.init is a bare tensor",
        ["train", *FAST, "--set", "model.init={in}/weights.pt", "--out", "{out}/r"],
        r"model.init: .*weights.pt: holds a bare tensor",
        setup=tensor_file("weights.pt"),
    ),
    Case(
        "train: model.init is a 0-byte file",
        ["train", *FAST, "--set", "model.init={in}/weights.pt", "--out", "{out}/r"],
        r"weights.pt: is empty \(0 bytes\)",
        setup=tensor_file("weights.pt", "empty"),
    ),
    Case(
        "train: model.init is a truncated checkpoint",
        ["train", *FAST, "--set", "model.init={in}/weights.pt", "--out", "{out}/r"],
        r"weights.pt: cannot be read: it is truncated, damaged or not a PyTorch checkpoint",
        setup=tensor_file("weights.pt", "truncated"),
    ),
    Case(
        "train --resume: last.pt is 0 bytes",
        ["train", *RESUMABLE, "--out", "{in}/run", "--resume"],
        r"last.pt: is empty \(0 bytes\)",
        setup=run_folder(tensor_file("run/checkpoints/last.pt", "empty")),
    ),
    Case(
        "train --resume: last.pt is truncated",
        ["train", *RESUMABLE, "--out", "{in}/run", "--resume"],
        r"last.pt: cannot be read",
        setup=run_folder(tensor_file("run/checkpoints/last.pt", "truncated")),
    ),
    Case(
        "train --resume: last.pt lacks the optimizer's state",
        ["train", *RESUMABLE, "--out", "{in}/run", "--resume"],
        r"last.pt: lacks 'optimizer': not a complete noisytail checkpoint",
        setup=run_folder(drop_key("optimizer")),
    ),
    Case(
        "train --resume: the run's config.yaml is missing",
        ["train", *RESUMABLE, "--out", "{in}/run", "--resume"],
        r"run/config.yaml: not found",
        setup=run_folder(remove("run/config.yaml")),
    ),
    Case(
        "train --resume: the run's config.yaml is corrupt",
        ["train", *RESUMABLE, "--out", "{in}/run", "--resume"],
        r"run/config.yaml: not valid YAML",
        setup=run_folder(text("run/config.yaml", "train: {epochs: 2\nmethod: [")),
    ),
    Case(
        "train --resume: the run's config.yaml is not a mapping",
        ["train", *RESUMABLE, "--out", "{in}/run", "--resume"],
        r"run/config.yaml: holds a list, not a run's config",
        setup=run_folder(text("run/config.yaml", "- 1\n- 2\n")),
    ),
    Case(
        "evaluate: best.pt is 0 bytes",
        ["evaluate", "{in}/run", "--checkpoint", "best"],
        r"best.pt: is empty \(0 bytes\)",
        setup=run_folder(tensor_file("run/checkpoints/best.pt", "empty")),
    ),
    Case(
        "evaluate: the run's config.yaml is corrupt",
        ["evaluate", "{in}/run"],
        r"run/config.yaml: not valid YAML",
        setup=run_folder(text("run/config.yaml", "- [")),
    ),
    Case(
        "train --resume: an image was removed from the data since the run",
        ["train", *PHOTOS, "--set", "train.epochs=2", "--out", "{in}/run", "--resume"],
        r"the data changed since the run: the (training|test) split (has \d+ samples, the run "
        r"was made on \d+|holds other samples \(files or ids\) than the run's)",
        setup=both(
            photos,
            run_folder(
                remove("photos/class_1/3.png"), overrides=[*PHOTOS, "--set", "train.epochs=2"]
            ),
        ),
    ),
    Case(
        "evaluate: an image was removed from the data since the run",
        ["evaluate", "{in}/run"],
        r"the data changed since the run: the (training|test) split (has|holds other samples)",
        setup=both(
            photos,
            run_folder(
                remove("photos/class_2/0.png"), overrides=[*PHOTOS, "--set", "train.epochs=2"]
            ),
        ),
    ),
    Case(
        "train --resume: a CSV label changed since the run",
        ["train", *FAST_CSV, "--set", "data.options.test_csv={in}/data/test.csv"]
        + ["--set", "train.epochs=2", "--out", "{in}/run", "--resume"],
        r"the data changed since the run: labels differ at 1 of 40 samples of the training split",
        setup=both(
            table(EVEN),
            table(EVEN[:10], "data/test.csv"),
            run_folder(
                relabel("data/table.csv", 7),
                overrides=[*FAST_CSV, "--set", "data.options.test_csv={in}/data/test.csv"]
                + ["--set", "train.epochs=2"],
            ),
        ),
    ),
    Case(
        "detect --from-run: a CSV label changed since the run",
        ["detect", "--from-run", "{in}/run", "--out", "{out}/d", "--no-progress"],
        r"the data changed since the run: labels differ at 1 of 40 samples",
        setup=both(
            table(EVEN),
            table(EVEN[:10], "data/test.csv"),
            run_folder(
                relabel("data/table.csv", 2),
                overrides=[*FAST_CSV, "--set", "data.options.test_csv={in}/data/test.csv"],
            ),
        ),
    ),
    Case(
        "train --resume: other settings than the run's",
        ["train", *RESUMABLE, "--set", "model.options.width=16", "--out", "{in}/run", "--resume"],
        r"--resume: the config differs from the one saved",
        setup=run_folder(),
    ),
    Case(
        "train --resume: last.pt holds weights of another model",
        ["train", *RESUMABLE, "--out", "{in}/run", "--resume"],
        r"last.pt: does not fit this run's model, method or optimizer",
        setup=run_folder(narrow_weights),
    ),
    # a user's own data (issue 10, item 7): one line naming the file or the class, exit code 2
    Case(
        "train: an image file is not an image (size inferred from the headers)",
        ["train", *PHOTOS[:4], "--set", "train.epochs=1", "--set", "train.progress=false"],
        r"Cannot read image \S*photos/class_1/9\.png: .*\(noisytail stops rather than skipping",
        setup=both(photos, text("photos/class_1/9.png", "not an image\n")),
    ),
    Case(
        "train: a JPEG cut short (size given: found when decoding)",
        ["train", *PHOTOS],
        r"Cannot read image \S*photos/class_2/cut\.jpg: (?i:.*truncated)",
        setup=both(photos, cut_jpeg),
    ),
    Case(
        "train: an image folder with one class",
        ["train", *PHOTOS],
        r"image_folder \S*photos has one class \('class_0'\): a classifier needs at least two",
        setup=one_class,
    ),
    Case(
        "train: a CSV whose label column has one value",
        ["train", *FAST_CSV],
        r"table\.csv has one class \('x'\)",
        setup=table(["x"] * 12),
    ),
    # the command line itself
    Case("train: config file missing", ["train", "{in}/none.yaml"], "Config file .* not found"),
    Case("train: --set without '='", ["train", "--set", "train.lr"], "must look like key=value"),
    Case(
        "train: a config that is a list",
        ["train", "{in}/c.yaml"],
        "must hold a mapping of keys",
        setup=text("c.yaml", "- train\n- lr\n"),
    ),
    Case(
        "train: a YAML syntax error",
        ["train", "{in}/c.yaml"],
        r"c.yaml: not valid YAML \(.* at line 3, column 1\)",
        setup=text("c.yaml", "train:\n  lr: [0.1\n"),
    ),
    Case(
        "pretrain: --probe-epochs abc",
        ["pretrain", "--probe-epochs", "abc"],
        "Invalid value for '--probe-epochs'",
    ),
    Case("an unknown command", ["trian"], "No such command 'trian'"),
    Case("evaluate: no such run folder", ["evaluate", "{in}/nothing"], "does not exist"),
    Case(
        "evaluate: a folder that is no run",
        ["evaluate", "{in}/empty"],
        "not a run folder|no config.yaml",
        setup=text("empty/notes.txt", "x\n"),
    ),
    Case("report: a folder that is no run", ["report", "{in}"], "has no summary.json"),
]


# --------------------------------------------------------------------------------------------
# The check


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_table_covers_enough_inputs():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    if case.setup is not None:
        case.setup(inputs)

    def fill(arg: str) -> str:
        return arg.replace("{in}", str(inputs)).replace("{out}", str(outputs))

    args = [fill(a) for a in case.args]
    repo = Path(__file__).resolve().parents[1]
    args = [str(repo / a) if a.startswith("configs/") else a for a in args]
    monkeypatch.chdir(fill(case.cwd) if case.cwd else repo)
    with case.hold(inputs) if case.hold else contextlib.nullcontext():
        before = snapshot(inputs)
        result = CliRunner().invoke(main, args)
        after = snapshot(inputs)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{case.name}: an exception escaped") from result.exception
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == case.code, (case.name, result.output)
    assert len(lines) == 1, (case.name, result.stderr)
    assert "Traceback" not in result.output
    prefix = "error: " if case.code else "note: "
    assert lines[0].startswith(prefix), (case.name, lines[0])
    assert re.search(case.stderr, lines[0]), (case.name, lines[0])
    assert after == before, f"{case.name}: the input files changed"


# --------------------------------------------------------------------------------------------
# Fault test: two bench processes on one folder


def test_a_second_bench_on_the_same_folder_is_refused_and_deletes_nothing(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "set: [data.name=digits, data.train_subset=200, train.epochs=1, train.batch_size=64,"
        " model.options.width=8, train.device=cpu]\nseeds: [0]\njobs: 1\n"
        "grid:\n  train.lr: [0.1]\n"
    )
    out = tmp_path / "bench"
    command = [sys.executable, "-m", "noisytail", "bench", str(grid), "--out", str(out)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        lock = out / ".bench.lock"
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().strip()):  # the first holds the folder
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first bench never took the lock"
            time.sleep(0.1)
        holder = json.loads(lock.read_text())
        before = {p for p in out.rglob("*") if p.is_file()} - {lock}
        second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        still = {p for p in out.rglob("*") if p.is_file()}
        running = first.poll() is None
        stdout, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2, second
    assert running, "the first bench ended before the second tried: the test proved nothing"
    (line,) = second.stderr.strip().splitlines()
    assert line.startswith("error: ") and f"pid {holder['pid']} on {holder['host']}" in line
    assert before <= still  # the second deleted nothing of the first's
    assert first.returncode == 0, stderr.decode()
    assert "1 runs, 0 already done" in stdout.decode()
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(results) == 1 and not lock.exists()
