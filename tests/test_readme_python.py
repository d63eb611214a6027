"""The README's "Python" section runs (issue 11 item 6): its ``python`` code blocks are executed in
order, in one namespace, in a temporary working folder, with every ``epochs`` shrunk to 1 (its
``noisytail`` commands run in tests/test_readme.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
EPOCHS = re.compile(r"""(\bepochs=|"epochs": )\d+""")


def python_section(text: str) -> str:
    """The text of the ``## Python`` section (up to the next ``## `` heading)."""
    found = re.search(r"^## Python\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert found, "README.md has no '## Python' section"
    return found.group(1)


def python_blocks(section: str) -> list[str]:
    return [EPOCHS.sub(r"\g<1>1", b) for b in re.findall(r"```python\n(.*?)```", section, re.S)]


def run_blocks(blocks: list[str]) -> dict:
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md Python block {i + 1}", "exec"), namespace)
    return namespace


def test_the_python_section_runs(tmp_path, monkeypatch):
    pytest.importorskip("cleanlab")
    blocks = python_blocks(python_section(README.read_text()))
    assert len(blocks) >= 4
    assert any("CleanLearning" in b for b in blocks) and any("load_model" in b for b in blocks)
    monkeypatch.chdir(tmp_path)
    namespace = run_blocks(blocks)
    assert (tmp_path / "runs" / "digits-clf" / "checkpoints" / "last.pt").is_file()
    assert list(namespace["clf"].classes_)[:2] == ["eight", "five"]  # the loaded classifier


def test_a_broken_snippet_fails_and_epochs_are_shrunk():
    code = "clf = f(epochs=20)\ncfg = {'train': {\"epochs\": 3}}\n"
    text = f"## Python\n```python\n{code}```\n## Next\n"
    (block,) = python_blocks(python_section(text))
    assert "epochs=1)" in block and '"epochs": 1}' in block
    with pytest.raises(NameError):
        run_blocks([block])
