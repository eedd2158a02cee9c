"""Deployment targets: each target's runtime measures every candidate, the gate judges each target, promote moves one
alias per target.
"""

import json
from pathlib import Path

import pytest
import yaml

from conftest import BIN, error_line, register_onnx, sh, write_params
from helpers import run_until_gate
from squeezeflow import registry
from squeezeflow.config import load_params
from squeezeflow.errors import ConfigError, GateFailedError
from squeezeflow.stages.gate import gate
from squeezeflow.stages.promote import promote


def _targets_params(tmp_path, digits_dir, targets: dict, **overrides) -> Path:
    """The repository's params with `targets` instead of `target` (short timing: the tests judge behaviour, not
    speed).
    """
    path = write_params(tmp_path, digits_dir, **overrides)
    params = yaml.safe_load(path.read_text())
    params.pop("target")
    params["targets"] = {name: {"warmup": 3, "repeats": 20, "max_seconds": 5, **t} for name, t in targets.items()}
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_two_ort_targets_get_their_own_verdicts_and_aliases(
    local_registry, digits_onnx, digits_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    targets = {
        "edge": {"threads": 1, "batch_size": 1},
        "server": {"threads": 2, "batch_size": 8, "budgets": {"min_speedup": 0.01}},
        "strict": {"optional": True, "budgets": {"min_speedup": 100.0}},
    }
    params = run_until_gate(_targets_params(tmp_path, digits_dir, targets))
    metrics = json.loads(Path("metrics/int8-static.json").read_text())
    # size is the model's, measured once
    assert set(metrics["targets"]) == {"edge", "server", "strict"} and "size_mb" in metrics
    assert (metrics["targets"]["server"]["batch_size"], metrics["targets"]["server"]["threads"]) == (8, 2)
    assert metrics["targets"]["edge"]["runtime"] == "onnxruntime" and metrics["targets"]["edge"]["runtime_version"]
    plots = {r["model"] for r in json.loads(Path("plots/int8-static.json").read_text())}
    assert {"baseline@edge", "int8-static@edge", "baseline@server", "int8-static@server"} <= plots

    verdict = gate(params)
    per = verdict["targets"]
    assert verdict["verdict"] == "pass"  # strict fails, but it is optional
    assert per["strict"]["verdict"] == "fail" and all(
        v == "fail" for v in (row["strict"] for row in verdict["matrix"].values())
    )
    # the target's own budget replaces the shared one
    assert per["server"]["budgets"]["min_speedup"] == 0.01 and per["edge"]["budgets"]["min_speedup"] == 1.0
    # dynamic INT8 convolutions are several times slower than FP32 on x86: the edge budget refuses them, the server's
    # lets them pass
    assert (
        per["edge"]["candidates"]["int8-dynamic"]["status"] == "fail"
        and per["server"]["candidates"]["int8-dynamic"]["passed"]
    )
    md = Path("reports/gate.md").read_text()
    assert "| candidate | edge | server | strict |" in md and "# Target server" in md
    assert "id='targets'" in Path("reports/index.html").read_text()

    result = promote(params)
    assert set(result["targets"]) == {"edge", "server"}  # strict passed nothing: no alias for it
    for target in ("edge", "server"):
        version = registry.alias_version("digits-cnn-edge", f"candidate-{target}")
        assert version == result["targets"][target]["version"]
        tags = registry.client().get_model_version("digits-cnn-edge", version).tags
        assert (
            tags[f"squeezeflow.target.{target}.runtime"] == "onnxruntime"
            and tags[f"squeezeflow.target.{target}.device"] == "CPUExecutionProvider"
        )
        assert tags["squeezeflow.recipe.name"] == per[target]["selected"]
    assert registry.alias_version("digits-cnn-edge", "candidate-strict") is None
    versions = registry.client().search_model_versions("name='digits-cnn-edge'")
    # one version per distinct artifact, never two
    assert len(versions) == len({per["edge"]["selected"], per["server"]["selected"]})
    again = promote(params)
    assert {t: r["action"] for t, r in again["targets"].items()} == {"edge": "none", "server": "none"}


def test_openvino_target_runs_a_qdq_candidate(local_registry, digits_onnx, digits_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    path = _targets_params(
        tmp_path,
        digits_dir,
        {"x86": {}, "openvino": {"runtime": "openvino", "device": "CPU", "budgets": {"min_speedup": 0.01}}},
        recipes={"int8-static": [{"quantize": {"mode": "static", "per_channel": True}}]},
    )
    params = run_until_gate(path)
    on = json.loads(Path("metrics/int8-static.json").read_text())["targets"]["openvino"]
    assert on["runtime"] == "openvino" and on["device"] == "CPU" and on["runtime_version"][:4].isdigit()
    assert on["latency_p50_ms"] > 0 and on["speedup_ci_low"] <= on["speedup"] <= on["speedup_ci_high"]
    assert on["accuracy_drop_ci_high"] <= 0.03  # OpenVINO runs the QDQ model as INT8 and keeps the accuracy
    verdict = gate(params)
    assert (
        verdict["targets"]["openvino"]["runtime"]["runtime"] == "openvino"
        and verdict["targets"]["openvino"]["selected"] == "int8-static"
    )


def test_a_target_whose_runtime_is_not_installed_is_bad_input(local_registry, digits_onnx, digits_dir, tmp_path):
    """One line naming the package, exit 2: openvino made unimportable for the CLI process."""
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    _targets_params(tmp_path, digits_dir, {"openvino": {"runtime": "openvino"}})
    blocker = tmp_path / "no-openvino"
    (blocker / "openvino").mkdir(parents=True)
    (blocker / "openvino" / "__init__.py").write_text("raise ImportError('No module named openvino')\n")
    env = {"PYTHONPATH": str(blocker)}
    sh(str(BIN / "squeezeflow"), "pull", cwd=tmp_path)
    proc = sh(str(BIN / "squeezeflow"), "evaluate", "baseline", cwd=tmp_path, check=False, env=env)
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert (
        "'openvino' package is not installed" in line
        and "pip install openvino" in line
        and "Traceback" not in proc.stderr
    )


def test_a_gpu_target_on_a_cpu_machine_is_skipped_never_passed(
    local_registry, digits_onnx, digits_dir, tmp_path, monkeypatch
):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA: the GPU target runs here")
    monkeypatch.chdir(tmp_path)
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    gpu = {"providers": ["CUDAExecutionProvider"]}
    params = run_until_gate(_targets_params(tmp_path, digits_dir, {"cpu": {}, "gpu": gpu}))
    assert (
        "CUDAExecutionProvider is not available"
        in json.loads(Path("metrics/int8-static.json").read_text())["targets"]["gpu"]["skipped"]
    )
    with pytest.raises(GateFailedError, match="target gpu: it was skipped .*CUDAExecutionProvider.*optional: true"):
        gate(params, audit=False)
    assert json.loads(Path("reports/gate.json").read_text())["targets"]["gpu"]["verdict"] == "skipped"
    optional = load_params(_targets_params(tmp_path, digits_dir, {"cpu": {}, "gpu": {**gpu, "optional": True}}))
    verdict = gate(optional, audit=False)
    assert (
        verdict["verdict"] == "pass"
        and verdict["targets"]["gpu"]["verdict"] == "skipped"
        and verdict["matrix"]["int8-static"]["gpu"] == "skipped"
    )
    assert "gpu" not in promote(optional, dry_run=True)["targets"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p.update(targets={"a": {}}), "set either target (one) or targets (several), not both"),
        (lambda p: (p.pop("target"), p.update(targets={"x86 edge": {}})), "targets: name 'x86 edge' is not allowed"),
        (lambda p: (p.pop("target"), p.update(targets={})), "targets is empty"),
        (
            lambda p: (p.pop("target"), p.update(targets={"a": {"budgets": {"min_cosine": 0.9}}})),
            "targets.a.budgets.min_cosine judges task embedding",
        ),
        (lambda p: (p.pop("target"), p.update(targets={"a": {"runtime": "tflite"}})), "runtime"),
        (lambda p: p["target"].update(budgets={"min_speedup": 2.0}), "target.budgets applies under targets: only"),
        (lambda p: p["target"].update(runtime="executorch"), "target.runtime executorch runs only the .pte candidates"),
        (
            lambda p: p["recipes"].update(x={"targets": ["a"], "steps": [{"quantize": {}}]}),
            "recipes.x.targets names targets, but params.yaml has a single target",
        ),
        (
            lambda p: (
                p.pop("target"),
                p.update(targets={"a": {}}),
                p["recipes"].update(x={"targets": ["b"], "steps": [{"quantize": {}}]}),
            ),
            "recipes.x.targets: 'b' is not a target; targets: a",
        ),
        (
            lambda p: (
                p.pop("target"),
                p.update(targets={"a": {}}),
                p["recipes"].update(x={"targets": "a", "steps": [{"quantize": {}}]}),
            ),
            "recipes.x.targets must be a non-empty list",
        ),
    ],
)
def test_bad_targets_are_one_line_errors(change, message, digits_dir, tmp_path):
    path = write_params(tmp_path, digits_dir)
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        load_params(path)
    assert "\n" not in str(e.value)


