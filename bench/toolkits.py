"""squeezeflow's INT8 against the dedicated toolkits (NNCF, Intel Neural Compressor, Olive), side by side.

Per model: the FP32 ONNX model and its data; squeezeflow's quantize variants (static default,
static with bias correction, static with scope weighted, dynamic); ONNX Runtime's own defaults;
and each peer toolkit run as its docs tell a user to, in its own virtual environment
(`bench/peer_toolkits.py` under .venv-peers, built by `make bench-peers`; skipped, and said so in
the results, when that environment is missing). Every model is then measured in this process with
the same ONNX Runtime: accuracy on the eval split with a 95% interval (for efficientnet-lite1 the
labels are the FP32 model's own top-1, so accuracy is agreement with FP32), size ratio, speedup at
batch 1 and 8 on one thread (interleaved, median of the repeats), the tool's wall time, and how many
integer kernels ORT runs after its optimizer (QLinearConv, QLinearMatMul, MatMulInteger, ...).
Writes bench/results/toolkits.json.

    make bench-peers                           # builds .venv-peers, then runs this
    python bench/toolkits.py                   # efficientnet-lite1 (real photo crops), tweets-transformer
    python bench/toolkits.py efficientnet-lite1
    python bench/toolkits.py --limit 600       # seconds each toolkit may take per model (default 900); a tool over it is reported as such
    python bench/toolkits.py --smoke           # digits CNN, squeezeflow and ORT only, few repeats (what the tests run)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import arguments, header, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
MODELS = ("efficientnet-lite1", "tweets-transformer")
KIND = {"efficientnet-lite1": "cnn", "tweets-transformer": "transformer", "digits-cnn": "cnn"}
SQUEEZEFLOW = {  # variant -> quantize parameters
    "squeezeflow-static": {"mode": "static"},
    "squeezeflow-static-bias-correction": {"mode": "static", "bias_correction": True},
    "squeezeflow-static-weighted": {"mode": "static", "scope": "weighted"},
    "squeezeflow-dynamic": {"mode": "dynamic"},
}
INTEGER_KERNELS = ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "QGemm", "QLinearAdd", "MatMulIntegerToFloat", "QAttention")
BATCHES = (1, 8)
TOOLS = ("nncf", "nncf-accuracy-control", "inc", "inc-autotune", "olive")  # each run in its own process, under --limit seconds


def prepare(name: str, work: Path) -> tuple[Path, dict[str, Path]]:
    """The FP32 ONNX model and its eval / calibration files."""
    from squeezeflow import data, modelio, pretrained

    files = {r: work / f"{r}.npz" for r in ("train", "calibration", "eval")}
    if name == "efficientnet-lite1":
        pretrained.write_data(name, files, 0, {"eval": 320, "calibration": 128, "train": 8})
        fp32 = work / "fp32.onnx"
        modelio.export_onnx(pretrained.build(name).eval(), {k: v[:8] for k, v in data.inputs_of(data.load(files["eval"], "eval")).items()}, fp32)
        return fp32, files
    from quantization import build

    _, fp32, files = build(name, work, epochs=2 if name == "digits-cnn" else None)
    return fp32, files


def squeezeflow_variants(fp32: Path, files: dict, work: Path) -> tuple[dict[str, Path], dict[str, float], dict]:
    from squeezeflow.steps import StepContext
    from squeezeflow.steps.quantize import QuantizeConfig, quantize

    paths, walls, stats = {}, {}, {}
    for name, options in SQUEEZEFLOW.items():
        folder = work / name
        folder.mkdir()
        start = time.perf_counter()
        result = quantize(fp32, QuantizeConfig(**options), StepContext(workdir=folder, calibration=files["calibration"]))
        walls[name], paths[name] = time.perf_counter() - start, result.model
        stats[name] = {k: v for k, v in result.stats.items() if k not in ("quantized_ops",)}
    return paths, walls, stats


def ort_default(fp32: Path, files: dict, work: Path) -> tuple[dict[str, Path], dict[str, float]]:
    from quantization import ort_defaults

    start = time.perf_counter()
    paths = ort_defaults(fp32, files, work)
    return paths, dict.fromkeys(paths, (time.perf_counter() - start) / len(paths))


def peer_variants(fp32: Path, files: dict, work: Path, kind: str, limit: float) -> tuple[dict[str, Path], dict[str, float], dict]:
    """The toolkits' models, built in their own environment, each tool under a time limit; ({}, {}, {"skipped": why}) without it."""
    if not PEERS_PYTHON.is_file():
        return {}, {}, {"skipped": f"{PEERS_PYTHON} not found: run `make bench-peers`"}
    out = work / "peers"
    timed_out = {}
    for tool in TOOLS:
        try:
            subprocess.run([str(PEERS_PYTHON), str(Path(__file__).parent / "peer_toolkits.py"), str(fp32), str(files["calibration"]), str(out), "--kind", kind, "--only", tool],
                           capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out[tool] = f"did not finish within {limit:.0f} s"
    found = json.loads((out / "toolkits.json").read_text()) if (out / "toolkits.json").is_file() else {"variants": {}, "errors": {}}
    paths = {k: out / v["file"] for k, v in found["variants"].items()}
    return paths, {k: v["tool_wall_s"] for k, v in found["variants"].items()}, {"versions": found.get("versions"), "errors": {**found.get("errors", {}), **timed_out}}


def integer_kernels(path: Path) -> dict[str, int]:
    """Operator counts of the graph ORT actually runs (after its optimizer), integer kernels only."""
    from collections import Counter

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        ops = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath, load_external_data=False).graph.node)
    return {k: ops[k] for k in INTEGER_KERNELS if ops.get(k)}


