"""Models with control flow (If branches whose weights are Constant nodes, as exporters write them, like
Silero VAD's): quantize walks the subgraphs where ONNX Runtime can, keeps them float where it cannot,
never writes an invalid graph, and a step that quantizes nothing fails naming why."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from squeezeflow.errors import ModelError
from squeezeflow.onnx import modelfile, rewrites, sessions
from squeezeflow.steps import StepContext
from squeezeflow.steps.quantize import QuantizeConfig, quantize

RNG = np.random.default_rng(0)
W_THEN, W_ELSE = (RNG.normal(size=(16, 12)).astype(np.float32) for _ in range(2))
W_MAIN = RNG.normal(size=(12, 4)).astype(np.float32)


def _branch(name: str, weight: np.ndarray, source: str = "x") -> onnx.GraphProto:
    """A branch that reads `source` from the outer scope and multiplies it by a Constant-node weight."""
    return helper.make_graph(
        [
            helper.make_node("Constant", [], [f"{name}_w"], value=numpy_helper.from_array(weight, f"{name}_w")),
            helper.make_node("MatMul", [source, f"{name}_w"], [f"{name}_mm"]),
            helper.make_node("Relu", [f"{name}_mm"], [f"{name}_out"]),
        ],
        name,
        [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)],
    )


def _model(path, main_matmul: bool = True) -> np.ndarray:
    """x [N, 16] -> If(mean(x) > 0) -> [N, 12] (-> MatMul with an initializer -> [N, 4]); returns an input batch."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], keepdims=0),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.float32(0), "zero")),
        helper.make_node("Greater", ["mean", "zero"], ["cond"]),
        helper.make_node(
            "If", ["cond"], ["hidden"], then_branch=_branch("then", W_THEN), else_branch=_branch("else", W_ELSE)
        ),
    ]
    inits, out = [], "hidden"
    if main_matmul:
        nodes.append(helper.make_node("MatMul", ["hidden", "w_main"], ["logits"]))
        inits, out = [numpy_helper.from_array(W_MAIN, "w_main")], "logits"
    graph = helper.make_graph(
        nodes,
        "control_flow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 4 if main_matmul else 12])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return RNG.normal(size=(64, 16)).astype(np.float32) + 0.3


def _valid_and_close(source, candidate, x, tolerance) -> None:
    onnx.checker.check_model(onnx.load(str(candidate)), full_check=True)
    expected = sessions.session(source).run(None, {"x": x})[0]
    got = sessions.session(candidate).run(None, {"x": x})[0]
    assert np.abs(got - expected).max() <= tolerance * np.abs(expected).max()


def test_dynamic_quantizes_inside_if_branches_and_the_graph_stays_valid(tmp_path):
    source = tmp_path / "cf.onnx"
    x = _model(source)
    result = quantize(source, QuantizeConfig(mode="dynamic"), StepContext(workdir=tmp_path))
    # both branches' MatMuls and the main one: ORT's default skips the branches (1 MatMulInteger)
    assert result.stats["quantized_ops"]["MatMulInteger"] == 3
    _valid_and_close(source, result.model, x, 0.05)
    # the branches' Constant weights count as parameters, before and after: the count does not grow
    before, after = modelfile.weight_stats(source), modelfile.weight_stats(result.model)
    assert before["params"] == W_THEN.size + W_ELSE.size + W_MAIN.size
    assert after["params"] <= before["params"]


@pytest.mark.parametrize(
    "options",
    [{}, {"weight_rounding": "gptq"}, {"bias_correction": True}, {"smoothquant": 0.5}, {"mode": "auto"}],
    ids=["static", "gptq", "bias_correction", "smoothquant", "auto"],
)
def test_static_keeps_the_branches_float_and_writes_a_valid_graph(tmp_path, options):
    source = tmp_path / "cf.onnx"
    x = _model(source)
    np.savez(tmp_path / "calibration.npz", x=x)
    ctx = StepContext(workdir=tmp_path, calibration=tmp_path / "calibration.npz")
    result = quantize(source, QuantizeConfig(**options), ctx)
    if options.get("mode") == "auto":  # every variant quantized something; the fastest faithful one (or FP32) is kept
        assert {"static-per-channel", "dynamic-per-channel"} <= set(result.stats["changed_vs_fp32"])
        _valid_and_close(source, result.model, x, 0.05)
        return
    assert result.stats["quantized_ops"]["QuantizeLinear"] >= 1
    model = onnx.load(str(result.model))
    inner = [n.op_type for g in list(modelfile.graphs(model.graph))[1:] for n in g.node]
    assert "MatMul" in inner and "QuantizeLinear" not in inner
    _valid_and_close(source, result.model, x, 0.05)


@pytest.mark.parametrize(
    "mode, words",
    [("static", ("inside If/Loop/Scan subgraphs", "mode: dynamic")), ("dynamic", ("no Conv node", "op_types"))],
)
def test_a_quantize_step_that_quantizes_nothing_fails_naming_why(tmp_path, mode, words):
    source = tmp_path / "cf.onnx"
    x = _model(source, main_matmul=False)
    np.savez(tmp_path / "calibration.npz", x=x)
    # static: every weight is in a branch; dynamic: op_types asks for Conv only
    config = QuantizeConfig(mode=mode, op_types=None if mode == "static" else ["Conv"])
    with pytest.raises(ModelError, match="quantized no operator") as caught:
        quantize(source, config, StepContext(workdir=tmp_path, calibration=tmp_path / "calibration.npz"))
    assert all(w in str(caught.value) for w in words), caught.value


def test_toposort_waits_for_the_outer_names_a_branch_reads(tmp_path):
    source = tmp_path / "cf.onnx"
    _model(source, main_matmul=False)
    model = onnx.load(str(source))
    # the branches read `x`; make them read `scaled`, produced by a node placed after the If
    for graph in list(modelfile.graphs(model.graph))[1:]:
        for node in graph.node:
            node.input[:] = ["scaled" if i == "x" else i for i in node.input]
    model.graph.node.append(helper.make_node("Identity", ["x"], ["scaled"]))
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model, full_check=True)
    onnx.checker.check_model(rewrites.toposort(model), full_check=True)
    assert [n.op_type for n in model.graph.node].index("Identity") < [n.op_type for n in model.graph.node].index("If")


