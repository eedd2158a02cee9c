"""Accuracy-preserving INT8: SmoothQuant and cross-layer equalization keep the float function,
quantizing only weighted layers keeps attention float, bias correction removes the drift."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from squeezeflow import data
from squeezeflow.onnx import sessions
from squeezeflow.quantization import calibration, equalization
from squeezeflow.steps import StepContext
from squeezeflow.steps.quantize import QuantizeConfig, quantize
from squeezeflow.torch import convert


@pytest.fixture(scope="module")
def outlier_transformer(tmp_path_factory):
    """A one-block text transformer whose first LayerNorm gives 4 channels 30x the others (and the
    qkv weights of those channels /30): the same function, with the activation outliers SmoothQuant is for."""
    import torch

    from squeezeflow.torch import architectures

    model = architectures.text_transformer(500, 16, 3, dim=64, heads=4, layers=1, ff=128).eval()
    block = model.blocks[0]
    torch.manual_seed(0)
    with torch.no_grad():
        # trained-looking LayerNorms: the exporter merges equal initializers
        for norm in (block.norm1, block.norm2, model.norm):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0, 0.1)
        block.norm1.weight[:4] *= 30.0
        block.norm1.bias[:4] *= 30.0
        block.qkv.weight[:, :4] /= 30.0
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 17, 96)
    inputs = {
        "input_ids": rng.integers(0, 500, (96, 16), dtype=np.int64),
        "attention_mask": (np.arange(16)[None, :] < lengths[:, None]).astype(np.int64),
    }
    folder = tmp_path_factory.mktemp("outliers")
    path = folder / "model.onnx"
    convert.export_onnx(model, {k: v[:32] for k, v in inputs.items()}, path)
    np.savez(folder / "calibration.npz", **inputs)
    return path, inputs, folder / "calibration.npz"


def test_smoothquant_keeps_the_function_and_removes_the_outliers(outlier_transformer):
    path, inputs, _ = outlier_transformer
    model = onnx.load(str(path))
    smoothed, stats = equalization.smooth(model, data.batches(inputs, 32), alpha=0.5)
    # qkv and ff1 behind LayerNorms; proj, ff2, head behind a Mul
    assert stats["layers"] == 5 and stats["folded"] == 2 and stats["inserted"] == 3
    assert stats["max_activation_after"] < stats["max_activation_before"] / 5
    before = sessions.run(sessions.session(path), inputs)
    after = sessions.run(sessions.session(smoothed.SerializeToString()), inputs)
    np.testing.assert_allclose(after, before, atol=1e-4 * np.abs(before).max(), rtol=0)


def test_smoothquant_lowers_the_int8_error_on_outliers(outlier_transformer, tmp_path):
    path, inputs, cal = outlier_transformer
    reference = sessions.run(sessions.session(path), inputs)
    errors = {}
    for name, extra in (("plain", {}), ("smoothed", {"smoothquant": 0.5})):
        (tmp_path / name).mkdir()
        result = quantize(
            path,
            QuantizeConfig(mode="static", scope="weighted", per_channel=True, num_samples=96, **extra),
            StepContext(workdir=tmp_path / name, calibration=cal),
        )
        errors[name] = float(np.abs(sessions.run(sessions.session(result.model), inputs) - reference).mean())
    assert errors["smoothed"] < 0.7 * errors["plain"]


def test_weighted_scope_leaves_attention_float(outlier_transformer, tmp_path):
    path, inputs, cal = outlier_transformer
    result = quantize(
        path,
        QuantizeConfig(mode="static", scope="weighted", num_samples=96),
        StepContext(workdir=tmp_path, calibration=cal),
    )
    model = onnx.load(str(result.model))
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    weighted = [n for n in matmuls if producer.get(n.input[1]) == "DequantizeLinear"]
    attention = [n for n in matmuls if n not in weighted]
    assert len(weighted) == 4 and len(attention) == 2  # qkv, proj, ff1, ff2 quantized; q @ k and softmax @ v not
    assert all(producer.get(i) != "DequantizeLinear" and i not in inits for n in attention for i in n.input)
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    # the masked scores (-1e4 at padding) stay float
    assert producer[softmax.input[0]] not in ("DequantizeLinear", "QuantizeLinear")
    assert not [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == softmax.output[0]]
    assert result.stats["scope"] == "weighted"


def _conv(name, x, w, b, y, group=1):
    pads = [w.shape[-1] // 2] * 4
    return helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [y], name=name, group=group, pads=pads), [
        numpy_helper.from_array(w, f"{name}_w"),
        numpy_helper.from_array(b, f"{name}_b"),
    ]


def _chain(activation: str):
    """Conv -> activation -> depthwise Conv -> pointwise Conv, output channels of the first spread over four orders of
    magnitude.
    """
    rng = np.random.default_rng(0)
    spread = np.logspace(-2, 2, 8).astype(np.float32)
    w1 = rng.normal(size=(8, 3, 3, 3)).astype(np.float32) * spread[:, None, None, None]
    w2 = rng.normal(size=(8, 1, 3, 3)).astype(np.float32)
    w3 = rng.normal(size=(4, 8, 1, 1)).astype(np.float32)
    nodes, inits = [], []
    for node, params in (
        _conv("c1", "x", w1, rng.normal(size=8).astype(np.float32) * spread, "a"),
        _conv("dw", "r", w2, rng.normal(size=8).astype(np.float32), "b", group=8),
        _conv("pw", "b", w3, rng.normal(size=4).astype(np.float32), "y"),
    ):
        nodes.append(node)
        inits += params
    if activation == "Clip":  # ReLU6
        inits += [
            numpy_helper.from_array(np.array(0, np.float32), "lo"),
            numpy_helper.from_array(np.array(6, np.float32), "hi"),
        ]
    nodes.insert(
        1, helper.make_node(activation, ["a", "lo", "hi"] if activation == "Clip" else ["a"], ["r"], name="act")
    )
    graph = helper.make_graph(
        nodes,
        "cle",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 12, 12])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_equalization_keeps_the_function_and_balances_the_channels():
    model = _chain("Relu")
    equalized, stats = equalization.equalize(model)
    assert stats["pairs"] == 2  # c1 -> relu -> dw, and dw -> pw
    assert stats["max_channel_spread_after"] < stats["max_channel_spread_before"] / 10
    x = {"x": np.random.default_rng(1).normal(size=(4, 3, 12, 12)).astype(np.float32)}
    before = sessions.run(sessions.session(model.SerializeToString()), x)
    after = sessions.run(sessions.session(equalized.SerializeToString()), x)
    np.testing.assert_allclose(after, before, atol=1e-4 * np.abs(before).max(), rtol=0)


def test_equalization_leaves_relu6_pairs_alone():
    """relu6(x / s) != relu6(x) / s: only the pair without an activation (dw -> pw) is equalized."""
    assert equalization.equalize(_chain("Clip"))[1]["pairs"] == 1


def test_bias_correction_removes_the_mean_drift(digits_onnx, digits_dir, tmp_path):
    """At the last layer's output (before its own output is quantized), on the samples the correction used."""
    from squeezeflow.onnx import channel_stats
    from squeezeflow.quantization import bias_correction

    cal = digits_dir / "calibration.npz"
    rows = calibration.pick(data.samples_in(cal, "calibration"), 32, 0)
    inputs = data.inputs_of(data.load(cal, "calibration", rows=rows))
    drift = {}
    for name, corrected in (("plain", False), ("corrected", True)):
        (tmp_path / name).mkdir()
        result = quantize(
            digits_onnx,
            QuantizeConfig(mode="static", per_channel=False, bias_correction=corrected),
            StepContext(workdir=tmp_path / name, calibration=cal),
        )
        fp32, qdq = onnx.load(str(tmp_path / name / "prepared.onnx")), onnx.load(str(result.model))
        *_, (_, q_out, f_out, _, _, axis) = bias_correction.correctable(fp32, qdq)
        mean = lambda model, tensor, axis=axis: channel_stats.statistics(
            model, {tensor: axis}, data.batches(inputs, 8), "mean"
        )[tensor]  # noqa: E731
        drift[name] = float(np.abs(mean(qdq, q_out) - mean(fp32, f_out)).mean())
    assert result.stats["bias_correction"]["layers"] == 4  # both convolutions and both linear layers
    assert drift["corrected"] < 0.2 * drift["plain"]


