"""Quantization-aware training with torchao's PT2E flow, exported to an ONNX QDQ graph."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from squeezeflow.onnx import modelfile
from squeezeflow.steps import StepContext, StepResult, register_step
from squeezeflow.steps.finetune import TrainingConfig, training_data
from squeezeflow.torch import convert, rebuild, train


class QatConfig(TrainingConfig):
    """INT8 quantization-aware training (fake quantization while fine-tuning on data.train), on labels or distilled from
    the FP32 model.
    """

    kind: ClassVar[str] = "qat"
    distill_temperature: float | None = Field(
        None,
        gt=0,
        description="Distill from the FP32 model itself: the fake-quantized student is trained to match the FP32 "
        "model's "
        "softmax(logits / T) on data.train (KL divergence at this temperature T, e.g. 2) instead of labels, "
        "which data.train then need not have. For models whose labels are their own predictions, and unlabelled "
        "data.",
    )

    def promise(self) -> str | None:
        return "size"


@register_step(QatConfig)
def qat(model: Any, config: QatConfig, ctx: StepContext) -> StepResult:
    """Insert fake quantizers (X86InductorQuantizer: per-channel weights), fine-tune, convert, export."""

    logging.getLogger("torchao").setLevel(logging.ERROR)  # CUDA kernels it cannot load on a CPU build
    import torch
    import torchao.quantization.pt2e as pt2e
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    distill = config.distill_temperature
    inputs, labels, _ = training_data(ctx, "qat", labels_required=distill is None)
    loss = None
    if distill is not None:  # the float model's soft outputs, taken before fake quantizers go in
        targets = torch.from_numpy(train.soft_targets([train.predict(model, inputs)], [1.0], distill))
        loss = lambda out, idx: train.distillation_loss(out, targets[idx].to(out.device), None, distill, 1.0)  # noqa: E731
    # positional, in file order, as every step feeds the model
    example = tuple(torch.from_numpy(v[:8]) for v in inputs.values())
    batch = torch.export.Dim("batch")
    graph = torch.export.export(model, example, dynamic_shapes=tuple({0: batch} for _ in example)).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
    prepared = prepare_qat_pt2e(graph, quantizer)
    set_mode = lambda m, training: (
        pt2e.move_exported_model_to_train if training else pt2e.move_exported_model_to_eval
    )(m)  # noqa: E731
    train.fit(
        prepared,
        inputs,
        None if distill is not None else labels,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=ctx.seed,
        desc="qat",
        set_mode=set_mode,
        loss=loss,
    )
    converted = convert_pt2e(prepared)
    pt2e.move_exported_model_to_eval(converted)
    rebuild.kept(model, converted)  # the source's output names, on the converted graph too
    out = Path(ctx.workdir) / "qat.onnx"
    # torch simulates the integer arithmetic in float and ORT's integer kernels round differently
    # (logits differ by up to ~10% here): check that they predict the same classes
    convert.export_onnx(converted, {n: v[:256] for n, v in inputs.items()}, out, min_agreement=0.97)
    ops = modelfile.op_counts(out)
    samples = len(next(iter(inputs.values())))
    stats = {
        "mode": "qat",
        "bits": 8,
        "epochs": config.epochs,
        "train_samples": int(samples),
        "targets": f"fp32 soft outputs, T={distill}" if distill is not None else "labels",
    }
    return StepResult(
        out, {**stats, "quantized_ops": {k: v for k, v in sorted(ops.items()) if k.endswith("QuantizeLinear")}}
    )
