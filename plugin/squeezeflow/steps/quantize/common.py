"""What every quantization mode shares: ORT's pre-processing, operator counts, the calibration data,
the model's outputs as its task scores them."""

from __future__ import annotations

import contextlib
import gc
import logging
from pathlib import Path

from squeezeflow import data
from squeezeflow.data.artifacts import side_file
from squeezeflow.errors import ConfigError, ModelError
from squeezeflow.onnx import modelfile, rewrites, sessions
from squeezeflow.quantization import calibration
from squeezeflow.steps import StepContext
from squeezeflow.steps.quantize.config import INT_OPS, WEIGHT_OPS

PER_CHANNEL_OPSET = 13  # DequantizeLinear's `axis` (per-channel scales) came with opset 13


def prepare(model: Path, workdir: Path, min_opset: int = 0) -> tuple[Path, str | None]:
    """ORT's pre-processing, then what the quantizers need of the graph; returns the prepared model and, when its
    opset was raised to `min_opset`, "OLD -> NEW" for the manifest.

    Symbolic shape inference repairs value_info the dynamo exporter leaves inconsistent. A model with
    external data (a big one) gets symbolic shape inference alone: ORT's graph optimization and ONNX
    shape inference passes keep earlier copies of the model alive while they load theirs (3 copies at
    the peak, found with memray), and the quantizers infer shapes again anyway. ORT runs in `workdir`:
    a failed symbolic inference saves `sym_shape_infer_temp.onnx` into the current folder, which is
    the user's pipeline folder otherwise. Then, in one load and one save: the Constant weights of
    If/Loop bodies become initializers (ORT quantizes nothing else), and an opset older than
    `min_opset` is converted (per-channel INT8 needs 13).

    Raises:
        ModelError: the version converter cannot convert the graph; the message names the fixes.
    """
    sessions.ort_tools_without_torch()
    from onnxruntime.quantization import quant_pre_process

    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    model, prepared = Path(model).resolve(), (Path(workdir) / "prepared.onnx").resolve()
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
    with contextlib.chdir(prepared.parent):
        for i, options in enumerate(attempts):
            try:
                quant_pre_process(str(model), str(prepared), **options, **external)
                break
            except Exception:
                if i == len(attempts) - 1:
                    raise
    gc.collect()  # symbolic shape inference leaves a copy of the model in a reference cycle (1x the model, memray)
    return prepared, _fit_graph(prepared, min_opset, large)


def _fit_graph(prepared: Path, min_opset: int, large: bool) -> str | None:
    """Lift subgraph Constant weights and raise the opset to `min_opset` in place; "OLD -> NEW" when it did."""
    import onnx
    from onnx import version_converter

    skeleton = onnx.load(str(prepared), load_external_data=False)
    old = next((o.version for o in skeleton.opset_import if o.domain in ("", "ai.onnx")), 0)
    upgrade = bool(old) and old < min_opset
    if not upgrade and (large or not modelfile.has_subgraphs(skeleton)):
        return None
    model = onnx.load(str(prepared))
    changed = not large and rewrites.lift_constants(model) > 0  # If/Loop weights ORT can quantize
    if upgrade:
        try:
            model = version_converter.convert_version(model, min_opset)
            onnx.checker.check_model(model)
        except Exception as e:  # noqa: BLE001 - the converter raises RuntimeError, ValidationError, IndexError...
            raise ModelError(
                f"the model is at opset {old} and per-channel INT8 needs opset {min_opset}, but ONNX's version "
                f"converter cannot convert it ({modelfile.first_line(e)}): re-export the model at opset {min_opset} "
                "or newer, or set per_channel: false."
            ) from None
    if changed or upgrade:
        modelfile.save_onnx(model, prepared)
    return f"{old} -> {min_opset}" if upgrade else None


def nothing_quantized(path: Path, config, mode: str) -> ModelError:
    """Why a quantize step quantized no operator, as the failure of its recipe."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    wanted = set(config.op_types or WEIGHT_OPS)
    main = [n.op_type for n in model.graph.node if n.op_type in wanted]
    inner = [n.op_type for g in list(modelfile.graphs(model.graph))[1:] for n in g.node if n.op_type in wanted]
    if main and mode == "dynamic" and set(main) == {"Gemm"} and "MatMul" not in wanted:
        why = (
            f"ONNX Runtime's dynamic quantizer takes the model's {len(main)} Gemm node(s) as MatMul, and op_types "
            "leaves MatMul out; add MatMul to op_types, or leave op_types out"
        )
    elif main:
        why = (
            f"its {len(main)} {'/'.join(sorted(set(main)))} node(s) were all excluded or take no constant weight "
            "(scope, op_types, fallback)"
        )
    elif inner and mode == "dynamic":
        kinds = "/".join(sorted(set(inner)))
        why = f"its {len(inner)} {kinds} node(s) inside If/Loop/Scan subgraphs take no constant weight"
    elif inner:
        why = (
            f"its {len(inner)} {'/'.join(sorted(set(inner)))} node(s) are all inside If/Loop/Scan subgraphs, which "
            f"ONNX Runtime's {mode} quantizer keeps in float; use mode: dynamic"
        )
    else:
        why = f"it has no {', '.join(sorted(wanted))} node to quantize (op_types selects which)"
    return ModelError(f"quantize ({mode}) quantized no operator: {why}.")


def op_count(path: Path) -> dict[str, int]:

    return {k: v for k, v in sorted(modelfile.op_counts(path).items()) if k in INT_OPS}


def require_calibration(ctx: StepContext) -> None:

    if ctx.calibration is None:
        raise ConfigError(
            "quantize needs calibration data here: set data.calibration in params.yaml (or use a "
            "mode that needs none: dynamic, or int4 with int4_algorithm rtn, hqq or k_quant)."
        )


def calibration_data(ctx: StepContext, count: int | None = None, labels: bool = False) -> dict:
    """A seeded subset of `count` calibration samples (all when None), labels included."""

    require_calibration(ctx)
    rows = None if count is None else calibration.pick(data.samples_in(ctx.calibration, "calibration"), count, ctx.seed)
    # only the subset is read: memory does not grow with the file
    arrays = data.load(ctx.calibration, "calibration", rows=rows)
    if labels and data.LABELS not in arrays:
        raise ConfigError(
            f"{ctx.calibration}: quantize fallback measures accuracy and needs a `labels` array in "
            "the calibration data."
        )
    return arrays


def task_outputs(sess, inputs: dict, ctx: StepContext) -> dict:
    """Every output over `inputs`, as the model gives it at the target's batch size (see sessions.scoring_batch)."""

    return sessions.run_outputs(sess, inputs, sessions.scoring_batch(sess, inputs, ctx.batch_size))


def first_output(outputs: dict):
    return next(iter(outputs.values()))