def test_a_recipe_for_some_targets_is_not_applicable_on_the_others(
    local_registry, digits_onnx, digits_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    path = _targets_params(tmp_path, digits_dir, {"edge": {}, "server": {"threads": 2, "batch_size": 8}})
    params = yaml.safe_load(path.read_text())
    params["recipes"] = {
        "int8-static": params["recipes"]["int8-static"],
        "server-dynamic": {"targets": ["server"], "steps": [{"quantize": {"mode": "dynamic"}}]},
    }
    params["budgets"]["min_speedup"] = 0.01
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    loaded = run_until_gate(path)
    assert json.loads(Path("artifacts/candidates/server-dynamic/manifest.json").read_text())["recipe"]["targets"] == [
        "server"
    ]
    metrics = json.loads(Path("metrics/server-dynamic.json").read_text())["targets"]
    assert (
        metrics["edge"] == {"not_applicable": "recipe server-dynamic is for server"} and "speedup" in metrics["server"]
    )
    verdict = gate(loaded)
    assert (
        verdict["matrix"]["server-dynamic"] == {"edge": "n/a", "server": "pass"}
        and verdict["targets"]["edge"]["selected"] == "int8-static"
    )


def test_executorch_target_runs_a_pte_and_matches_fp32(local_registry, digits_cnn, digits_dir, tmp_path, monkeypatch):
    """A recipe ending with the executorch step makes a .pte for the mobile target; the ONNX targets mark it n/a and the
    reverse.
    """
    import mlflow.pyfunc
    import numpy as np

    monkeypatch.chdir(tmp_path)
    registry.register_torch(digits_cnn, "digits-cnn", np.load(digits_dir / "eval.npz")["input"][:4], alias="champion")
    recipes = {
        "int8-static": [{"quantize": {"mode": "static"}}],
        "mobile-int8": [{"executorch": {"quantize": True, "num_samples": 64}}],
    }
    # what runs where is judged here, not speed: neither target's verdict may hang on a noisy speedup
    targets = {
        "x86": {"budgets": {"min_speedup": 0.01}},
        "mobile": {"runtime": "executorch", "budgets": {"min_speedup": 0.01}},
    }
    params = run_until_gate(_targets_params(tmp_path, digits_dir, targets, recipes=recipes))
    manifest = json.loads(Path("artifacts/candidates/mobile-int8/manifest.json").read_text())
    assert manifest["format"] == "executorch" and manifest["files"]["model"] == "model.pte"
    assert manifest["steps"][-1]["stats"]["quantized"] and manifest["steps"][-1]["stats"]["delegated_subgraphs"] >= 1
    program = json.loads(Path("metrics/mobile-int8.json").read_text())["targets"]
    assert (
        "executorch targets run .pte programs" not in json.dumps(program)
        and "runs the ONNX candidates" in program["x86"]["not_applicable"]
    )
    mobile = program["mobile"]
    # INT8 on XNNPACK keeps FP32's predictions
    assert mobile["runtime"] == "executorch" and mobile["agreement"] >= 0.95 and mobile["accuracy_drop_ci_high"] <= 0.03
    assert mobile["latency_p50_ms"] > 0
    assert (
        "executorch targets run .pte programs"
        in json.loads(Path("metrics/int8-static.json").read_text())["targets"]["mobile"]["not_applicable"]
    )
    baseline = json.loads(Path("metrics/baseline.json").read_text())["targets"]["mobile"]
    assert baseline["runtime"] == "executorch" and baseline["accuracy"] > 0.9  # the source lowered in FP32

    verdict = gate(params)
    assert (
        verdict["targets"]["mobile"]["selected"] == "mobile-int8"
        and verdict["targets"]["x86"]["selected"] == "int8-static"
    )
    assert verdict["matrix"]["mobile-int8"]["x86"] == "n/a" and verdict["matrix"]["int8-static"]["mobile"] == "n/a"
    result = promote(params)["targets"]["mobile"]
    assert (
        result["action"] == "register"
        and registry.alias_version("digits-cnn-edge", "candidate-mobile") == result["version"]
    )
    served = mlflow.pyfunc.load_model("models:/digits-cnn-edge@candidate-mobile")  # the .pte, served as a pyfunc
    x = np.load(digits_dir / "eval.npz")["input"][:8]
    assert (
        np.asarray(served.predict(x)).argmax(1) == digits_cnn(__import__("torch").from_numpy(x)).argmax(1).numpy()
    ).mean() >= 0.85


def test_a_recipe_must_end_with_the_executorch_step(local_registry, digits_cnn, digits_dir, tmp_path, monkeypatch):
    import numpy as np

    from squeezeflow.stages.compress import compress
    from squeezeflow.stages.pull import pull

    monkeypatch.chdir(tmp_path)
    registry.register_torch(digits_cnn, "digits-cnn", np.load(digits_dir / "eval.npz")["input"][:4], alias="champion")
    recipes = {"bad": [{"executorch": {"quantize": False}}, {"quantize": {"mode": "dynamic"}}]}
    params = load_params(
        _targets_params(tmp_path, digits_dir, {"x86": {}, "mobile": {"runtime": "executorch"}}, recipes=recipes)
    )
    pull(params)
    with pytest.raises(ConfigError, match="follows the executorch step.*last step"):
        compress(params, "bad")
