"""ExecuTorch programs: a PyTorch module exported with `torch.export` (batch axis dynamic), INT8
with the XNNPACK quantizer of the PT2E flow when calibration batches are given, lowered to the
XNNPACK backend and written as a `.pte` file that ExecuTorch's runtime runs.

Used by the `executorch` step (candidates) and by evaluate (the FP32 program of the source, the
baseline of an executorch target).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

# the dynamic batch axis' bound (the memory plan may bound it lower: the runner reads its bound from the program)
MAX_BATCH = 64
SUFFIX = ".pte"


def is_program(path: Any) -> bool:
    return isinstance(path, Path) and path.suffix == SUFFIX


def lower(
    model: Any, example: dict[str, np.ndarray], path: Path, calibration: Iterable[dict[str, np.ndarray]] | None = None
) -> dict[str, Any]:
    """Write the program of `model` (inputs positional, in `example`'s order) to `path`; INT8 when `calibration` batches
    are given.

    Raises:
        ModelError: torch.export or the lowering refuses the model.
    """

    logging.getLogger("torchao").setLevel(logging.ERROR)
    import torch

    # two or more rows: a batch of 1 would fix the axis
    args = tuple(torch.from_numpy(v[: max(2, min(4, len(v)))]) for v in example.values())
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    shapes = tuple({0: batch} for _ in args)
    stats: dict[str, Any] = {"backend": "xnnpack", "quantized": calibration is not None}
    try:
        graph = torch.export.export(model.eval(), args, dynamic_shapes=shapes)
        if calibration is not None:
            graph, stats["calibration_samples"] = _quantized(graph, args, shapes, calibration)
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        lowered = to_edge_transform_and_lower(graph, partitioner=[XnnpackPartitioner()])
        delegated = sum(
            1
            for n in lowered.exported_program().graph.nodes
            if n.op == "call_function" and "executorch_call_delegate" in str(n.target)
        )
        program = lowered.to_executorch()
    except Exception as e:  # noqa: BLE001 - torch.export and ExecuTorch's passes raise bare Exceptions and AssertionErrors for what they cannot take
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"ExecuTorch cannot lower the model ({type(e).__name__}: {first[:300]}).") from None
    path.write_bytes(program.buffer)
    return {**stats, "delegated_subgraphs": delegated, "program_bytes": path.stat().st_size}


def _quantized(graph: Any, args: tuple, shapes: tuple, calibration: Iterable[dict[str, np.ndarray]]) -> tuple[Any, int]:
    """The exported graph quantized to INT8 (symmetric, per-channel weights) on the calibration batches, exported
    again.
    """
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(
        graph.module(), XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    )
    seen = 0
    with torch.no_grad():
        for batch in calibration:
            tensors = [torch.from_numpy(v) for v in batch.values()]
            prepared(*tensors)
            seen += len(tensors[0])
    return torch.export.export(convert_pt2e(prepared), args, dynamic_shapes=shapes), seen
