"""INT8 with ONNX Runtime: static QDQ (calibrated ranges, GPTQ rounding, bias correction, SmoothQuant,
equalization, float MatMul outputs) and dynamic, and the accuracy-aware fallback to float layers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from squeezeflow import data
from squeezeflow.data.artifacts import side_file
from squeezeflow.evaluate.classification import accuracy
from squeezeflow.onnx import modelfile, rewrites, sessions
from squeezeflow.quantization import bias_correction, calibration, equalization, gptq, sensitivity
from squeezeflow.steps import StepContext, StepResult
from squeezeflow.steps.quantize.common import (
    calibration_data,
    first_output,
    nothing_quantized,
    op_count,
    require_calibration,
    task_outputs,
)
from squeezeflow.steps.quantize.config import QUANT_TYPES, WEIGHT_OPS, QuantizeConfig


def int8_quantizer(
    prepared: Path, config: QuantizeConfig, ctx: StepContext, mode: str, name: str = ""
) -> tuple[Callable[..., Path], int]:
    """A function (exclude=(), only=None, tag) -> INT8 model path, and the calibration sample count.
    `name` keeps the files of auto's variants apart.

    Static activation ranges are calibrated once and reused by every call (the fallback calls it
    once per layer)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    cache, samples = None, 0
    skeleton = onnx.load(str(prepared), load_external_data=False)
    weighted = rewrites.weighted(skeleton, tuple(config.op_types or WEIGHT_OPS)) if config.scope == "weighted" else None
    float_outputs = mode == "static" and config.matmul_outputs == "float"
    bias_adds = tuple(rewrites.bias_adds(skeleton)) if float_outputs else ()
    # ORT's dynamic quantizer walks If/Loop/Scan bodies when asked; its QDQ quantizer keeps them float
    control_flow = modelfile.has_subgraphs(skeleton)
    subgraphs = {"EnableSubgraph": True} if mode == "dynamic" and control_flow else {}
    del skeleton
    if mode == "static":
        require_calibration(ctx)
        rows = calibration.pick(data.samples_in(ctx.calibration, "calibration"), config.num_samples, ctx.seed)
        samples = len(rows)
        data.check_inputs(
            data.head(ctx.calibration, "calibration", 1), sessions.session(prepared).get_inputs(), ctx.calibration
        )
        cache = calibration.ranges(
            prepared,
            lambda n: data.stream(ctx.calibration, "calibration", rows, n),
            samples,
            config.calibration,
            ctx.workdir,
            config.num_bins,
            config.percentile,
        )

    def run(exclude: tuple[str, ...] = (), only: tuple[str, ...] | None = None, tag: str = "all") -> Path:
        out = ctx.workdir / f"int8-{name or mode}-{tag}.onnx"
        common = dict(
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            weight_type=getattr(QuantType, QUANT_TYPES[config.weight_type]),
            op_types_to_quantize=list(config.op_types) if config.op_types else None,
            nodes_to_exclude=[*exclude, *bias_adds],
            nodes_to_quantize=list(only or weighted or []) or None,
        )
        if mode == "dynamic":
            quantize_dynamic(
                str(prepared),
                str(out),
                use_external_data_format=side_file(prepared).is_file(),
                extra_options=subgraphs,
                **common,
            )
        else:
            quantize_static(
                str(prepared),
                str(out),
                None,
                use_external_data_format=side_file(prepared).is_file(),
                quant_format=QuantFormat.QDQ,
                activation_type=getattr(QuantType, QUANT_TYPES[config.activation_type]),
                calibrate_method=getattr(CalibrationMethod, calibration.METHODS[config.calibration]),
                calibration_cache_path=str(cache),
                extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]} if float_outputs else None,
                **common,
            )
        if control_flow:  # ORT's quantizer can leave an If before the producers of what its branches read
            modelfile.save_onnx(rewrites.toposort(onnx.load(str(out))), out)
        return out

    return run, samples


def quantize_int8(
    prepared: Path, config: QuantizeConfig, ctx: StepContext, mode: str | None = None, name: str = ""
) -> StepResult:
    mode = mode or config.mode
    stats = {"mode": mode, "bits": 8, "scope": config.scope}
    prepared, rescaled = apply_rescaling(prepared, config, ctx)
    stats.update(rescaled)
    run, samples = int8_quantizer(prepared, config, ctx, mode, name)
    out = run()
    if not op_count(out):
        raise nothing_quantized(prepared, config, mode)
    if mode == "static":
        stats.update(calibration=config.calibration, calibration_samples=samples)
    if config.fallback:
        out, stats["fallback"] = with_fallback(prepared, out, run, config, ctx)
    if mode == "static" and (config.weight_rounding == "gptq" or config.bias_correction):
        import onnx

        size = rewrites.batch_of(onnx.load(str(prepared), load_external_data=False), 8)
        available = data.samples_in(ctx.calibration, "calibration")
    if config.weight_rounding == "gptq" and mode == "static":
        rows = calibration.pick(available, min(config.num_samples, 128), ctx.seed)
        rounded = out.with_name(f"{out.stem}-gptq.onnx")
        stats["weight_rounding"] = gptq.apply(
            prepared,
            out,
            data.stream(ctx.calibration, "calibration", rows, size),
            len(rows),
            size,
            rounded,
            ctx.threads,
        )
        out = rounded
    if config.bias_correction and mode == "static":
        rows = calibration.pick(available, min(config.num_samples, 32), ctx.seed)
        corrected = out.with_name(f"{out.stem}-corrected.onnx")
        stats["bias_correction"] = bias_correction.correct(
            prepared, out, lambda: data.stream(ctx.calibration, "calibration", rows, size), corrected, ctx.threads
        )
        out = corrected
    stats["quantized_ops"] = op_count(out)
    return StepResult(out, stats)


