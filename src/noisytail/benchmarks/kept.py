"""A benchmark folder's results kept in the repository (issue 15), so that no machine takes them
with it.

A budget grid runs for hours into ``runs/`` (ignored by git), and a machine that is not handed on
to the next session loses the folder. `keep_results` copies the light files of a bench folder
(every run's ``summary.json``, ``config.yaml`` and ``metrics.jsonl``, the grid's
``results.jsonl`` and ``cell.json``, the tables) into a tracked folder, ``benchmarks/<name>/``,
and, of the weights, only the pre-trained encoders (``backbone.pt``) up to `MAX_WEIGHT_BYTES`,
which the ssl grid's fine-tuning starts from. Checkpoints, predictions and corruption files stay
behind.

The kept folder is itself a bench folder for the readers: ``scripts/plot_budget.py
benchmarks/bench-budget-ssl --kind mttv`` plots from it. `restore_results` copies it back into
an empty or partly run ``runs/`` folder, never over a file there, and the grid's rerun then
skips every run whose ``summary.json`` (or ``bench_row.json``) came back, and starts the others
again from the beginning (their checkpoints were not kept).
"""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

#: The result files kept, by suffix: results, summaries, configs, per-epoch metrics and tables.
KEPT_SUFFIXES = (".json", ".jsonl", ".yaml", ".md", ".csv")
#: The weights kept, by name: the ssl grid's pre-trained encoders.
KEPT_WEIGHTS = ("backbone.pt",)
#: Weights larger than this stay behind (a width-64 small CNN's encoder is about 1.2 MB).
MAX_WEIGHT_BYTES = 4 * 2**20


def is_kept(path: Path) -> bool:
    """Whether a file of a bench folder is kept: a result file by suffix, or a kept weight file
    of at most `MAX_WEIGHT_BYTES`."""
    if path.suffix in KEPT_SUFFIXES:
        return True
    return path.name in KEPT_WEIGHTS and path.stat().st_size <= MAX_WEIGHT_BYTES


def kept_files(src: str | Path) -> list[Path]:
    """The kept files under ``src``, relative to it, sorted. Files in a ``checkpoints`` folder
    (a run's training state) are never kept."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder: run the benchmark first.")
    return sorted(
        p.relative_to(src)
        for p in src.rglob("*")
        if p.is_file() and "checkpoints" not in p.relative_to(src).parts and is_kept(p)
    )


def keep_results(src: str | Path, dest: str | Path) -> list[Path]:
    """Copy the kept files of bench folder ``src`` into ``dest`` (same relative paths); a file
    already there with the same bytes is left alone. Returns the paths copied, relative."""
    src, dest = Path(src), Path(dest)
    copied = []
    for rel in kept_files(src):
        target = dest / rel
        if target.is_file() and filecmp.cmp(src / rel, target, shallow=False):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target)
        copied.append(rel)
    return copied


def restore_results(kept: str | Path, out: str | Path) -> list[Path]:
    """Copy a kept folder back into bench folder ``out``, every file that ``out`` lacks; a file
    that ``out`` has is never overwritten. Returns the paths copied, relative."""
    kept, out = Path(kept), Path(out)
    copied = []
    for rel in kept_files(kept):
        target = out / rel
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(kept / rel, target)
        copied.append(rel)
    return copied
