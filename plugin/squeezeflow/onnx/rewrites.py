"""Small ONNX graph rewrites shared by steps."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

from squeezeflow.onnx import modelfile

if TYPE_CHECKING:
    import onnx


def rewrite_gemm(model: onnx.ModelProto) -> int:
    """Rewrite, in place, Gemm nodes with a constant B (and no transA) as MatMul (+ Add for the bias).

    Weight-only quantizers such as ORT's MatMulNBits only take MatMul, while torch's exporter
    writes nn.Linear as Gemm.

    Returns:
        How many Gemm nodes were rewritten.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type != "Gemm"
            or node.input[1] not in inits
            or attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
        ):
            nodes.append(node)
            continue
        if attrs.get("transB", 0):
            weight = numpy_helper.to_array(inits[node.input[1]]).T.copy()
            graph.initializer.remove(inits[node.input[1]])
            graph.initializer.append(numpy_helper.from_array(weight, node.input[1]))
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], node.input[1]], [mm_out], name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def with_outputs(model: onnx.ModelProto, names: list[str], only: bool = False) -> onnx.ModelProto:
    """A copy of the model with `names` as extra graph outputs (typed from its value_info where known); `only`: as its
    only outputs.
    """

    from onnx import TensorProto, helper

    out = copy.deepcopy(model)
    known = {v.name: v for v in (*out.graph.value_info, *out.graph.input, *out.graph.output)}
    if only:
        del out.graph.output[:]
    present = {o.name for o in out.graph.output}
    for name in names:
        if name not in present:
            out.graph.output.append(
                copy.deepcopy(known[name])
                if name in known
                else helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
            )
    return out


def weighted(model: onnx.ModelProto, op_types: tuple[str, ...] = ("Conv", "MatMul", "Gemm")) -> list[str]:
    """Names of the nodes of `op_types` that take a constant weight (an initializer as second input): not attention's
    activation-by-activation MatMuls.
    """
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in op_types and len(n.input) > 1 and n.input[1] in inits]


def bias_adds(model: onnx.ModelProto) -> list[str]:
    """Names of the Add nodes that add a constant to a MatMul's output (a Linear layer exported as MatMul + Add)."""
    inits = {i.name for i in model.graph.initializer}
    matmul_outputs = {o for n in model.graph.node if n.op_type == "MatMul" for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Add"
        and len(n.input) == 2
        and {n.input[0] in inits, n.input[1] in inits} == {True, False}
        and any(i in matmul_outputs for i in n.input)
    ]


def batch_of(model: onnx.ModelProto, wanted: int) -> int:
    """`wanted`, or the batch size the model's first input fixes (an exported model may take only that)."""
    first = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
    return first[0].dim_value if first and first[0].HasField("dim_value") and first[0].dim_value > 0 else wanted


def nodes_of(path: Path, op_types: tuple[str, ...]) -> list[str]:
    """Names of the nodes of the given operator types, in graph order."""
    import onnx

    return [n.name for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type in op_types]


def palettize(src: Path, dst: Path, max_values: int = 256, min_size: int = 1024) -> int:
    """Store float weights with at most `max_values` distinct values as uint8 indices + a codebook.

    Each such initializer W becomes W_indices (uint8) and W_codebook (float32), and the graph
    recomputes W = Gather(W_codebook, Cast(W_indices)) under the same name, so the file shrinks
    about 4x and ONNX Runtime runs it unchanged.

    Returns:
        How many initializers were palettized.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    new_nodes, count = [], 0
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < min_size:
            continue
        values, inverse = np.unique(arr, return_inverse=True)
        if len(values) > min(max_values, 256):
            continue
        name = init.name
        graph.initializer.remove(init)
        graph.initializer.extend(
            [
                numpy_helper.from_array(values.astype(np.float32), f"{name}_codebook"),
                numpy_helper.from_array(inverse.reshape(arr.shape).astype(np.uint8), f"{name}_indices"),
            ]
        )
        new_nodes += [
            helper.make_node(
                "Cast", [f"{name}_indices"], [f"{name}_index32"], to=TensorProto.INT32, name=f"{name}_cast"
            ),
            helper.make_node("Gather", [f"{name}_codebook", f"{name}_index32"], [name], axis=0, name=f"{name}_palette"),
        ]
        count += 1
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + nodes)
    modelfile.save_onnx(model, dst)
    return count


def toposort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Reorder the nodes of every graph so each comes after the producers of its inputs (in place; stable otherwise).

    onnxruntime's float16 converter appends the Casts of kept float32 inputs at the end, which ORT
    runs but the ONNX checker refuses. A control-flow node also waits for the outer-scope names its
    subgraphs read (an If whose branches use a value computed later in the graph is as unsorted).
    """
    _toposort(model.graph, set())
    return model


def _toposort(graph: onnx.GraphProto, outer: set[str]) -> None:
    scope = outer | {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []  # protobuf wraps a node anew on each access: one list, stable ids
    produced = {o for n in pending for o in n.output}
    needs = {id(n): set(n.input) | (_outer_names(n) & produced) for n in pending}
    known = set(scope)
    while pending:
        ready = [n for n in pending if needs[id(n)] <= known]
        if not ready:  # a cycle or a name no graph defines: leave the rest in their order
            ordered += pending
            break
        for n in ready:
            known.update(n.output)
        ordered += ready
        taken = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in taken]
    del graph.node[:]
    graph.node.extend(ordered)
    for node in graph.node:
        for sub in modelfile.subgraphs(node):
            _toposort(sub, scope | produced)


def _outer_names(node: onnx.NodeProto) -> set[str]:
    """The names a node's subgraphs read from outside themselves."""
    names: set[str] = set()
    for sub in modelfile.subgraphs(node):
        local = (
            {i.name for i in sub.input} | {t.name for t in sub.initializer} | {o for n in sub.node for o in n.output}
        )
        for n in sub.node:
            names |= (set(n.input) | _outer_names(n)) - local
        names |= {o.name for o in sub.output} - local
    return names


def lift_constants(model: onnx.ModelProto) -> int:
    """Turn the Constant nodes of subgraphs into initializers of their graph (in place); returns how many.

    Exporters put the weights of If branches and Loop bodies in Constant nodes, and ORT's quantizers
    quantize only weights that are initializers.
    """
    count = 0
    for i, graph in enumerate(modelfile.graphs(model.graph)):
        if i == 0:
            continue
        keep = []
        for node in graph.node:
            value = [a for a in node.attribute if a.name == "value"]
            if node.op_type == "Constant" and len(node.attribute) == 1 and value and value[0].t.dims:
                tensor = copy.deepcopy(value[0].t)
                tensor.name = node.output[0]
                graph.initializer.append(tensor)
                count += 1
            else:
                keep.append(node)
        del graph.node[:]
        graph.node.extend(keep)
    return count