def apply_rescaling(prepared: Path, config: QuantizeConfig, ctx: StepContext) -> tuple[Path, dict]:
    """The prepared model after cross-layer equalization and SmoothQuant, as configured
    (squeezeflow.quantization.equalization), and their
    statistics.
    """
    if not config.equalize and config.smoothquant is None:
        return prepared, {}

    import onnx

    out = prepared.with_name(
        f"{prepared.stem}{'-equalized' if config.equalize else ''}"
        f"{f'-smoothed{config.smoothquant}' if config.smoothquant else ''}.onnx"
    )
    record = out.with_suffix(".json")
    if out.is_file() and record.is_file():  # auto's variants share one rewrite
        return out, json.loads(record.read_text())
    model, stats = onnx.load(str(prepared)), {}
    if config.equalize:
        model, stats["equalization"] = equalization.equalize(model)
    if config.smoothquant is not None:
        require_calibration(ctx)  # and inputs that fit, before the model runs on them
        data.check_inputs(
            data.head(ctx.calibration, "calibration", 1), sessions.session(prepared).get_inputs(), ctx.calibration
        )
        rows = calibration.pick(data.samples_in(ctx.calibration, "calibration"), config.num_samples, ctx.seed)
        batches = data.stream(ctx.calibration, "calibration", rows, rewrites.batch_of(model, 16))
        model, stats["smoothquant"] = equalization.smooth(model, batches, config.smoothquant, ctx.threads)
    modelfile.save_onnx(model, out)
    record.write_text(json.dumps(stats))
    return out, stats


def with_fallback(
    prepared: Path, quantized: Path, run: Callable[..., Path], config: QuantizeConfig, ctx: StepContext
) -> tuple[Path, dict]:
    """Rank layers by the error each adds (one pass over 64 calibration samples, squeezeflow.quantization.sensitivity:
    no model written per layer); keep the worst in float, one more at a time, until the budget is
    met; then return to INT8 each kept layer the budget does not need."""

    budget = config.fallback
    arrays = calibration_data(ctx, labels=True)
    inputs, labels = data.inputs_of(arrays), arrays[data.LABELS]
    reference = sessions.run(sessions.session(prepared), inputs)
    base = accuracy(reference, labels)
    drop = base - accuracy(first_output(task_outputs(sessions.session(quantized), inputs, ctx)), labels)
    stats = {
        "max_accuracy_drop": budget.max_accuracy_drop,
        "baseline_accuracy": round(base, 6),
        "drop_all_quantized": round(drop, 6),
        "kept_float": [],
    }
    if drop <= budget.max_accuracy_drop:
        return quantized, {**stats, "met": True, "drop": round(drop, 6)}
    layers = rewrites.nodes_of(prepared, tuple(config.op_types or WEIGHT_OPS))
    rank_inputs = data.inputs_of(calibration.subset(arrays, min(config.num_samples, 64), ctx.seed))
    errors = sensitivity.layer_errors(prepared, quantized, data.batches(rank_inputs, 16), layers)
    ranked = sorted(errors, key=lambda n: -errors[n])
    best, kept, tried = quantized, [], []

    def attempt(floats: list[str]) -> tuple[Path, float]:
        model = run(exclude=tuple(floats), tag=f"float-{len(tried) + 1}")
        model_drop = base - accuracy(first_output(task_outputs(sessions.session(model), inputs, ctx)), labels)
        tried.append({"float_layers": len(floats), "layers": list(floats), "drop": round(model_drop, 6)})
        return model, model_drop

    for k in range(1, min(budget.max_float_layers, len(ranked) - 1) + 1):
        kept = ranked[:k]
        best, drop = attempt(kept)
        if drop <= budget.max_accuracy_drop:
            break
    # then hand back to INT8 every kept layer the budget does not need, least sensitive first
    if drop <= budget.max_accuracy_drop:
        for name in sorted(kept[:-1], key=errors.get):
            fewer = [n for n in kept if n != name]
            model, fewer_drop = attempt(fewer)
            if fewer_drop <= budget.max_accuracy_drop:
                best, drop, kept = model, fewer_drop, fewer
    stats["kept_float"] = kept
    return best, {
        **stats,
        "met": drop <= budget.max_accuracy_drop,
        "drop": round(drop, 6),
        "tried": tried,
        "sensitivity": {n: round(errors[n], 8) for n in ranked},
    }
