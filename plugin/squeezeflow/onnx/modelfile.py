"""ONNX model files: load with external-data checks, save, copy, metadata and graph statistics."""

from __future__ import annotations

import os
import shutil
import stat
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow import envvars
from squeezeflow.data.artifacts import inside, side_file
from squeezeflow.errors import ModelError

if TYPE_CHECKING:
    import onnx


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read and check an ONNX file.

    Raises:
        ModelError: the file is missing, not ONNX, or fails the ONNX checker.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found. Run the stage that writes it (`dvc repro`).")
    model = _read(path)
    external_data(model, path)  # before anything reads the weights
    try:
        onnx.checker.check_model(str(path))  # by path: works for models over 2 GB (external data)
    except Exception as e:  # ValidationError...: the graph is wrong, and writing it again gives the same graph
        raise ModelError(f"{path}: not a valid ONNX model ({first_line(e)}).") from None
    return model


def _read(path: Path) -> onnx.ModelProto:
    """The graph of an ONNX file; weights in external data are not read."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, OSError...: the file is damaged, which writing it again may fix
        raise ModelError(
            f"{path}: not a valid ONNX model: the file does not parse ({first_line(e)}). If it was damaged on disk, "
            "re-create it with `dvc repro --force` of the stage that wrote it."
        ) from None
    return model


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def external_data(model: onnx.ModelProto, path: str | Path) -> dict[str, int]:
    """The external data files of a model and the bytes its tensors declare in each, checked.

    Tensor locations come from the model file, which others write: each must name a regular
    file (not a symlink) inside the model's folder, and each tensor's offset + length must lie
    inside that file, so that neither reading nor copying the weights touches anything else.

    Raises:
        ModelError: an absolute location, `..`, a symlink, a missing or special file, or an extent past its end.
    """

    import onnx
    from onnx.external_data_helper import _get_all_tensors  # initializers and attribute tensors, subgraphs included

    folder = Path(path).parent
    declared: dict[str, int] = {}
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entry = {e.key: e.value for e in tensor.external_data}
        location = entry.get("location", "")
        where = f"{path}: tensor {tensor.name!r} keeps its data in {location[:200]!r}"
        rel = Path(location)
        if not location or rel.is_absolute() or ".." in rel.parts or "\\" in location:
            raise ModelError(
                f"{where}, which is not a file name inside the model folder; refusing to read it. "
                "Save the model with its weights beside it."
            )
        full = folder / rel
        try:
            info = os.lstat(full)
        except OSError:
            raise ModelError(
                f"{where}, which does not exist beside the model. Copy the model with its external data file."
            ) from None
        if not stat.S_ISREG(info.st_mode) or not inside(folder, full):
            raise ModelError(
                f"{where}, which is a symlink or not a regular file; refusing to read it. Replace it "
                "with the weights file itself."
            )
        try:
            offset, length = (
                int(entry.get("offset", 0)),
                int(entry.get("length", info.st_size - int(entry.get("offset", 0)))),
            )
        except ValueError:
            raise ModelError(f"{where} with a non-numeric offset or length; the model is corrupt.") from None
        if offset < 0 or length < 0 or offset + length > info.st_size:
            raise ModelError(
                f"{where} at bytes {offset}..{offset + length}, but the file has {info.st_size}; the "
                "model is corrupt or truncated."
            )
        declared[location] = declared.get(location, 0) + length
    return declared


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs a control-flow node holds (If's branches, Loop's and Scan's bodies)."""
    import onnx

    return [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH] + [
        g for a in node.attribute for g in a.graphs
    ]


def graphs(graph: onnx.GraphProto):
    """`graph` and every subgraph of its control-flow nodes, depth first."""
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from graphs(sub)


def has_subgraphs(model: onnx.ModelProto) -> bool:
    return any(subgraphs(node) for node in model.graph.node)


