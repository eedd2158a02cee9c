"""`mode: int4`: weight-only 4-bit blocks (ORT's MatMulNBits / GatherBlockQuantized), RTN or HQQ."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from squeezeflow import data
from squeezeflow.errors import ConfigError, ModelError
from squeezeflow.onnx import modelfile, rewrites, sessions
from squeezeflow.quantization import calibration
from squeezeflow.steps import StepContext, StepResult
from squeezeflow.steps.quantize.common import calibration_data, op_count
from squeezeflow.steps.quantize.config import QuantizeConfig


def quantize_int4(source: Path, config: QuantizeConfig, ctx: StepContext) -> StepResult:
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
    skipped = odd_blocks(model, config.block_size) if config.int4_algorithm == "k_quant" else []
    quantizer = MatMulNBitsQuantizer(
        model,
        block_size=config.block_size,
        is_symmetric=True,
        op_types_to_quantize=("MatMul", "Gather") if config.int4_embeddings else ("MatMul",),
        quant_axes=(("MatMul", 0), ("Gather", 1)),
        nodes_to_exclude=skipped,
        algo_config=int4_algorithm(config, ctx),
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
    ops = op_count(out)
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


def odd_blocks(model, block_size: int) -> list[str]:
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


def int4_algorithm(config: QuantizeConfig, ctx: StepContext):
    """ONNX Runtime's weight-only configuration for `config.int4_algorithm` (None: its default, round to nearest)."""
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    if config.int4_algorithm == "rtn":
        return None  # MatMulNBitsQuantizer's DEFAULT quantizer: the block size, symmetric
    if config.int4_algorithm == "hqq":
        return nbits.HQQWeightOnlyQuantConfig(block_size=config.block_size, bits=4)
    if config.int4_algorithm == "k_quant":
        return nbits.KQuantWeightOnlyQuantConfig()

    inputs = data.inputs_of(calibration_data(ctx, config.num_samples))
    return nbits.GPTQWeightOnlyQuantConfig(calibration_data_reader=calibration.reader(inputs, 1))
