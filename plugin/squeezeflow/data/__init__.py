"""The data contract: `.npz` files with one array per model input, plus `labels`.

The package owns the files on disk between stages: npz data (here), the model folder with its
manifest (`artifacts`) and the Great Expectations checks of the data files (`contracts`). It may
import `errors`, `envvars` and `config`.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from squeezeflow import envvars
from squeezeflow.errors import DataError

if TYPE_CHECKING:
    import numpy as np

LABELS = "labels"
_NP_DTYPES = {
    "tensor(float)": "float32",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(double)": "float64",
    "tensor(bool)": "bool",
}


# params.yaml's data.inputs, set once per command (`use_layout`): the constants, as arrays, and the batch axes
_CONSTANTS: dict[str, np.ndarray] = {}
_AXES: dict[str, int] = {}


def use_layout(inputs: dict | None) -> None:
    """Feed every model the way params.yaml's `data.inputs` says (the CLI calls this once it has read params).

    `inputs`: name -> `config.InputLayout` (or its dict): a constant `value` (with its `dtype`), or a `batch_axis`.
    """
    from squeezeflow.config import InputLayout

    _CONSTANTS.clear()
    _AXES.clear()
    for name, spec in (inputs or {}).items():
        spec = spec if isinstance(spec, InputLayout) else InputLayout.model_validate(spec)
        if spec.value is not None:
            _CONSTANTS[name] = spec.array()
        elif spec.batch_axis:
            _AXES[name] = spec.batch_axis


def constants() -> dict[str, np.ndarray]:
    """The constant inputs params.yaml declares, as arrays."""
    return dict(_CONSTANTS)


def batch_axes() -> dict[str, int]:
    """Inputs the model takes batched on an axis other than the first: name -> axis."""
    return dict(_AXES)


def feed(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A batch of sample-first arrays as the model takes them: batch axes moved, constants added."""
    import numpy as np

    if not _CONSTANTS and not _AXES:
        return batch
    out = {k: np.ascontiguousarray(np.moveaxis(v, 0, _AXES[k])) if k in _AXES else v for k, v in batch.items()}
    return {**out, **_CONSTANTS}


def from_model(value: np.ndarray, fed: dict[str, np.ndarray], samples: int) -> np.ndarray:
    """An output of the model, sample axis first: the axis of a batch-axis input of the same shape (recurrent state
    out, like state in), else the first axis when it holds the batch, else the one axis that does."""
    import numpy as np

    for k, axis in _AXES.items():
        if k in fed and fed[k].shape == value.shape:
            return np.moveaxis(value, axis, 0)
    if value.ndim == 0 or value.shape[0] == samples:
        return value
    holding = [a for a, d in enumerate(value.shape) if d == samples]
    return np.moveaxis(value, holding[0], 0) if len(holding) == 1 else value