def _opset12_conv(path) -> np.ndarray:
    """A Conv + Relu graph at opset 12 (PP-OCRv4's recognizer ships at 12), and a calibration batch."""
    w = RNG.normal(size=(8, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["y"], ["z"])],
        "opset12",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 8, 8, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return RNG.normal(size=(32, 3, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_per_channel_int8_upgrades_an_opset_12_model_and_says_so(tmp_path, mode):
    source = tmp_path / "old.onnx"
    x = _opset12_conv(source)
    np.savez(tmp_path / "calibration.npz", x=x)
    ctx = StepContext(workdir=tmp_path, calibration=tmp_path / "calibration.npz")
    result = quantize(source, QuantizeConfig(mode=mode), ctx)
    assert result.stats["opset_upgraded"] == "12 -> 13"
    modelfile.load_onnx(result.model)  # the checker refused DequantizeLinear's axis at opset 12
    _valid_and_close(source, result.model, x, 0.1)
    # per-tensor needs no upgrade, and gets none
    (tmp_path / "t").mkdir()
    ctx = StepContext(workdir=tmp_path / "t", calibration=tmp_path / "calibration.npz")
    plain = quantize(source, QuantizeConfig(mode=mode, per_channel=False), ctx)
    assert "opset_upgraded" not in plain.stats


def test_an_invalid_graph_is_not_told_to_retry(tmp_path):
    """A deterministic failure (the checker refuses the graph) offers no `dvc repro --force`; a damaged file does."""
    bad = tmp_path / "bad.onnx"
    _opset12_conv(bad)
    model = onnx.load(str(bad))
    model.graph.node[0].input[1] = "missing"
    onnx.save(model, str(bad))
    with pytest.raises(ModelError) as invalid:
        modelfile.load_onnx(bad)
    assert "not a valid ONNX model" in str(invalid.value) and "--force" not in str(invalid.value)
    bad.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(ModelError, match="damaged on disk"):
        modelfile.load_onnx(bad)


def test_a_file_that_shrank_from_cleanup_alone_is_still_a_no_op(tmp_path, digits_onnx):
    """The no-op check reads what the steps say they did: a cluster step that palettized no layer warns even when the
    file is 1.5x smaller (Silero's graph cleanup shrank it 1.51x while nothing was quantized)."""
    from squeezeflow.evaluate import promises
    from squeezeflow.steps.cluster import ClusterConfig

    smaller = tmp_path / "smaller.onnx"
    model = onnx.load(str(digits_onnx))
    biggest = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    biggest.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(biggest).astype(np.float16), biggest.name))
    onnx.save(model, str(smaller))
    assert smaller.stat().st_size < 0.8 * digits_onnx.stat().st_size
    idle = {"layers_clustered": 0, "layers_palettized": 0}
    (warning,) = promises.warnings([ClusterConfig()], [idle], digits_onnx, smaller)
    assert warning.startswith("cluster changed no layer")
    assert (
        promises.warnings([ClusterConfig()], [{"layers_clustered": 3, "layers_palettized": 3}], digits_onnx, smaller)
        == []
    )


