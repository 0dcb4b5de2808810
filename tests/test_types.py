"""The type checker over the package: a wrong attribute or argument fails here, not on the
day that line first runs. mypy's settings are in pyproject.toml ([tool.mypy])."""

import subprocess
import sys

from conftest import REPO


def test_mypy_finds_no_error():
    out = subprocess.run([sys.executable, "-m", "mypy", "vwwfast"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
