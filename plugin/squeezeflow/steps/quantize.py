"""Post-training INT8 quantization with ONNX Runtime: static QDQ and dynamic."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from squeezeflow.steps import StepConfig, StepContext, StepResult, register_step

QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}


class QuantizeConfig(StepConfig):
    """INT8 quantization of an ONNX model with onnxruntime.quantization."""

    kind: ClassVar[str] = "quantize"
    mode: Literal["static", "dynamic"] = Field("static", description="static: QDQ with activation ranges calibrated on data.calibration (convolutional models); dynamic: weights INT8, activations quantized at run time (matmul-heavy models).")
    per_channel: bool = Field(True, description="One scale per output channel of each weight instead of one per tensor.")
    calibration: Literal["minmax", "percentile"] = Field("minmax", description="static only: how activation ranges are taken from the calibration data.")
    percentile: float = Field(99.999, gt=90, le=100, description="static, calibration=percentile: the kept percentile of absolute activations.")
    num_samples: int = Field(256, ge=1, description="static only: calibration samples used (a seeded subset of data.calibration).")
    activation_type: Literal["uint8", "int8"] = Field("uint8", description="static only: activation integer type (uint8 suits x86 CPUs).")
    weight_type: Literal["int8", "uint8"] = Field("int8", description="Weight integer type.")
    reduce_range: bool = Field(False, description="Quantize weights to 7 bits (for x86 CPUs without VNNI).")
    op_types: tuple[str, ...] | None = Field(None, description="Operator types to quantize, e.g. [MatMul, Gemm]; default: every supported type.")


@register_step(QuantizeConfig)
def quantize(model: Path, config: QuantizeConfig, ctx: StepContext) -> StepResult:
    """Quantize `model` to INT8; statistics: mode, bits, quantized op counts, calibration samples."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_dynamic, quantize_static

    from squeezeflow import modelio

    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    prepared = ctx.workdir / "prepared.onnx"
    try:  # symbolic shape inference repairs value_info that the dynamo exporter leaves inconsistent
        quant_pre_process(str(model), str(prepared))
    except Exception:
        quant_pre_process(str(model), str(prepared), skip_optimization=True)
    out = ctx.workdir / f"quantized-{config.mode}.onnx"
    common = dict(
        per_channel=config.per_channel,
        reduce_range=config.reduce_range,
        weight_type=getattr(QuantType, QUANT_TYPES[config.weight_type]),
        op_types_to_quantize=list(config.op_types) if config.op_types else None,
    )
    stats = {"mode": config.mode, "bits": 8}
    if config.mode == "dynamic":
        quantize_dynamic(str(prepared), str(out), **common)
    else:
        reader = _calibration_reader(prepared, config, ctx)
        method = CalibrationMethod.Percentile if config.calibration == "percentile" else CalibrationMethod.MinMax
        quantize_static(
            str(prepared),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=getattr(QuantType, QUANT_TYPES[config.activation_type]),
            calibrate_method=method,
            extra_options={"CalibPercentile": config.percentile} if config.calibration == "percentile" else None,
            **common,
        )
        stats["calibration_samples"] = reader.count
    ops = modelio.op_counts(out)
    stats["quantized_ops"] = {k: v for k, v in sorted(ops.items()) if k in _INT_OPS}
    return StepResult(out, stats)


_INT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul"}


def _calibration_reader(model: Path, config: QuantizeConfig, ctx: StepContext):
    """A CalibrationDataReader over a seeded subset of the calibration file."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader

    from squeezeflow import data, modelio
    from squeezeflow.errors import ConfigError

    if ctx.calibration is None:
        raise ConfigError("quantize mode=static needs calibration data: set data.calibration in params.yaml (or use mode: dynamic).")
    arrays = data.load(ctx.calibration, "calibration")
    data.check_inputs(arrays, modelio.session(model).get_inputs(), ctx.calibration)
    inputs = data.inputs_of(arrays)
    n = len(next(iter(inputs.values())))
    pick = np.sort(np.random.default_rng(ctx.seed).permutation(n)[: config.num_samples])
    subset = {k: v[pick] for k, v in inputs.items()}

    batch = 32 if config.calibration == "minmax" else 1  # ORT's histogram collector cannot take a ragged last batch

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = data.batches(subset, batch)
            self.count = len(pick)

        def get_next(self):
            return next(self._it, None)

    return Reader()

