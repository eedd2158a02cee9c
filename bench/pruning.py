"""Pruning and clustering benchmark on the digits and MNIST CNNs (issue acceptance figures).

Each variant is timed interleaved with its FP32 baseline in one process (batch 1, one thread).
The demo model (digits-cnn) runs twice: as the trained module (what a pickled MLflow model loads
as) and as `digits-cnn-pt2`, saved in MLflow's default pt2 format and loaded back as `pull` does
(the exported graph rebuilt into layers by squeezeflow.torch.rebuild). Writes bench/results/pruning.json.

    python bench/pruning.py            # digits and MNIST CNNs
    python bench/pruning.py --smoke    # digits only, 1 epoch, few repeats
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import accuracy_and_speed, arguments, header, model_folders, write  # noqa: E402
from quantization import build  # noqa: E402  (the same models and data as the quantization bench)
from squeezeflow import data  # noqa: E402
from squeezeflow.evaluate.size import sizes  # noqa: E402
from squeezeflow.onnx import modelfile  # noqa: E402
from squeezeflow.steps import StepContext  # noqa: E402
from squeezeflow.steps.cluster import ClusterConfig, cluster  # noqa: E402
from squeezeflow.steps.finetune import FinetuneConfig, finetune  # noqa: E402
from squeezeflow.steps.prune import PruneConfig, prune  # noqa: E402
from squeezeflow.steps.quantize import QuantizeConfig, quantize  # noqa: E402
from squeezeflow.torch import convert  # noqa: E402

TARGETS = {
    "structured-50": "speedup >= 1.5, drop <= 1 point",
    "unstructured-80": "gzip >= 3x smaller, drop <= 1 point",
    "cluster-16": "file >= 3.5x smaller, drop <= 0.5 point",
    "prune-cluster-int8": "gzip >= 10x smaller, drop <= 1 point",
}


def variants(model, files: dict, work: Path, epochs: int) -> dict[str, Path]:
    """The four recipes of the acceptance criteria, each from a fresh copy of the trained model."""

    def ctx(name):
        folder = work / name
        folder.mkdir()
        return StepContext(workdir=folder, train=files["train"], calibration=files["calibration"], seed=0)

    def export(m, name):
        path = work / f"{name}.onnx"
        convert.export_onnx(m, {k: v[:32] for k, v in data.inputs_of(dict(np.load(files["eval"]))).items()}, path)
        return path

    tune = FinetuneConfig(epochs=epochs, lr=1e-3, patience=2)
    out = {}
    m = prune(copy.deepcopy(model), PruneConfig(method="structured", amount=0.5), ctx("s50")).model
    out["structured-50"] = export(finetune(m, tune, ctx("s50-ft")).model, "structured-50")
    m = prune(copy.deepcopy(model), PruneConfig(amount=0.8), ctx("u80")).model
    out["unstructured-80"] = export(finetune(m, tune, ctx("u80-ft")).model, "unstructured-80")
    out["cluster-16"] = cluster(copy.deepcopy(model), ClusterConfig(clusters=16), ctx("c16")).model
    m = prune(copy.deepcopy(model), PruneConfig(amount=0.8), ctx("dc-p")).model
    m = finetune(m, tune, ctx("dc-ft")).model
    clustered = cluster(m, ClusterConfig(clusters=16, epochs=1), ctx("dc-c")).model
    out["prune-cluster-int8"] = quantize(clustered, QuantizeConfig(mode="static"), ctx("dc-q")).model
    return out


def as_pt2(model, files: dict, work: Path):
    """The module saved in MLflow's default pt2 format and loaded back as `pull` loads it."""
    import mlflow.pytorch

    example = data.inputs_of(dict(np.load(files["eval"])))
    mlflow.pytorch.save_model(
        model, str(work / "pt2-model"), serialization_format="pt2", input_example=next(iter(example.values()))[:4]
    )
    return convert.load_torch(work / "pt2-model")


def measure(fp32: Path, found: dict[str, Path], files: dict, repeats: int) -> dict:
    """Accuracy, raw and gzip size, parameters, sparsity and interleaved latency of every variant."""
    models = {"fp32": fp32, **found}
    rows = accuracy_and_speed(models, files["eval"], repeats)
    size = {k: sizes(p) for k, p in models.items()}
    base = size["fp32"]
    return {
        k: {
            **rows[k],
            "file_ratio": round(base["size_mb"] / size[k]["size_mb"], 3),
            "gzip_ratio": round(base["size_gzip_mb"] / size[k]["size_gzip_mb"], 3),
            **modelfile.weight_stats(models[k]),
            **({"target": TARGETS[k]} if k in TARGETS else {}),
        }
        for k in models
    }


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "pruning", argv)
    names = ["digits-cnn"] if args.smoke else ["digits-cnn", "mnist-cnn"]
    report = header(
        f"batch 1, 1 thread, median of {args.repeats} interleaved runs; fine-tuning with Adam lr 1e-3 "
        "and early stopping on the calibration split; accuracy on the eval split"
    )
    for name, work in model_folders("sf-bench-prune-", names):
        model, fp32, files = build(name, work, epochs=2 if args.smoke else None)
        sources = {name: model, **({f"{name}-pt2": as_pt2(model, files, work)} if name == "digits-cnn" else {})}
        for key, source in sources.items():
            (work / key).mkdir()
            found = variants(source, files, work / key, epochs=1 if args.smoke else 3)
            report["models"][key] = measure(fp32, found, files, args.repeats)
            print(key, json.dumps(report["models"][key]), flush=True)
    write(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
