"""A run records the code it ran: the commit and any uncommitted change under the package."""

import subprocess

import pytest

from noisytail.runtime import provenance


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    pkg = tmp_path / "src" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (tmp_path / "outside.py").write_text("y = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    return tmp_path, pkg


def test_provenance_lists_uncommitted_changes_of_the_package_only(repo):
    root, pkg = repo
    clean = provenance(pkg)
    assert len(clean["git_commit"]) == 40 and clean["git_changes"] == []
    (pkg / "a.py").write_text("x = 2\n")  # the run would not run the commit's code
    (root / "outside.py").write_text("y = 2\n")  # outside the package: not the run's code
    assert provenance(pkg)["git_changes"] == ["src/pkg/a.py"]


def test_provenance_outside_git(tmp_path):
    p = provenance(tmp_path)
    assert p["git_commit"] is None and p["git_changes"] == []
    assert p["noisytail"] and p["torch"]
