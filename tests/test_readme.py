"""Every ``noisytail`` command in README.md runs (issue 12), shrunk to seconds.

The commands are taken from the README's ``bash`` code blocks and run in order (later ones use
the run folders of earlier ones) in a temporary working folder that sees the repository's
``configs/``. Each is shrunk by overrides: a few hundred samples, one epoch (`SHRINK`), a
one-epoch linear probe; a bench grid is copied with the same overrides, one seed and the first
value of each axis (keeping the variants that ``{run:...}`` references need). Placeholders are
replaced by tiny synthetic data (`PLACEHOLDERS`). A README command that does not run, or a
placeholder this test does not know, fails the test.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from noisytail.cli import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHRINK = [
    "data.train_subset=300",
    "data.test_subset=200",
    "train.epochs=1",
    "train.batch_size=64",
    "train.progress=false",
]
RUN_REF = re.compile(r"\{run:([^}]+)\}")


def readme_commands(text: str) -> list[str]:
    """The ``noisytail ...`` commands of the ``bash`` code blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("noisytail "):
                commands.append(line.strip())
    return commands


def photos(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(220, 30, 30), (30, 220, 30), (30, 30, 220)]):
        for i in range(10):
            pixels = np.clip(rng.normal(colour, 20, size=(12, 12, 3)), 0, 255).astype(np.uint8)
            path = root / f"class_{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    return root


def table(path: Path) -> Path:
    """A tabular CSV: three numeric columns and a 2-class ``label`` column."""
    rng = np.random.default_rng(0)
    rows = [
        f"{a:.3f},{b:.3f},{c:.3f},{i % 2}" for i, (a, b, c) in enumerate(rng.normal(size=(40, 3)))
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a,b,c,label\n" + "\n".join(rows) + "\n")
    return path


def new_images(root: Path) -> Path:
    """Four 28x28 grayscale PNGs: new images for a Fashion-MNIST run's model."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, size=(28, 28), dtype=np.uint8)).save(root / f"{i}.png")
    return root


#: README placeholder -> a function of the working folder that makes the data and returns it.
PLACEHOLDERS = {
    "/path/new-images": lambda work: str(new_images(work / "new-images")),
    "/path/photos": lambda work: str(photos(work / "photos")),
    "/path/table.csv": lambda work: str(table(work / "tables" / "table.csv")),
}


def shrink_grid(grid: Path, work: Path) -> Path:
    """A copy of a bench grid with `SHRINK`, seed 0 and one value per axis."""
    spec = yaml.safe_load(grid.read_text())
    if spec.get("base"):
        spec["base"] = str((grid.parent / spec["base"]).resolve())
    spec["set"] = list(spec.get("set") or []) + SHRINK
    if any(str(o).startswith("meta.per_class=") for o in spec["set"]):
        spec["set"].append("meta.per_class=5")  # a meta set that fits the tiny subset
    spec["seeds"] = [0]
    axes = spec.get("grid") or {}
    for key, values in axes.items():
        if key != "variant":
            axes[key] = values[:1]
            continue
        # the variants that refer to others, and those they refer to; else the first one
        referring = [v for v in values if any(RUN_REF.search(o) for o in v["set"])]
        needed = {m for v in referring for o in v["set"] for m in RUN_REF.findall(o)}
        kept = [v for v in values if v in referring or v["label"] in needed] or values[:1]
        for v in kept:
            v["set"] = list(v["set"]) + [o for o in SHRINK if o.startswith("train.epochs")]
        axes[key] = kept
    copy = work / "grids" / grid.name
    copy.parent.mkdir(exist_ok=True)
    copy.write_text(yaml.safe_dump(spec, sort_keys=False))
    return copy


def shrink(tokens: list[str], work: Path) -> list[str]:
    """The README command ``tokens`` (without ``noisytail``), shrunk and with placeholders."""
    args = []
    for token in tokens:
        for placeholder, make in PLACEHOLDERS.items():
            if placeholder in token:
                token = token.replace(placeholder, make(work))
        args.append(token)
    unknown = [a for a in args if a.startswith("/path/") or "CONFIG" in a or "<" in a]
    assert not unknown, f"README placeholders this test cannot fill: {unknown}"
    command = args[0]
    if command in ("train", "pretrain", "detect"):
        for override in SHRINK:
            args += ["--set", override]
    if command == "pretrain" and "--probe-epochs" not in args:
        args += ["--probe-epochs", "1"]
    if command == "detect":
        args.append("--no-progress")
    if command == "bench":
        args[1] = str(shrink_grid(REPO / args[1], work))
        args += ["--jobs", "2"]
    return args


def test_readme_commands_are_found():
    commands = readme_commands(README.read_text())
    assert len(commands) >= 10
    for expected in ("train", "pretrain", "detect", "bench", "evaluate"):
        assert any(c.split()[1] == expected for c in commands), expected


def test_every_readme_command_runs(tmp_path, monkeypatch):
    from noisytail.data.fashion_mnist import find_fashion_mnist

    if find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST is not on this machine (make test fetches it)")
    work = tmp_path / "work"
    work.mkdir()
    (work / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(work)
    runner = CliRunner()
    for line in readme_commands(README.read_text()):
        args = shrink(shlex.split(line, comments=True)[1:], work)
        result = runner.invoke(main, args)
        logs = "".join(p.read_text()[-2000:] for p in sorted(work.glob("runs/*/logs/*.log")))
        assert result.exit_code == 0, (
            f"README command failed: {line}\n(run as: noisytail {shlex.join(args)})\n"
            f"{result.output}\n{logs if args[0] == 'bench' else ''}"
        )


def test_a_failing_readme_command_fails_the_test(tmp_path):
    """The extraction and the shrinking see a broken command (what the test above relies on)."""
    text = "```bash\nnoisytail train configs/demo.yaml \\\n  --set train.lrr=0.1\n```\n"
    (line,) = readme_commands(text)
    args = shrink(shlex.split(line, comments=True)[1:], tmp_path)
    assert args[:4] == ["train", "configs/demo.yaml", "--set", "train.lrr=0.1"]
    result = CliRunner().invoke(main, [args[0], str(REPO / args[1]), *args[2:]])
    assert result.exit_code == 2
    with pytest.raises(AssertionError, match="placeholders"):
        shrink(["train", "CONFIG.yaml"], tmp_path)