def load(path: str | Path, role: str, rows: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an npz file (all samples, or only `rows`), read after their headers are checked.

    Data files come from others: each array's declared shape and the archive's inflated size are
    checked against `SQUEEZEFLOW_MAX_DATA_BYTES` before anything is allocated, nothing is
    unpickled, and every array must share one non-empty sample axis.

    With `rows` (sorted sample indices), each member is streamed and only those rows are kept, so
    memory is the subset's, not the file's (a calibration subset of a large file; an example).

    Raises:
        DataError: the file is missing, not an npz, too large, or its arrays are inconsistent.
    """

    import numpy as np

    path = _require(path, role)
    headers = _check_sizes(path)
    try:
        if rows is not None and _streamable(headers):
            arrays = _read_rows(path, headers, rows)
        else:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _unreadable(path, e) from None
    if not inputs_of(arrays):
        raise DataError(f"{path}: holds no input arrays (only {sorted(arrays)}). Save one array per model input.")
    scalar = [k for k, v in arrays.items() if v.ndim == 0]
    if scalar:
        raise DataError(
            f"{path}: array {scalar[0]!r} is a scalar; every array needs a first axis of samples. A constant input "
            f"goes in params.yaml instead (data.inputs: {{{scalar[0]}: {{value: ...}}}}), not in the data files."
        )
    fixed = [k for k in arrays if k in _CONSTANTS]
    if fixed:
        raise DataError(
            f"{path}: array {fixed[0]!r} is a constant in params.yaml (data.inputs.{fixed[0]}.value); remove it from "
            "the file, or remove the value from params.yaml."
        )
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(
            f"{path}: arrays have different numbers of samples "
            f"({', '.join(f'{k}: {n}' for k, n in lengths.items())}). Every array's first axis must be "
            "the sample axis."
        )
    if not next(iter(lengths.values())):
        raise DataError(f"{path}: holds 0 samples. A {role} file needs at least one.")
    # read whole: keep the rows once the arrays are known to share them
    if rows is not None and not _streamable(headers):
        count = next(iter(lengths.values()))
        if any(not 0 <= r < count for r in rows):
            raise DataError(f"{path}: has {count} samples; sample {max(rows)} was asked for.")
        arrays = {k: v[list(rows)] for k, v in arrays.items()}
    return arrays


def _require(path: str | Path, role: str) -> Path:
    """The path of an existing zip archive, or the one-line DataError saying what it is instead."""

    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: {role} data file not found. Set data.{role} in params.yaml or run `squeezeflow "
            "demo` to create the demo data."
        )
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz file (a zip archive of .npy arrays). Write it with numpy.savez.")
    return path


def head(path: str | Path, role: str, count: int) -> dict[str, np.ndarray]:
    """The first `count` samples (or all, when fewer), read without loading the rest of the file."""
    return load(path, role, rows=range(min(count, samples_in(path, role))))


def labels(path: str | Path, role: str) -> np.ndarray | None:
    """The file's `labels` array alone (None when it has none), read without the inputs."""

    import numpy as np

    headers = _check_sizes(_require(path, role))
    if not headers:
        return load(path, role).get(LABELS)  # load gives the message, or reads what numpy must read whole
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz[LABELS] if LABELS in npz.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _unreadable(Path(path), e) from None


def samples_in(path: str | Path, role: str) -> int:
    """The number of samples of an npz file, from its array headers (the file is checked as `load` does)."""
    headers = _check_sizes(_require(path, role))
    if headers:
        return next(iter(headers.values()))[1][0]
    return samples(load(path, role))


def _check_sizes(path: Path) -> dict[str, tuple] | None:
    """Refuse an archive whose arrays declare, or whose members inflate to, more than the limit.

    Returns:
        member name -> (array name, shape, dtype, header bytes) when every member is a C-order
        .npy array (what `_read_rows` can stream), else None.
    """

    import numpy as np

    limit = envvars.max_data_bytes()
    hint = f"Split the data or raise {envvars.MAX_DATA_BYTES} (now {limit} bytes)."
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            inflated = sum(m.file_size for m in members)
            if inflated > limit:
                raise DataError(f"{path}: inflates to {inflated} bytes, more than the {limit} allowed. {hint}")
            declared, headers = 0, {}
            # every member whatever its name: numpy reads any that starts with the .npy magic as an array
            for member in members:
                name = member.filename.removesuffix(".npy")
                with archive.open(member) as f:
                    if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                        headers = None
                        continue  # handed back as bytes, bounded by the inflated size above
                    f.seek(0)
                    read_header = {
                        (1, 0): np.lib.format.read_array_header_1_0,
                        (2, 0): np.lib.format.read_array_header_2_0,
                    }.get(np.lib.format.read_magic(f))
                    if read_header is None:
                        raise ValueError(f"{member.filename} has an unknown .npy format version")
                    shape, fortran, dtype = read_header(f)
                    header = f.tell()
                if dtype.hasobject:
                    raise DataError(
                        f"{path}: array {name!r} holds Python objects, which load only by unpickling. "
                        "Save numeric arrays."
                    )
                size = int(np.prod(shape, dtype=object)) * dtype.itemsize
                declared += size
                if declared > limit:
                    raise DataError(
                        f"{path}: array {name!r} declares shape {list(shape)} ({size} bytes); the "
                        f"arrays exceed the {limit} allowed. {hint}"
                    )
                if size > member.file_size - header:
                    raise DataError(
                        f"{path}: array {name!r} declares shape {list(shape)} ({size} bytes) but holds "
                        f"{member.file_size - header}; the file is corrupt."
                    )
                if headers is not None:
                    headers = (
                        None if fortran or not shape else {**headers, member.filename: (name, shape, dtype, header)}
                    )
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise _unreadable(path, e) from None
    return headers


def _streamable(headers: dict[str, tuple] | None) -> bool:
    """Every member a C-order array, all with the same number of samples."""
    return bool(headers) and len({shape[0] for _, shape, _, _ in headers.values()}) == 1


def _read_rows(path: Path, headers: dict[str, tuple], rows: Sequence[int]) -> dict[str, np.ndarray]:
    """Only `rows` of each array, each member streamed once from its header (compressed or not)."""

    wanted = sorted(set(int(r) for r in rows))
    with zipfile.ZipFile(path) as archive:
        return {
            name: _RowReader(archive.open(member), shape, dtype, header).read(wanted)
            for member, (name, shape, dtype, header) in headers.items()
        }


def stream(path: str | Path, role: str, rows: Sequence[int], size: int) -> Iterator[dict[str, np.ndarray]]:
    """The input arrays of `rows` (sorted sample indices) in batches of `size`, read from the file as
    they are needed: memory is one batch, whatever the number of rows.

    Raises:
        DataError: as `load`.
    """

    headers = _check_sizes(Path(path))
    if not _streamable(headers):  # members numpy must read whole, or inconsistent arrays (load says which)
        yield from batches(load(path, role, rows=rows), size)
        return
    wanted = sorted(set(int(r) for r in rows))
    inputs = {m: h for m, h in headers.items() if h[0] != LABELS}
    try:
        with zipfile.ZipFile(path) as archive:
            readers = {m: _RowReader(archive.open(m), *h[1:]) for m, h in inputs.items()}
            for start in range(0, len(wanted), size):
                chunk = wanted[start : start + size]
                yield {headers[m][0]: reader.read(chunk) for m, reader in readers.items()}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _unreadable(Path(path), e) from None


class _RowReader:
    """Rows of one .npy member, read forward from an open stream."""

    def __init__(self, f, shape: tuple, dtype, header: int):
        import numpy as np

        self.f, self.shape, self.dtype = f, shape, dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=object)) * dtype.itemsize
        self.f.seek(header)
        self.position = 0

    def read(self, rows: Sequence[int]) -> np.ndarray:
        import numpy as np

        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        for i, row in enumerate(rows):
            if not self.position <= row < self.shape[0]:
                raise ValueError(f"sample {row} is out of order or past the {self.shape[0]} samples")
            if row > self.position:
                self.f.seek((row - self.position) * self.row_bytes, 1)
            out[i] = np.frombuffer(self.f.read(self.row_bytes), self.dtype).reshape(self.shape[1:])
            self.position = row + 1
        return out


