"""Library code reports through `logging`, never by printing (issue 11 item 5): only the CLI
(``cli.py``, which routes the ``noisytail`` logger to stderr as ``note: ...`` lines) writes to
the terminal, so a Python user can route or silence every message."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src" / "noisytail"
#: Writers that are not logging: a call to one of these outside cli.py is a finding.
WRITERS = {"print", "echo", "secho", "write"}
#: Allowed: the CLI itself, and tqdm.write anywhere: the loop's per-epoch line beside its
#: progress bars, printed only when the caller turned progress bars on (``progress=True``).
ALLOWED = {("cli.py", None), ("cli_errors.py", None), (None, "tqdm.write")}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return "?"


def writers_in(path: Path) -> list[str]:
    """``file:line name`` of each print / click.echo / stream write in ``path``, and each
    default argument that is ``print``."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _name(node.func)
            last = name.rsplit(".", 1)[-1]
            stream = name.endswith(("stdout.write", "stderr.write"))
            if (
                name == "print"
                or name in ("click.echo", "click.secho", "tqdm.write")
                or stream
                or (last in WRITERS and name.startswith(("click.", "sys.")))
            ):
                found.append((node.lineno, name))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for default in node.args.defaults + node.args.kw_defaults:
                if isinstance(default, ast.Name) and default.id == "print":
                    found.append((default.lineno, "print (a default argument)"))
    rel = path.relative_to(SRC).as_posix()
    return [
        f"{rel}:{line} {name}"
        for line, name in found
        if (rel, None) not in ALLOWED and (None, name) not in ALLOWED
    ]


def test_no_library_module_prints():
    findings = [f for path in sorted(SRC.rglob("*.py")) for f in writers_in(path)]
    assert not findings, "use a module logger (logging.getLogger(__name__)):\n" + "\n".join(
        findings
    )


def test_the_scan_sees_every_kind_of_writer():
    module = SRC / "_scan_probe_.py"
    try:
        module.write_text(
            "import sys, click\n\ndef f(echo=print):\n    print(1)\n    click.echo(2)\n"
            "    sys.stderr.write('x')\n"
        )
        found = writers_in(module)
    finally:
        module.unlink()
    assert sorted(f.split(" ", 1)[1] for f in found) == [
        "click.echo",
        "print",
        "print (a default argument)",
        "sys.stderr.write",
    ]


def test_bench_notes_go_to_the_logger_by_default(tmp_path, caplog):
    from noisytail.bench_lock import LOCK_FILE, folder_lock

    stale = {"pid": 999999, "host": "elsewhere", "started": "2024-01-01 00:00:00"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(stale))  # a lock nobody holds: taken over
    with caplog.at_level(logging.INFO, logger="noisytail"), folder_lock(tmp_path):
        pass
    notes = [r for r in caplog.records if r.name == "noisytail.bench_lock"]
    assert len(notes) == 1 and "no longer running" in notes[0].getMessage()


def test_a_python_user_can_silence_the_classifier(capfd):
    from noisytail.estimator import NoisyTailClassifier

    logging.getLogger("noisytail").setLevel(logging.CRITICAL)
    try:
        x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
        NoisyTailClassifier(epochs=1, num_threads=1, batch_size=16).fit(x, np.arange(40) % 2)
    finally:
        logging.getLogger("noisytail").setLevel(logging.NOTSET)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
