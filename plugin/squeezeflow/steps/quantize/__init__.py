"""Quantization with ONNX Runtime: static QDQ, dynamic, auto, int4 weight-only, fp16, and an
accuracy-aware fallback that keeps the most sensitive layers in float.

One module per mode (`int8`, `auto`, `int4`, `fp16`); `config` holds the parameters. `QuantizeConfig`
and `quantize` are this package's names."""

from __future__ import annotations

import logging
from pathlib import Path

from squeezeflow.steps import StepContext, StepResult, register_step
from squeezeflow.steps.quantize.auto import quantize_auto
from squeezeflow.steps.quantize.common import PER_CHANNEL_OPSET, prepare
from squeezeflow.steps.quantize.config import QuantizeConfig, check_int8_options
from squeezeflow.steps.quantize.fp16 import quantize_fp16
from squeezeflow.steps.quantize.int4 import quantize_int4
from squeezeflow.steps.quantize.int8 import quantize_int8

__all__ = ["QuantizeConfig", "quantize"]


@register_step(QuantizeConfig)
def quantize(model: Path, config: QuantizeConfig, ctx: StepContext) -> StepResult:
    """Quantize `model`; statistics: mode, bits, quantized op counts, and per mode what was chosen."""
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    check_int8_options(config)
    if config.mode == "int4":  # needs no shape inference: the model is read once and written once
        return quantize_int4(model, config, ctx)
    per_channel = config.mode == "auto" or (config.per_channel and config.mode != "fp16")
    prepared, upgraded = prepare(model, ctx.workdir, PER_CHANNEL_OPSET if per_channel else 0)
    if config.mode == "auto":
        result = quantize_auto(model, prepared, config, ctx)
    else:
        result = {"fp16": quantize_fp16}.get(config.mode, quantize_int8)(prepared, config, ctx)
    if upgraded:
        result.stats["opset_upgraded"] = upgraded
    return result
