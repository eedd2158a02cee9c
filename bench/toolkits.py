"""squeezeflow's INT8 against the dedicated toolkits (NNCF, Intel Neural Compressor, Olive), side by side.

Per model (every zoo model of squeezeflow.demo.pretrained and the trained pipelines: digits and MNIST
CNNs, the tweets transformer): the FP32 ONNX model and its data; squeezeflow's quantize variants
(static default, with bias correction, with GPTQ rounding and bias correction, with GPTQ and float MatMul outputs, with
scope weighted, with SmoothQuant, dynamic, and `auto`,
the candidate squeezeflow selects by itself); ONNX Runtime's own defaults;
and each peer toolkit run as its docs tell a user to, in its own virtual environment
(`bench/peer_toolkits.py` under .venv-peers, built by `make bench-peers`; skipped, and said so in
the results, when that environment is missing). Every model is then measured in this process with
the same ONNX Runtime: the task's metric on the eval split with its 95% paired-bootstrap interval
against FP32 (squeezeflow.evaluate.tasks, as evaluate scores it: classification accuracy drop,
for efficientnet-lite1 against the FP32 model's own top-1, so accuracy is agreement with FP32;
regression MAE increase; embedding cosine to FP32; generic mean absolute error), size ratio, speedup at
batch 1 and 8 on one thread (interleaved, median of the repeats), the tool's wall time, and how many
integer kernels ORT runs after its optimizer (QLinearConv, QLinearMatMul, MatMulInteger, ...).
Writes bench/results/toolkits.json.

    make bench-peers                           # builds .venv-peers, then runs this
    python bench/toolkits.py                   # every model (about 90 minutes with the peers)
    python bench/toolkits.py efficientnet-lite1 mtcnn-onet
    python bench/toolkits.py --limit 600       # seconds each toolkit may take per model (default 300); a tool over it
    is reported as such
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
# name -> (kind for the toolkits' presets, task, counts of the zoo's data: eval, calibration, train); smallest first
MODELS = {
    "digits-cnn": ("cnn", "classification", None),
    "mnist-cnn": ("cnn", "classification", None),
    "mtcnn-onet": ("cnn", "regression", {"eval": 256, "calibration": 128, "train": 4}),
    "resemblyzer": ("recurrent", "embedding", {"eval": 128, "calibration": 48, "train": 4}),
    "easyocr-crnn": ("recurrent", "generic", {"eval": 256, "calibration": 128, "train": 4}),
    "tweets-transformer": ("transformer", "classification", None),
    # 1,280 crops: with 320, models 0.01 apart in agreement swapped places from run to run
    "efficientnet-lite1": ("cnn", "classification", {"eval": 1280, "calibration": 128, "train": 8}),
    "easyocr-craft": ("cnn", "generic", {"eval": 32, "calibration": 32, "train": 4}),
}
SQUEEZEFLOW = {  # variant -> quantize parameters
    "squeezeflow-static": {"mode": "static"},
    "squeezeflow-static-bias-correction": {"mode": "static", "bias_correction": True},
    "squeezeflow-static-gptq-bias-correction": {"mode": "static", "weight_rounding": "gptq", "bias_correction": True},
    "squeezeflow-static-gptq-float-matmul-outputs": {
        "mode": "static",
        "weight_rounding": "gptq",
        "matmul_outputs": "float",
    },
    "squeezeflow-static-weighted": {"mode": "static", "scope": "weighted"},
    "squeezeflow-static-weighted-smoothquant": {"mode": "static", "scope": "weighted", "smoothquant": 0.5},
    "squeezeflow-dynamic": {"mode": "dynamic"},
    "squeezeflow-auto": {"mode": "auto"},
}
# task -> (metric shown, its interval keys, higher is better); the metric against FP32, as evaluate computes it
PRIMARY = {
    "classification": ("accuracy_drop", ("accuracy_drop_ci_low", "accuracy_drop_ci_high"), False),
    "regression": ("mae_increase", ("mae_increase_ci_low", "mae_increase_ci_high"), False),
    "embedding": ("cosine", ("cosine_ci_low", "cosine_ci_high"), True),
    "generic": ("mean_abs_error", ("mean_abs_error_ci_low", "mean_abs_error_ci_high"), False),
}
INTEGER_KERNELS = (
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeMatMul",
    "QGemm",
    "QLinearAdd",
    "MatMulIntegerToFloat",
    "QAttention",
)
BATCHES = (1, 8)
# speedups closer than this are a tie: ORT's and Olive's dynamic defaults (the same quantize_dynamic call) measured
# 1.98x and 2.17x on the tweets transformer in one run
SPEED_NOISE = 0.10
TIMING_BUDGET_S = 15.0  # about this many seconds of FP32 calls per variant and batch size
# each run in its own process, under --limit seconds
TOOLS = ("nncf", "nncf-accuracy-control", "inc", "inc-autotune", "olive")


def prepare(name: str, work: Path) -> tuple[Path, dict[str, Path]]:
    """The FP32 ONNX model and its eval / calibration files."""
    from squeezeflow import data
    from squeezeflow.demo import pretrained
    from squeezeflow.torch import convert

    files = {r: work / f"{r}.npz" for r in ("train", "calibration", "eval")}
    counts = MODELS[name][2]
    if counts is not None:
        pretrained.write_data(name, files, 0, counts)
        fp32 = work / "fp32.onnx"
        convert.export_onnx(
            pretrained.build(name).eval(),
            {k: v[:8] for k, v in data.inputs_of(data.load(files["eval"], "eval")).items()},
            fp32,
        )
        return fp32, files
    from quantization import build

    _, fp32, files = build(name, work, epochs=2 if name == "digits-cnn" else None)
    return fp32, files


def squeezeflow_variants(
    fp32: Path, files: dict, work: Path, task: str
) -> tuple[dict[str, Path], dict[str, float], dict]:
    from squeezeflow.steps import StepContext
    from squeezeflow.steps.quantize import QuantizeConfig, quantize

    paths, walls, stats = {}, {}, {}
    for name, options in SQUEEZEFLOW.items():
        folder = work / name
        folder.mkdir()
        start = time.perf_counter()
        try:
            result = quantize(
                fp32,
                QuantizeConfig(**options),
                StepContext(workdir=folder, calibration=files["calibration"], task=task),
            )
        except Exception as e:  # noqa: BLE001 - a variant that fails on a model is a result too
            stats[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]}
            continue
        walls[name], paths[name] = time.perf_counter() - start, result.model
        stats[name] = {k: v for k, v in result.stats.items() if k not in ("quantized_ops",)}
    return paths, walls, stats


def ort_default(fp32: Path, files: dict, work: Path) -> tuple[dict[str, Path], dict[str, float], dict[str, str]]:
    """ORT's pre-processing then its quantizers with default arguments; where a call raises (the
    pre-processing's shape inference fails on some LSTMs), the error is the result, and the
    quantizers are tried on the model as exported."""
    from onnxruntime.quantization import quant_pre_process, quantize_dynamic, quantize_static

    from squeezeflow import data
    from squeezeflow.quantization import calibration

    errors, source = {}, work / "ort-pre.onnx"
    try:
        quant_pre_process(str(fp32), str(source))
    except Exception as e:  # noqa: BLE001
        errors["ort-pre-process"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        source = fp32
    cal = data.inputs_of(dict(np.load(files["calibration"])))
    jobs = {
        "ort-dynamic-default": lambda out: quantize_dynamic(str(source), str(out)),
        "ort-static-default": lambda out: quantize_static(
            str(source), str(out), calibration.reader(calibration.subset(cal, 256, 0), 1)
        ),
    }
    paths, walls = {}, {}
    for name, job in jobs.items():
        start = time.perf_counter()
        try:
            job(work / f"{name}.onnx")
        except Exception as e:  # noqa: BLE001
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            continue
        paths[name], walls[name] = work / f"{name}.onnx", time.perf_counter() - start
    return paths, walls, errors


def peer_variants(
    fp32: Path, files: dict, work: Path, kind: str, task: str, limit: float
) -> tuple[dict[str, Path], dict[str, float], dict]:
    """The toolkits' models, built in their own environment, each tool under a time limit; ({}, {}, {"skipped": why})
    without it.
    """
    if not PEERS_PYTHON.is_file():
        return {}, {}, {"skipped": f"{PEERS_PYTHON} not found: run `make bench-peers`"}
    out = work / "peers"
    timed_out = {}
    for tool in TOOLS:
        try:
            subprocess.run(
                [
                    str(PEERS_PYTHON),
                    str(Path(__file__).parent / "peer_toolkits.py"),
                    str(fp32),
                    str(files["calibration"]),
                    str(out),
                    "--kind",
                    kind,
                    "--task",
                    task,
                    "--only",
                    tool,
                ],
                capture_output=True,
                text=True,
                timeout=limit,
            )
        except subprocess.TimeoutExpired:
            timed_out[tool] = f"did not finish within {limit:.0f} s"
    found = (
        json.loads((out / "toolkits.json").read_text())
        if (out / "toolkits.json").is_file()
        else {"variants": {}, "errors": {}}
    )
    paths = {k: out / v["file"] for k, v in found["variants"].items()}
    return (
        paths,
        {k: v["tool_wall_s"] for k, v in found["variants"].items()},
        {"versions": found.get("versions"), "errors": {**found.get("errors", {}), **timed_out}},
    )


def integer_kernels(path: Path) -> dict[str, int]:
    """Operator counts of the graph ORT actually runs (after its optimizer), integer kernels only."""
    from collections import Counter

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        ops = Counter(
            n.op_type for n in onnx.load(options.optimized_model_filepath, load_external_data=False).graph.node
        )
    return {k: ops[k] for k in INTEGER_KERNELS if ops.get(k)}


def measure(models: dict[str, Path], walls: dict[str, float], files: dict, task: str, repeats: int) -> dict:
    from squeezeflow import data
    from squeezeflow.evaluate import latency, tasks
    from squeezeflow.onnx import sessions

    ev = dict(np.load(files["eval"]))
    inputs, labels = data.inputs_of(ev), ev.get(data.LABELS)
    opened = {k: sessions.session(p, threads=1) for k, p in models.items()}
    outputs = {}
    for k, s in opened.items():
        try:
            outputs[k] = sessions.run_outputs(s, inputs, 1)
        except Exception as e:  # noqa: BLE001 - a model the runtime cannot run (NaN, a missing kernel) is a row too
            outputs[k] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    metric, interval, _ = PRIMARY[task]
    rows = {}
    for k in models:
        rows[k] = {
            "size_ratio": round(models["fp32"].stat().st_size / total_bytes(Path(models[k])), 3),
            "tool_wall_s": round(walls.get(k, 0.0), 2),
            "integer_kernels": integer_kernels(Path(models[k])),
        }
        if isinstance(outputs[k], str):
            rows[k]["error"] = outputs[k]
            continue
        scored, _ = tasks.score(
            task, outputs["fp32"], outputs[k], labels if task in ("classification", "regression") else None
        )
        rows[k].update(
            {
                key: round(float(v), 6)
                for key, v in scored.items()
                if isinstance(v, (int, float)) and not key.startswith("output.")
            }
        )
        rows[k].update(metric=metric, value=rows[k][metric], interval=[rows[k][interval[0]], rows[k][interval[1]]])
    opened = {k: s for k, s in opened.items() if not isinstance(outputs[k], str)}
    for batch in BATCHES:
        feed = next(data.batches(ev, batch))
        start = time.perf_counter()
        opened["fp32"].run(None, feed)
        # a large model gets fewer repeats, not hours
        most = max(10, int(TIMING_BUDGET_S / max(time.perf_counter() - start, 1e-6)))
        count = min(repeats if batch == 1 else max(10, repeats // 3), most)
        times = latency.measure(opened, feed, warmup=max(3, count // 10), repeats=count, progress=False)
        rows["fp32"][f"batch{batch}_repeats"] = count
        p50 = {k: float(np.median(v)) for k, v in times.items()}
        for k in opened:
            rows[k][f"batch{batch}_speedup"] = round(p50["fp32"] / p50[k], 3)
    return rows


def total_bytes(path: Path) -> int:
    """The model file and every external-data file its tensors name (the toolkits name them their own way)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    places = {ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)}
    return path.stat().st_size + sum((path.parent / p).stat().st_size for p in places)


