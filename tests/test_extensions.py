"""Adding a data source, a method, a detector or a noise kind is a one-file change (issue 14):
the single file tests/toy_extension.py registers one of each, and each then works through the
normal entry points: training (`fit`), detection (`detect_label_issues`), ``noisytail data``,
``noisytail pretrain`` and the help and list of ``noisytail detect`` / ``noisytail list``."""

import ast
import importlib
import json
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import noisytail.methods  # noqa: F401  (registration)
from noisytail.cli import main
from noisytail.config import load_config
from noisytail.data import sources
from noisytail.data.corruption import Corruption
from noisytail.data.noise_kinds import NOISE_KINDS
from noisytail.detect import detectors  # noqa: F401  (registration)
from noisytail.detect.task import detect_label_issues
from noisytail.registry import DATASETS, DETECTORS, METHODS
from noisytail.train import fit

TOY = Path(__file__).with_name("toy_extension.py")
TOY_RUN = [
    "data.name=toy_blobs",
    "data.val_fraction=0",
    "data.augment=none",
    "model.name=mlp",
    "train.epochs=6",
    "train.batch_size=16",
    "train.lr=0.05",
    "train.device=cpu",
    "train.progress=false",
]


@pytest.fixture
def toy(monkeypatch):
    """Run the toy file into copies of the registries; the originals come back after the test."""
    for registry in (DATASETS, METHODS, DETECTORS, NOISE_KINDS):
        monkeypatch.setattr(registry, "_items", dict(registry._items))
    return runpy.run_path(str(TOY))


def test_toy_source_and_method_train_and_report(toy, tmp_path):
    row = next(r for r in sources.find_datasets() if r["name"] == "toy_blobs")
    assert row == {"name": "toy_blobs", "found": True, "location": "(toy)", "how": toy["TOY_HOW"]}
    summary = fit(load_config(None, [*TOY_RUN, "method.name=toy_ce"]), tmp_path / "run")
    assert summary.finished and summary.test_accuracy >= 0.9  # chance: 1/3
    assert "toy_ce on Toy Blobs" in (tmp_path / "run" / "report.md").read_text()


def test_toy_detector_and_the_toy_methods_scores_detect_noise(toy, tmp_path):
    cfg = load_config(
        None, [*TOY_RUN, "method.name=toy_ce", "noise.kind=symmetric", "noise.rate=0.2"]
    )
    for name in ("toy_margin", "method_scores"):
        result = detect_label_issues(cfg, tmp_path / name, detector=name)
        info = json.loads((tmp_path / name / "detection.json").read_text())
        assert result.n == 120 and info["metrics"]["n_noisy"] > 0
        assert info["metrics"]["auroc"] > 0.8, name  # the flipped labels rank first


def test_toy_self_supervised_method_pretrains_and_toy_detector_is_listed(toy, tmp_path):
    runner = CliRunner()
    done = runner.invoke(
        main,
        ["pretrain", "--out", str(tmp_path / "pre"), "--probe-epochs", "2", "--no-progress"]
        + [a for o in [*TOY_RUN, "method.name=toy_ssl", "train.epochs=2"] for a in ("--set", o)],
    )
    assert done.exit_code == 0, done.output
    assert (tmp_path / "pre" / "encoder.pt").is_file()
    refused = runner.invoke(main, ["pretrain", "--set", "method.name=toy_ce", "--set", TOY_RUN[0]])
    assert refused.exit_code == 2
    assert "must be one of mttv, multiview, simclr, toy_ssl, got 'toy_ce'" in refused.output
    assert "toy_margin" in runner.invoke(main, ["detect", "--help"]).output
    assert "toy_margin" in runner.invoke(main, ["list", "detectors"]).output


def test_toy_noise_kind_corrupts_the_training_labels_as_declared(toy, tmp_path):
    cfg = load_config(
        None,
        [*TOY_RUN, "method.name=toy_ce", "train.epochs=1"]
        + ["noise.kind=toy_next_class", "noise.rate=0.4"],
    )
    fit(cfg, tmp_path / "run", write_report=False)
    saved = Corruption.load(tmp_path / "run" / "corruption.npz")
    true, noisy = saved.true_labels[saved.train_idx], saved.noisy_labels[saved.train_idx]
    moved = noisy != true
    assert (noisy[moved] == (true[moved] + 1) % 3).all()  # only ever to the next class
    assert abs(moved.mean() - 0.4) < 0.15  # 120 labels: 3 standard deviations
    assert "toy_next_class" in str(saved.spec)


def test_a_built_in_data_source_is_one_new_file(tmp_path, monkeypatch):
    # A package laid out like noisytail.data: one new module declaring a source is found and
    # registered with no other edit; a module declaring none (a helper) is not even imported.
    pkg = tmp_path / "toy_data_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("raise AssertionError('a helper module was imported')\n")
    (pkg / "toy_source.py").write_text(
        textwrap.dedent(
            '''
            from noisytail.data.source_info import data_source


            @data_source("toy_found", display_name="a toy source", how_to_get="Nothing to get.")
            def toy_found(root=None):
                """Never loaded here."""
                raise NotImplementedError
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))
    assert "toy_found" not in DATASETS
    assert sources.import_source_modules("toy_data_pkg") == ["toy_source"]
    assert sources.display_name("toy_found") == "a toy source"
    assert any(r["name"] == "toy_found" for r in sources.find_datasets())


def _declared(folder: Path, decorator: str) -> set[str]:
    """The names of every ``@<decorator>("name", ...)`` in ``folder``'s modules, read from their
    syntax trees (independently of the discovery's own line match)."""
    names = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            for deco in getattr(node, "decorator_list", []):
                if isinstance(deco, ast.Call) and ast.unparse(deco.func) == decorator:
                    names.add(deco.args[0].value)
    return names


@pytest.mark.parametrize(
    "package,decorator,registry",
    [
        ("noisytail.data.sources", "data_source", "DATASETS"),
        ("noisytail.methods", "METHODS.register", "METHODS"),
        ("noisytail.detect.detectors", "DETECTORS.register", "DETECTORS"),
    ],
)
def test_a_fresh_process_registers_every_built_in(package, decorator, registry):
    # every source (method) that a module of noisytail/data (noisytail/methods) declares is
    # registered by importing the package: there is no list of modules to forget to edit
    code = (
        f"import {package}; from noisytail.registry import {registry}; print(*{registry}.names())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    declared = _declared(Path(importlib.import_module(package).__file__).parent, decorator)
    assert len(declared) >= 6 and set(out.stdout.split()) == declared
