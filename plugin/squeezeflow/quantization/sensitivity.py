"""Per-layer quantization sensitivity from one pass over the calibration data, nothing written.

The accuracy-aware fallback needs to know which layers to keep in float. Quantizing one layer at a
time and running the whole model for each (what it did before) writes a model per layer: 80
minutes on a 22M-parameter encoder. Here the FP32 model runs once per batch with every layer's
float inputs and output exposed, and each layer runs alone on those same inputs as the INT8 model
has it (its span of the quantized graph: QuantizeLinear/DequantizeLinear pairs, a fused ReLU,
or dynamic quantization's nodes), extracted in memory: the error each layer adds, relative to its
output, with nothing written.

A layer's span runs from its float inputs (the tensors the quantized graph quantizes for it, which
the FP32 graph also has) through the QuantizeLinear/DequantizeLinear pair on its output: ORT folds
a following ReLU into that pair (uint8, zero point 0), so the FP32 tensor to compare with is the
first one on the way that the FP32 graph also has (the ReLU's output, or a renamed graph output).

Trials with layers kept in float stay real quantizations (quantize_static's nodes_to_exclude):
float layers spliced into the quantized graph are not what ONNX Runtime runs, because its session
optimizer quantizes the float weights of a layer whose input is dequantized (WeightBiasQuantization,
after moving DequantizeLinear forward through reshapes and pooling). The same holds for an excluded
layer behind quantized ones: ORT 1.32 runs it in INT8 unless what feeds it is float too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from squeezeflow import data
from squeezeflow.onnx import rewrites, sessions

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import onnx

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def spans(
    fp32: onnx.ModelProto, quantized: onnx.ModelProto, layers: Iterable[str]
) -> dict[str, tuple[list[str], str, str]]:
    """Per layer found in both graphs: (float input tensors, its FP32 output tensor, the quantized graph's tensor that
    stands for it).
    """
    float_names = {t for n in fp32.graph.node for t in (*n.input, *n.output)} | {i.name for i in fp32.graph.input}
    float_inits = {i.name for i in fp32.graph.initializer}
    q_inits = {i.name for i in quantized.graph.initializer}
    producer = {o: n for n in quantized.graph.node for o in n.output}
    readers: dict[str, list] = {}
    for n in quantized.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    by_name = {n.name: n for n in quantized.graph.node}
    fp32_nodes = {n.name: n for n in fp32.graph.node}
    found = {}
    for name in layers:
        node = by_name.get(name)
        if node is None:  # dynamic quantization renames the node; its inputs and output keep their names
            original = fp32_nodes.get(name)
            if original is not None and original.output[0] in producer:
                found[name] = (
                    [i for i in original.input if i and i not in float_inits],
                    original.output[0],
                    original.output[0],
                )
            continue
        inputs = []
        for tensor in node.input:
            while tensor and tensor not in float_names and tensor in producer and producer[tensor].op_type in _QDQ:
                tensor = producer[tensor].input[0]  # back through DequantizeLinear <- QuantizeLinear
            if tensor and tensor not in float_inits and tensor not in q_inits and tensor in float_names:
                inputs.append(tensor)
        chain = [node.output[0]]
        while len(readers.get(chain[-1], [])) == 1 and readers[chain[-1]][0].op_type in _QDQ:
            # forward through the output's QuantizeLinear -> DequantizeLinear
            chain.append(readers[chain[-1]][0].output[0])
        match = next((t for t in chain if t in float_names), None)
        if match is not None:
            found[name] = (inputs, match, chain[-1])
    return found


def layer_errors(
    fp32: Path, quantized: Path, batches: Iterable[dict[str, np.ndarray]], layers: list[str]
) -> dict[str, float]:
    """Per layer: sum of squared differences between its INT8 and FP32 outputs over its sum of
    squares, both computed from the FP32 model's inputs to that layer (0 for a layer left float,
    or one the quantized graph does not show).

    Args:
        fp32: the float model the INT8 one was made from (node names shared).
        quantized: the QDQ or dynamic INT8 model ORT's quantizers made from it.
        batches: model inputs, batch by batch.
        layers: node names to rank (e.g. rewrites.nodes_of(fp32, ("Conv", "MatMul", "Gemm"))).
    """
    import numpy as np
    import onnx

    model, qmodel = onnx.load(str(fp32)), onnx.load(str(quantized))
    found = spans(model, qmodel, layers)
    wanted = sorted({t for inputs, out, _ in found.values() for t in (*inputs, out)})
    fp32_sess = sessions.session(rewrites.with_outputs(model, wanted).SerializeToString())
    alone = {
        name: sessions.session(_extract(qmodel, inputs, q_out).SerializeToString())
        for name, (inputs, _, q_out) in found.items()
    }
    del model, qmodel
    err, ref = dict.fromkeys(found, 0.0), dict.fromkeys(found, 0.0)
    for batch in batches:
        values = dict(zip(wanted, fp32_sess.run(wanted, data.feed(batch))))
        for name, sess in alone.items():
            inputs, out, _ = found[name]
            y = values[out].astype(np.float64)
            q = sess.run(None, {t: values[t] for t in inputs})[0].astype(np.float64)
            err[name] += float(np.sum((q - y) ** 2))
            ref[name] += float(np.sum(y**2))
    return {name: err.get(name, 0.0) / max(ref.get(name, 0.0), 1e-30) for name in layers}


def _extract(model: onnx.ModelProto, inputs: list[str], output: str) -> onnx.ModelProto:
    """The part of `model` that computes `output` from `inputs` (and initializers), as a model of its own."""
    from onnx import TensorProto, helper

    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    nodes, needed, stack = [], set(), [output]
    while stack:
        tensor = stack.pop()
        if tensor in needed or tensor in inputs or tensor in inits or not tensor:
            needed.add(tensor)
            continue
        needed.add(tensor)
        node = producer[tensor]
        if node not in nodes:
            nodes.append(node)
            stack.extend(node.input)
    order = {id(n): i for i, n in enumerate(model.graph.node)}
    graph = helper.make_graph(
        sorted(nodes, key=lambda n: order[id(n)]),
        "layer",
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [inits[t] for t in sorted(needed) if t in inits],
    )
    return helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
