"""ONNX Runtime sessions: open one on a model, run arrays or batches through it, check its outputs."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from squeezeflow import data
from squeezeflow.errors import ModelError
from squeezeflow.onnx.modelfile import load_onnx

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime


def ort_tools_without_torch() -> None:
    """Make `onnxruntime.tools` importable without running its __init__, which imports torch (2.3 s
    and 200 MB per compress process, bench/overhead.py) only to re-export a torch export helper.

    Its submodules (symbolic shape inference, which quant_pre_process uses) import as usual. A
    no-op once the package is imported.
    """

    if "onnxruntime.tools" not in sys.modules:
        spec = importlib.util.find_spec("onnxruntime.tools")
        if spec is not None:
            sys.modules["onnxruntime.tools"] = importlib.util.module_from_spec(spec)


def session(
    path: str | Path | bytes, threads: int = 1, providers: tuple[str, ...] = ("CPUExecutionProvider",)
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session with a fixed thread count (sequential execution, no spinning), from a file or a
    serialized model.
    """
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
        raise ModelError(
            f"execution provider {unknown[0]} is not available in this onnxruntime (available: "
            f"{sorted(available)}). Change target.providers."
        )
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


def run_outputs(
    sess: onnxruntime.InferenceSession, arrays: dict[str, np.ndarray], batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Every output of `sess` (name -> array, in the model's order) over all samples, in batches, checked to be finite.

    Raises:
        ModelError: an output is not batched along its first axis, or holds NaN/inf.
    """

    return run_batches(sess, data.batches(arrays, batch_size))


def run_batches(sess: onnxruntime.InferenceSession, batches: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`run_outputs` over input batches as they come (`data.stream` reads them from the file): only the outputs are
    kept.
    """
    import numpy as np

    parts: list[list[np.ndarray]] = []
    for batch in batches:
        fed = data.feed(batch)  # params.yaml's data.inputs: batch axes moved, constants added
        outs = sess.run(None, fed)
        parts = parts or [[] for _ in outs]
        for i, out in enumerate(outs):
            parts[i].append(data.from_model(np.asarray(out), fed, data.samples(batch)))
    # anything with ONNX Runtime's run() will do (the benches time PyTorch through the same call)
    names = (
        [o.name for o in sess.get_outputs()]
        if hasattr(sess, "get_outputs")
        else [f"output_{i}" for i in range(len(parts))]
    )
    result = {}
    for name, chunks in zip(names, parts):
        if any(c.ndim == 0 for c in chunks):
            raise ModelError(f"ONNX Runtime output {name!r} is a scalar; every output needs a first axis of samples.")
        result[name] = np.concatenate(chunks)
        check_finite(result[name], f"ONNX Runtime outputs ({name!r})")
    return result


def scoring_batch(
    sess: onnxruntime.InferenceSession,
    arrays: dict[str, np.ndarray],
    batch_size: int,
    large: int = 256,
    probe: int = 64,
) -> int:
    """The batch size to score `sess` at so that its outputs are the ones it gives when deployed at `batch_size`.

    A model whose per-sample outputs do not depend on the batch (FP32, static INT8) is scored in
    batches of `large`, for speed; one whose do (dynamic quantization takes activation ranges per
    batch) at `batch_size`. Checked, not assumed: the first `probe` (at least two batches) samples are run both ways and
    must agree to 1e-4 of the output's magnitude.
    """
    import numpy as np

    if batch_size >= large:
        return batch_size
    if data.samples(arrays) <= batch_size:  # one batch either way
        return large
    inputs = {k: v[: max(probe, 2 * batch_size)] for k, v in data.inputs_of(arrays).items()}
    together, deployed = run_outputs(sess, inputs, large), run_outputs(sess, inputs, batch_size)
    if any(together[k].shape != deployed[k].shape for k in together):
        return large  # an output without a sample axis: the task's output check refuses it, at any batch
    same = all(
        np.allclose(together[k], deployed[k], rtol=0, atol=1e-4 * max(float(np.abs(together[k]).max()), 1e-12))
        for k in together
    )
    return large if same else batch_size


def check_finite(values: np.ndarray, what: str) -> None:
    """Fail when model outputs hold NaN or inf (a broken model must never pass as a candidate)."""
    import numpy as np

    bad = ~np.isfinite(values)
    if bad.any():
        raise ModelError(
            f"{what} contain {int(bad.sum())} NaN or inf values out of {values.size}. The model is "
            "numerically broken; fix or retrain it before compressing."
        )
