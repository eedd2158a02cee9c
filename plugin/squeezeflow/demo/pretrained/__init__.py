"""Real pretrained models that ship inside packages, and real inputs for them: the zoo pipelines.

Each model has a module that builds it (weights from its package, nothing downloaded) and writes
its eval/calibration/train npz files:

- `efficientnet-lite1` (efficientnet): ImageNet CNN on crops of the bundled photos.
- `resemblyzer` (speech): LSTM speaker encoder on espeak-ng speech; task embedding.
- `easyocr-craft`, `easyocr-crnn` (ocr): the CRAFT text detector on rendered scenes (dense score
  maps) and the CNN+BiLSTM+CTC recognizer on rendered words; task generic.
- `mtcnn-onet` (faces): MTCNN's output network on face and non-face crops (face score, box
  regression, landmarks: three outputs); task regression.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow import registry
from squeezeflow.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

MODULES = {
    "efficientnet-lite1": "efficientnet",
    "resemblyzer": "speech",
    "easyocr-craft": "ocr",
    "easyocr-crnn": "ocr",
    "mtcnn-onet": "faces",
}
MODELS = tuple(MODULES)


def _module(name: str) -> Any:
    if name not in MODULES:
        raise ConfigError(f"unknown pretrained model {name!r}; known: {', '.join(MODELS)}.")
    return importlib.import_module(f"squeezeflow.demo.pretrained.{MODULES[name]}")


def build(name: str) -> Any:
    """The pretrained torch module `name`, in eval mode.

    Raises:
        ConfigError: the model is unknown, or the packages that hold it are not installed (`make zoo-extras`).
    """
    return _module(name).build(name)


def write_data(
    name: str, paths: dict[str, Path], seed: int = 0, counts: dict[str, int] | None = None
) -> dict[str, Any]:
    """Write the eval/calibration/train npz files of `name` (role -> path); returns the samples written per role."""
    for path in paths.values():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return _module(name).write_data(name, paths, seed, counts or {})


def register(name: str, registered_name: str, alias: str | None, example: np.ndarray | dict[str, np.ndarray]) -> str:
    """Register the pretrained model in MLflow's default pt2 format; returns models:/NAME/VERSION."""

    return registry.register_torch(build(name), registered_name, example, alias=alias, experiment="squeezeflow-demo")
