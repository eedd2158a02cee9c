"""The data contract: `.npz` files with one array per model input, plus `labels`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from squeezeflow.errors import DataError

if TYPE_CHECKING:
    import numpy as np

LABELS = "labels"
_NP_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(double)": "float64", "tensor(bool)": "bool"}


def load(path: str | Path, role: str) -> dict[str, np.ndarray]:
    """All arrays of an npz file, read eagerly.

    Raises:
        DataError: the file is missing or not an npz.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {role} data file not found. Set data.{role} in params.yaml or run `squeezeflow demo` to create the demo data.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e}). Write it with numpy.savez.") from None
    if not inputs_of(arrays):
        raise DataError(f"{path}: holds no input arrays (only {sorted(arrays)}). Save one array per model input.")
    return arrays


def inputs_of(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model-input arrays, in file order (everything but `labels`)."""
    return {k: v for k, v in arrays.items() if k != LABELS}


def check_inputs(arrays: dict[str, np.ndarray], specs: Sequence, path: str | Path) -> None:
    """Fail unless the arrays match the ONNX model's inputs by name, rank, fixed dims and dtype.

    Args:
        arrays: the npz arrays.
        specs: `onnxruntime.InferenceSession.get_inputs()`.
        path: the file, for the message.
    """
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise DataError(f"{path}: has no array named {missing[0]!r}; the model's inputs are {names}, the file has {sorted(arrays)}. Name the arrays after the model inputs.")
    extra = [n for n in inputs_of(arrays) if n not in names]
    if extra:
        raise DataError(f"{path}: array {extra[0]!r} is not a model input (inputs: {names}). Remove it or rename it to `labels`.")
    lengths = {len(arrays[n]) for n in names}
    if LABELS in arrays:
        lengths.add(len(arrays[LABELS]))
    if len(lengths) > 1:
        raise DataError(f"{path}: arrays have different numbers of samples {sorted(lengths)}. Every array's first axis must be the sample axis.")
    for spec in specs:
        arr = arrays[spec.name]
        want = list(spec.shape)
        if arr.ndim != len(want) or any(isinstance(w, int) and w != g for w, g in zip(want[1:], arr.shape[1:])):
            raise DataError(f"{path}: array {spec.name!r} has shape {list(arr.shape)}, the model expects {want}. Reshape the data to the model input.")
        dtype = _NP_DTYPES.get(spec.type)
        if dtype and str(arr.dtype) != dtype:
            raise DataError(f"{path}: array {spec.name!r} has dtype {arr.dtype}, the model expects {dtype}. Save it as {dtype}.")


def check_labels(arrays: dict[str, np.ndarray], num_classes: int, path: str | Path) -> np.ndarray:
    """The integer labels, checked to lie in [0, num_classes)."""
    import numpy as np

    if LABELS not in arrays:
        raise DataError(f"{path}: has no `labels` array; a classification eval set needs one.")
    labels = arrays[LABELS]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: `labels` must be a 1-D integer array. Got dtype {labels.dtype}, shape {list(labels.shape)}.")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise DataError(f"{path}: label {int(bad[0])} is outside the model's {num_classes} classes (0..{num_classes - 1}); {bad.size} labels are out of range. Fix the labels or the model.")
    return labels


def batches(arrays: dict[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    """Consecutive batches of the input arrays."""
    inputs = inputs_of(arrays)
    n = len(next(iter(inputs.values())))
    for start in range(0, n, size):
        yield {k: v[start : start + size] for k, v in inputs.items()}


def digest(path: str | Path) -> str:
    """sha256 of a file (data files, models, dvc.lock)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
