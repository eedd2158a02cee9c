"""Function-preserving channel rescaling of float ONNX graphs before INT8 quantization.

Both rewrites move a per-channel factor s from one side of a linear layer to the other, so the
float model computes the same function (up to float rounding) while its ranges become friendlier
to 8-bit grids:

- `smooth` (SmoothQuant, Xiao et al. 2023): for a MatMul/Gemm with a constant weight W[K, N], the
  input X[..., K] is divided by s and the rows of W are multiplied by it, with
  s_k = max|X_k|^alpha / max|W_k|^(1 - alpha) from calibration data: activation outliers, which a
  per-tensor activation scale cannot follow, migrate into the weights, which are quantized per
  channel. The division is folded into the LayerNormalization that produces X when it feeds only
  such layers; otherwise a Mul by 1/s is inserted before them.
- `equalize` (cross-layer equalization, Nagel et al. 2019): for two convolutions joined directly or
  through a Relu (positively homogeneous: relu(x / s) = relu(x) / s for s > 0), output channel c
  of the first is divided by s_c and input channel c of the second multiplied by it, with
  s_c = sqrt(r1_c / r2_c) so that both ranges become sqrt(r1_c * r2_c). This suits per-tensor
  weights and depthwise kernels. Clip(0, 6) (ReLU6) is not homogeneous and is left alone: replacing
  it by a Relu, as some toolkits do, changes EfficientNet-Lite's predictions on 92% of crops.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING

from squeezeflow.onnx import channel_stats

if TYPE_CHECKING:
    import numpy as np
    import onnx

_LIMIT = 1e4  # bound on any factor: an all-zero channel must not turn into inf


class _Weights:
    """The initializers of a graph as NumPy arrays, written back by `store`."""

    def __init__(self, model: onnx.ModelProto):
        from onnx import numpy_helper

        self.model = model
        self.protos = {i.name: i for i in model.graph.initializer}
        self.arrays = {}
        self._numpy = numpy_helper

    def __contains__(self, name: str) -> bool:
        return name in self.protos

    def get(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            self.arrays[name] = self._numpy.to_array(self.protos[name]).copy()
        return self.arrays[name]

    def store(self) -> None:
        for name, array in self.arrays.items():
            self.protos[name].CopyFrom(self._numpy.from_array(array, name))


def _readers(model: onnx.ModelProto) -> dict[str, list]:
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for tensor in node.input:
            readers.setdefault(tensor, []).append(node)
    return readers


def _attr(node, name: str, default):
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _shared(model: onnx.ModelProto) -> set[str]:
    """Initializers read by more than one node (rescaling one reader would change the others)."""
    seen, shared = set(), set()
    for node in model.graph.node:
        for tensor in set(node.input):
            (shared if tensor in seen else seen).add(tensor)
    return shared


def _row_axis(node) -> int:
    """The axis of a MatMul/Gemm weight that runs over the input channels."""
    return 1 if node.op_type == "Gemm" and _attr(node, "transB", 0) else 0


def smoothable(model: onnx.ModelProto) -> dict[str, list]:
    """Activation tensor -> the MatMul/Gemm nodes with a constant 2-D weight (not shared) that read it as their first
    input.
    """
    weights, shared, groups = {i.name: i for i in model.graph.initializer}, _shared(model), {}
    for node in model.graph.node:
        if (
            node.op_type not in ("MatMul", "Gemm")
            or len(node.input) < 2
            or node.input[1] not in weights
            or node.input[1] in shared
        ):
            continue
        if (
            len(weights[node.input[1]].dims) != 2
            or (node.op_type == "Gemm" and _attr(node, "transA", 0))
            or node.input[0] in weights
        ):
            continue
        groups.setdefault(node.input[0], []).append(node)
    return groups


def smooth(
    model: onnx.ModelProto, batches: Iterable[dict[str, np.ndarray]], alpha: float = 0.5, threads: int = 1
) -> tuple[onnx.ModelProto, dict]:
    """SmoothQuant on a copy of `model`, with activation maxima from one pass over `batches`.

    Returns:
        The rewritten model and statistics: layers smoothed, factors folded into LayerNormalization,
        Mul nodes inserted, and the largest activation max before and after.
    """

    import numpy as np
    from onnx import helper, numpy_helper

    groups = smoothable(model)
    if not groups:
        return model, {"layers": 0, "folded": 0, "inserted": 0}
    amax = channel_stats.statistics(model, dict.fromkeys(groups, -1), batches, "absmax", threads)
    out = copy.deepcopy(model)
    weights, readers, shared = _Weights(out), _readers(out), _shared(out)
    producer = {o: n for n in out.graph.node for o in n.output}
    by_name = {n.name: n for n in out.graph.node}
    folded = inserted = layers = 0
    before = after = 0.0
    new_nodes: dict[int, list] = {}
    for tensor, nodes in groups.items():
        nodes = [by_name[n.name] for n in nodes]
        wmax = np.max([np.abs(weights.get(n.input[1])).max(axis=1 - _row_axis(n)) for n in nodes], axis=0).astype(
            np.float64
        )
        if wmax.shape != amax[tensor].shape:
            continue
        factors = np.where(
            (amax[tensor] > 0) & (wmax > 0), amax[tensor] ** alpha / np.maximum(wmax, 1e-12) ** (1 - alpha), 1.0
        )
        factors = np.clip(factors, 1 / _LIMIT, _LIMIT)
        before, after = max(before, float(amax[tensor].max())), max(after, float((amax[tensor] / factors).max()))
        for node in nodes:
            axis = _row_axis(node)
            w = weights.get(node.input[1])
            weights.arrays[node.input[1]] = (w * (factors[:, None] if axis == 0 else factors[None, :])).astype(w.dtype)
        layers += len(nodes)
        source = producer.get(tensor)
        if (
            source is not None
            and source.op_type == "LayerNormalization"
            and _attr(source, "axis", -1) == -1
            and len(readers[tensor]) == len(nodes)
            and all(t in weights and t not in shared for t in source.input[1:3] if t)
        ):
            for t in source.input[1:3]:
                if t:
                    weights.arrays[t] = (weights.get(t) / factors).astype(weights.get(t).dtype)
            folded += 1
            continue
        scaled, inverse = f"{tensor}_smoothed", f"{tensor}_smooth_inverse"
        out.graph.initializer.append(numpy_helper.from_array((1.0 / factors).astype(np.float32), inverse))
        mul = helper.make_node("Mul", [tensor, inverse], [scaled], name=f"{nodes[0].name}_smooth")
        first = min(i for i, n in enumerate(out.graph.node) if n in nodes)
        new_nodes.setdefault(first, []).append(mul)
        for node in nodes:
            node.input[0] = scaled
        inserted += 1
    weights.store()
    if new_nodes:
        ordered = []
        for i, node in enumerate(out.graph.node):
            ordered.extend(new_nodes.get(i, []))
            ordered.append(node)
        del out.graph.node[:]
        out.graph.node.extend(ordered)
    return out, {
        "alpha": alpha,
        "layers": layers,
        "folded": folded,
        "inserted": inserted,
        "max_activation_before": round(before, 4),
        "max_activation_after": round(after, 4),
    }


def equalize(model: onnx.ModelProto, sweeps: int = 2) -> tuple[onnx.ModelProto, dict]:
    """Cross-layer equalization of Conv -> [Relu] -> Conv pairs on a copy of `model`.

    Returns:
        The rewritten model and statistics: pairs equalized, and the largest ratio between the
        weight ranges of two channels of a first convolution, before and after (the spread that
        per-tensor weight scales suffer from).
    """

    import numpy as np

    out = copy.deepcopy(model)
    weights, readers, shared = _Weights(out), _readers(out), _shared(out)
    outputs = {o.name for o in out.graph.output}
    pairs = []
    for first in out.graph.node:
        if (
            first.op_type != "Conv"
            or first.input[1] not in weights
            or first.input[1] in shared
            or _attr(first, "group", 1) not in (1, weights.get(first.input[1]).shape[0])
        ):
            continue
        tensor = first.output[0]
        nxt = readers.get(tensor, [])
        if len(nxt) == 1 and nxt[0].op_type == "Relu" and tensor not in outputs:
            tensor = nxt[0].output[0]
            nxt = readers.get(tensor, [])
        if len(nxt) != 1 or nxt[0].op_type != "Conv" or tensor in outputs or first.output[0] in outputs:
            continue
        second = nxt[0]
        if second.input[0] != tensor or second.input[1] not in weights or second.input[1] in shared:
            continue
        channels, group = weights.get(first.input[1]).shape[0], _attr(second, "group", 1)
        w2 = weights.get(second.input[1])
        if not (group == 1 and w2.shape[1] == channels) and not (group == channels == w2.shape[0] and w2.shape[1] == 1):
            continue
        if len(first.input) > 2 and first.input[2] and (first.input[2] not in weights or first.input[2] in shared):
            continue
        pairs.append((first, second, group > 1))
    spread_before = spread_after = 1.0
    for sweep in range(sweeps):
        for first, second, depthwise in pairs:
            w1, w2 = weights.get(first.input[1]), weights.get(second.input[1])
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1).astype(np.float64)
            r2 = (
                np.abs(w2).reshape(w2.shape[0], -1).max(axis=1)
                if depthwise
                else np.abs(w2).max(axis=(0, *range(2, w2.ndim)))
            ).astype(np.float64)
            if sweep == 0:
                spread_before = max(spread_before, float(r1.max() / max(r1.min(), 1e-12)))
            factors = np.clip(
                np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.maximum(r2, 1e-12)), 1.0), 1 / _LIMIT, _LIMIT
            )
            shape1 = (-1,) + (1,) * (w1.ndim - 1)
            weights.arrays[first.input[1]] = (w1 / factors.reshape(shape1)).astype(w1.dtype)
            if len(first.input) > 2 and first.input[2]:
                weights.arrays[first.input[2]] = (weights.get(first.input[2]) / factors).astype(w1.dtype)
            shape2 = shape1 if depthwise else (1, -1) + (1,) * (w2.ndim - 2)
            weights.arrays[second.input[1]] = (w2 * factors.reshape(shape2)).astype(w2.dtype)
    for first, _, _ in pairs:
        w1 = weights.get(first.input[1])
        r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
        spread_after = max(spread_after, float(r1.max() / max(r1.min(), 1e-12)))
    weights.store()
    return out, {
        "pairs": len(pairs),
        "max_channel_spread_before": round(spread_before, 2),
        "max_channel_spread_after": round(spread_after, 2),
    }
