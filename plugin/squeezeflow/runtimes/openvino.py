"""OpenVINO targets: the ONNX file compiled for `target.device` (QDQ pairs become INT8 kernels on CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow.errors import ModelError
from squeezeflow.onnx import sessions
from squeezeflow.runtimes import missing

if TYPE_CHECKING:
    import numpy as np

    from squeezeflow.config import Target


def _ov() -> Any:
    try:
        import openvino
    except ImportError:
        missing("openvino", "openvino")
    return openvino


def skipped(target: Target) -> str | None:
    devices = _ov().Core().available_devices
    if target.device != "AUTO" and not any(d == target.device or d.startswith(f"{target.device}.") for d in devices):
        return f"OpenVINO device {target.device} is not on this machine (available: {', '.join(devices) or 'none'})"
    return None


class Runner:
    """A compiled OpenVINO model with ONNX Runtime's `run` and `get_inputs`, so squeezeflow's scoring and timing take it
    as they take a session.
    """

    def __init__(self, compiled: Any, inputs: list[Any]):
        self._request = compiled.create_infer_request()
        self._outputs = list(compiled.outputs)
        self._inputs = inputs

    def get_inputs(self) -> list[Any]:
        return self._inputs

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self._request.infer(feed, share_inputs=False)
        return [result[o].copy() for o in self._outputs]


def open_model(path: Path, target: Target, inputs: list[Any] | None = None) -> Any:

    ov = _ov()
    inputs = sessions.session(path).get_inputs()  # the ONNX inputs, as the data checks read them
    try:
        compiled = ov.Core().compile_model(
            str(path),
            target.device,
            {"INFERENCE_NUM_THREADS": target.threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1},
        )
    except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
        raise ModelError(
            f"{path}: OpenVINO cannot compile the model for {target.device} "
            f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})."
        ) from None
    return Runner(compiled, inputs)


def describe(target: Target) -> dict[str, str]:
    return {"runtime_version": _ov().__version__.split("-")[0], "device": target.device}