def verdict(rows: dict, task: str, auto: dict) -> dict:
    """squeezeflow's selected candidate (what auto chose, and the best squeezeflow variant) against the best peer
    variant, on the metric and the batch-1 speed.

    "as accurate": the squeezeflow variant's metric is inside the best peer's 95% interval, or better.
    "no peer as accurate and faster": no peer variant at least as accurate (or the best peer) is more
    than SPEED_NOISE faster at batch 1 (interleaved medians on a shared machine: two copies of one
    model differ by a few percent)."""
    metric, _, higher = PRIMARY[task]
    better = (lambda a, b: a >= b) if higher else (lambda a, b: a <= b)

    def best(names):
        ok = [n for n in names if "value" in rows[n]]
        if not ok:
            return None
        return (max if higher else min)(ok, key=lambda n: rows[n]["value"])

    peers = [n for n in rows if not n.startswith(("squeezeflow", "fp32"))]
    ours = [n for n in rows if n.startswith("squeezeflow") and n != "squeezeflow-auto"]
    top_peer, top_ours = best(peers), best(ours)
    out = {
        "metric": metric,
        "best_peer": top_peer,
        "best_squeezeflow_variant": top_ours,
        "auto_chose": auto.get("chosen"),
    }
    for label, ours_name in (("auto", "squeezeflow-auto"), ("best_variant", top_ours)):
        if ours_name not in rows or top_peer is None or "value" not in rows[ours_name]:
            continue
        low, high = rows[top_peer]["interval"]
        inside = better(rows[ours_name]["value"], rows[top_peer]["value"]) or (low <= rows[ours_name]["value"] <= high)
        fastest_peer = max(
            rows[n].get("batch1_speedup", 0)
            for n in peers
            if "value" in rows[n] and (better(rows[n]["value"], rows[ours_name]["value"]) or n == top_peer)
        )
        out[label] = {
            "variant": ours_name,
            "as_accurate": bool(inside),
            "no_peer_as_accurate_and_faster": rows[ours_name].get("batch1_speedup", 0)
            >= fastest_peer / (1 + SPEED_NOISE),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    limit = 300.0
    if argv is None and "--limit" in sys.argv:  # seconds each toolkit may take per model
        i = sys.argv.index("--limit")
        limit, sys.argv[i : i + 2] = float(sys.argv[i + 1]), []
    args = arguments(__doc__, "toolkits", argv, tuple(MODELS))
    names = ["digits-cnn"] if args.smoke else args.models
    report = header(
        f"1 thread, batch {' and '.join(map(str, BATCHES))}, median of {args.repeats} interleaved runs "
        "at batch 1 (a third at batch 8), one ONNX Runtime "
        "for every model; accuracy on the eval split, 95% bootstrap interval of the paired drop; peer "
        "toolkits run by bench/peer_toolkits.py in .venv-peers "
        "on up to 300 calibration samples"
    )
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"sf-bench-toolkits-{name}-") as tmp:
            work = Path(tmp)
            kind, task, _ = MODELS[name]
            fp32, files = prepare(name, work)
            ours, walls, info = squeezeflow_variants(fp32, files, work, task)
            ort, ort_walls, ort_errors = ort_default(fp32, files, work)
            peers, peer_walls, peer_info = (
                peer_variants(fp32, files, work, kind, task, limit)
                if not args.smoke
                else ({}, {}, {"skipped": "smoke run"})
            )
            models = {"fp32": fp32, **ort, **ours, **peers}
            rows = measure(models, {**walls, **ort_walls, **peer_walls}, files, task, args.repeats)
            report["models"][name] = {
                "kind": kind,
                "task": task,
                "squeezeflow": info,
                "peers": peer_info,
                "ort_errors": ort_errors,
                "variants": rows,
                "verdict": verdict(rows, task, info.get("squeezeflow-auto", {})),
            }
        print(name, json.dumps(report["models"][name]["verdict"]), flush=True)
        write(report, args.out)  # after each model: a crash later keeps what was measured
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
