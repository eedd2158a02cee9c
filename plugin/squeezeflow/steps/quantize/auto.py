"""`mode: auto`: every INT8 variant that fits the model, measured against FP32 on the calibration data;
the fastest one within `auto_tolerance` wins, or FP32 when none is faster."""

from __future__ import annotations

from pathlib import Path

from squeezeflow import data
from squeezeflow.errors import ModelError
from squeezeflow.evaluate import latency, tasks
from squeezeflow.evaluate.classification import agreement
from squeezeflow.onnx import modelfile, sessions
from squeezeflow.steps import StepContext, StepResult
from squeezeflow.steps.quantize.common import calibration_data, task_outputs
from squeezeflow.steps.quantize.config import QuantizeConfig
from squeezeflow.steps.quantize.int8 import quantize_int8


def quantize_auto(model: Path, prepared: Path, config: QuantizeConfig, ctx: StepContext) -> StepResult:
    """Build INT8 variants (dynamic, and static with calibration data; per-channel and per-tensor;
    static with GPTQ rounding and bias correction on convolutional models, and weighted static with SmoothQuant on
    matmul models), drop those that change FP32's outputs beyond auto_tolerance, time the rest
    against FP32, keep the fastest."""
    import numpy as np

    ops = modelfile.op_counts(prepared)
    prior = "static" if ops.get("Conv", 0) >= ops.get("MatMul", 0) + ops.get("Gemm", 0) else "dynamic"
    modes = ["dynamic", "static"] if ctx.calibration is not None else ["dynamic"]
    tried, skipped = {}, {}

    def variant(name: str, update: dict, mode: str) -> None:
        try:
            tried[name] = quantize_int8(prepared, config.model_copy(update=update), ctx, mode, name)
        except ModelError as e:  # it quantized nothing (all weights inside If/Loop bodies, for static)
            skipped[name] = str(e)

    for mode in modes:
        for per_channel in (True, False):
            variant(
                f"{mode}-{'per-channel' if per_channel else 'per-tensor'}",
                {"per_channel": per_channel, "scope": "all"},
                mode,
            )
    # attention's MatMuls, masks and residual Adds left float: what keeps static INT8 on transformers
    if "static" in modes:
        variant("static-weighted", {"per_channel": True, "scope": "weighted"}, "static")
        # the accuracy-preserving options for the model's kind, where not set already
        for name, update in accuracy_variants(config, prior, ops.get("MatMul", 0) > 0).items():
            variant(name, update, "static")
    if not tried:
        raise ModelError(f"quantize (auto): no INT8 variant quantized anything ({next(iter(skipped.values()))})")
    opened = {"fp32": sessions.session(model, ctx.threads, ctx.providers)}
    opened.update({k: sessions.session(r.model, ctx.threads, ctx.providers) for k, r in tried.items()})
    changed = {}
    if ctx.calibration is not None:
        inputs = data.inputs_of(calibration_data(ctx, config.num_samples))
        reference = sessions.run_outputs(opened["fp32"], inputs)
        changed = {k: output_change(ctx.task, reference, task_outputs(opened[k], inputs, ctx)) for k in tried}
    eligible = [k for k in tried if changed.get(k, 0.0) <= config.auto_tolerance]
    times = latency.measure(
        {k: opened[k] for k in ["fp32", *eligible]},
        timing_feed(opened["fp32"], ctx),
        warmup=10,
        repeats=100,
        progress=False,
    )
    p50 = {k: float(np.median(v)) for k, v in times.items()}
    fastest = min(eligible, key=p50.get) if eligible else None
    chosen = fastest if fastest and p50[fastest] < p50["fp32"] else "fp32"
    stats = {
        "mode": "auto",
        "prior": prior,
        "chosen": chosen,
        "faithfulness": "share of calibration samples whose top-1 differs from FP32"
        if ctx.task == "classification"
        else "mean absolute difference to FP32's outputs over their mean magnitude (worst output)",
        "changed_vs_fp32": {k: round(v, 5) for k, v in changed.items()},
        "rejected_for_accuracy": sorted(set(tried) - set(eligible)),
        **({"quantized_nothing": sorted(skipped)} if skipped else {}),
        "p50_ms": {k: round(v, 5) for k, v in p50.items()},
        "speedup_vs_fp32": {k: round(p50["fp32"] / p50[k], 3) for k in eligible},
    }
    if chosen == "fp32":
        return StepResult(
            model,
            {
                **stats,
                "bits": 32,
                "note": "no INT8 variant was both faithful and faster than "
                "FP32 on this target; the model is left in FP32",
            },
        )
    return StepResult(tried[chosen].model, {**tried[chosen].stats, **stats})


def accuracy_variants(config: QuantizeConfig, prior: str, matmuls: bool) -> dict[str, dict]:
    """auto's extra static variants: GPTQ rounding and bias correction for convolutional models (and float
    MatMul outputs where they have MatMuls), SmoothQuant (alpha 0.5) on the weighted scope for matmul models."""
    variants = {}
    if prior == "static" and not config.bias_correction and config.weight_rounding == "nearest":
        variants["static-gptq-bias-correction"] = {
            "per_channel": True,
            "scope": "all",
            "bias_correction": True,
            "weight_rounding": "gptq",
        }
    if prior == "static" and matmuls and config.matmul_outputs == "int8":
        variants["static-gptq-float-matmul-outputs"] = {
            "per_channel": True,
            "scope": "all",
            "matmul_outputs": "float",
            "weight_rounding": "gptq",
        }
    if prior == "dynamic" and config.smoothquant is None:
        variants["static-weighted-smoothquant"] = {"per_channel": True, "scope": "weighted", "smoothquant": 0.5}
    return variants


def output_change(task: str, reference: dict, outputs: dict) -> float:
    """How far a variant's outputs are from FP32's: the share of changed top-1 predictions (classification), else the
    worst output's mean relative error.
    """

    if task == "classification":
        return 1.0 - agreement(next(iter(outputs.values())), next(iter(reference.values())))
    return float(tasks.score("generic", reference, outputs, None)[0]["mean_rel_error"])


def timing_feed(sess, ctx: StepContext) -> dict:
    """One batch for timing: calibration samples when present, else zeros of the input shapes."""
    import numpy as np

    if ctx.calibration is not None:
        return data.feed(next(data.batches(data.head(ctx.calibration, "calibration", ctx.batch_size), ctx.batch_size)))
    kinds = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
    return data.feed(
        {
            i.name: np.zeros(
                [ctx.batch_size] + [d if isinstance(d, int) else 1 for d in i.shape[1:]], kinds.get(i.type, np.float32)
            )
            for i in data.as_stored(sess.get_inputs())
        }
    )
