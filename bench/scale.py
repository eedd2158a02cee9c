"""Scale: a synthetic transformer at 10M, 100M and 1B parameters through the pipeline's stages.

For each size, in a temporary folder with its own sqlite registry: build the model (random
weights, pre-norm encoder of architectures.text_transformer), export it to ONNX (external data above 256 MiB of
weights) and register it (setup, measured too), then run the stages as the pipeline does, one
process each: pull, compress int8-dynamic, compress int4, evaluate baseline / int8-dynamic / int4,
gate, promote. Per stage: wall time, peak resident memory (the process's own, from wait4) against
the FP32 model size (raw, and above the resident memory of a process that only imports the
libraries, which dominates at 10M), and the stage's compute / import split (SQUEEZEFLOW_TIMINGS). Eval labels are
the FP32 model's own predictions, so accuracy_drop is the disagreement rate. Writes
bench/results/scale.json.

    python bench/scale.py                   # 10m, 100m, 1b (about 30 minutes, 12 GB of memory)
    python bench/scale.py 10m 100m          # some of them
    python bench/scale.py --smoke           # 10m only (what the tests run)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import arguments, header, run_measured, write  # noqa: E402

BIN = Path(sys.executable).parent
SIZES = {  # architectures.text_transformer shapes; parameters ~ 12 * dim^2 * layers + vocab * dim
    "10m": dict(dim=384, heads=6, layers=5, ff=1536),
    "100m": dict(dim=1024, heads=16, layers=8, ff=4096),
    "1b": dict(dim=2048, heads=16, layers=20, ff=8192),
}
VOCAB, SEQ, CLASSES, EVAL_SAMPLES = 4000, 32, 2, 64
STAGES = [
    "pull",
    "compress int8-dynamic",
    "compress int4",
    "evaluate baseline",
    "evaluate int8-dynamic",
    "evaluate int4",
    "gate",
    "promote",
]


def setup(size: str, work: Path) -> None:
    """(child process) Build, export and register the model; write data/eval.npz labelled by FP32."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import register_onnx
    from squeezeflow.onnx import sessions
    from squeezeflow.torch import architectures, convert

    model = architectures.text_transformer(VOCAB, SEQ, CLASSES, **SIZES[size]).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, size=(EVAL_SAMPLES, SEQ), dtype=np.int64)
    mask = np.ones((EVAL_SAMPLES, SEQ), dtype=np.int64)
    mask[EVAL_SAMPLES // 2 :, SEQ // 2 :] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    fp32 = work / "export" / "model.onnx"
    fp32.parent.mkdir()
    convert.export_onnx(model, {k: v[:8] for k, v in inputs.items()}, fp32, min_agreement=0.99)
    del model
    labels = sessions.run(sessions.session(fp32), inputs, batch_size=16).argmax(-1)
    (work / "data").mkdir()
    np.savez(work / "data/eval.npz", **inputs, labels=labels)
    register_onnx(fp32, f"synthetic-{size}", alias="champion")


def params(size: str) -> dict:
    return {
        "source": {"model_uri": f"models:/synthetic-{size}@champion"},
        "data": {"eval": "data/eval.npz"},
        "recipes": {"int8-dynamic": [{"quantize": {"mode": "dynamic"}}], "int4": [{"quantize": {"mode": "int4"}}]},
        "budgets": {"max_accuracy_drop": 1.0},
        "target": {"warmup": 2, "repeats": 20, "max_seconds": 10},
        "promote": {"registered_model": f"synthetic-{size}-edge"},
    }


LIBRARIES = (
    "import squeezeflow.cli.commands, torch, onnx, onnxruntime, onnxruntime.quantization, mlflow, great_expectations"
)


def measure(size: str, work: Path) -> dict:
    from squeezeflow.data.artifacts import model_files

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "SQUEEZEFLOW_TIMINGS": str(work / "timings.jsonl"),
    }
    rows = {
        "setup (build, export, register)": run_measured(
            [sys.executable, __file__, "--setup", size, "--work", str(work)], work, env
        )
    }
    fp32 = sum(f.stat().st_size for f in model_files(work / "export/model.onnx"))
    (work / "params.yaml").write_text(yaml.safe_dump(params(size), sort_keys=False))
    for stage in STAGES:
        rows[stage] = run_measured([str(BIN / "squeezeflow"), *stage.split()], work, env)
        print(f"{size} {stage}: {rows[stage]}", flush=True)
    for line in map(json.loads, (work / "timings.jsonl").read_text().splitlines()):
        if line["command"] in rows:
            rows[line["command"]].update(compute_s=line["compute_s"], import_s=line["import_s"])
    libraries = run_measured([sys.executable, "-c", LIBRARIES], work, env)["peak_rss_bytes"]
    for row in rows.values():
        row["peak_rss_over_fp32"] = round(row["peak_rss_bytes"] / fp32, 2)
        row["above_libraries_over_fp32"] = round(max(0, row["peak_rss_bytes"] - libraries) / fp32, 2)
    metrics = {n: json.loads((work / f"metrics/{n}.json").read_text()) for n in ("baseline", "int8-dynamic", "int4")}
    return {
        "params": _param_count(size),
        "fp32_bytes": fp32,
        "libraries_rss_bytes": libraries,
        "external_data": (work / "artifacts/source/model.onnx.data").is_file(),
        "stages": rows,
        "candidates": {
            n: {k: m.get(k) for k in ("size_mb", "accuracy_drop", "speedup", "latency_p50_ms")}
            for n, m in metrics.items()
        },
        "promotion": json.loads((work / "reports/promotion.json").read_text())["action"],
    }


def _param_count(size: str) -> int:
    s = SIZES[size]
    d, layers, ff = s["dim"], s["layers"], s["ff"]
    block = 3 * d * d + 3 * d + d * d + d + d * ff + ff + ff * d + d + 4 * d
    return VOCAB * d + SEQ * d + layers * block + 2 * d + d * CLASSES + CLASSES


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--setup"]:
        setup(argv[1], Path(argv[3]))
        return 0
    args = arguments(__doc__, "scale", argv, tuple(SIZES))
    sizes = ["10m"] if args.smoke else args.models
    report = header(
        "synthetic transformer (seq 32, vocab 4000, 2 classes, 64 eval samples labelled by FP32), "
        "stages as separate processes against a "
        "sqlite registry; peak RSS of each stage's own process (wait4); target.max_seconds 10, 1 "
        "thread, batch 1"
    )
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix=f"sf-bench-scale-{size}-") as tmp:
            report["models"][size] = measure(size, Path(tmp))
        print(size, json.dumps(report["models"][size])[:1500], flush=True)
    base = sizes[0]
    for size in sizes:
        row = report["models"][size]
        row["params_ratio_vs_" + base] = round(row["params"] / report["models"][base]["params"], 2)
        row["time_ratio_vs_" + base] = {
            s: round(row["stages"][s]["wall_s"] / report["models"][base]["stages"][s]["wall_s"], 2)
            for s in row["stages"]
        }
    write(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
