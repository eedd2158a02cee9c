"""Quantization with ONNX Runtime: static QDQ, dynamic, auto, int4 weight-only, fp16, and an
accuracy-aware fallback that keeps the most sensitive layers in float."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from squeezeflow import data
from squeezeflow.data.artifacts import side_file
from squeezeflow.errors import ConfigError, ModelError
from squeezeflow.evaluate import latency, tasks
from squeezeflow.evaluate.classification import accuracy, agreement
from squeezeflow.onnx import modelfile, rewrites, sessions
from squeezeflow.quantization import bias_correction, calibration, equalization, gptq, sensitivity
from squeezeflow.steps import MAX_STEPS, StepConfig, StepContext, StepResult, register_step

QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}
WEIGHT_OPS = ("Conv", "MatMul", "Gemm")
_INT_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearConv",
    "QLinearMatMul",
    "DynamicQuantizeMatMul",
    "MatMulNBits",
    "GatherBlockQuantized",
}


class Fallback(BaseModel):
    """Keep the most sensitive layers in float until the accuracy drop fits."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_accuracy_drop: float = Field(
        ge=0, description="Largest allowed accuracy drop on the labelled calibration data (absolute)."
    )
    max_float_layers: int = Field(
        8,
        ge=1,
        le=MAX_STEPS,
        description="Most layers kept in float before giving up (the gate then fails the candidate).",
    )


