"""Load, export and inspect models: torch -> ONNX, ONNX Runtime sessions, graph statistics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow import env
from squeezeflow.errors import ModelError

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnxruntime


PT2_FILE = "model.pt2"  # MLflow pytorch flavor, pt2 format (torch.export): no pickled code


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
    except Exception as e:  # ValidationError...
        raise ModelError(f"{path}: not a valid ONNX model ({_first_line(e)}). Re-create it with `dvc repro --force` of the stage that wrote it.") from None
    return model


def _read(path: Path) -> onnx.ModelProto:
    """The graph of an ONNX file; weights in external data are not read."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, OSError...
        raise ModelError(f"{path}: not a valid ONNX model ({_first_line(e)}). Re-create it with `dvc repro --force` of the stage that wrote it.") from None
    return model


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def external_data(model: onnx.ModelProto, path: str | Path) -> dict[str, int]:
    """The external data files of a model and the bytes its tensors declare in each, checked.

    Tensor locations come from the model file, which others write: each must name a regular
    file (not a symlink) inside the model's folder, and each tensor's offset + length must lie
    inside that file, so that neither reading nor copying the weights touches anything else.

    Raises:
        ModelError: an absolute location, `..`, a symlink, a missing or special file, or an extent past its end.
    """
    import os
    import stat

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
            raise ModelError(f"{where}, which is not a file name inside the model folder; refusing to read it. Save the model with its weights beside it.")
        full = folder / rel
        try:
            info = os.lstat(full)
        except OSError:
            raise ModelError(f"{where}, which does not exist beside the model. Copy the model with its external data file.") from None
        if not stat.S_ISREG(info.st_mode) or not _inside(folder, full):
            raise ModelError(f"{where}, which is a symlink or not a regular file; refusing to read it. Replace it with the weights file itself.")
        try:
            offset, length = int(entry.get("offset", 0)), int(entry.get("length", info.st_size - int(entry.get("offset", 0))))
        except ValueError:
            raise ModelError(f"{where} with a non-numeric offset or length; the model is corrupt.") from None
        if offset < 0 or length < 0 or offset + length > info.st_size:
            raise ModelError(f"{where} at bytes {offset}..{offset + length}, but the file has {info.st_size}; the model is corrupt or truncated.")
        declared[location] = declared.get(location, 0) + length
    return declared


def _inside(folder: Path, path: Path) -> bool:
    from squeezeflow.artifacts import inside

    return inside(folder, path)


def ort_tools_without_torch() -> None:
    """Make `onnxruntime.tools` importable without running its __init__, which imports torch (2.3 s
    and 200 MB per compress process, bench/overhead.py) only to re-export a torch export helper.

    Its submodules (symbolic shape inference, which quant_pre_process uses) import as usual. A
    no-op once the package is imported.
    """
    import importlib.util
    import sys

    if "onnxruntime.tools" not in sys.modules:
        spec = importlib.util.find_spec("onnxruntime.tools")
        if spec is not None:
            sys.modules["onnxruntime.tools"] = importlib.util.module_from_spec(spec)


