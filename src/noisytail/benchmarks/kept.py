"""A benchmark folder's results kept in the repository (issue 15), so that no machine takes them
with it.

A budget grid runs for hours into ``runs/`` (ignored by git), and a machine that is not handed on
to the next session loses the folder. `keep_results` copies into a tracked folder,
``benchmarks/<name>/``:

- of a finished run (a folder with ``config.yaml`` and ``summary.json``), the light files:
  ``summary.json``, ``config.yaml``, ``metrics.jsonl`` and the like (`KEPT_SUFFIXES`), and of
  the weights only the ssl grid's pre-trained encoders (``backbone.pt``, up to
  `MAX_WEIGHT_BYTES`), which its fine-tuning starts from; checkpoints, predictions and
  corruption files stay behind;
- an unfinished run (``config.yaml``, no ``summary.json``) whole, checkpoints and saved
  corruption included, up to `MAX_RUN_BYTES`, so that it resumes where it stopped;
- the grid's own files (``results.jsonl``, ``cell.json``, tables).

Rerun as the grid goes on, it brings the kept folder up to date: a run that has finished since
loses its kept checkpoints. The kept folder is itself a bench folder for the readers:
``scripts/plot_budget.py benchmarks/bench-budget-ssl --kind mttv`` plots from it.
`restore_results` copies it back into an empty or partly run ``runs/`` folder, never over a file
there; the grid's rerun then skips every run whose ``summary.json`` (or ``bench_row.json``) came
back and resumes the unfinished ones from their checkpoints.
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
#: An unfinished run larger than this is not kept (a width-16 small CNN's run: about 0.6 MB).
MAX_RUN_BYTES = 16 * 2**20
RUN_MARKER, DONE_MARKER = "config.yaml", "summary.json"


def is_kept(path: Path) -> bool:
    """Whether a file of a bench folder is kept: a result file by suffix, or a kept weight file
    of at most `MAX_WEIGHT_BYTES`."""
    if path.suffix in KEPT_SUFFIXES:
        return True
    return path.name in KEPT_WEIGHTS and path.stat().st_size <= MAX_WEIGHT_BYTES


def _unfinished_runs(src: Path) -> list[Path]:
    """The run folders under ``src`` without a summary yet, of at most `MAX_RUN_BYTES`; a
    ``src`` that is not a folder is a `FileNotFoundError` that says to run the benchmark."""
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder: run the benchmark first.")
    runs = [p.parent for p in src.rglob(RUN_MARKER) if not (p.parent / DONE_MARKER).exists()]
    return [
        run
        for run in runs
        if sum(f.stat().st_size for f in run.rglob("*") if f.is_file()) <= MAX_RUN_BYTES
    ]


def kept_files(src: str | Path) -> list[Path]:
    """The kept files under ``src``, relative to it, sorted: every file of an unfinished run,
    and elsewhere the result files (`is_kept`) outside ``checkpoints`` folders."""
    src = Path(src)
    return _kept_files(src, _unfinished_runs(src))


def _kept_files(src: Path, unfinished: list[Path]) -> list[Path]:
    """`kept_files`, given ``src``'s unfinished runs."""
    kept = []
    for p in src.rglob("*"):
        if not p.is_file():
            continue
        rel = p.relative_to(src)
        whole_run = any(run in p.parents for run in unfinished)
        if whole_run or ("checkpoints" not in rel.parts and is_kept(p)):
            kept.append(rel)
    return sorted(kept)


def keep_results(src: str | Path, dest: str | Path) -> list[Path]:
    """Bring ``dest`` up to date with the kept files of bench folder ``src`` (same relative
    paths): copy each one that is new or changed, and remove from ``dest`` each file that
    ``src`` still has but no longer keeps (the checkpoints of a run finished since). A file that
    ``src`` lacks is left alone, and so is a run that ``dest`` holds finished and ``src``
    unfinished. Returns the paths copied, relative."""
    src, dest = Path(src), Path(dest)
    unfinished = _unfinished_runs(src)
    # a run kept finished and running again here (a grid restarted without a restore) keeps
    # its finished copy: its partial files would not match the kept summary
    rerun = [
        run.relative_to(src)
        for run in unfinished
        if (dest / run.relative_to(src) / DONE_MARKER).is_file()
    ]

    def in_rerun(rel: Path) -> bool:
        return any(run in rel.parents for run in rerun)

    wanted = [rel for rel in _kept_files(src, unfinished) if not in_rerun(rel)]
    copied = []
    for rel in wanted:
        target = dest / rel
        if target.is_file() and filecmp.cmp(src / rel, target, shallow=False):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target)
        copied.append(rel)
    keep = set(wanted)
    for old in [p for p in dest.rglob("*") if p.is_file()]:
        rel = old.relative_to(dest)
        if rel not in keep and (src / rel).exists() and not in_rerun(rel):
            old.unlink()
            for folder in old.parents:  # the folders it leaves empty, up to dest
                if folder == dest or any(folder.iterdir()):
                    break
                folder.rmdir()
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