def op_counts(path: str | Path) -> Counter:
    """How many nodes of each operator type the graph has, subgraphs included."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return Counter(node.op_type for graph in graphs(model.graph) for node in graph.node)


# inputs that hold quantization parameters (scales, zero points), not weights
_QUANT_PARAMS = {
    "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2),
    "MatMulInteger": (2, 3),
    "ConvInteger": (2, 3),
    "QLinearConv": (1, 2, 4, 5, 6, 7),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "DynamicQuantizeMatMul": (2, 3),
    "MatMulNBits": (2, 3),
    "GatherBlockQuantized": (2, 3),
}


def weight_stats(path: str | Path) -> dict[str, Any]:
    """Parameter count and sparsity (fraction of exact zeros) over the weights of every graph, subgraphs included:
    initializers and Constant nodes of rank >= 1 that are not integer (shapes) and have 2 elements or more, less the
    quantization scales, zero points and palette codebooks (a quantized or clustered model has as many parameters
    as its float source).
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    total = zeros = 0
    model = onnx.load(str(path), load_external_data=False)
    for graph in graphs(model.graph):
        constants = [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
        quant = {n.input[i] for n in graph.node for i in _QUANT_PARAMS.get(n.op_type, ()) if i < len(n.input)}
        # ORT's dynamic quantizer names a weight's scale and zero point after it and multiplies by the scale (Mul)
        quantized = {t.name.removesuffix("_quantized") for t in graph.initializer if t.name.endswith("_quantized")}
        quant |= {f"{w}_{kind}" for w in quantized for kind in ("scale", "zero_point")}
        # a palettized layer (rewrites.palettize) keeps its weights as indices; its codebook is not more parameters
        quant |= {n.input[0] for n in graph.node if n.op_type == "Gather" and n.name.endswith("_palette")}
        for init in [*graph.initializer, *constants]:
            if init.name in quant:
                continue
            if init.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) or not init.dims:
                continue  # shapes and scalars (scales, zero points) are not weights
            arr = numpy_helper.to_array(init, base_dir=str(Path(path).parent))  # external data: one tensor at a time
            init.ClearField("raw_data")
            if arr.size < 2:
                continue
            total += arr.size
            zeros += int(np.count_nonzero(arr == 0))
    return {"params": total, "sparsity": round(zeros / total, 6) if total else 0.0}


def set_metadata(path: str | Path, props: dict[str, str]) -> None:
    """Write `props` into the model's metadata_props (replacing keys of the same name), in place."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # external weights stay where they are
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in sorted(props.items()):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def is_large(model: onnx.ModelProto) -> bool:
    """Whether the model's weights are too big to keep inside the .onnx file."""
    weights = (t for graph in graphs(model.graph) for t in graph.initializer)
    return sum(len(t.raw_data) or t.ByteSize() for t in weights) > envvars.external_data_bytes()


def save_onnx(model: onnx.ModelProto, path: str | Path) -> Path:
    """Save a model, its weights in PATH.data (ONNX external data) when `is_large`."""
    import onnx

    path = Path(path)
    side_file(path).unlink(missing_ok=True)
    large = is_large(model)
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=side_file(path).name,
        size_threshold=1024,
    )
    return path


def copy_onnx(src: str | Path, dst: str | Path) -> Path:
    """Copy a model file with its external data, which ends up in DST.data whatever it was called."""

    import onnx
    from onnx.external_data_helper import _get_all_tensors

    src, dst = Path(src), Path(dst)
    model = _read(src)
    locations = set(external_data(model, src))
    if not locations:
        shutil.copyfile(src, dst)
        return dst
    if len(locations) > 1:
        raise ModelError(
            f"{src}: weights are spread over {len(locations)} external data files; save the model "
            "with all_tensors_to_one_file=True."
        )
    shutil.copyfile(src.parent / locations.pop(), side_file(dst))
    for tensor in _get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = side_file(dst).name
    onnx.save(model, str(dst))
    return dst


def metadata(path: str | Path) -> dict[str, str]:
    """The model's metadata_props as a dict.

    Raises:
        ModelError: the file is not ONNX.
    """
    return {p.key: p.value for p in _read(Path(path)).metadata_props}
