"""The ExecuTorch program of a PyTorch model: INT8 with the XNNPACK quantizer (PT2E) and lowered to XNNPACK, as a .pte
file.

A target-specific step: its candidate runs on `runtime: executorch` targets only (the ONNX
targets mark it not applicable), so it is the last step of its recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from squeezeflow import data
from squeezeflow.errors import ConfigError
from squeezeflow.quantization import calibration
from squeezeflow.steps import MAX_STEPS, StepConfig, StepContext, StepResult, register_step


class ExecutorchConfig(StepConfig):
    """Lower to an ExecuTorch program (`.pte`) for `runtime: executorch` targets (XNNPACK backend), INT8 by default; the
    last step of a recipe.
    """

    kind: ClassVar[str] = "executorch"
    input_format: ClassVar[str] = "torch"
    quantize: bool = Field(
        True,
        description="INT8 with ExecuTorch's XNNPACKQuantizer (symmetric, per-channel "
        "weights; PT2E flow) calibrated on num_samples of data.calibration; "
        "false: an FP32 program.",
    )
    num_samples: int = Field(
        128, ge=1, le=MAX_STEPS, description="Calibration samples (a seeded subset of data.calibration)."
    )

    def promise(self) -> str | None:
        return "size" if self.quantize else None


@register_step(ExecutorchConfig)
def executorch(model: Any, config: ExecutorchConfig, ctx: StepContext) -> StepResult:
    """Export, quantize (optionally) and lower `model`; statistics: backend, quantized, calibration samples, delegated
    subgraphs, parameters.
    """
    from squeezeflow.torch import executorch

    if ctx.calibration is None:
        raise ConfigError(
            "step executorch needs example inputs (and, to quantize, calibration data): set "
            "data.calibration in params.yaml."
        )
    rows = calibration.pick(data.samples_in(ctx.calibration, "calibration"), config.num_samples, ctx.seed)
    example = data.inputs_of(data.head(ctx.calibration, "calibration", 4))
    batches = (
        (data.inputs_of(b) for b in data.stream(ctx.calibration, "calibration", rows, 16)) if config.quantize else None
    )
    out = Path(ctx.workdir) / f"model{executorch.SUFFIX}"
    stats = executorch.lower(model, example, out, batches)
    params = sum(p.numel() for p in model.parameters())
    return StepResult(out, {**stats, "bits": 8 if config.quantize else 32, "params": int(params)})
