"""The planted-bug catalogue (tests/mutants.py, run by scripts/mutants.py) still fits the code:
each mutant's snippet is found exactly once in its file, and its tests exist. When code moves,
this fails instead of the mutation run silently skipping the mutant."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import mutants  # noqa: E402

CATALOGUE = [
    m
    for value in vars(mutants).values()
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], mutants.Mutant)
    for m in value
]


def test_the_catalogue_is_not_empty():
    assert len(CATALOGUE) >= 90


@pytest.mark.parametrize(
    "mutant", CATALOGUE, ids=lambda m: f"{Path(m.file).stem}:{m.description[:40]}"
)
def test_each_mutant_applies_exactly_once(mutant):
    text = (ROOT / mutant.file).read_text()
    assert text.count(mutant.original) == 1, (
        f"{mutant.file}: snippet found {text.count(mutant.original)} times"
    )
    assert mutant.replacement != mutant.original
    for test in (t for t in mutant.tests if t.startswith("tests/")):
        assert (ROOT / test.split("::")[0]).exists(), test
