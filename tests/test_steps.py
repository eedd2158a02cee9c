"""The same checks over every registered step, plus what each quantize mode does to the graph."""

import numpy as np
import pytest
import yaml

from squeezeflow.config import parse_recipes, step_params
from squeezeflow.onnx import modelfile, sessions
from squeezeflow.steps import StepContext, config_class, get_step, known_steps
from squeezeflow.torch import convert


@pytest.mark.parametrize("kind", known_steps())
def test_defaults_and_yaml_round_trip(kind):
    cls = config_class(kind)
    config = cls()
    text = yaml.safe_dump({"r": [{kind: config.model_dump(mode="json")}]})
    (again,) = parse_recipes(yaml.safe_load(text), "params.yaml")["r"]
    assert again == config and step_params(again)["kind"] == kind


@pytest.mark.parametrize("kind", known_steps())
def test_every_field_is_documented(kind):
    cls = config_class(kind)
    assert cls.__doc__
    assert all(field.description for field in cls.model_fields.values())


@pytest.mark.parametrize("kind", known_steps())
def test_unknown_key_is_rejected(kind):
    from squeezeflow.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"recipes\.r\.0\.{kind}\.no_such_option is not a known key"):
        parse_recipes({"r": [{kind: {"no_such_option": 1}}]}, "params.yaml")


@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=pytest.mark.integration) if k == "executorch" else k for k in known_steps()]
)  # ExecuTorch's export runs its flatbuffer compiler as a process
def test_runs_on_tiny_model_and_exports_for_ort(kind, digits_onnx, digits_cnn, digits_dir, tmp_path):
    import copy

    cls = config_class(kind)
    config = cls(epochs=1) if "epochs" in cls.model_fields else cls()
    soft = _soft_labels(digits_onnx, digits_dir, tmp_path) if kind == "distill" else None
    ctx = StepContext(
        workdir=tmp_path, calibration=digits_dir / "calibration.npz", train=digits_dir / "train.npz", soft_labels=soft
    )
    model = copy.deepcopy(digits_cnn) if cls.input_format == "torch" else digits_onnx
    result = get_step(config)(model, config, ctx)
    if not isinstance(result.model, type(digits_onnx)):
        result_path = tmp_path / "exported.onnx"
        convert.export_onnx(result.model, {"input": np.load(digits_dir / "eval.npz")["input"][:8]}, result_path)
        result = type(result)(result_path, result.stats)
    eval_set = np.load(digits_dir / "eval.npz")
    if result.model.suffix == ".pte":  # the executorch step's program runs on ExecuTorch, not ORT
        from squeezeflow import runtimes
        from squeezeflow.config import Target

        runner = runtimes.open_model(
            result.model, Target(runtime="executorch"), sessions.session(digits_onnx).get_inputs()
        )
    else:
        runner = sessions.session(result.model)
    logits = sessions.run(runner, {"input": eval_set["input"]})
    assert logits.shape == (len(eval_set["labels"]), 10)
    assert result.stats


def _soft_labels(onnx_path, digits_dir, folder):
    """The soft-labels stage's output for a source folder holding `onnx_path` (the only teacher)."""
    import shutil

    from conftest import write_params
    from squeezeflow import data
    from squeezeflow.config import load_params
    from squeezeflow.data import artifacts
    from squeezeflow.stages.soft_labels import soft_labels

    source = folder / "source"
    source.mkdir()
    shutil.copyfile(onnx_path, artifacts.model_path(source))
    root = {"name": "digits-cnn", "version": "1"}
    artifacts.write_manifest(
        source,
        {
            "format": "onnx",
            "files": {"model": artifacts.MODEL_FILE},
            "sha256": data.digest(onnx_path),
            "parent_digest": None,
            "steps": [],
            "root": root,
            "inputs": [],
        },
    )
    params = load_params(write_params(folder, digits_dir, recipes={"kd": [{"distill": {}}]}))
    soft_labels(params, source_dir=source, registered_dir=folder / "registered", out_dir=folder / "soft-labels")
    return folder / "soft-labels" / "kd"


MODES = [
    ({"mode": "static", "per_channel": True}, {"QuantizeLinear", "DequantizeLinear"}, {"ConvInteger", "MatMulInteger"}),
    (
        {"mode": "static", "calibration": "percentile", "per_channel": False},
        {"QuantizeLinear", "DequantizeLinear"},
        {"ConvInteger"},
    ),
    (
        {"mode": "dynamic", "per_channel": True},
        {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"},
        {"QuantizeLinear"},
    ),
    ({"mode": "dynamic", "op_types": ["MatMul", "Gemm"]}, {"DynamicQuantizeLinear", "MatMulInteger"}, {"ConvInteger"}),
]


@pytest.mark.parametrize("options,present,absent", MODES, ids=lambda v: str(v) if isinstance(v, dict) else None)
def test_quantize_modes(options, present, absent, digits_onnx, digits_dir, tmp_path):
    from squeezeflow.steps.quantize import QuantizeConfig, quantize

    config = QuantizeConfig(**options)
    result = quantize(digits_onnx, config, StepContext(workdir=tmp_path, calibration=digits_dir / "calibration.npz"))
    ops = modelfile.op_counts(result.model)
    assert present <= set(ops), ops
    assert not absent & set(ops), ops
    assert result.stats["mode"] == options["mode"] and result.stats["bits"] == 8
    if options["mode"] == "static":
        assert result.stats["calibration_samples"] == 179  # the whole calibration split (< num_samples)
    eval_set = np.load(digits_dir / "eval.npz")
    fp32 = sessions.run(sessions.session(digits_onnx), {"input": eval_set["input"]})
    int8 = sessions.run(sessions.session(result.model), {"input": eval_set["input"]})
    agreement = float((fp32.argmax(1) == int8.argmax(1)).mean())
    assert agreement >= 0.97
    if not options.get("op_types"):  # every weight quantized: about 4x smaller
        assert result.model.stat().st_size < 0.35 * digits_onnx.stat().st_size


def test_static_without_calibration_data_is_a_config_error(digits_onnx, tmp_path):
    from squeezeflow.errors import ConfigError
    from squeezeflow.steps.quantize import QuantizeConfig, quantize

    with pytest.raises(ConfigError, match="set data.calibration"):
        quantize(digits_onnx, QuantizeConfig(mode="static"), StepContext(workdir=tmp_path))