def session(path: str | Path | bytes, threads: int = 1, providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session with a fixed thread count (sequential execution, no spinning), from a file or a serialized model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    available = set(ort.get_available_providers())
    unknown = [p for p in providers if p not in available]
    if unknown:
        raise ModelError(f"execution provider {unknown[0]} is not available in this onnxruntime (available: {sorted(available)}). Change target.providers.")
    try:
        return ort.InferenceSession(path if isinstance(path, bytes) else str(path), opts, providers=list(providers))
    except Exception as e:
        if isinstance(path, bytes):
            raise ModelError(f"ONNX Runtime cannot load a model built in memory ({str(e).splitlines()[0]}).") from None
        load_onnx(path)  # gives the clearer message when the file itself is bad
        raise ModelError(f"{path}: ONNX Runtime cannot load the model ({str(e).splitlines()[0]}).") from None


def run(sess: onnxruntime.InferenceSession, arrays: dict[str, np.ndarray], batch_size: int = 256) -> np.ndarray:
    """The first output of `sess` over all samples, in batches, checked to be finite."""
    return next(iter(run_outputs(sess, arrays, batch_size).values()))


def run_outputs(sess: onnxruntime.InferenceSession, arrays: dict[str, np.ndarray], batch_size: int = 256) -> dict[str, np.ndarray]:
    """Every output of `sess` (name -> array, in the model's order) over all samples, in batches, checked to be finite.

    Raises:
        ModelError: an output is not batched along its first axis, or holds NaN/inf.
    """
    from squeezeflow import data

    return run_batches(sess, data.batches(arrays, batch_size))


def run_batches(sess: onnxruntime.InferenceSession, batches: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`run_outputs` over input batches as they come (`data.stream` reads them from the file): only the outputs are kept."""
    import numpy as np

    parts: list[list[np.ndarray]] = []
    for batch in batches:
        outs = sess.run(None, batch)
        parts = parts or [[] for _ in outs]
        for i, out in enumerate(outs):
            parts[i].append(np.asarray(out))
    # anything with ONNX Runtime's run() will do (the benches time PyTorch through the same call)
    names = [o.name for o in sess.get_outputs()] if hasattr(sess, "get_outputs") else [f"output_{i}" for i in range(len(parts))]
    result = {}
    for name, chunks in zip(names, parts):
        if any(c.ndim == 0 for c in chunks):
            raise ModelError(f"ONNX Runtime output {name!r} is a scalar; every output needs a first axis of samples.")
        result[name] = np.concatenate(chunks)
        check_finite(result[name], f"ONNX Runtime outputs ({name!r})")
    return result


def scoring_batch(sess: onnxruntime.InferenceSession, arrays: dict[str, np.ndarray], batch_size: int, large: int = 256, probe: int = 64) -> int:
    """The batch size to score `sess` at so that its outputs are the ones it gives when deployed at `batch_size`.

    A model whose per-sample outputs do not depend on the batch (FP32, static INT8) is scored in
    batches of `large`, for speed; one whose do (dynamic quantization takes activation ranges per
    batch) at `batch_size`. Checked, not assumed: the first `probe` (at least two batches) samples are run both ways and
    must agree to 1e-4 of the output's magnitude.
    """
    import numpy as np

    from squeezeflow import data

    if batch_size >= large:
        return batch_size
    if data.samples(arrays) <= batch_size:  # one batch either way
        return large
    inputs = {k: v[: max(probe, 2 * batch_size)] for k, v in data.inputs_of(arrays).items()}
    together, deployed = run_outputs(sess, inputs, large), run_outputs(sess, inputs, batch_size)
    if any(together[k].shape != deployed[k].shape for k in together):
        return large  # an output without a sample axis: the task's output check refuses it, at any batch
    same = all(np.allclose(together[k], deployed[k], rtol=0, atol=1e-4 * max(float(np.abs(together[k]).max()), 1e-12)) for k in together)
    return large if same else batch_size


def check_finite(values: np.ndarray, what: str) -> None:
    """Fail when model outputs hold NaN or inf (a broken model must never pass as a candidate)."""
    import numpy as np

    bad = ~np.isfinite(values)
    if bad.any():
        raise ModelError(f"{what} contain {int(bad.sum())} NaN or inf values out of {values.size}. The model is numerically broken; fix or retrain it before compressing.")


def op_counts(path: str | Path) -> Counter:
    """How many nodes of each operator type the graph has."""
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def weight_stats(path: str | Path) -> dict[str, Any]:
    """Parameter count and sparsity (fraction of exact zeros) over initializers of rank >= 2 and biases."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    total = zeros = 0
    for init in onnx.load(str(path), load_external_data=False).graph.initializer:
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
    return sum(len(t.raw_data) or t.ByteSize() for t in model.graph.initializer) > env.external_data_bytes()


def save_onnx(model: onnx.ModelProto, path: str | Path) -> Path:
    """Save a model, its weights in PATH.data (ONNX external data) when `is_large`."""
    import onnx

    from squeezeflow.artifacts import side_file

    path = Path(path)
    side_file(path).unlink(missing_ok=True)
    large = is_large(model)
    onnx.save_model(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True, location=side_file(path).name, size_threshold=1024)
    return path


def copy_onnx(src: str | Path, dst: str | Path) -> Path:
    """Copy a model file with its external data, which ends up in DST.data whatever it was called."""
    import shutil

    import onnx
    from onnx.external_data_helper import _get_all_tensors

    from squeezeflow.artifacts import side_file

    src, dst = Path(src), Path(dst)
    model = _read(src)
    locations = set(external_data(model, src))
    if not locations:
        shutil.copyfile(src, dst)
        return dst
    if len(locations) > 1:
        raise ModelError(f"{src}: weights are spread over {len(locations)} external data files; save the model with all_tensors_to_one_file=True.")
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


def load_torch(model_dir: str | Path) -> Any:
    """Load an MLflow pytorch-flavor model directory into an eval-mode module.

    Loading a pickle runs code stored in the file, so unless the user allows it explicitly
    (`env.pickle_allowed`) MLflow loads it with its own pickle switch off: MLflow then
    refuses pickled models and pt2 archives whose weights, constants or sample inputs are not
    plain tensors. On top of that, squeezeflow refuses a model folder that holds a pickled
    `model.pth` (which MLflow would load instead of `model.pt2`) or code paths (which MLflow
    puts on sys.path). The pt2 archive's JSON graph is checked first (`pt2check`): torch evaluates
    its shape expressions, guards and operator names as Python, so unless the user allows model
    code (`env.ALLOW_CODE`), anything torch.export would not write is refused.

    Raises:
        ConfigError: anything that would unpickle or import code, without that permission.
        ModelError: it does not load.
    """
    import os

    from squeezeflow import env, safeyaml
    from squeezeflow.errors import ConfigError

    model_dir = Path(model_dir)
    spec = safeyaml.load_file(model_dir / "MLmodel", ModelError)
    flavor = ((spec.get("flavors") or {}).get("pytorch") or {}) if isinstance(spec, dict) else {}
    data_dir = model_dir / str(flavor.get("model_data", "data"))
    consent = (f"If you trust the model, set {env.ALLOW_PICKLE}=true (or {env.ALLOW_CODE}=true); or register it with "
               "mlflow.pytorch.log_model(..., serialization_format='pt2') and no code_paths.")
    allowed = env.pickle_allowed()
    if not allowed:
        pickled = [p.name for p in (data_dir / "model.pth", data_dir / "pickle_module_info.txt") if p.exists()]
        if pickled or not (data_dir / PT2_FILE).is_file():
            raise ConfigError(f"{model_dir}: the PyTorch model is in pickle format ({', '.join(pickled) or 'no ' + PT2_FILE}), and loading it runs code stored in the file. {consent}")
        if flavor.get("code"):
            raise ConfigError(f"{model_dir}: the model ships code paths ({str(flavor['code'])[:80]}), which MLflow puts on sys.path when it loads the model. {consent}")
    if not env.flag(env.ALLOW_CODE) and (data_dir / PT2_FILE).is_file():
        from squeezeflow import pt2check

        pt2check.check_archive(data_dir / PT2_FILE, f"If you trust the model, set {env.ALLOW_CODE}=true.")
    import mlflow.pytorch

    before = os.environ.get(env.ALLOW_PICKLE)
    if not allowed:
        os.environ[env.ALLOW_PICKLE] = "false"  # MLflow's own switch (its default is true), off while it loads
    try:
        model = mlflow.pytorch.load_model(str(model_dir), map_location="cpu")
    except Exception as e:
        if "pickle is disallowed" in str(e):
            raise ConfigError(f"{model_dir}: the pt2 archive holds pickled records beyond plain tensors, and loading them runs code. {consent}") from None
        raise ModelError(f"{model_dir}: cannot load the PyTorch model ({_first_line(e)}).") from None
    finally:
        if before is None:
            os.environ.pop(env.ALLOW_PICKLE, None)
        else:
            os.environ[env.ALLOW_PICKLE] = before
    from squeezeflow import torchgraph

    model = torchgraph.with_modules(model)  # pt2: real Conv/Linear/BatchNorm layers again, so every step treats it like the pickled module
    try:
        model.eval()
    except NotImplementedError:
        pass  # exported graphs that keep no layer to rebuild refuse .eval(); they are captured in eval mode
    return model


def export_onnx(model: Any, example: dict[str, np.ndarray], path: str | Path, output_name: str = "output", atol: float = 1e-4, min_agreement: float | None = None) -> None:
    """Export a torch module to a single ONNX file with a dynamic batch axis, and check it.

    The example arrays are passed positionally in their order; their names become the ONNX input
    names. A model that returns a tuple gets one ONNX output per element, `output_name` followed by
    its index (`output0`, `output1`, ...); a single output is `output_name`. The export is checked
    against torch on the example (max abs difference <= atol scaled by each output's magnitude) and
    every output must be finite. With `min_agreement`, the check is
    instead the share of samples whose top class agrees: for quantized graphs, where torch
    simulates integer arithmetic in float and ONNX Runtime's integer kernels round differently.

    Raises:
        ModelError: the export fails, the outputs differ, or contain NaN/inf.
    """
    import logging
    import warnings

    import numpy as np
    import torch

    names = list(example)
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(example[n][:2])) for n in names)
    if tensors[0].shape[0] < 2:
        raise ModelError("the export example needs at least 2 samples (a batch of 1 fixes the batch axis).")
    with torch.no_grad():
        expected = model(*[torch.from_numpy(example[n]) for n in names])
    outputs = [t.numpy() for t in expected] if isinstance(expected, (tuple, list)) else [expected.numpy()]
    for out in outputs:
        check_finite(out, "PyTorch outputs of the source model")
    output_names = [output_name] if len(outputs) == 1 else [f"{output_name}{i}" for i in range(len(outputs))]
    batch = torch.export.Dim("batch")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                tensors,
                str(path),
                input_names=names,
                output_names=output_names,
                dynamic_shapes=tuple({0: batch} for _ in names),
                external_data=sum(p.numel() * p.element_size() for p in model.parameters()) > env.external_data_bytes(),
                verbose=False,
                report=False,
            )
        except Exception as e:
            raise ModelError(f"torch.onnx.export failed ({str(e).strip().splitlines()[0]}). The model must be exportable with torch.export.") from None
    got = list(run_outputs(session(path), example).values())
    if min_agreement is not None:
        agreement = float(np.mean(got[0].argmax(-1) == outputs[0].argmax(-1)))
        if agreement < min_agreement:
            raise ModelError(f"the ONNX export predicts the same class as PyTorch on {agreement:.1%} of the example (at least {min_agreement:.0%} required); the export is not faithful.")
        return
    for name, out, ref in zip(output_names, got, outputs):
        err = float(np.max(np.abs(out - ref)))
        if err > atol * max(1.0, float(np.max(np.abs(ref)))):
            raise ModelError(f"the ONNX export's output {name!r} differs from PyTorch by {err:.3g} (tolerance {atol:g}); the export is not faithful.")
