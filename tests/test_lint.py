"""The code passes the ruff configuration of pyproject.toml (`make lint`), so the style holds after you."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.mark.integration  # starts a process
def test_ruff_check_and_format_pass():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    paths = ["plugin", "tests", "bench"]
    check = subprocess.run([ruff, "check", "--no-cache", *paths], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout[-3000:]
    form = subprocess.run([ruff, "format", "--check", "--no-cache", *paths], cwd=ROOT, capture_output=True, text=True)
    assert form.returncode == 0, f"run `ruff format plugin tests bench`:\n{form.stdout[-3000:]}"
