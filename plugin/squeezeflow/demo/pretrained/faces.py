"""MTCNN's output network (ONet, 390k parameters) with the weights `facenet-pytorch` ships, on 48x48
crops of the bundled photos as MTCNN's third stage sees them: boxes around the faces in them
(jittered, as the earlier stages propose) and boxes elsewhere. Three outputs: box regression [N, 4],
five landmarks [N, 10] and the face probability [N, 2]. Task regression, against the FP32 outputs.

The network is written out here layer for layer as facenet-pytorch 2.6.0 defines it, so the
published `onet.pt` state dict loads unchanged: the package pins torch < 2.3 and imports
torchvision, whose wheels on the package index link against CUDA torch. Install it without its
dependencies (`pip install --no-deps facenet-pytorch==2.6.0`, what `make zoo-extras` does); only
its weights file is read, and as plain tensors.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow.demo.pretrained import photos
from squeezeflow.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

SIDE = 48
# (photo, face box as left, top, right, bottom in the photo's pixels), located by hand once
FACES = {"astronaut": (170, 60, 250, 150), "grace_hopper": (150, 120, 310, 320)}
EVAL_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
# the cameraman is in profile: ONet scores him as no face
OTHER_PHOTOS = ("grace_hopper", "camera", "china", "brick", "flower")
COUNTS = {"eval": 256, "calibration": 128, "train": 128}


def build(name: str) -> Any:
    import torch
    from torch import nn

    # finds the package without importing it (its __init__ imports torchvision)
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "mtcnn-onet needs the weights of facenet-pytorch: make zoo-extras, or pip install "
            "--no-deps facenet-pytorch==2.6.0."
        )

    class ONet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1, self.pool1 = nn.Conv2d(3, 32, 3), nn.PReLU(32), nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2, self.pool2 = nn.Conv2d(32, 64, 3), nn.PReLU(64), nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3, self.pool3 = nn.Conv2d(64, 64, 3), nn.PReLU(64), nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
            return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)

    model = ONet()
    path = Path(spec.submodule_search_locations[0]) / "data" / "onet.pt"
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def _crops(names: tuple[str, ...], count: int, rng: np.random.Generator) -> np.ndarray:
    """Half jittered face boxes (where the photo has a face), half random boxes; [count, 3, 48, 48] scaled as MTCNN does
    ((x - 127.5) / 128).
    """
    import numpy as np
    from PIL import Image

    images = dict(zip(names, photos.photos(names)))
    with_faces = [n for n in names if n in FACES]
    out = np.empty((count, 3, SIDE, SIDE), np.float32)
    for i in range(count):
        if with_faces and i % 2 == 0:
            name = with_faces[(i // 2) % len(with_faces)]
            left, top, right, bottom = FACES[name]
            size = (right - left + bottom - top) / 2 * rng.uniform(0.8, 1.25)
            cx, cy = (left + right) / 2 + rng.normal(0, 0.1) * size, (top + bottom) / 2 + rng.normal(0, 0.1) * size
            box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
        else:
            name = names[i % len(names)]
            h, w = images[name].shape[:2]
            size = rng.uniform(0.1, 0.6) * min(h, w)
            x0, y0 = rng.uniform(0, w - size), rng.uniform(0, h - size)
            box = (x0, y0, x0 + size, y0 + size)
        crop = np.asarray(Image.fromarray(images[name]).resize((SIDE, SIDE), Image.BILINEAR, box=box), np.float32)
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        out[i] = ((crop - 127.5) * 0.0078125).transpose(2, 0, 1)
    return out


def write_data(name: str, paths: dict[str, Path], seed: int, counts: dict[str, int]) -> dict[str, Any]:
    """Face and non-face crops per role (eval from other photos than calibration and training); no labels."""
    import numpy as np

    counts = {**COUNTS, **counts}
    for i, (role, path) in enumerate(paths.items()):
        np.savez(
            path,
            image=_crops(
                EVAL_PHOTOS if role == "eval" else OTHER_PHOTOS, counts[role], np.random.default_rng(seed + i)
            ),
        )
    return {role: counts[role] for role in paths}
