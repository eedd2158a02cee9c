"""The compress stage: PyTorch steps get the source's torch model; the formats are checked."""

import numpy as np
import pytest

from conftest import register_onnx, write_params
from squeezeflow import modelio, registry
from squeezeflow.config import load_params
from squeezeflow.errors import ConfigError
from squeezeflow.stages.compress import compress
from squeezeflow.stages.pull import pull


def test_qat_then_nothing_else_on_a_torch_source(local_registry, digits_cnn, digits_dir, tmp_path):
    registry.register_torch(digits_cnn, "digits-cnn", np.load(digits_dir / "eval.npz")["input"][:4], alias="champion")
    recipes = {"qat": [{"qat": {"epochs": 1}}], "bad": [{"quantize": {"mode": "dynamic"}}, {"qat": {"epochs": 1}}]}
    params = load_params(write_params(tmp_path, digits_dir, recipes=recipes))
    pull(params)
    manifest = compress(params, "qat")
    assert [s["kind"] for s in manifest["steps"]] == ["qat"]
    assert manifest["steps"][0]["stats"]["mode"] == "qat"
    assert "QuantizeLinear" in modelio.op_counts(tmp_path / "artifacts/candidates/qat/model.onnx")
    with pytest.raises(ConfigError, match="recipes.bad: step 'qat' needs a PyTorch model but follows an ONNX step"):
        compress(params, "bad")
    assert not (tmp_path / "artifacts/candidates/bad").exists()


def test_torch_step_on_an_onnx_source_is_a_config_error(local_registry, digits_onnx, digits_dir, tmp_path):
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    params = load_params(write_params(tmp_path, digits_dir, recipes={"qat": [{"qat": {}}]}))
    pull(params)
    with pytest.raises(ConfigError, match="is registered as ONNX"):
        compress(params, "qat")