class QuantizeConfig(StepConfig):
    """Quantization of an ONNX model with onnxruntime.quantization."""

    kind: ClassVar[str] = "quantize"
    mode: Literal["static", "dynamic", "auto", "int4", "fp16"] = Field(
        "static",
        description="static: INT8 QDQ with activation ranges calibrated on data.calibration (convolutional "
        "models); dynamic: "
        "INT8 weights, activations quantized at run time (matmul-heavy models); auto: builds dynamic and static "
        "variants (per-channel and per-tensor, static per-channel with scope weighted, and static with "
        "weight_rounding gptq plus bias_correction, or plus matmul_outputs float where there are MatMuls, on "
        "convolutional models, or weighted static with smoothquant 0.5 on matmul models; smoothquant, equalize, "
        "weight_rounding, matmul_outputs and bias_correction set here apply to every variant), rejects those "
        "that change FP32's outputs beyond auto_tolerance, times the rest against FP32 on the target and keeps "
        "the fastest, never one slower than FP32; int4: weight-only 4-bit MatMul (MatMulNBits); fp16: "
        "half-precision floats (for GPU providers; no CPU speedup).",
    )
    per_channel: bool = Field(
        True, description="INT8: one scale per output channel of each weight instead of one per tensor."
    )
    calibration: Literal["minmax", "entropy", "percentile", "mse"] = Field(
        "minmax",
        description="static: how activation ranges are taken from the calibration data (streamed batch by batch, "
        "memory "
        "independent of num_samples): minmax: the full range; entropy: the range whose 128-level histogram keeps "
        "most information (KL); percentile: the `percentile` of absolute values; mse: per tensor, the clipping "
        "range with the least expected 8-bit quantization error.",
    )
    num_bins: int = Field(
        2048,
        ge=128,
        le=1 << 20,
        description="static, entropy/percentile/mse: histogram bins (ORT's default of 128 makes entropy equal minmax).",
    )
    percentile: float = Field(
        99.999, gt=90, le=100, description="static, percentile: the kept percentile of absolute activations."
    )
    num_samples: int = Field(
        256, ge=1, le=MAX_STEPS, description="static: calibration samples used (a seeded subset of data.calibration)."
    )
    activation_type: Literal["uint8", "int8"] = Field(
        "uint8", description="static: activation integer type (uint8 suits x86 CPUs)."
    )
    weight_type: Literal["int8", "uint8"] = Field("int8", description="INT8: weight integer type.")
    reduce_range: bool = Field(False, description="INT8: quantize weights to 7 bits (for x86 CPUs without VNNI).")
    op_types: tuple[str, ...] | None = Field(
        None, description="INT8: operator types to quantize, e.g. [MatMul, Gemm]; default: every supported type."
    )
    block_size: int = Field(32, ge=16, le=256, description="int4: weights per quantization block (a power of two).")
    int4_algorithm: Literal["rtn", "hqq", "gptq", "k_quant"] = Field(
        "rtn",
        description="int4: how the 4-bit weights are chosen (ONNX Runtime's MatMulNBitsQuantizer): rtn: round to "
        "nearest, "
        "symmetric per block; hqq: half-quadratic optimization of scales and zero points, no data; gptq: "
        "error-compensating rounding on num_samples calibration samples (Hessian of each MatMul's inputs); "
        "k_quant: llama.cpp's k-quant search of scales per block.",
    )
    int4_embeddings: bool = Field(
        False,
        description="int4, rtn: pack Gather embedding tables too "
        "(GatherBlockQuantized), which dominate a small transformer's "
        "size.",
    )
    scope: Literal["all", "weighted"] = Field(
        "all",
        description="INT8: which nodes are quantized. all: every operator ORT can quantize (Adds, pooling and "
        "attention's "
        "MatMuls too: fastest on CNNs); weighted: only Conv/MatMul/Gemm with a constant weight, so "
        "activation-by-activation MatMuls, Softmax, masks and residual Adds stay float (static INT8 of the "
        "tweets transformer: 8.95 points lost with all, none with weighted).",
    )
    smoothquant: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="INT8: SmoothQuant's migration strength alpha (0.5 is the paper's default): before quantizing, "
        "the input "
        "channels of each MatMul/Gemm with a constant weight are divided by max|x|^alpha / max|w|^(1-alpha) "
        "(measured on num_samples calibration samples) and its weight rows multiplied by it; folded into a "
        "preceding LayerNormalization, else a Mul is inserted. The float function is unchanged.",
    )
    equalize: bool = Field(
        False,
        description="INT8: cross-layer equalization of Conv -> [Relu] -> Conv pairs "
        "before quantizing (weight ranges of the two layers balanced per "
        "channel; the float function is unchanged). For per-tensor weights "
        "and ReLU networks; ReLU6 pairs are left alone.",
    )
    matmul_outputs: Literal["int8", "float"] = Field(
        "int8",
        description="static: float keeps the outputs of MatMul/Gemm layers, and the bias Add after a MatMul, in "
        "float (their "
        "inputs and weights stay INT8; ORT fuses them into integer kernels with a float output). For models "
        "whose matmul outputs feed recurrent layers or are the model's outputs: EasyOCR's CRNN recognizer, mean "
        "absolute logit error to FP32 0.205 -> 0.142 at the same speed.",
    )
    weight_rounding: Literal["nearest", "gptq"] = Field(
        "nearest",
        description="static: how INT8 weights are rounded. nearest: each to its nearest level; gptq: one input "
        "column at a "
        "time, the error moved onto the columns not yet rounded so that each layer's output error over up to 128 "
        "calibration samples is smallest (GPTQ; ORT's scales kept, one pass of the FP32 model). Layers with "
        "fewer than 32 input rows per weight column keep nearest. EfficientNet-Lite1: KL to FP32's predictions "
        "halved.",
    )
    bias_correction: bool = Field(
        False,
        description="static: after quantizing, remove each Conv/Gemm's mean "
        "output drift from FP32, per channel, from its INT8 bias, "
        "layer by layer in graph order (one pass of the model per "
        "layer over 32 calibration samples).",
    )
    auto_tolerance: float = Field(
        0.01,
        ge=0,
        le=1,
        description="auto: how far a variant may be from FP32 on the "
        "calibration samples and still be chosen. "
        "classification: the share of samples whose top-1 "
        "differs; other tasks (data.task): the worst "
        "output's mean absolute difference over FP32's "
        "mean magnitude.",
    )
    fallback: Fallback | None = Field(
        None,
        description="static/dynamic: accuracy-aware fallback, e.g. "
        "{max_accuracy_drop: 0.005}; needs labels in "
        "data.calibration.",
    )

    def promise(self) -> str | None:
        return "size"


@register_step(QuantizeConfig)
def quantize(model: Path, config: QuantizeConfig, ctx: StepContext) -> StepResult:
    """Quantize `model`; statistics: mode, bits, quantized op counts, and per mode what was chosen."""
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    _check_int8_options(config)
    if config.mode == "int4":  # needs no shape inference: the model is read once and written once
        return _int4(model, config, ctx)
    prepared = _prepare(model, ctx.workdir)
    if config.mode == "auto":
        return _auto(model, prepared, config, ctx)
    return {"fp16": _fp16}.get(config.mode, _int8)(prepared, config, ctx)


def _check_int8_options(config: QuantizeConfig) -> None:
    """Refuse an INT8 option the mode would ignore (never a silent no-op)."""

    allowed = {
        "bias_correction": ("static", "auto"),
        "weight_rounding": ("static", "auto"),
        "matmul_outputs": ("static", "auto"),
        "smoothquant": ("static", "dynamic", "auto"),
        "equalize": ("static", "dynamic", "auto"),
        "scope": ("static", "dynamic", "auto"),
    }
    for name, modes in allowed.items():
        value = getattr(config, name)
        if value != QuantizeConfig.model_fields[name].default and config.mode not in modes:
            raise ConfigError(
                f"quantize.{name} applies to mode {' or '.join(modes)}, not {config.mode}; drop "
                f"{name} or change the mode."
            )


def _prepare(model: Path, workdir: Path) -> Path:
    """ORT's pre-processing: symbolic shape inference repairs value_info the dynamo exporter leaves inconsistent.

    A model with external data (a big one) gets symbolic shape inference alone: ORT's graph
    optimization and ONNX shape inference passes keep earlier copies of the model alive while they
    load theirs (3 copies at the peak, found with memray), and the quantizers infer shapes again anyway.
    """

    sessions.ort_tools_without_torch()
    from onnxruntime.quantization import quant_pre_process

    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    prepared = workdir / "prepared.onnx"
    large = side_file(model).is_file()
    external = (
        dict(save_as_external_data=True, all_tensors_to_one_file=True, external_data_location=side_file(prepared).name)
        if large
        else {}
    )
    attempts = (
        {"skip_optimization": large, "skip_onnx_shape": large},
        {"skip_optimization": True},
        # ORT's symbolic shape inference fails on some graphs (exported LSTMs): keep the optimizer,
        # whose constant folding turns the exporter's sliced and concatenated weights back into initializers
        {"skip_optimization": large, "skip_symbolic_shape": True},
        {"skip_optimization": True, "skip_symbolic_shape": True},
    )
    for i, options in enumerate(attempts):
        try:
            quant_pre_process(str(model), str(prepared), **options, **external)
            break
        except Exception:
            if i == len(attempts) - 1:
                raise
    gc.collect()  # symbolic shape inference leaves a copy of the model in a reference cycle (1x the model, memray)
    return prepared


def _ops(path: Path) -> dict[str, int]:

    return {k: v for k, v in sorted(modelfile.op_counts(path).items()) if k in _INT_OPS}


def _require_calibration(ctx: StepContext) -> None:

    if ctx.calibration is None:
        raise ConfigError(
            "quantize needs calibration data here: set data.calibration in params.yaml (or use a "
            "mode that needs none: dynamic, or int4 with int4_algorithm rtn, hqq or k_quant)."
        )


def _calibration(ctx: StepContext, count: int | None = None, labels: bool = False) -> dict:
    """A seeded subset of `count` calibration samples (all when None), labels included."""

    _require_calibration(ctx)
    rows = None if count is None else calibration.pick(data.samples_in(ctx.calibration, "calibration"), count, ctx.seed)
    # only the subset is read: memory does not grow with the file
    arrays = data.load(ctx.calibration, "calibration", rows=rows)
    if labels and data.LABELS not in arrays:
        raise ConfigError(
            f"{ctx.calibration}: quantize fallback measures accuracy and needs a `labels` array in "
            "the calibration data."
        )
    return arrays


def _int8_quantizer(
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
    del skeleton
    if mode == "static":
        _require_calibration(ctx)
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
            quantize_dynamic(str(prepared), str(out), use_external_data_format=side_file(prepared).is_file(), **common)
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
        return out

    return run, samples


def _int8(
    prepared: Path, config: QuantizeConfig, ctx: StepContext, mode: str | None = None, name: str = ""
) -> StepResult:
    mode = mode or config.mode
    stats = {"mode": mode, "bits": 8, "scope": config.scope}
    prepared, rescaled = _rescale(prepared, config, ctx)
    stats.update(rescaled)
    run, samples = _int8_quantizer(prepared, config, ctx, mode, name)
    out = run()
    if mode == "static":
        stats.update(calibration=config.calibration, calibration_samples=samples)
    if config.fallback:
        out, stats["fallback"] = _fallback(prepared, out, run, config, ctx)
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
    stats["quantized_ops"] = _ops(out)
    return StepResult(out, stats)


def _rescale(prepared: Path, config: QuantizeConfig, ctx: StepContext) -> tuple[Path, dict]:
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
        _require_calibration(ctx)  # and inputs that fit, before the model runs on them
        data.check_inputs(
            data.head(ctx.calibration, "calibration", 1), sessions.session(prepared).get_inputs(), ctx.calibration
        )
        rows = calibration.pick(data.samples_in(ctx.calibration, "calibration"), config.num_samples, ctx.seed)
        batches = data.stream(ctx.calibration, "calibration", rows, rewrites.batch_of(model, 16))
        model, stats["smoothquant"] = equalization.smooth(model, batches, config.smoothquant, ctx.threads)
    modelfile.save_onnx(model, out)
    record.write_text(json.dumps(stats))
    return out, stats


def _fallback(
    prepared: Path, quantized: Path, run: Callable[..., Path], config: QuantizeConfig, ctx: StepContext
) -> tuple[Path, dict]:
    """Rank layers by the error each adds (one pass over 64 calibration samples, squeezeflow.quantization.sensitivity:
    no model written per layer); keep the worst in float, one more at a time, until the budget is
    met; then return to INT8 each kept layer the budget does not need."""

    budget = config.fallback
    arrays = _calibration(ctx, labels=True)
    inputs, labels = data.inputs_of(arrays), arrays[data.LABELS]
    reference = sessions.run(sessions.session(prepared), inputs)
    base = accuracy(reference, labels)
    drop = base - accuracy(_first(_outputs(sessions.session(quantized), inputs, ctx)), labels)
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
        model_drop = base - accuracy(_first(_outputs(sessions.session(model), inputs, ctx)), labels)
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


def _auto(model: Path, prepared: Path, config: QuantizeConfig, ctx: StepContext) -> StepResult:
    """Build INT8 variants (dynamic, and static with calibration data; per-channel and per-tensor;
    static with GPTQ rounding and bias correction on convolutional models, and weighted static with SmoothQuant on
    matmul models), drop those that change FP32's outputs beyond auto_tolerance, time the rest
    against FP32, keep the fastest."""
    import numpy as np

    ops = modelfile.op_counts(prepared)
    prior = "static" if ops.get("Conv", 0) >= ops.get("MatMul", 0) + ops.get("Gemm", 0) else "dynamic"
    modes = ["dynamic", "static"] if ctx.calibration is not None else ["dynamic"]
    tried = {}
    for mode in modes:
        for per_channel in (True, False):
            variant = config.model_copy(update={"per_channel": per_channel, "scope": "all"})
            name = f"{mode}-{'per-channel' if per_channel else 'per-tensor'}"
            tried[name] = _int8(prepared, variant, ctx, mode, name)
    # attention's MatMuls, masks and residual Adds left float: what keeps static INT8 on transformers
    if "static" in modes:
        tried["static-weighted"] = _int8(
            prepared,
            config.model_copy(update={"per_channel": True, "scope": "weighted"}),
            ctx,
            "static",
            "static-weighted",
        )
        # the accuracy-preserving options for the model's kind, where not set already
        for name, update in _accuracy_variants(config, prior, ops.get("MatMul", 0) > 0).items():
            tried[name] = _int8(prepared, config.model_copy(update=update), ctx, "static", name)
    opened = {"fp32": sessions.session(model, ctx.threads, ctx.providers)}
    opened.update({k: sessions.session(r.model, ctx.threads, ctx.providers) for k, r in tried.items()})
    changed = {}
    if ctx.calibration is not None:
        inputs = data.inputs_of(_calibration(ctx, config.num_samples))
        reference = sessions.run_outputs(opened["fp32"], inputs)
        changed = {k: _changed(ctx.task, reference, _outputs(opened[k], inputs, ctx)) for k in tried}
    eligible = [k for k in tried if changed.get(k, 0.0) <= config.auto_tolerance]
    times = latency.measure(
        {k: opened[k] for k in ["fp32", *eligible]},
        _timing_feed(opened["fp32"], ctx),
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


def _accuracy_variants(config: QuantizeConfig, prior: str, matmuls: bool) -> dict[str, dict]:
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


def _changed(task: str, reference: dict, outputs: dict) -> float:
    """How far a variant's outputs are from FP32's: the share of changed top-1 predictions (classification), else the
    worst output's mean relative error.
    """

    if task == "classification":
        return 1.0 - agreement(next(iter(outputs.values())), next(iter(reference.values())))
    return float(tasks.score("generic", reference, outputs, None)[0]["mean_rel_error"])


def _outputs(sess, inputs: dict, ctx: StepContext) -> dict:
    """Every output over `inputs`, as the model gives it at the target's batch size (see sessions.scoring_batch)."""

    return sessions.run_outputs(sess, inputs, sessions.scoring_batch(sess, inputs, ctx.batch_size))


def _first(outputs: dict):
    return next(iter(outputs.values()))


def _timing_feed(sess, ctx: StepContext) -> dict:
    """One batch for timing: calibration samples when present, else zeros of the input shapes."""
    import numpy as np

    if ctx.calibration is not None:
        return next(data.batches(data.head(ctx.calibration, "calibration", ctx.batch_size), ctx.batch_size))
    kinds = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
    return {
        i.name: np.zeros(
            [ctx.batch_size] + [d if isinstance(d, int) else 1 for d in i.shape[1:]], kinds.get(i.type, np.float32)
        )
        for i in sess.get_inputs()
    }


def _int4(source: Path, config: QuantizeConfig, ctx: StepContext) -> StepResult:
    """Weight-only 4-bit MatMul weights in blocks (MatMulNBits); Gemm is rewritten to MatMul first, in memory."""
    import numpy as np
    import onnx

    sessions.ort_tools_without_torch()
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if config.block_size & (config.block_size - 1):
        raise ConfigError(f"quantize.block_size must be a power of two. Got {config.block_size}.")
    if config.int4_embeddings and config.int4_algorithm != "rtn":
        raise ConfigError(
            "quantize.int4_embeddings packs embeddings with round-to-nearest only; set "
            f"int4_algorithm: rtn (got {config.int4_algorithm}) or drop int4_embeddings."
        )
    model = onnx.load(str(source))
    rewritten = rewrites.rewrite_gemm(model)
    # INC's vendored k-quant logs per layer
    for name in ("onnxruntime.quantization.matmul_nbits_quantizer", "neural_compressor"):
        logging.getLogger(name).setLevel(logging.ERROR)
    skipped = _odd_blocks(model, config.block_size) if config.int4_algorithm == "k_quant" else []
    quantizer = MatMulNBitsQuantizer(
        model,
        block_size=config.block_size,
        is_symmetric=True,
        op_types_to_quantize=("MatMul", "Gather") if config.int4_embeddings else ("MatMul",),
        quant_axes=(("MatMul", 0), ("Gather", 1)),
        nodes_to_exclude=skipped,
        algo_config=_int4_algorithm(config, ctx),
    )
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # INC's vendored GPTQ/RTN print progress
            quantizer.process()
    except (ValueError, IndexError, RuntimeError, np.linalg.LinAlgError) as e:
        raise ModelError(
            f"quantize int4_algorithm={config.int4_algorithm}: ONNX Runtime's weight-only quantizer "
            "failed on this model "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); use int4_algorithm "
            "rtn or hqq."
        ) from None
    out = ctx.workdir / "int4.onnx"
    quantizer.model.save_model_to_file(str(out), use_external_data_format=modelfile.is_large(quantizer.model.model))
    ops = _ops(out)
    if not ops.get("MatMulNBits"):
        raise ModelError(
            "quantize mode=int4 found no MatMul or Gemm weight to quantize in this model; use mode static or dynamic."
        )
    stats = {
        "mode": "int4",
        "bits": 4,
        "block_size": config.block_size,
        "algorithm": config.int4_algorithm,
        "gemm_rewritten": rewritten,
        "quantized_ops": ops,
    }
    if skipped:
        stats.update(
            kept_float=skipped,
            note=f"k_quant left {len(skipped)} MatMul(s) in float: ONNX Runtime "
            "1.32's k-quant packs zero points wrongly for an odd number "
            f"of {config.block_size}-weight blocks per column (use a block_size "
            "that divides their input size, or rtn)",
        )
    return StepResult(out, stats)


def _odd_blocks(model, block_size: int) -> list[str]:
    """MatMuls whose weights have an odd number of blocks along K (ORT's k-quant cannot pack their zero points)."""
    inits = {i.name: i for i in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul"
        and n.input[1] in inits
        and len(inits[n.input[1]].dims) == 2
        and -(-inits[n.input[1]].dims[0] // block_size) % 2
    ]


def _int4_algorithm(config: QuantizeConfig, ctx: StepContext):
    """ONNX Runtime's weight-only configuration for `config.int4_algorithm` (None: its default, round to nearest)."""
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    if config.int4_algorithm == "rtn":
        return None  # MatMulNBitsQuantizer's DEFAULT quantizer: the block size, symmetric
    if config.int4_algorithm == "hqq":
        return nbits.HQQWeightOnlyQuantConfig(block_size=config.block_size, bits=4)
    if config.int4_algorithm == "k_quant":
        return nbits.KQuantWeightOnlyQuantConfig()

    inputs = data.inputs_of(_calibration(ctx, config.num_samples))
    return nbits.GPTQWeightOnlyQuantConfig(calibration_data_reader=calibration.reader(inputs, 1))


def _fp16(prepared: Path, config: QuantizeConfig, ctx: StepContext) -> StepResult:
    """Half-precision weights and activations, float32 inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out = ctx.workdir / "fp16.onnx"
    modelfile.save_onnx(rewrites.toposort(convert_float_to_float16(onnx.load(str(prepared)), keep_io_types=True)), out)
    stats = {"mode": "fp16", "bits": 16}
    if all(p == "CPUExecutionProvider" for p in ctx.providers):
        stats["note"] = "fp16 gives no speedup on CPU execution providers; use it for GPU targets"
    return StepResult(out, stats)