def _unreadable(path: Path, e: BaseException) -> DataError:
    return DataError(
        f"{path}: not a readable .npz file "
        f"({str(e).splitlines()[0] if str(e) else type(e).__name__}). Write it with numpy.savez."
    )


def samples(arrays: dict[str, np.ndarray]) -> int:
    """The number of samples (the shared first axis, checked by `load`)."""
    return len(next(iter(arrays.values())))


def inputs_of(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model-input arrays, in file order (everything but `labels`)."""
    return {k: v for k, v in arrays.items() if k != LABELS}


def as_stored(specs: Sequence) -> list:
    """The model's inputs (`InferenceSession.get_inputs()`) as the data files hold them: constants left out, a
    batch-axis input's shape with its sample axis first. Idempotent.

    Raises:
        DataError: params.yaml's data.inputs names an input the model lacks, or an axis it does not have.
    """
    from types import SimpleNamespace

    if all(getattr(s, "stored", False) for s in specs):
        return list(specs)
    names = [s.name for s in specs]
    unknown = [n for n in [*_CONSTANTS, *_AXES] if n not in names]
    if unknown:
        raise DataError(
            f"params.yaml: data.inputs names {unknown[0]!r}, which is not a model input (inputs: {names}). "
            "Name the model's inputs."
        )
    out = []
    for spec in specs:
        if spec.name in _CONSTANTS:
            continue
        if not list(spec.shape):
            raise DataError(
                f"model input {spec.name!r} is a scalar: a constant of every run, not data. Set it in params.yaml: "
                f"data.inputs: {{{spec.name}: {{value: ...}}}}."
            )
        shape, axis = list(spec.shape), _AXES.get(spec.name, 0)
        if axis and axis >= len(shape):
            raise DataError(
                f"params.yaml: data.inputs.{spec.name}.batch_axis is {axis}, but the input has {len(shape)} axes "
                f"{shape}. Name one of its axes."
            )
        out.append(
            SimpleNamespace(
                name=spec.name,
                type=spec.type,
                shape=[shape[axis], *shape[:axis], *shape[axis + 1 :]] if shape else shape,
                stored=True,
            )
        )
    return out


def check_inputs(arrays: dict[str, np.ndarray], specs: Sequence, path: str | Path, samples: int | None = None) -> None:
    """Fail unless the arrays match the ONNX model's inputs by name, rank, fixed dims and dtype.

    Args:
        arrays: the npz arrays (or their first rows: see `head`).
        specs: `onnxruntime.InferenceSession.get_inputs()`.
        path: the file, for the message.
        samples: the file's sample count, for the message, when `arrays` are its first rows.
    """
    specs = as_stored(specs)
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise DataError(
            f"{path}: has no array named {missing[0]!r}; the model's inputs are {names}, the file has "
            f"{sorted(arrays)}. Name the arrays after the model inputs."
        )
    extra = [n for n in inputs_of(arrays) if n not in names]
    if extra:
        raise DataError(
            f"{path}: array {extra[0]!r} is not a model input (inputs: {names}). Remove it or rename it to `labels`."
        )
    for spec in specs:
        arr = arrays[spec.name]
        want = list(spec.shape)
        if arr.ndim != len(want) or any(isinstance(w, int) and w != g for w, g in zip(want[1:], arr.shape[1:])):
            shape = [len(arr) if samples is None else samples, *arr.shape[1:]]
            raise DataError(
                f"{path}: array {spec.name!r} has shape {shape}, the model expects {want}. Reshape the "
                "data to the model input."
            )
        dtype = _NP_DTYPES.get(spec.type)
        if dtype and str(arr.dtype) != dtype:
            raise DataError(
                f"{path}: array {spec.name!r} has dtype {arr.dtype}, the model expects {dtype}. Save it as {dtype}."
            )


def check_labels(arrays: dict[str, np.ndarray], num_classes: int, path: str | Path) -> np.ndarray:
    """The integer labels, checked to lie in [0, num_classes)."""
    if LABELS not in arrays:
        raise DataError(f"{path}: has no `labels` array; a classification eval set needs one.")
    labels = check_label_type(arrays[LABELS], path)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise DataError(
            f"{path}: label {int(bad[0])} is outside the model's {num_classes} classes "
            f"(0..{num_classes - 1}); {bad.size} labels are out of range. Fix the labels or the model."
        )
    return labels


def check_label_type(labels: np.ndarray, path: str | Path) -> np.ndarray:
    """Class labels are a 1-D integer array (not [N, 1], not floats)."""
    import numpy as np

    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}: `labels` must be a 1-D integer array. Got dtype {labels.dtype}, shape "
            f"{list(labels.shape)}; save them as int64 of shape [N]."
        )
    return labels


def finite_rows(arrays: dict[str, np.ndarray], count: int, path: str | Path) -> dict[str, np.ndarray]:
    """The first `count` samples whose model inputs are all finite (to probe the model with).

    Raises:
        DataError: none of the samples given is finite: the data is broken, not the model.
    """
    import numpy as np

    inputs = inputs_of(arrays)
    keep = np.ones(samples(arrays), dtype=bool)
    for arr in inputs.values():
        if np.issubdtype(arr.dtype, np.floating):
            keep &= np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    if not keep.any():
        raise DataError(
            f"{path}: every one of its first {len(keep)} samples holds NaN or inf in its inputs; "
            "remove non-finite values from the data."
        )
    return {k: v[keep][:count] for k, v in arrays.items()}


def batch_for(arrays: dict[str, np.ndarray], budget: int = 2 << 20, most: int = 256) -> int:
    """Samples per batch so that a batch of these inputs holds at most `budget` bytes (1 to `most`).

    The inputs are the small part: ONNX Runtime's arena for a 240x240 ImageNet CNN grows by about
    10 MB per sample of the batch (EfficientNet-Lite1 FP32: 138 MB resident at batch 1, 344 MB at
    12, 641 MB at 48), so 2 MB of inputs (3 such images; 256 digits) bounds a session's memory."""
    per_sample = sum(v[:1].nbytes for v in inputs_of(arrays).values())
    return max(1, min(most, budget // max(per_sample, 1)))


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
