"""Distillation benchmark: students of the MNIST-sample CNN, with soft labels and with hard labels alone.

Runs the pipeline's own stages (pull, soft-labels, compress, against a sqlite MLflow registry in a
temporary folder) on three registered teachers of different architectures: the source CNN, an
MLP and a shallow, wide CNN. Every student has the same architecture, seed, epochs and data; only
the teachers (or none: alpha 0, cross-entropy on the labels) differ. Students, teachers and the
INT8 student are timed interleaved with the FP32 source in one process (batch 1, one thread).
Writes bench/results/distillation.json.

    python bench/distillation.py            # MNIST sample (about 10 minutes on 2 cores)
    python bench/distillation.py --smoke    # digits, short training, few repeats (what the tests run)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import accuracy_and_speed, arguments, header, pipeline_params, workspace, write  # noqa: E402

WIDTH = 0.4  # student channels and hidden width: about 16% of the source's parameters
TEACHER_EPOCHS, STUDENT_EPOCHS = 6, 15


def teachers(dataset: str, files: dict, epochs: int) -> dict[str, object]:
    """Train the three teachers: the source CNN, an MLP, and a shallow wide CNN."""
    from squeezeflow import data
    from squeezeflow.torch import architectures, train

    tr = dict(np.load(files["train"]))
    x, y = data.inputs_of(tr)["input"], tr["labels"]
    side, classes = x.shape[-1], int(y.max()) + 1
    built = {
        "cnn": architectures.small_cnn(side, classes),
        "mlp": architectures.mlp(side * side, (1024, 1024), classes, seed=1),
        "cnn-shallow": architectures.conv_net(1, side, (24, 48), (64,), classes, kernel=5, seed=2),
    }
    return {
        name: train.fit(m, x, y, epochs=epochs, desc=f"teacher {name}", validation=None) for name, m in built.items()
    }


def recipes(models: dict[str, str], epochs: int) -> dict[str, list]:
    """One student per teacher set, the hard-label student, and the INT8 student."""

    def student(teachers: list[dict], alpha: float = 0.7) -> dict:
        return {"distill": {"student": {"width": WIDTH}, "teachers": teachers, "alpha": alpha, "epochs": epochs}}

    each = {name: {"uri": f"models:/{registered}/1"} for name, registered in models.items()}
    return {
        "hard-labels-only": [student([{"uri": "source"}], alpha=0.0)],
        "kd-cnn": [student([{"uri": "source"}])],
        "kd-mlp": [student([each["mlp"]])],
        "kd-cnn-shallow": [student([each["cnn-shallow"]])],
        "kd-all": [student([{"uri": "source"}, each["mlp"], each["cnn-shallow"]])],
        "kd-cnn-int8": [student([{"uri": "source"}]), {"quantize": {"mode": "static", "per_channel": True}}],
    }


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "distillation", argv)
    dataset = "digits" if args.smoke else "mnist"
    teacher_epochs, student_epochs = (2, 3) if args.smoke else (TEACHER_EPOCHS, STUDENT_EPOCHS)
    report = header(
        f"batch 1, 1 thread, median of {args.repeats} interleaved runs; teachers {teacher_epochs} "
        f"epochs, students {student_epochs} epochs "
        f"(Adam 1e-3, early stopping on the calibration split, seed 0), width {WIDTH} copy of the "
        "source CNN; accuracy on the eval split"
    )
    with workspace("sf-bench-distill-", dataset) as (work, files):
        from squeezeflow import registry

        example = np.load(files["eval"])["input"][:8]
        names = {"cnn": f"{dataset}-cnn", "mlp": f"{dataset}-mlp", "cnn-shallow": f"{dataset}-cnn-shallow"}
        for name, model in teachers(dataset, files, teacher_epochs).items():
            registry.register_torch(model, names[name], example, alias="champion")
        found = run_pipeline(work, files, names, student_epochs)
        report["models"][f"{dataset}-cnn"] = measure(work, found, files, args.repeats)
    print(json.dumps(report["models"], indent=1))
    write(report, args.out)
    return 0


def run_pipeline(work: Path, files: dict, names: dict[str, str], epochs: int) -> dict[str, dict]:
    """pull -> soft-labels -> compress@each recipe, with the project's stages; returns the manifests."""
    from squeezeflow.config import load_params
    from squeezeflow.stages import pipeline

    params = pipeline_params(
        files,
        source={"model_uri": f"models:/{names['cnn']}@champion"},
        recipes=recipes({k: v for k, v in names.items() if k != "cnn"}, epochs),
    )
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    loaded = load_params(work / "params.yaml")
    return pipeline.run(loaded, until="compress", skip=("check-data",))["compress"]


def measure(work: Path, found: dict[str, dict], files: dict, repeats: int) -> dict:
    """Accuracy, interleaved latency, size and parameter counts of the source, teachers and students."""
    from squeezeflow.data.artifacts import read_index
    from squeezeflow.evaluate.size import sizes

    models = {"fp32": work / "artifacts/source/model.onnx"}
    for entry in read_index(work / "artifacts/registered").values():
        models[f"teacher-{entry['name']}"] = work / "artifacts/registered" / entry["dir"] / "model.onnx"
    models.update({name: work / "artifacts/candidates" / name / "model.onnx" for name in found})
    rows = accuracy_and_speed(models, files["eval"], repeats)
    size = {k: sizes(p) for k, p in models.items()}
    out = {}
    for k in models:
        row = {
            **rows[k],
            "size_mb": size[k]["size_mb"],
            "size_ratio": round(size["fp32"]["size_mb"] / size[k]["size_mb"], 3),
        }
        if k in found:
            stats = found[k]["steps"][0]["stats"]
            row.update(
                param_ratio=stats["param_ratio"],
                student_params=stats["student_params"],
                teachers=[f"{t['name']}/{t['version']}" for t in stats["teachers"]],
                hard_labels_only=stats["alpha"] == 0.0,
                kept_teacher_accuracy=round(rows[k]["accuracy"] / rows["fp32"]["accuracy"], 4),
            )
        out[k] = row
    return out


if __name__ == "__main__":
    raise SystemExit(main())