@pytest.mark.parametrize(
    "option",
    [
        {"bias_correction": True},
        {"smoothquant": 0.5},
        {"equalize": True},
        {"scope": "weighted"},
        {"weight_rounding": "gptq"},
        {"matmul_outputs": "float"},
    ],
)
def test_int8_options_are_refused_where_the_mode_would_ignore_them(option, digits_onnx, tmp_path):
    from squeezeflow.errors import ConfigError

    with pytest.raises(ConfigError, match=f"quantize.{next(iter(option))} applies to mode"):
        quantize(digits_onnx, QuantizeConfig(mode="int4", **option), StepContext(workdir=tmp_path))


def test_smoothquant_on_calibration_data_that_does_not_fit_is_bad_input(outlier_transformer, tmp_path):
    from squeezeflow.errors import DataError

    path, inputs, _ = outlier_transformer
    np.savez(
        tmp_path / "bad.npz", input_ids=inputs["input_ids"].astype(np.float32), attention_mask=inputs["attention_mask"]
    )
    with pytest.raises(DataError):
        quantize(
            path,
            QuantizeConfig(mode="static", smoothquant=0.5),
            StepContext(workdir=tmp_path, calibration=tmp_path / "bad.npz"),
        )


def test_auto_tries_smoothquant_on_a_transformer(outlier_transformer, tmp_path):
    """auto on a matmul model adds weighted static INT8 with SmoothQuant, and it is closer to FP32 than without (task
    generic: output error).
    """
    path, _, cal = outlier_transformer
    ctx = StepContext(workdir=tmp_path, calibration=cal, task="generic")
    stats = quantize(path, QuantizeConfig(mode="auto", num_samples=96, auto_tolerance=1.0), ctx).stats
    assert stats["prior"] == "dynamic" and "static-bias-correction" not in stats["changed_vs_fp32"]
    changed = stats["changed_vs_fp32"]
    assert changed["static-weighted-smoothquant"] < 0.8 * changed["static-weighted"]
    assert stats["chosen"] in stats["speedup_vs_fp32"] or stats["chosen"] == "fp32"
