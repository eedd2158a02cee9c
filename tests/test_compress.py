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


def test_manifest_records_resolved_params_stats_and_lineage(local_registry, digits_onnx, digits_dir, tmp_path):
    import json

    from squeezeflow import artifacts

    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    recipes = {"int8": [{"quantize": {"mode": "static", "calibration": "percentile"}}]}
    params = load_params(write_params(tmp_path, digits_dir, recipes=recipes))
    source = pull(params)
    manifest = compress(params, "int8")
    (step,) = manifest["steps"]
    assert step["kind"] == "quantize" and step["mode"] == "static" and step["calibration"] == "percentile"
    assert step["per_channel"] is True and step["num_bins"] == 2048  # defaults resolved, not just what was written
    assert step["stats"]["calibration_samples"] == 179 and step["stats"]["quantized_ops"]["QuantizeLinear"] > 0
    assert manifest["root"] == source["root"] and manifest["recipe"]["name"] == "int8" and len(manifest["recipe"]["digest"]) == 64
    folder = tmp_path / "artifacts/candidates/int8"
    assert manifest["parent_digest"] == artifacts.manifest_digest(tmp_path / "artifacts/source")
    assert artifacts.read_manifest(folder)["sha256"] == manifest["sha256"]
    props = modelio.metadata(folder / "model.onnx")
    assert json.loads(props["squeezeflow.steps"])[0]["calibration"] == "percentile"


def test_deep_compression_recipe_on_a_registered_pt2_model(local_registry, digits_cnn, digits_dir, tmp_path):
    """prune -> finetune -> cluster -> quantize in one recipe: torch steps, then the ONNX step."""
    from squeezeflow.evaluate.size import sizes

    registry.register_torch(digits_cnn, "digits-cnn", np.load(digits_dir / "eval.npz")["input"][:4], alias="champion")
    recipe = [
        {"prune": {"method": "unstructured", "amount": 0.8}},
        {"finetune": {"epochs": 1, "lr": 0.001}},
        {"cluster": {"clusters": 16}},
        {"quantize": {"mode": "static"}},
    ]
    params = load_params(write_params(tmp_path, digits_dir, recipes={"deep": recipe}))
    pull(params)
    manifest = compress(params, "deep")
    assert [s["kind"] for s in manifest["steps"]] == ["prune", "finetune", "cluster", "quantize"]
    assert manifest["steps"][0]["stats"]["sparsity"] >= 0.79
    assert manifest["steps"][2]["stats"]["layers_clustered"] == 3
    model = tmp_path / "artifacts/candidates/deep/model.onnx"
    assert "QuantizeLinear" in modelio.op_counts(model)
    base = sizes(tmp_path / "artifacts/source/model.onnx")
    assert sizes(model)["size_gzip_mb"] * 6 < base["size_gzip_mb"]
    ev = np.load(digits_dir / "eval.npz")
    out = modelio.run(modelio.session(model), {"input": ev["input"]})
    assert (out.argmax(1) == ev["labels"]).mean() >= 0.9
