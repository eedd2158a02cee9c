"""The speaker encoder of `resemblyzer` (3-layer LSTM, 1.4M parameters, 256-d embeddings) on 1.6 s
mel spectrograms of speech synthesized with Debian's `espeak-ng` in many voices; eval sentences
differ from calibration and training sentences. Task embedding (no labels)."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

VOICES = (
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
    "en+f1",
    "en+f2",
    "en+f3",
    "en+f4",
    "en-us+m3",
    "en-us+m7",
    "en+klatt",
    "en-us+whisper",
)
EVAL_SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "a model must get smaller and faster before release",
    "please call stella and ask her to bring these things",
    "the gate judges every budget on its interval",
    "six thick thistle sticks were stacked by the door",
    "we measured the latency of every candidate twice",
    "the registry keeps the lineage of each version",
    "bright sunshine followed the storm in the valley",
)
OTHER_SENTENCES = (
    "she sells sea shells by the sea shore",
    "compression without accuracy is only a smaller mistake",
    "the train left the station at seven in the morning",
    "an old clock ticked quietly in the hall",
    "numbers in brackets are ninety five percent intervals",
    "every stage writes its outputs before it exits",
)
COUNTS = {"eval": 128, "calibration": 48, "train": 48}


def build(name: str) -> Any:
    try:
        from resemblyzer import VoiceEncoder
    except ImportError:
        raise ConfigError(
            "resemblyzer needs the `resemblyzer` package (and webrtcvad-wheels): make zoo-extras, or "
            "pip install -e '.[speech]'."
        ) from None
    return VoiceEncoder(device="cpu", verbose=False).eval()


def utterances(role: str, count: int, rng: np.random.Generator, folder: Path) -> Iterator[Path]:
    """`count` wav files of espeak-ng speech in `folder`: voice x sentence (eval's sentences or the others') in a
    seeded order, each at a seeded speed. The resemblyzer pipeline and bench/users.py synthesize with it."""
    if shutil.which("espeak-ng") is None:
        raise ConfigError("squeezeflow synthesizes its speech with Debian's espeak-ng: apt-get install espeak-ng.")
    pairs = list(itertools.product(VOICES, EVAL_SENTENCES if role == "eval" else OTHER_SENTENCES))
    rng.shuffle(pairs)
    for i, (voice, text) in enumerate(pairs[:count]):
        wav_file = Path(folder) / f"{role}-{i}.wav"
        speed = str(int(rng.integers(140, 200)))
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", speed, "-w", str(wav_file), text], check=True, capture_output=True
        )
        yield wav_file


def write_data(name: str, paths: dict[str, Path], seed: int, counts: dict[str, int]) -> dict[str, int]:
    """Mel spectrograms (N, 160 frames, 40 bands) of espeak-ng speech, voice x sentence, seeded order."""

    import numpy as np
    from resemblyzer import preprocess_wav, wav_to_mel_spectrogram
    from resemblyzer.hparams import partials_n_frames

    counts = {**COUNTS, **counts}
    rng = np.random.default_rng(seed)
    written = {}
    with tempfile.TemporaryDirectory(prefix="squeezeflow-speech-") as tmp:
        for role, path in paths.items():
            mels = []
            for wav_file in utterances(role, counts[role], rng, Path(tmp)):
                mel = wav_to_mel_spectrogram(preprocess_wav(wav_file))[:partials_n_frames]
                mels.append(np.pad(mel, ((0, partials_n_frames - len(mel)), (0, 0))))
            np.savez(path, mels=np.stack(mels).astype(np.float32))
            written[role] = len(mels)
    return written
