"""The compress stage: PyTorch steps get the source's torch model; the formats are checked."""

import numpy as np
import pytest

from conftest import register_onnx, write_params
from squeezeflow import registry
from squeezeflow.config import load_params
from squeezeflow.errors import ConfigError
from squeezeflow.onnx import modelfile, sessions
from squeezeflow.stages.compress import compress
from squeezeflow.stages.pull import pull


def test_qat_then_nothing_else_on_a_torch_source(local_registry, digits_cnn, digits_dir, tmp_path):
    """On MLflow's default pt2 format, distilled from the source's own soft outputs."""
    registry.register_torch(digits_cnn, "digits-cnn", np.load(digits_dir / "eval.npz")["input"][:4], alias="champion")
    params = load_params(
        write_params(tmp_path, digits_dir, recipes={"qat": [{"qat": {"epochs": 1, "distill_temperature": 2.0}}]})
    )
    pull(params)
    manifest = compress(params, "qat")
    assert [s["kind"] for s in manifest["steps"]] == ["qat"]
    assert (
        manifest["steps"][0]["stats"]["mode"] == "qat"
        and manifest["steps"][0]["stats"]["targets"] == "fp32 soft outputs, T=2.0"
    )
    assert "QuantizeLinear" in modelfile.op_counts(tmp_path / "artifacts/candidates/qat/model.onnx")
    # known from params.yaml alone: refused before any stage runs
    bad = {"bad": [{"quantize": {"mode": "dynamic"}}, {"qat": {"epochs": 1}}]}
    with pytest.raises(ConfigError, match="recipes.bad.1: step 'qat' needs a PyTorch model but follows an ONNX step"):
        load_params(write_params(tmp_path, digits_dir, recipes=bad))


def test_torch_step_on_an_onnx_source_is_a_failed_candidate(local_registry, digits_onnx, digits_dir, tmp_path):
    from squeezeflow.data import artifacts

    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    params = load_params(write_params(tmp_path, digits_dir, recipes={"qat": [{"qat": {}}]}))
    pull(params)
    record = compress(params, "qat")
    assert record["failed"] and record["step"] == "qat" and "is registered as ONNX" in record["reason"]
    assert artifacts.read_failure(tmp_path / "artifacts/candidates/qat") == record
    assert not (tmp_path / "artifacts/candidates/qat/model.onnx").exists()


def test_manifest_records_resolved_params_stats_and_lineage(local_registry, digits_onnx, digits_dir, tmp_path):
    import json

    from squeezeflow.data import artifacts

    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    recipes = {"int8": [{"quantize": {"mode": "static", "calibration": "percentile"}}]}
    params = load_params(write_params(tmp_path, digits_dir, recipes=recipes))
    source = pull(params)
    manifest = compress(params, "int8")
    (step,) = manifest["steps"]
    assert step["kind"] == "quantize" and step["mode"] == "static" and step["calibration"] == "percentile"
    assert step["per_channel"] is True and step["num_bins"] == 2048  # defaults resolved, not just what was written
    assert step["stats"]["calibration_samples"] == 179 and step["stats"]["quantized_ops"]["QuantizeLinear"] > 0
    assert (
        manifest["root"] == source["root"]
        and manifest["recipe"]["name"] == "int8"
        and len(manifest["recipe"]["digest"]) == 64
    )
    folder = tmp_path / "artifacts/candidates/int8"
    assert manifest["parent_digest"] == artifacts.manifest_digest(tmp_path / "artifacts/source")
    assert artifacts.read_manifest(folder)["sha256"] == manifest["sha256"]
    props = modelfile.metadata(folder / "model.onnx")
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
    assert "QuantizeLinear" in modelfile.op_counts(model)
    base = sizes(tmp_path / "artifacts/source/model.onnx")
    assert sizes(model)["size_gzip_mb"] * 6 < base["size_gzip_mb"]
    ev = np.load(digits_dir / "eval.npz")
    out = sessions.run(sessions.session(model), {"input": ev["input"]})
    assert (out.argmax(1) == ev["labels"]).mean() >= 0.9


def test_qat_takes_a_model_with_two_inputs(tmp_path):
    """QAT on a transformer over (input_ids, attention_mask): fake-quantized training, ONNX QDQ export with both
    inputs.
    """
    import onnx

    from squeezeflow.onnx import sessions
    from squeezeflow.steps import StepContext
    from squeezeflow.steps.qat import QatConfig, qat
    from squeezeflow.torch import architectures, train

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=(128, 8), dtype=np.int64)
    mask = np.ones((128, 8), dtype=np.int64)
    labels = (ids[:, 0] >= 25).astype(np.int64)
    np.savez(tmp_path / "train.npz", input_ids=ids, attention_mask=mask, labels=labels)
    model = train.fit(
        architectures.text_transformer(50, 8, 2, dim=32, heads=2, layers=1, ff=64),
        {"input_ids": ids, "attention_mask": mask},
        labels,
        epochs=3,
        seed=0,
        desc="t",
    )
    work = tmp_path / "qat"
    work.mkdir()
    result = qat(model, QatConfig(epochs=1), StepContext(workdir=work, train=tmp_path / "train.npz"))
    graph = onnx.load(str(result.model)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert result.stats["quantized_ops"].get("QuantizeLinear", 0) > 0
    out = sessions.run(sessions.session(result.model), {"input_ids": ids, "attention_mask": mask})
    assert out.shape == (128, 2)


def test_a_step_that_changes_next_to_nothing_warns(local_registry, digits_cnn, digits_dir, tmp_path):
    """Clustering that skips every layer (min_size above all of them) and 1% pruning are no-ops: said on the
    command line and in the gate's table, with the cause; a real compression says nothing."""
    import json

    from conftest import BIN, sh
    from helpers import run_until_gate
    from squeezeflow.stages.gate import gate

    registry.register_torch(digits_cnn, "digits-cnn", np.load(digits_dir / "eval.npz")["input"][:4], alias="champion")
    recipes = {
        "int8-static": [{"quantize": {"mode": "static"}}],
        "skip-all": [{"cluster": {"clusters": 16, "min_size": 10**9}}],
        # ConvInteger: slower on x86
        "prune-1pc": [{"prune": {"amount": 0.01}}],
        "int8-dynamic": [{"quantize": {"mode": "dynamic"}}],
    }
    path = write_params(tmp_path, digits_dir, recipes=recipes, budgets={"max_accuracy_drop": 0.05})
    params = run_until_gate(path)
    manifests = {r: json.loads((tmp_path / "artifacts/candidates" / r / "manifest.json").read_text()) for r in recipes}
    assert manifests["int8-static"]["warnings"] == []
    (size_warning,) = manifests["skip-all"]["warnings"]
    assert size_warning.startswith("cluster changed no layer") and "cluster clustered 0 layer(s)" in size_warning
    (zeros_warning,) = manifests["prune-1pc"]["warnings"]
    assert zeros_warning.startswith("only 1.0% of its weights are zero")
    cli = sh(BIN / "squeezeflow", "compress", "skip-all", cwd=tmp_path)
    assert "compress skip-all: WARNING: cluster changed no layer" in cli.stderr
    verdict = gate(params)
    table = (tmp_path / "reports/gate.md").read_text()
    assert "skip-all: WARNING: cluster changed no layer" in table and "(warning: see notes)" in table
    assert not any(n.startswith("WARNING") for n in verdict["candidates"]["int8-static"]["notes"])
    # smaller as promised, but clearly slower than FP32: said with the ops it made
    slower = verdict["candidates"]["int8-dynamic"]["notes"][0]
    assert (
        slower.startswith("WARNING: it runs at 0.")
        and "slower: quantize quantized" in slower
        and "ConvInteger" in slower
    )
