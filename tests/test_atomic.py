"""``config.yaml`` and ``corruption.npz`` go through the one atomic writer (`noisytail.atomic`):
a write that fails (here: a full disk at the flush) leaves the old file whole and no ``.tmp``."""

import errno

import numpy as np
import pytest

import noisytail.atomic as atomic
from noisytail.config import Config, dump_config, load_run_config
from noisytail.data.corruption import Corruption
from noisytail.runfolder import WriteError


def _corruption(seed: int) -> Corruption:
    labels = np.array([0, 1, 1, 0])
    return Corruption(labels, labels, np.arange(3), np.array([3]), np.array([], int), 2, seed)


def _full_disk(monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)


def test_a_failed_config_write_keeps_the_old_config(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    cfg = Config()
    cfg.seed = 3
    dump_config(cfg, path)
    cfg.seed = 4
    _full_disk(monkeypatch)
    with pytest.raises(WriteError, match="No space left on device"):
        dump_config(cfg, path)
    assert load_run_config(path).seed == 3
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_a_failed_corruption_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "corruption.npz"
    _corruption(3).save(path)
    _full_disk(monkeypatch)
    with pytest.raises(WriteError, match="No space left on device"):
        _corruption(4).save(path)
    assert Corruption.load(path).seed == 3
    assert [p.name for p in tmp_path.iterdir()] == ["corruption.npz"]


def test_a_planted_symbolic_link_is_replaced_never_followed(tmp_path):
    """A run folder received from elsewhere may hold links named like the files noisytail
    writes (or their temporary files): the write replaces the link, the target stays as it was."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "report.md").symlink_to(victim)
    (folder / "report.md.tmp").symlink_to(victim)
    atomic.write_text("new report", folder / "report.md")
    assert victim.read_text() == "precious"
    assert not (folder / "report.md").is_symlink()
    assert (folder / "report.md").read_text() == "new report"


def test_written_files_keep_the_umasks_permissions(tmp_path):
    path = atomic.write_text("x", tmp_path / "f.txt")
    assert path.stat().st_mode & 0o777 == atomic.FILE_MODE
