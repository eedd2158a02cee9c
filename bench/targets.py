"""One gate, many devices: the same candidates measured on four deployment targets, a verdict per target.

Per model (the digits and MNIST CNNs and the tweets transformer, trained here; EfficientNet-Lite1
and MTCNN's ONet from the zoo), a pipeline in a temporary folder with its own sqlite registry:
the source registered in MLflow's pt2 format, recipes int8-static, int8-dynamic,
int8-static-weighted (ONNX, for the ONNX Runtime and OpenVINO targets) and mobile-int8 (the
executorch step: a .pte program for the ExecuTorch target), and four targets:

- x86-edge: ONNX Runtime, 1 thread, batch 1
- x86-server: ONNX Runtime, 2 threads, batch 8
- openvino: OpenVINO on CPU, 1 thread, batch 1
- mobile: ExecuTorch with XNNPACK, 1 thread, batch 1 (against the source lowered in FP32)

The stages run in-process as `dvc repro` runs them (pull, compress, evaluate, gate); budgets are
the task's quality budget and min_speedup 1.0 on every target. Per target: the selected
candidate, its speedup with interval and its metric; and which candidates a target rejected that
another accepted. Writes bench/results/targets.json.

    python bench/targets.py                       # every model (about 30 minutes)
    python bench/targets.py digits-cnn mtcnn-onet
    python bench/targets.py --smoke               # digits CNN, short timing (what the tests run)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import arguments, header, pipeline_folder, write  # noqa: E402

MODELS = ("digits-cnn", "mnist-cnn", "tweets-transformer", "mtcnn-onet", "efficientnet-lite1")
ZOO_COUNTS = {
    "efficientnet-lite1": {"eval": 160, "calibration": 64, "train": 8},
    "mtcnn-onet": {"eval": 256, "calibration": 128, "train": 8},
}
TASK = {"mtcnn-onet": "regression"}
QUALITY = {"classification": {"max_accuracy_drop": 0.01}, "regression": {"max_mae_increase": 0.01}}
TARGETS = {
    "x86-edge": {"runtime": "onnxruntime", "threads": 1, "batch_size": 1},
    "x86-server": {"runtime": "onnxruntime", "threads": 2, "batch_size": 8},
    "openvino": {"runtime": "openvino", "device": "CPU", "threads": 1, "batch_size": 1},
    "mobile": {"runtime": "executorch", "threads": 1, "batch_size": 1},
}
RECIPES = {
    "int8-static": [{"quantize": {"mode": "static", "per_channel": True}}],
    "int8-dynamic": [{"quantize": {"mode": "dynamic", "per_channel": True}}],
    "int8-static-weighted": [{"quantize": {"mode": "static", "per_channel": True, "scope": "weighted"}}],
    "mobile-int8": [{"executorch": {"quantize": True}}],
}


def source(name: str, work: Path) -> tuple[object, dict[str, Path], object]:
    """(torch module, split files, an example batch) of the model."""
    import numpy as np

    from squeezeflow import data
    from squeezeflow.demo import pretrained

    files = {r: work / "data" / f"{r}.npz" for r in ("train", "calibration", "eval")}
    if name in ZOO_COUNTS:
        pretrained.write_data(name, files, 0, ZOO_COUNTS[name])
        module = pretrained.build(name)
    else:
        from quantization import build

        (work / "data").mkdir(exist_ok=True)
        module, _, built = build(name, work / "data")
        files = built
    example = data.inputs_of(dict(np.load(files["eval"])))
    example = tuple(v[:4] for v in example.values())
    return module, files, example[0] if len(example) == 1 else example


def run_model(name: str, work: Path, smoke: bool) -> dict:
    from squeezeflow import registry
    from squeezeflow.config import load_params
    from squeezeflow.errors import GateFailedError
    from squeezeflow.stages import pipeline
    from squeezeflow.stages.gate import gate

    module, files, example = source(name, work)
    registry.register_torch(module, name, example, alias="champion")
    task = TASK.get(name, "classification")
    timing = {"warmup": 5, "repeats": 40 if smoke else 200, "max_seconds": 3 if smoke else 15}
    targets = {t: {**v, **timing} for t, v in TARGETS.items() if not smoke or t != "x86-server"}
    recipes = {k: v for k, v in RECIPES.items() if not smoke or k in ("int8-static", "int8-dynamic", "mobile-int8")}
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params.pop("target")
    params.update(
        source={"model_uri": f"models:/{name}@champion"},
        recipes=recipes,
        targets=targets,
        budgets={**QUALITY[task], "min_speedup": 1.0},
        promote={"registered_model": f"{name}-edge", "alias": "candidate"},
    )
    params["data"] = {"task": task, **{k: str(v) for k, v in files.items()}}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    loaded = load_params(work / "params.yaml")
    pipeline.run(loaded, until="evaluate", skip=("check-data",))
    try:
        verdict = gate(loaded, audit=False)
    except GateFailedError:
        verdict = json.loads((work / "reports" / "gate.json").read_text())
    return summarize(verdict)


def summarize(verdict: dict) -> dict:
    """Per target: runtime, verdict, selected with its speedup and metric, every candidate's status; and the
    cross-target disagreements.
    """
    out = {"verdict": verdict["verdict"], "matrix": verdict["matrix"], "targets": {}}
    for target, v in verdict["targets"].items():
        metric = "accuracy_drop" if v.get("task", "classification") == "classification" else "mae_increase"
        row = {"runtime": v.get("runtime"), "verdict": v["verdict"], "selected": v.get("selected"), "candidates": {}}
        for cand, c in v.get("candidates", {}).items():
            m = c["metrics"]
            row["candidates"][cand] = {
                "status": c["status"],
                "speedup": m.get("speedup"),
                "speedup_interval": [m.get("speedup_ci_low"), m.get("speedup_ci_high")],
                metric: m.get(metric),
                "missed": [x["budget"] for x in c["violations"] + c.get("inconclusive", [])],
            }
        out["targets"][target] = row
    out["rejected_here_accepted_there"] = [
        {
            "candidate": cand,
            "rejected_by": [t for t, s in per.items() if s in ("fail", "inconclusive")],
            "accepted_by": [t for t, s in per.items() if s.startswith("pass")],
        }
        for cand, per in verdict["matrix"].items()
        if any(s in ("fail", "inconclusive") for s in per.values()) and any(s.startswith("pass") for s in per.values())
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "targets", argv, MODELS)
    names = ["digits-cnn"] if args.smoke else args.models
    report = header(
        "a pipeline per model run in-process (pull, compress, evaluate, gate); each target measures "
        "quality and latency with its own runtime, "
        "interleaved against the baseline on that runtime until the speedup's interval is 10% wide or "
        "15 s pass"
    )
    report["targets"] = TARGETS
    for name in names:
        with pipeline_folder(f"sf-bench-targets-{name}-") as work:
            report["models"][name] = run_model(name, work, args.smoke)
        print(
            name,
            json.dumps({t: (v["selected"], v["verdict"]) for t, v in report["models"][name]["targets"].items()}),
            flush=True,
        )
        write(report, args.out)  # after each model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
