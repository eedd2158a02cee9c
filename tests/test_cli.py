"""The CLI: instant help, lean imports, one-line errors with documented exit codes."""

import subprocess
import sys

import pytest

from conftest import BIN, ROOT, error_line, sh

HEAVY = ("torch", "mlflow", "onnx", "onnxruntime", "great_expectations", "pandas")


@pytest.mark.integration  # starts a process
def test_help_imports_no_heavy_library():
    code = (
        "import sys; from squeezeflow.cli import commands as cli; import contextlib\n"
        "with contextlib.suppress(SystemExit): cli.main(['--help'])\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "HEAVY="


@pytest.mark.integration  # starts a process
def test_every_stage_has_a_subcommand():
    out = sh(BIN / "squeezeflow", "--help").stdout
    for command in (
        "pull",
        "soft-labels",
        "compress",
        "evaluate",
        "gate",
        "promote",
        "demo",
        "lineage",
        "webhook",
        "steps",
        "init",
    ):
        assert command in out


@pytest.mark.integration  # starts a process
def test_steps_lists_quantize_parameters():
    out = sh(BIN / "squeezeflow", "steps").stdout
    assert "quantize:" in out and "per_channel" in out and "calibration" in out


@pytest.mark.integration  # starts a process
def test_bad_params_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text((ROOT / "params.yaml").read_text().replace("budgets:", "budgetz:"))
    proc = sh(BIN / "squeezeflow", "--params", bad, "gate", check=False)
    assert proc.returncode == 2
    assert "budgetz is not a known key" in error_line(proc)
    assert "Traceback" not in proc.stderr


@pytest.mark.integration  # starts a process
def test_debug_env_shows_traceback(tmp_path):
    import os

    proc = sh(
        BIN / "squeezeflow",
        "--params",
        tmp_path / "missing.yaml",
        "gate",
        check=False,
        env={**os.environ, "SQUEEZEFLOW_DEBUG": "1"},
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr
