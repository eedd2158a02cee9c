"""The quantize step's parameters (`QuantizeConfig`), and the refusal of options a mode would ignore."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from squeezeflow.errors import ConfigError
from squeezeflow.steps import MAX_STEPS, StepConfig

QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}


WEIGHT_OPS = ("Conv", "MatMul", "Gemm")


INT_OPS = {
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


def check_int8_options(config: QuantizeConfig) -> None:
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
