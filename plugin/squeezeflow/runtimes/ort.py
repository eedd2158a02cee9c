"""ONNX Runtime targets: the target's execution providers, in order, with its thread count."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow.onnx import sessions

if TYPE_CHECKING:
    from squeezeflow.config import Target


def skipped(target: Target) -> str | None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    absent = [p for p in target.providers if p not in available]
    if absent:
        return (
            f"execution provider {absent[0]} is not available in this onnxruntime {ort.__version__} (available: "
            f"{', '.join(available)}); on a machine without its device the target cannot be measured"
        )
    return None


def open_model(path: Path, target: Target, inputs: list[Any] | None = None) -> Any:

    return sessions.session(path, target.threads, target.providers)


def describe(target: Target) -> dict[str, str]:
    import onnxruntime as ort

    return {"runtime_version": ort.__version__, "device": ",".join(target.providers)}