def measure(models: dict[str, Path], walls: dict[str, float], files: dict, repeats: int) -> dict:
    from squeezeflow import data, modelio
    from squeezeflow.evaluate import latency, stats

    ev = dict(np.load(files["eval"]))
    inputs, labels = data.inputs_of(ev), ev[data.LABELS]
    sessions = {k: modelio.session(p, threads=1) for k, p in models.items()}
    hits = {k: (modelio.run(s, inputs, 1).argmax(1) == labels).astype(np.float64) for k, s in sessions.items()}
    rows = {}
    for k in models:
        _, low, high = stats.bootstrap_mean(hits["fp32"] - hits[k], seed=0)
        rows[k] = {"accuracy": round(float(hits[k].mean()), 5), "accuracy_drop_points": round(100 * float((hits["fp32"] - hits[k]).mean()), 3),
                   "drop_95_interval_points": [round(100 * low, 3), round(100 * high, 3)], "size_ratio": round(models["fp32"].stat().st_size / Path(models[k]).stat().st_size, 3),
                   "tool_wall_s": round(walls.get(k, 0.0), 2), "integer_kernels": integer_kernels(Path(models[k]))}
    for batch in BATCHES:
        times = latency.measure(sessions, next(data.batches(ev, batch)), warmup=max(3, repeats // 10), repeats=repeats if batch == 1 else max(10, repeats // 3), progress=False)
        p50 = {k: float(np.median(v)) for k, v in times.items()}
        for k in models:
            rows[k][f"batch{batch}_speedup"] = round(p50["fp32"] / p50[k], 3)
    return rows


def main(argv: list[str] | None = None) -> int:
    limit = 900.0
    if argv is None and "--limit" in sys.argv:  # seconds each toolkit may take per model
        i = sys.argv.index("--limit")
        limit, sys.argv[i : i + 2] = float(sys.argv[i + 1]), []
    args = arguments(__doc__, "toolkits", argv, MODELS)
    names = ["digits-cnn"] if args.smoke else args.models
    report = header(f"1 thread, batch {' and '.join(map(str, BATCHES))}, median of {args.repeats} interleaved runs at batch 1 (a third at batch 8), one ONNX Runtime "
                    "for every model; accuracy on the eval split, 95% bootstrap interval of the paired drop; peer toolkits run by bench/peer_toolkits.py in .venv-peers "
                    "on up to 300 calibration samples")
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"sf-bench-toolkits-{name}-") as tmp:
            work = Path(tmp)
            fp32, files = prepare(name, work)
            ours, walls, info = squeezeflow_variants(fp32, files, work)
            ort, ort_walls = ort_default(fp32, files, work)
            peers, peer_walls, peer_info = peer_variants(fp32, files, work, KIND[name], limit) if not args.smoke else ({}, {}, {"skipped": "smoke run"})
            models = {"fp32": fp32, **ort, **ours, **peers}
            rows = measure(models, {**walls, **ort_walls, **peer_walls}, files, args.repeats)
            report["models"][name] = {"kind": KIND[name], "squeezeflow": info, "peers": peer_info, "variants": rows}
        print(name, json.dumps(report["models"][name]["variants"])[:3000], flush=True)
    write(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
