"""Compression steps: one module per technique, looked up by config type in one guarded table.

A step is a function `handler(model_path, config, ctx) -> StepResult`. Third-party steps register
through the `squeezeflow.steps` entry point group (the entry point imports a module that uses
`@register_step`). `register_step`, `StepConfig`, `StepContext` and `StepResult` (`__all__`) are
squeezeflow's public API; every other module is internal and may change between releases.

This module imports only `errors`, so `config` can parse recipes through it. The technique modules
(`quantize`, `prune`, ...) and `recipe`, which runs them in order, may import `quantization`,
`evaluate`, `registry`, `torch`, `onnx` and below, never a stage or `search`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from squeezeflow.errors import ConfigError

__all__ = ["StepConfig", "StepContext", "StepResult", "register_step"]

ENTRY_POINT_GROUP = "squeezeflow.steps"
MAX_EPOCHS = 1000  # every epochs/patience parameter: a typo like 1e9 is bad config, not a run that never ends
MAX_BATCH = 1 << 16
MAX_STEPS = 10**6  # optimizer steps between updates, calibration samples, float layers
_BUILTIN = (
    "squeezeflow.steps.quantize",
    "squeezeflow.steps.qat",
    "squeezeflow.steps.finetune",
    "squeezeflow.steps.prune",
    "squeezeflow.steps.cluster",
    "squeezeflow.steps.distill",
    "squeezeflow.steps.executorch",
)


class StepConfig(BaseModel):
    """Base of every step's config; `kind` is the key the step has in a recipe.

    `input_format` says what the handler receives: "onnx" (a Path) or "torch" (an nn.Module).
    The compress stage converts between them; a handler may return either.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ClassVar[str]
    input_format: ClassVar[str] = "onnx"

    def registry_uris(self) -> tuple[str, ...]:
        """Registered models this step reads besides its input; the pull stage fetches them."""
        return ()

    def promise(self) -> str | None:
        """What the step is there to reduce: "size" (file bytes), "params" (parameter count),
        "sparsity" (zeros, for gzip), or None. compress warns when a recipe keeps none of its promises."""
        return None


@dataclasses.dataclass(frozen=True)
class StepContext:
    """What a step may use besides the model: a scratch folder, data files, a seed, the target.

    `registered` holds the other registered models the recipe names (written by pull) and
    `soft_labels` the teachers' logits on the training data (written by the soft-labels stage).
    """

    workdir: Path
    calibration: Path | None = None
    train: Path | None = None
    seed: int = 0
    threads: int = 1
    batch_size: int = 1
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    registered: Path | None = None
    soft_labels: Path | None = None
    task: str = "classification"


@dataclasses.dataclass(frozen=True)
class StepResult:
    """A step's output model (an ONNX Path or a torch module) and the statistics for the manifest."""

    model: Any
    stats: dict[str, Any]


Handler = Callable[[Path, Any, StepContext], StepResult]
_STEPS: dict[str, tuple[type[StepConfig], Handler]] = {}
_loaded = False


def register_step(config_cls: type[StepConfig]) -> Callable[[Handler], Handler]:
    """Register `handler` as the step for `config_cls` (keyed by `config_cls.kind`)."""

    def decorate(handler: Handler) -> Handler:
        _STEPS[config_cls.kind] = (config_cls, handler)
        return handler

    return decorate


def _load() -> None:
    """Import the built-in steps and those of installed plugins, once."""
    global _loaded
    if _loaded:
        return

    for module in _BUILTIN:
        importlib.import_module(module)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()
    _loaded = True


def known_steps() -> list[str]:
    """Names of all registered steps, sorted."""
    _load()
    return sorted(_STEPS)


def config_class(kind: str) -> type[StepConfig]:
    """The config class of step `kind`.

    Raises:
        ConfigError: when no step has that name; the message lists the known ones.
    """
    _load()
    if kind not in _STEPS:
        raise ConfigError(f"Unknown step '{kind}'. Known steps: {', '.join(known_steps())}.")
    return _STEPS[kind][0]


def get_step(config: StepConfig) -> Handler:
    """The handler registered for `config`'s type."""
    _load()
    cls, handler = _STEPS.get(config.kind, (None, None))
    if cls is not type(config):
        raise ConfigError(f"Unknown step '{config.kind}'. Known steps: {', '.join(known_steps())}.")
    return handler