def test_chained_ifs_stay_a_valid_graph_after_dynamic_int8(tmp_path):
    """A second If whose branches read the first If's output (Silero VAD's decoder, as its op15 and half-precision
    variants ship): ORT's subgraph quantizer leaves the graph unsorted, which the step must repair."""
    square = [RNG.normal(size=(16, 16)).astype(np.float32) for _ in range(4)]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["mean"], keepdims=0),
            helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.float32(0), "zero")),
            helper.make_node("Greater", ["mean", "zero"], ["cond"]),
            helper.make_node(
                "If", ["cond"], ["h1"], then_branch=_branch("a", square[0]), else_branch=_branch("b", square[1])
            ),
            helper.make_node("Shape", ["h1"], ["shape"]),
            helper.make_node(
                "If",
                ["cond"],
                ["h2"],
                then_branch=_branch("c", square[2], "h1"),
                else_branch=_branch("d", square[3], "h1"),
            ),
        ],
        "chained",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [
            helper.make_tensor_value_info("h2", TensorProto.FLOAT, ["N", 16]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
    )
    source = tmp_path / "chained.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    x = RNG.normal(size=(32, 16)).astype(np.float32) + 0.3
    result = quantize(source, QuantizeConfig(mode="dynamic"), StepContext(workdir=tmp_path))
    assert result.stats["quantized_ops"]["MatMulInteger"] == 4
    _valid_and_close(source, result.model, x, 0.1)


def test_dynamic_int8_of_a_gemm_only_model_names_the_missing_kernel(tmp_path):
    """op_types [Gemm] selects nothing in ORT's dynamic quantizer (it takes Gemm as MatMul): such a recipe passed as a
    candidate that quantized nothing (tests/test_reliability.py's race used one)."""
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],  # nn.Linear as torch exports it
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12])],
        [numpy_helper.from_array(W_THEN.T.copy(), "w"), numpy_helper.from_array(np.zeros(12, np.float32), "b")],
    )
    source = tmp_path / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    with pytest.raises(ModelError, match="takes the model's 1 Gemm node.*add MatMul to op_types"):
        quantize(source, QuantizeConfig(mode="dynamic", op_types=["Gemm"]), StepContext(workdir=tmp_path))
    assert quantize(source, QuantizeConfig(mode="dynamic"), StepContext(workdir=tmp_path)).stats["quantized_ops"]
