"""Inputs that are not batch-first arrays (Silero VAD's state [2, N, 128] and scalar sr): params.yaml's data.inputs
declares a batch axis or a constant, and every stage (check-data, calibration, scoring, timing) feeds the model so."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import BIN, error_line, register_onnx, sh, write_params
from squeezeflow import data
from squeezeflow.errors import DataError
from squeezeflow.onnx import sessions
from squeezeflow.steps import StepContext
from squeezeflow.steps.quantize import QuantizeConfig, quantize

RNG = np.random.default_rng(0)
W = RNG.normal(size=(8, 4)).astype(np.float32)
LAYOUT = {"state": {"batch_axis": 1}, "sr": {"value": 16000}}


def _stateful(path) -> None:
    """out = x @ W + sum(state, axis 0) * sr / 16000, [N, 4]; stateN = state + out, [2, N, 4] (like an RNN's)."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("ReduceSum", ["state", "zero"], ["summed"], keepdims=0),
            helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
            helper.make_node("Div", ["srf", "rate"], ["scale"]),
            helper.make_node("Mul", ["summed", "scale"], ["carried"]),
            helper.make_node("Add", ["xw", "carried"], ["out"]),
            helper.make_node("Add", ["state", "out"], ["stateN"]),
        ],
        "stateful",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "N", 4]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "N", 4]),
        ],
        [
            numpy_helper.from_array(W, "w"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
            numpy_helper.from_array(np.float32(16000), "rate"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _files(folder, n=96):
    """Sample-first files: x [N, 8], state [N, 2, 4] (the model takes [2, N, 4]), no sr."""
    x = RNG.normal(size=(n, 8)).astype(np.float32)
    state = RNG.normal(size=(n, 2, 4)).astype(np.float32)
    for role in ("eval", "calibration", "train"):
        np.savez(folder / f"{role}.npz", x=x, state=state)
    return x, state


@pytest.fixture(autouse=True)
def _no_layout_left():
    yield
    data.use_layout({})


def test_each_stage_feeds_the_declared_batch_axis_and_constant(tmp_path):
    _stateful(tmp_path / "m.onnx")
    x, state = _files(tmp_path)
    sess = sessions.session(tmp_path / "m.onnx")
    arrays = data.load(tmp_path / "eval.npz", "eval")
    with pytest.raises(DataError, match=r"'sr' is a scalar.*data.inputs: \{sr: \{value"):  # not data: a constant
        data.check_inputs(arrays, sess.get_inputs(), "eval.npz")
    data.use_layout(LAYOUT)
    data.check_inputs(arrays, sess.get_inputs(), "eval.npz")
    outputs = sessions.run_outputs(sess, arrays, 10)  # batches of 10: the last one holds 6
    expected = x @ W + state.sum(axis=1)
    assert np.allclose(outputs["out"], expected, atol=1e-5)
    # state out is batched like state in: sample axis first again
    assert np.allclose(outputs["stateN"], state + expected[:, None, :], atol=1e-5)
    # a wrong axis, an unknown input, a constant in the file: one line each
    data.use_layout({"state": {"batch_axis": 3}})
    with pytest.raises(DataError, match="batch_axis is 3"):
        data.check_inputs(arrays, sess.get_inputs(), "eval.npz")
    data.use_layout({"sate": {"batch_axis": 1}})
    with pytest.raises(DataError, match="'sate', which is not a model input"):
        data.check_inputs(arrays, sess.get_inputs(), "eval.npz")
    data.use_layout(LAYOUT)
    np.savez(tmp_path / "with_sr.npz", x=x, state=state, sr=np.full(len(x), 16000))
    with pytest.raises(DataError, match="constant in params.yaml"):
        data.load(tmp_path / "with_sr.npz", "eval")
    # static INT8 calibrates through the same feed
    result = quantize(
        tmp_path / "m.onnx", QuantizeConfig(), StepContext(workdir=tmp_path, calibration=tmp_path / "calibration.npz")
    )
    assert result.stats["quantized_ops"]["QuantizeLinear"] >= 1


def test_a_scalar_array_names_the_params_fix(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8), np.float32), sr=np.int64(16000))
    with pytest.raises(DataError, match=r"data.inputs: \{sr: \{value: \.\.\.\}\}"):
        data.load(tmp_path / "d.npz", "eval")


@pytest.mark.integration  # starts a process
def test_a_stateful_model_runs_from_pull_to_a_verdict(local_registry, tmp_path):
    _stateful(tmp_path / "m.onnx")
    _files(tmp_path)
    register_onnx(tmp_path / "m.onnx", "stateful", alias="champion")
    recipes = {"int8-static": [{"quantize": {"mode": "static"}}], "int8-dynamic": [{"quantize": {"mode": "dynamic"}}]}
    write_params(
        tmp_path,
        tmp_path,
        source={"model_uri": "models:/stateful@champion"},
        data__task="generic",
        data__inputs=LAYOUT,
        recipes=recipes,
        budgets={"min_speedup": 0.01, "max_output_error": 10.0},
    )
    for stage in ("pull", "check-data"):
        proc = sh(BIN / "squeezeflow", stage, cwd=tmp_path, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for recipe in ("baseline", *recipes):
        if recipe != "baseline":
            sh(BIN / "squeezeflow", "compress", recipe, cwd=tmp_path)
        proc = sh(BIN / "squeezeflow", "evaluate", recipe, cwd=tmp_path, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics/int8-static.json").read_text())
    # both outputs scored, samples first: the state out too, and close to FP32 (x86 INT8 of a 8x4 MatMul)
    assert metrics["output.out.mean_rel_error"] < 0.1 and metrics["output.stateN.mean_rel_error"] < 0.1
    proc = sh(BIN / "squeezeflow", "gate", cwd=tmp_path, check=False)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    # without data.inputs the same files are refused in one line that names the fix
    write_params(
        tmp_path,
        tmp_path,
        source={"model_uri": "models:/stateful@champion"},
        data__task="generic",
        recipes=recipes,
        budgets={"min_speedup": 0.01, "max_output_error": 10.0},
    )
    proc = sh(BIN / "squeezeflow", "check-data", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "'sr'" in error_line(proc)


def test_init_names_each_axis_and_writes_the_layout_of_a_stateful_model():
    import yaml

    from squeezeflow.cli import scaffold
    from squeezeflow.config import Data

    def io(name, shape, params=None, dtype="float32"):
        return {"name": name, "shape": shape, "axes": scaffold.axis_names(shape, params), "dtype": dtype}

    vad = {
        "name": "vad",
        "flavor": "onnx",
        "inputs": [io("input", [-1, -1]), io("state", [2, -1, 128]), io("sr", [], dtype="int64")],
        "outputs": [io("output", [-1, 1]), io("stateN", [-1, -1, -1])],
    }
    text = scaffold.params_text("models:/vad@champion", vad)
    written = yaml.safe_load(text)["data"]
    assert written["inputs"] == {"state": {"batch_axis": 1}, "sr": {"value": None}}
    assert '"state" "float32" [N, 2, 128]' in text and "the model takes [2, N, 128]" in text
    Data.model_validate({**written, "eval": "e.npz"})  # what init writes is valid params
    # no recipe of an ONNX source trains: dvc.yaml's train dependency is the calibration file, not a missing one
    assert written["train"] == written["calibration"]
    image = io("x", [-1, 3, -1, -1], ["batch", "", "height", "width"])
    assert image["axes"] == ["N", 3, "height", "width"]
    assert scaffold.axis_names([-1, 3, -1, -1]) == ["N", 3, "D2", "D3"]


def test_an_embedding_with_unit_axes_is_scored_as_vectors():
    """openWakeWord's speech embedding is [N, 1, 1, 96]: scored as [N, 96] vectors, not refused."""
    from squeezeflow.errors import ModelError
    from squeezeflow.evaluate import tasks

    base = RNG.normal(size=(40, 1, 1, 96)).astype(np.float32)
    cand = base + RNG.normal(scale=0.05, size=base.shape).astype(np.float32)
    tasks.check_outputs({"emb": base}, 40, "embedding", "m.onnx")
    metrics, _ = tasks.score("embedding", {"emb": base}, {"emb": cand}, None)
    assert 0.99 < metrics["cosine"] < 1.0
    with pytest.raises(ModelError, match="task embedding needs"):  # a real second axis is still no vector
        tasks.check_outputs({"emb": RNG.normal(size=(40, 2, 1, 96))}, 40, "embedding", "m.onnx")


@pytest.mark.integration  # a registry, torch export
def test_a_pt2_model_keeps_the_output_names_its_signature_gives(local_registry, digits_dir, tmp_path):
    """Two outputs named logits and features: the source's ONNX and a torch step's candidate keep them (they were
    output0, output1), and parameter counts do not grow under compression."""
    import torch

    from helpers import run_until_gate
    from squeezeflow import registry

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU())
            self.head = torch.nn.Linear(32, 10)

        def forward(self, x):
            features = self.body(x)
            return self.head(features), features

    example = np.load(digits_dir / "eval.npz")["input"][:4]
    registry.register_torch(TwoHeads().eval(), "two-heads", example, alias="champion", outputs=("logits", "features"))
    recipes = {"cluster": [{"cluster": {"clusters": 16, "min_size": 64}}], "int8": [{"quantize": {"mode": "dynamic"}}]}
    path = write_params(
        tmp_path,
        digits_dir,
        source={"model_uri": "models:/two-heads@champion"},
        data__task="generic",
        recipes=recipes,
        budgets={"max_output_error": 10.0},
    )
    run_until_gate(path)
    for folder in ("artifacts/source", "artifacts/candidates/cluster", "artifacts/candidates/int8"):
        model = onnx.load(str(tmp_path / folder / "model.onnx"))
        assert [o.name for o in model.graph.output] == ["logits", "features"], folder
    metrics = {r: json.loads((tmp_path / f"metrics/{r}.json").read_text()) for r in ("baseline", *recipes)}
    assert "output.features.mean_abs_error" in metrics["int8"]
    assert all(metrics[r]["params"] <= metrics["baseline"]["params"] for r in recipes)


@pytest.mark.parametrize("value", [["a", 1], [[1, 2], [3]]], ids=["text", "ragged"])
def test_a_constant_that_is_no_array_is_refused_with_the_params(tmp_path, value):
    """A hostile or mistyped constant is one ConfigError when params.yaml is read, not a crash when a stage feeds it."""
    import yaml

    from squeezeflow.config import load_params
    from squeezeflow.errors import ConfigError

    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["data"]["inputs"] = {"sr": {"value": value}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"data.inputs.sr value .* is not an array"):
        load_params(tmp_path / "params.yaml")
