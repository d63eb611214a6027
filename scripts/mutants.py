"""Plant known bugs one at a time and check that the tests catch each (mutation testing).

The planted changes live in ``tests/mutants.py``. Each is applied to a *temporary copy* of the
repository (``src/``, ``tests/``, ``scripts/``, ``configs/``, ``pyproject.toml``), never to this
checkout, and that copy's tests run with ``PYTHONPATH=<copy>/src`` (checked: ``noisytail``
must import from the copy, not from the editable install). A mutant is

- *killed* when its tests fail (or time out), *survived* when they pass;
- *stale* when its original snippet is no longer found exactly once (the code changed: update
  the catalogue), never silently skipped;
- *error* when its tests already fail on the unchanged copy.

Usage::

    .venv/bin/python scripts/mutants.py                  # all mutants
    .venv/bin/python scripts/mutants.py --only data/noise --only losses
    .venv/bin/python scripts/mutants.py --list           # the catalogue (stale ones marked)

Exit status 0 when every selected mutant is killed, 1 otherwise, 2 on a broken set-up.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("src", "tests", "scripts", "configs", "pyproject.toml")


def load_catalogue() -> list:
    spec = importlib.util.spec_from_file_location("_mutants", ROOT / "tests" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["_mutants"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return list(module.MUTANTS)


def copy_repo(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy / "src")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutant never runs from a stale .pyc
    return env


def check_import_path(copy: Path) -> None:
    """Exit unless ``noisytail`` (and the module of every planted file) imports from the copy."""
    probe = "import noisytail; print(noisytail.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=copy, env=environment(copy), capture_output=True,
        text=True,
    )  # fmt: skip
    where = Path(out.stdout.strip() or "/nonexistent").resolve()
    if out.returncode or not where.is_relative_to((copy / "src").resolve()):
        sys.exit(f"error: noisytail imports from {where}, not from the copy {copy}: {out.stderr}")


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, str]:
    """``(status, detail)`` of pytest on ``tests`` in the copy: status "pass", "fail",
    "timeout" or "empty"; detail the first failing test (or the last line) and the seconds."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider", *tests]
    start = time.perf_counter()
    try:
        out = subprocess.run(
            cmd, cwd=copy, env=environment(copy), capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "timeout", f"timed out after {timeout:.0f}s"
    lines = out.stdout.strip().splitlines() or ["(no output)"]
    failed = [ln.split(" - ")[0] for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    first = "all passed" if out.returncode == 0 else (failed or lines[-1:])[0]
    detail = f"{first}, {time.perf_counter() - start:.0f}s"
    return {0: "pass", 5: "empty"}.get(out.returncode, "fail"), detail


def module_of(path: str) -> str:
    """``src/noisytail/data/noise.py`` -> ``data/noise``."""
    return Path(path).relative_to("src/noisytail").with_suffix("").as_posix()


def run_one(copy: Path, m, baseline: dict, timeout: float) -> tuple[str, str]:
    """``(status, detail)`` of one mutant: killed, survived, stale or error."""
    target = copy / m.file
    text = target.read_text() if target.exists() else ""
    found = text.count(m.original)
    if found != 1 or m.original == m.replacement:
        return "stale", f"original snippet found {found} times"
    tests = tuple(m.tests)
    if tests not in baseline:
        baseline[tests] = run_tests(copy, tests, timeout)
    if baseline[tests][0] != "pass":
        return "error", f"fails unmutated: {baseline[tests][1]}"
    target.write_text(text.replace(m.original, m.replacement))
    try:
        status, detail = run_tests(copy, tests, timeout)
    finally:
        target.write_text(text)  # the copy's file, never the checkout's
    return {"pass": "survived", "empty": "error"}.get(status, "killed"), detail


def summary_table(results: list[tuple[object, str]]) -> str:
    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for m, status in results:
        rows[module_of(m.file)][status] += 1
    lines = [
        "| module | mutants | killed | survived | stale/error | survival rate |",
        "|---|---|---|---|---|---|",
    ]
    for mod in sorted(rows):
        r = rows[mod]
        tried = r["killed"] + r["survived"]
        rate = f"{100 * r['survived'] / tried:.0f} %" if tried else "n/a"
        lines.append(
            f"| {mod} | {sum(r.values())} | {r['killed']} | {r['survived']} | "
            f"{r['stale'] + r['error']} | {rate} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", action="append", default=[], metavar="MODULE",
        help="run the mutants of modules starting with MODULE (data/noise, losses, methods, ...)",
    )  # fmt: skip
    parser.add_argument("--list", action="store_true", help="print the catalogue and exit")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run")
    args = parser.parse_args(argv)

    mutants = [
        m
        for m in load_catalogue()
        if not args.only or any(module_of(m.file).startswith(o) for o in args.only)
    ]
    if not mutants:
        print(f"error: no mutant matches {args.only}", file=sys.stderr)
        return 2
    if args.list:  # with whether each snippet is still found exactly once in this checkout
        for i, m in enumerate(mutants, 1):
            path = ROOT / m.file
            found = path.read_text().count(m.original) if path.exists() else 0
            mark = "ok" if found == 1 else "STALE"
            print(f"{i:3d} {mark:5s} {module_of(m.file):20s} {m.description}")
        return 0

    results = []
    with tempfile.TemporaryDirectory(prefix="noisytail-mutants-") as tmp:
        copy = Path(tmp)
        copy_repo(copy)
        check_import_path(copy)
        baseline: dict = {}
        for i, m in enumerate(mutants, 1):
            status, detail = run_one(copy, m, baseline, args.timeout)
            results.append((m, status))
            print(
                f"{i:3d}/{len(mutants)} {status.upper():8s} {module_of(m.file):20s} "
                f"{m.description}\n{'':18s}{detail}",
                flush=True,
            )
    print()
    print(summary_table(results))
    bad = [(m, s) for m, s in results if s != "killed"]
    for m, s in bad:
        print(f"{s}: {m.file}: {m.description}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
