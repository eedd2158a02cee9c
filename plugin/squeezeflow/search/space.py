"""The search space squeezeflow proposes for a model (`search: {space: auto}`), from its graph and data.

The grammar of a space (choices, ranges, sampling by an Optuna trial) is `squeezeflow.config.search_space`.
"""

from __future__ import annotations

from typing import Any

from squeezeflow import data
from squeezeflow.evaluate import size


def auto(model: Any, has_torch: bool, params: Any) -> list[dict[str, Any]]:
    """A space built from the source's operators, its size and the data there is.

    - INT8: dynamic (per-channel or per-tensor) always; static with data.calibration (minmax,
      entropy or percentile ranges), plus bias correction on convolutional models. Depthwise
      convolutions keep per-channel weights (one scale per tensor ruins them); attention (Softmax
      beside MatMuls) adds the weighted scope and SmoothQuant.
    - Weight-only INT4 matmuls for models over 50 MB with MatMuls (what is left to gain there is
      the file and its memory traffic).
    - Structured pruning (10-50% of channels) with 2 epochs of fine-tuning, optional, when the
      source is PyTorch, has no attention and data.train has labels (the fine-tuning needs them).
    - With a PyTorch source, k-means weight clustering (64 or 256 values per layer), optional, and
      quantization optional too, so clustering alone is a candidate.
    """
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    convs, matmuls = ops.count("Conv"), ops.count("MatMul") + ops.count("Gemm")
    depthwise = any(n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute) for n in graph.node)
    attention = "Softmax" in ops and ops.count("MatMul") >= 2
    static: dict[str, Any] = {
        "mode": "static",
        "per_channel": [True] if depthwise else [True, False],
        "calibration": ["minmax", "entropy", "percentile"],
    }
    if convs:
        static["bias_correction"] = [False, True]
    if attention or matmuls > convs:
        static.update(scope=["all", "weighted"], smoothquant=[None, 0.5])
    quantize: list[dict[str, Any]] = [{"mode": "dynamic", "per_channel": [True] if depthwise else [True, False]}] + (
        [static] if params.data.calibration else []
    )
    if ops.count("MatMul") and size.file_bytes(model) > 50e6:
        quantize.append({"mode": "int4", "block_size": [32, 128]})
    space: list[dict[str, Any]] = []
    labelled = params.data.train is not None and data.labels(params.data.train, "train") is not None
    # Torch-Pruning leaves a transformer's LayerNorms inconsistent (measured on the tweets transformer)
    if has_torch and labelled and (convs or matmuls) and not attention:
        space += [
            {"prune": {"method": "structured", "amount": {"low": 0.1, "high": 0.5, "step": 0.05}, "optional": "prune"}},
            {"finetune": {"epochs": 2, "optional": "prune"}},
        ]
    if not has_torch:
        return space + [{"quantize": quantize}]
    # k-means clustering (palettized weights, FP32 arithmetic): alone it keeps accuracy where INT8 does not
    # (EfficientNet-Lite1: 0.97 agreement against 0.90)
    return space + [
        {"cluster": {"clusters": [64, 256], "optional": "cluster"}},
        {"quantize": [{**q, "optional": True} for q in quantize]},
    ]
