"""Per-channel statistics of a model's intermediate tensors over data, one batch in memory at a time.

SmoothQuant needs the largest magnitude of each input channel of a MatMul; bias correction needs
the mean of each output channel of a convolution. Both run the model once over the data with the
tensors exposed as outputs and fold each batch into running per-channel figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from squeezeflow import data
from squeezeflow.onnx import rewrites, sessions

if TYPE_CHECKING:
    import numpy as np
    import onnx


def statistics(
    model: onnx.ModelProto,
    axes: dict[str, int],
    batches: Iterable[dict[str, np.ndarray]],
    kind: Literal["absmax", "mean"],
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """Per tensor of `axes` (name -> channel axis, negative counts from the end): per channel, the
    largest absolute value (`absmax`) or the mean (`mean`) over every other axis and every batch."""
    import numpy as np

    names = sorted(axes)
    sess = sessions.session(rewrites.with_outputs(model, names, only=True).SerializeToString(), threads)
    total: dict[str, np.ndarray] = {}
    count: dict[str, int] = {}
    for batch in batches:
        for name, value in zip(names, sess.run(names, data.feed(batch))):
            axis = axes[name] % value.ndim
            others = tuple(d for d in range(value.ndim) if d != axis)
            if kind == "absmax":
                part = np.abs(value).max(axis=others).astype(np.float64)
                total[name] = part if name not in total else np.maximum(total[name], part)
            else:
                part = value.astype(np.float64).sum(axis=others)
                total[name] = part if name not in total else total[name] + part
            count[name] = count.get(name, 0) + value.size // max(value.shape[axis], 1)
    if kind == "mean":
        return {n: v / max(count[n], 1) for n, v in total.items()}
    return total
