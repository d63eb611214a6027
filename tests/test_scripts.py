"""``scripts/`` holds thin drivers (issue 14): every file stays within 200 lines, and the drivers of
the benchmarks in `noisytail.benchmarks` still parse their command line (``--help``)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
MAX_LINES = 200
DRIVERS = [
    "bench_detection.py",
    "bench_meta_cost.py",
    "bench_moit_median.py",
    "bench_ssl.py",
    "icl_floor.py",
    "keep_results.py",
]


def test_every_script_is_a_thin_driver():
    files = sorted(p for p in SCRIPTS.iterdir() if p.is_file())
    assert files
    long = {p.name: n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"scripts above {MAX_LINES} lines (move their logic into the library): {long}"


@pytest.mark.slow
@pytest.mark.parametrize("name", DRIVERS)
def test_benchmark_driver_parses_its_options(name):
    assert "from noisytail.benchmarks" in (SCRIPTS / name).read_text()
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / name), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")
