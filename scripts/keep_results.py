"""Keep a benchmark folder's results in the repository, or bring them back (issue 15).

Usage:
    python scripts/keep_results.py runs/bench-budget-ssl            # -> benchmarks/bench-budget-ssl
    python scripts/keep_results.py runs/bench-budget-ssl --to DEST
    python scripts/keep_results.py --restore benchmarks/bench-budget-ssl runs/bench-budget-ssl

Keeping copies the light files of finished runs (results, summaries, configs, per-epoch metrics,
tables and the ssl grid's encoders, no checkpoints) and each unfinished run whole; restoring
copies them back without overwriting anything, so that a rerun of the grid skips the runs that
finished and resumes the others. What is kept: `noisytail.benchmarks.kept`. Commit the kept
folder as the runs finish.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from noisytail.benchmarks.kept import keep_results, restore_results

KEPT_ROOT = Path("benchmarks")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="the bench folder (with --restore: the kept folder)")
    p.add_argument("dest", nargs="?", help="with --restore: the bench folder to fill")
    p.add_argument("--to", help=f"where to keep it (default: {KEPT_ROOT}/<src's name>)")
    p.add_argument("--restore", action="store_true", help="copy a kept folder back")
    args = p.parse_args(argv)
    if args.restore:
        if not args.dest:
            p.error("--restore needs the bench folder to fill: KEPT DEST")
        copied = restore_results(args.src, args.dest)
        print(f"restored {len(copied)} files from {args.src} into {args.dest}")
        return 0
    if args.dest:
        p.error("give the destination with --to (a second folder is for --restore)")
    dest = Path(args.to) if args.to else KEPT_ROOT / Path(args.src).resolve().name
    copied = keep_results(args.src, dest)
    print(f"kept {len(copied)} new or changed files of {args.src} in {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
