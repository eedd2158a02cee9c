"""Models too big for one protobuf file: ONNX external data through export, pull, compression,
hashing, evaluation and promotion. The threshold is lowered so that a small transformer takes the
path a >2 GB model takes (SQUEEZEFLOW_EXTERNAL_DATA_BYTES)."""

import numpy as np
import pytest

from conftest import register_onnx
from squeezeflow import data, registry
from squeezeflow.config import load_params
from squeezeflow.data import artifacts
from squeezeflow.errors import ModelError
from squeezeflow.onnx import modelfile, sessions
from squeezeflow.stages.compress import compress
from squeezeflow.stages.evaluate import evaluate
from squeezeflow.stages.gate import gate
from squeezeflow.stages.promote import promote
from squeezeflow.stages.pull import pull
from squeezeflow.torch import architectures, convert


@pytest.fixture
def external_model(local_registry, tmp_path, monkeypatch):
    """A small transformer exported and registered with its weights as external data; eval.npz labelled by it."""
    monkeypatch.setenv("SQUEEZEFLOW_EXTERNAL_DATA_BYTES", "10000")
    model = architectures.text_transformer(200, 8, 2, dim=32, heads=2, layers=2, ff=64).eval()
    rng = np.random.default_rng(0)
    inputs = {
        "input_ids": rng.integers(0, 200, size=(64, 8), dtype=np.int64),
        "attention_mask": np.ones((64, 8), dtype=np.int64),
    }
    path = tmp_path / "export" / "model.onnx"
    path.parent.mkdir()
    convert.export_onnx(model, {k: v[:8] for k, v in inputs.items()}, path)
    labels = sessions.run(sessions.session(path), inputs).argmax(-1)
    np.savez(tmp_path / "eval.npz", **inputs, labels=labels)
    register_onnx(path, "big", alias="champion")
    return path


def _params(tmp_path):
    import yaml

    params = {
        "source": {"model_uri": "models:/big@champion"},
        "data": {"eval": str(tmp_path / "eval.npz"), "calibration": str(tmp_path / "eval.npz")},
        "recipes": {
            "int8-dynamic": [{"quantize": {"mode": "dynamic"}}],
            "int4": [{"quantize": {"mode": "int4", "block_size": 16}}],
            "int8-static": [{"quantize": {"mode": "static", "calibration": "entropy"}}],
            "fp16": [{"quantize": {"mode": "fp16"}}],
        },
        "budgets": {"max_accuracy_drop": 1.0},
        "target": {"warmup": 2, "repeats": 20, "max_seconds": 2},
        "promote": {"registered_model": "big-edge"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return load_params(tmp_path / "params.yaml")


def test_export_writes_external_data_and_copy_renames_it(external_model, tmp_path):
    assert artifacts.side_file(external_model).stat().st_size > 10000
    assert external_model.stat().st_size < 100_000  # the graph alone
    copied = modelfile.copy_onnx(external_model, tmp_path / "elsewhere.onnx")
    assert artifacts.side_file(copied).is_file()
    feed = {k: v[:4] for k, v in data.inputs_of(dict(np.load(tmp_path / "eval.npz"))).items()}
    np.testing.assert_array_equal(
        sessions.run(sessions.session(copied), feed), sessions.run(sessions.session(external_model), feed)
    )


def test_pipeline_keeps_external_data_from_pull_to_promotion(external_model, tmp_path):
    params = _params(tmp_path)
    source = pull(params)
    src_model = artifacts.model_path("artifacts/source")
    assert artifacts.side_file(src_model).is_file()
    # the weights are in the digest
    assert source["sha256"] == artifacts.model_digest(src_model) != data.digest(src_model)
    for recipe in params.recipes:
        compress(params, recipe)
    for recipe in params.recipes:  # every mode keeps the weights beside the graph
        assert artifacts.side_file(artifacts.model_path(f"artifacts/candidates/{recipe}")).is_file(), recipe
    cand = artifacts.model_path("artifacts/candidates/int8-dynamic")
    assert modelfile.metadata(cand)["squeezeflow.recipe"]
    # a changed weight file is caught by the manifest check
    blob = bytearray(artifacts.side_file(cand).read_bytes())
    original = bytes(blob)
    blob[len(blob) // 2] ^= 0xFF
    artifacts.side_file(cand).write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        artifacts.read_manifest(cand.parent)
    artifacts.side_file(cand).write_bytes(original)
    metrics = {name: evaluate(params, name) for name in ["baseline", *params.recipes]}
    assert metrics["int4"]["size_mb"] * 1e6 == sum(
        f.stat().st_size for f in artifacts.model_files(artifacts.model_path("artifacts/candidates/int4"))
    )
    verdict = gate(params)
    promoted = promote(params)
    assert promoted["action"] == "register"
    # the registered version holds the weights too, and runs the same as the candidate
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(
        f"models:/big-edge/{promoted['version']}", dst_path=str(tmp_path / "dl")
    )
    got = tmp_path / "dl" / "model.onnx"
    import onnx

    assert local and any(t.external_data for t in onnx.load(str(got), load_external_data=False).graph.initializer)
    feed = {k: v[:8] for k, v in data.inputs_of(dict(np.load(tmp_path / "eval.npz"))).items()}
    selected = artifacts.model_path(f"artifacts/candidates/{verdict['selected']}")
    np.testing.assert_allclose(
        sessions.run(sessions.session(got), feed), sessions.run(sessions.session(selected), feed), rtol=1e-5, atol=1e-6
    )
    assert registry.resolve(f"models:/big-edge/{promoted['version']}").tags[
        "squeezeflow.artifact_sha256"
    ] == artifacts.model_digest(selected)
