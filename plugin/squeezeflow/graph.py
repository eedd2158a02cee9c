"""Small ONNX graph rewrites shared by steps."""

from __future__ import annotations

from pathlib import Path


def gemm_to_matmul(src: Path, dst: Path) -> int:
    """Rewrite Gemm nodes with a constant B (and no transA) as MatMul (+ Add for the bias).

    Weight-only quantizers such as ORT's MatMulNBits only take MatMul, while torch's exporter
    writes nn.Linear as Gemm.

    Returns:
        How many Gemm nodes were rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T.copy()
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
    onnx.save(model, str(dst))
    return count


def nodes_of(path: Path, op_types: tuple[str, ...]) -> list[str]:
    """Names of the nodes of the given operator types, in graph order."""
    import onnx

    return [n.name for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type in op_types]
