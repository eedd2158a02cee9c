"""`mode: fp16`: the model converted to float16 with float32 inputs and outputs kept."""

from __future__ import annotations

from pathlib import Path

from squeezeflow.onnx import modelfile, rewrites
from squeezeflow.steps import StepContext, StepResult
from squeezeflow.steps.quantize.config import QuantizeConfig


def quantize_fp16(prepared: Path, config: QuantizeConfig, ctx: StepContext) -> StepResult:
    """Half-precision weights and activations, float32 inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out = ctx.workdir / "fp16.onnx"
    modelfile.save_onnx(rewrites.toposort(convert_float_to_float16(onnx.load(str(prepared)), keep_io_types=True)), out)
    stats = {"mode": "fp16", "bits": 16}
    if all(p == "CPUExecutionProvider" for p in ctx.providers):
        stats["note"] = "fp16 gives no speedup on CPU execution providers; use it for GPU targets"
    return StepResult(out, stats)
