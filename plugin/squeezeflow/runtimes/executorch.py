"""ExecuTorch targets: `.pte` programs (the `executorch` step's candidates; the source lowered in FP32 as the baseline)
run by ExecuTorch's runtime on the XNNPACK backend.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow.errors import ModelError
from squeezeflow.runtimes import missing

if TYPE_CHECKING:
    import numpy as np

    from squeezeflow.config import Target


def _runtime() -> Any:
    try:
        from executorch import runtime
    except ImportError:
        missing("executorch", "executorch")
    return runtime


def skipped(target: Target) -> str | None:
    _runtime()  # XNNPACK runs on every CPU ExecuTorch's wheel is built for
    return None


class Runner:
    """A loaded program's `forward` with ONNX Runtime's `run` and `get_inputs` (inputs: the source model's, in order).

    A feed larger than the program's bounded batch axis runs in chunks of that bound."""

    def __init__(self, method: Any, inputs: list[Any]):
        self._method = method
        self._inputs = inputs
        self._most = int(method.metadata.input_tensor_meta(0).sizes()[0])

    def get_inputs(self) -> list[Any]:
        return self._inputs

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import numpy as np
        import torch

        arrays = [feed[spec.name] for spec in self._inputs]
        parts = []
        for start in range(0, len(arrays[0]), self._most):
            outs = self._method.execute(
                [torch.from_numpy(np.ascontiguousarray(a[start : start + self._most])) for a in arrays]
            )
            parts.append([o.detach().numpy() for o in outs])
        return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


def open_model(path: Path, target: Target, inputs: list[Any] | None = None) -> Any:

    runtime = _runtime()
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    _unsafe_reset_threadpool(target.threads)
    try:
        method = runtime.Runtime.get().load_program(str(path)).load_method("forward")
    except (RuntimeError, ValueError) as e:
        raise ModelError(
            f"{path}: ExecuTorch cannot load the program "
            f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})."
        ) from None
    return Runner(method, inputs or [])


def describe(target: Target) -> dict[str, str]:

    return {"runtime_version": version("executorch"), "device": f"{target.backend} (CPU)"}
