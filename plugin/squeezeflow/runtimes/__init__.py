"""Deployment runtimes behind one small interface: open a model for a target, run a batch, say what runs it.

A runner has ONNX Runtime's `run(None, feed) -> list of arrays` and `get_inputs()`, so
`sessions.run_batches`, `sessions.scoring_batch` and `evaluate.latency` take a runner of any runtime
as they take an ORT session. One module per runtime:

- `ort`: ONNX Runtime with the target's execution providers, threads and batch.
- `openvino`: OpenVINO compiles the same ONNX file for `device` (QDQ models run as INT8 on CPU).
- `executorch`: ExecuTorch's runtime runs `.pte` programs on XNNPACK. It cannot run the ONNX
  candidates: its candidates are the recipes that end with the `executorch` step, and its
  baseline is the PyTorch source lowered in FP32 (evaluate does it); `applies` says which is which.

`skipped(target)` says why a target cannot run on this machine (a GPU provider or device that is
not here): evaluate records it and the gate reports the target as skipped, never as passed. A
runtime whose package is not installed is bad input instead (exit 2, naming the package).

It may import `torch`, `onnx`, `config` and below; `evaluate` imports it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow.errors import ConfigError
from squeezeflow.torch.executorch import SUFFIX

if TYPE_CHECKING:
    from squeezeflow.config import Target

MODULES = {
    "onnxruntime": "squeezeflow.runtimes.ort",
    "openvino": "squeezeflow.runtimes.openvino",
    "executorch": "squeezeflow.runtimes.executorch",
}
CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "sve",
    "i8mm",
    "bf16",
)  # what the INT8/BF16 kernels of the runtimes dispatch on


def _module(target: Target) -> Any:
    return importlib.import_module(MODULES[target.runtime])


def skipped(target: Target) -> str | None:
    """Why `target` cannot run here (its provider or device is absent), or None.

    Raises:
        ConfigError: the runtime's package is not installed (exit 2).
    """
    return _module(target).skipped(target)


def applies(target: Target, path: str | Path) -> str | None:
    """Why the model at `path` is not for `target` (a `.pte` program on an ONNX runtime, an ONNX model on executorch),
    or None.
    """

    program = Path(path).suffix == SUFFIX
    if target.runtime == "executorch" and not program:
        return "an ONNX model; executorch targets run .pte programs: recipes that end with the executorch step"
    if target.runtime != "executorch" and program:
        return f"an ExecuTorch program (.pte); {target.runtime} runs the ONNX candidates"
    return None


def open_model(path: str | Path, target: Target, inputs: list[Any] | None = None) -> Any:
    """A runner of the model at `path` on `target`; `inputs`: the source model's input specs (what a `.pte` program does
    not name).

    Raises:
        ModelError: the runtime cannot load or compile the model.
    """
    return _module(target).open_model(Path(path), target, inputs)


def describe(target: Target) -> dict[str, str]:
    """What the target's numbers were measured with: runtime, its version, device or providers, and the CPU's flags."""
    return {"runtime": target.runtime, **_module(target).describe(target), "cpu_flags": ",".join(cpu_flags())}


def cpu_flags() -> list[str]:
    """The CPU features the runtimes' kernels dispatch on that this machine has (from /proc/cpuinfo; empty where it is
    absent).
    """
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return []
    for line in info.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            have = set(value.split())
            return [f for f in CPU_FLAGS if f in have]
    return []


def missing(package: str, runtime: str) -> None:
    """Raise the one-line error for a runtime whose package is not installed."""

    raise ConfigError(
        f"a target uses runtime {runtime}, but the {package!r} package is not installed. Install it "
        f"(`pip install {package}`, or `pip install squeezeflow[targets]`) "
        "or remove the target."
    )
