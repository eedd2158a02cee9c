"""GPTQ rounding of INT8 weights: its im2col is the convolution's, it lowers each rounded layer's
output error on data it did not see, keeps the layout ORT fuses, and leaves thin layers alone."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from squeezeflow import data
from squeezeflow.onnx import modelfile, rewrites, sessions
from squeezeflow.quantization import gptq
from squeezeflow.steps import StepContext
from squeezeflow.steps.quantize import QuantizeConfig, quantize


@pytest.mark.parametrize(
    "attrs",
    [
        {"pads": [1, 1, 1, 1]},
        {"strides": [2, 2], "pads": [0, 1, 2, 1]},
        {"dilations": [2, 2], "pads": [2, 2, 2, 2]},
        {"group": 6, "pads": [1, 1, 1, 1]},  # depthwise
        {"group": 2, "strides": [2, 1]},
    ],
)
def test_columns_are_what_the_convolution_multiplies(attrs):
    import torch

    rng = np.random.default_rng(0)
    groups = attrs.get("group", 1)
    x, w = rng.normal(size=(2, 6, 9, 11)).astype(np.float32), rng.normal(size=(6, 6 // groups, 3, 3)).astype(np.float32)
    layer = gptq.Layer(helper.make_node("Conv", ["x", "w"], ["y"], **attrs), "w", "s", None, "w", "x", False)
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    expected = torch.nn.functional.conv2d(
        torch.nn.functional.pad(torch.from_numpy(x), (left, right, top, bottom)),
        torch.from_numpy(w),
        stride=tuple(attrs.get("strides", (1, 1))),
        dilation=tuple(attrs.get("dilations", (1, 1))),
        groups=groups,
    ).numpy()
    cols = gptq.columns(x, layer, w.shape)  # [G, K, rows]
    got = np.matmul(w.reshape(groups, 6 // groups, -1), cols)  # [G, out/G, n*positions]
    got = got.reshape(6, 2, -1).transpose(1, 0, 2).reshape(expected.shape)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def _hessian(model, layer, inputs, shape):
    sess = sessions.session(rewrites.with_outputs(model, [layer.float_input], only=True).SerializeToString())
    cols = gptq.columns(sess.run(None, inputs)[0], layer, shape)
    return np.matmul(cols, cols.transpose(0, 2, 1)).astype(np.float64)


def test_gptq_lowers_the_output_error_on_unseen_data_and_keeps_the_fused_layout(digits_onnx, digits_dir, tmp_path):
    """The error of each rounded layer's output, ||(W - Q) X||^2 over the eval split's inputs (not the
    calibration samples GPTQ saw), is below round-to-nearest's; thin layers keep nearest bit for bit;
    ORT fuses the same integer kernels."""
    results = {}
    for rounding_mode in ("nearest", "gptq"):
        (tmp_path / rounding_mode).mkdir()
        results[rounding_mode] = quantize(
            digits_onnx,
            QuantizeConfig(mode="static", weight_rounding=rounding_mode),
            StepContext(workdir=tmp_path / rounding_mode, calibration=digits_dir / "calibration.npz"),
        )
    stats = results["gptq"].stats["weight_rounding"]
    assert stats["layers"] >= 1 and stats["kept_nearest"] >= 1 and 0 < stats["output_error_vs_nearest"] < 1
    fp32 = onnx.load(str(tmp_path / "gptq" / "prepared.onnx"))
    models = {k: onnx.load(str(r.model)) for k, r in results.items()}
    inputs = data.inputs_of(data.load(digits_dir / "eval.npz", "eval"))
    weights = {i.name: numpy_helper.to_array(i) for i in fp32.graph.initializer}
    rounded = 0
    for layer in gptq.layers(fp32, models["gptq"]):
        integers = {
            k: numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == layer.weight))
            for k, m in models.items()
        }
        if np.array_equal(integers["gptq"], integers["nearest"]):
            continue
        rounded += 1
        scale = numpy_helper.to_array(
            next(i for i in models["gptq"].graph.initializer if i.name == layer.scale)
        ).astype(np.float64)
        w = weights[layer.float_weight].astype(np.float64)
        h = _hessian(fp32, layer, inputs, w.shape)
        rows = w.reshape(h.shape[0], -1, h.shape[1])
        error = {
            k: gptq.output_error(
                rows,
                q.reshape(rows.shape).astype(np.float64),
                h,
                scale.reshape(rows.shape[:2]),
                np.zeros(rows.shape[:2]),
            )
            for k, q in integers.items()
        }
        assert error["gptq"] < 0.8 * error["nearest"], error
    assert rounded == stats["layers"]  # every layer not rounded kept nearest's integers exactly
    counts = {k: _fused(r.model, tmp_path / f"{k}-opt.onnx") for k, r in results.items()}
    assert counts["gptq"] == counts["nearest"] and counts["gptq"].get("QLinearConv", 0) == 2


def _fused(path, out):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(out)
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return {k: v for k, v in modelfile.op_counts(out).items() if k.startswith("Q")}


def test_gptq_is_refused_where_weights_are_not_rounded_by_it(digits_onnx, tmp_path):
    from squeezeflow.errors import ConfigError

    with pytest.raises(ConfigError, match="quantize.weight_rounding applies to mode static or auto, not dynamic"):
        quantize(digits_onnx, QuantizeConfig(mode="dynamic", weight_rounding="gptq"), StepContext(workdir=tmp_path))


def test_sampled_columns_are_some_of_the_columns():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 4, 12, 12)).astype(np.float32)
    layer = gptq.Layer(
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2]), "w", "s", None, "w", "x", False
    )
    full, some = gptq.columns(x, layer, (4, 4, 3, 3)), gptq.columns(x, layer, (4, 4, 3, 3), positions=10, seed=3)
    assert some.shape == (1, 36, 10) and full.shape == (1, 36, 36)
    assert all(any(np.array_equal(some[0, :, j], full[0, :, i]) for i in range(36)) for j in range(10))


def test_gptq_on_calibration_data_with_nan_is_bad_input(digits_onnx, digits_dir, tmp_path):
    """Not garbage integers written from a NaN Hessian: one DataError naming the fix (exit 2 in the CLI)."""
    from squeezeflow.errors import DataError

    arrays = dict(np.load(digits_dir / "calibration.npz"))
    arrays["input"] = arrays["input"].copy()
    arrays["input"][3, 0, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(DataError, match="NaN or inf inputs; remove non-finite values from data.calibration"):
        quantize(
            digits_onnx,
            QuantizeConfig(mode="static", weight_rounding="gptq"),
            StepContext(workdir=tmp_path, calibration=tmp_path / "nan.npz"),
        )
