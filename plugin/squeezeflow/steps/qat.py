"""Quantization-aware training with torchao's PT2E flow, exported to an ONNX QDQ graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from squeezeflow.steps import StepContext, StepResult, register_step
from squeezeflow.steps.finetune import TrainingConfig


class QatConfig(TrainingConfig):
    """INT8 quantization-aware training (fake quantization while fine-tuning on data.train)."""

    kind: ClassVar[str] = "qat"

    def promise(self) -> str | None:
        return "size"


@register_step(QatConfig)
def qat(model: Any, config: QatConfig, ctx: StepContext) -> StepResult:
    """Insert fake quantizers (X86InductorQuantizer: per-channel weights), fine-tune, convert, export."""
    import logging

    logging.getLogger("torchao").setLevel(logging.ERROR)  # CUDA kernels it cannot load on a CPU build
    import torch
    import torchao.quantization.pt2e as pt2e
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer, get_default_x86_inductor_quantization_config

    from squeezeflow import modelio, train
    from squeezeflow.steps.finetune import training_data

    inputs, labels, _ = training_data(ctx, "qat")
    example = tuple(torch.from_numpy(v[:8]) for v in inputs.values())  # positional, in file order, as every step feeds the model
    batch = torch.export.Dim("batch")
    graph = torch.export.export(model, example, dynamic_shapes=tuple({0: batch} for _ in example)).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
    prepared = prepare_qat_pt2e(graph, quantizer)
    set_mode = lambda m, training: (pt2e.move_exported_model_to_train if training else pt2e.move_exported_model_to_eval)(m)  # noqa: E731
    train.fit(prepared, inputs, labels, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, seed=ctx.seed, desc="qat", set_mode=set_mode)
    converted = convert_pt2e(prepared)
    pt2e.move_exported_model_to_eval(converted)
    out = Path(ctx.workdir) / "qat.onnx"
    # torch simulates the integer arithmetic in float and ORT's integer kernels round differently
    # (logits differ by up to ~10% here): check that they predict the same classes
    modelio.export_onnx(converted, {n: v[:256] for n, v in inputs.items()}, out, min_agreement=0.97)
    ops = modelio.op_counts(out)
    samples = len(next(iter(inputs.values())))
    return StepResult(out, {"mode": "qat", "bits": 8, "epochs": config.epochs, "train_samples": int(samples), "quantized_ops": {k: v for k, v in sorted(ops.items()) if k.endswith("QuantizeLinear")}})
