"""Quantize one FP32 ONNX model with the peer toolkits, each as its documentation shows a user.

Runs in the peers' own virtual environment (`make bench-peers` builds .venv-peers: Intel Neural
Compressor's ONNX package pins numpy<2, which the project's stack does not take), and imports
nothing of squeezeflow. `bench/toolkits.py` calls it and measures what it writes with the
project's ONNX Runtime, interleaved with squeezeflow's variants.

    .venv-peers/bin/python bench/peer_toolkits.py FP32.onnx CALIBRATION.npz OUT_DIR --kind cnn|transformer|recurrent
    --task classification|regression|embedding|generic

- NNCF (ONNX backend): `nncf.quantize(model, nncf.Dataset(...))` with its defaults,
  `model_type=nncf.ModelType.TRANSFORMER` for transformers; and
  `nncf.quantize_with_accuracy_control(..., max_drop=0.01)`, validated on the calibration labels
  (classification), else on closeness to the FP32 outputs: 1 - mean |out - fp32| / mean |fp32|,
  the worst output's.
- Intel Neural Compressor (onnx-neural-compressor 1.0, INC 3.x's ONNX flow):
  `quantize(model, out, StaticQuantConfig(reader))` with its defaults (SmoothQuantConfig for
  transformers), and `tuning.autotune` over `StaticQuantConfig.get_config_set_for_tuning()` with
  `tolerable_loss=0.01`, scored as accuracy control is.
- Olive: its `OnnxStaticQuantization` and `OnnxDynamicQuantization` passes, through
  `olive.workflows.run` with a config as its docs write one.

Writes OUT_DIR/<variant>.onnx and OUT_DIR/toolkits.json: versions, and per variant the file, the
tool's wall time in seconds, or the error it raised.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import numpy as np


def feeds(path: Path, most: int) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    """Batch-1 input feeds of the first `most` samples of an npz file (every array but `labels`), and their labels."""
    arrays = {k: v[:most] for k, v in np.load(path).items()}
    labels = arrays.pop("labels", None)
    n = len(next(iter(arrays.values())))
    return [{k: v[i : i + 1] for k, v in arrays.items()} for i in range(n)], labels


def outputs_of(model, items: list[dict]) -> list[np.ndarray]:
    """Every output of an ONNX model (path or ModelProto) on batch-1 feeds, stacked over the samples."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    sess = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    runs = [sess.run(None, item) for item in items]
    return [np.concatenate([r[i] for r in runs]) for i in range(len(runs[0]))]


def score_of(model, items: list[dict], labels: np.ndarray, task: str) -> float:
    """Higher is better: top-1 accuracy on `labels` (classification); else 1 - the worst output's
    mean absolute difference to `labels` (FP32's outputs: a list, one array per output) over their mean magnitude."""
    outs = outputs_of(model, items)
    if task == "classification":
        return float(np.mean(outs[0].argmax(-1) == labels))
    return 1.0 - max(float(np.abs(o - r).mean() / max(np.abs(r).mean(), 1e-12)) for o, r in zip(outs, labels))


def nncf_variants(
    fp32: Path, items: list[dict], labels, kind: str, task: str, out: Path, accuracy_control: bool
) -> dict:
    import nncf
    import onnx

    model = onnx.load(str(fp32))
    extra = {"model_type": nncf.ModelType.TRANSFORMER} if kind == "transformer" else {}
    start = time.perf_counter()
    if not accuracy_control:
        onnx.save(nncf.quantize(model, nncf.Dataset(items), **extra), str(out / "nncf-default.onnx"))
        return {"nncf-default": time.perf_counter() - start}
    # NNCF validates on subsets too: the index finds each sample's reference
    validation = nncf.Dataset(list(enumerate(items)), lambda pair: pair[1])

    def validate(m, data) -> float:
        pairs = list(data)
        rows = np.array([i for i, _ in pairs])
        return score_of(
            m,
            [item for _, item in pairs],
            labels[rows] if task == "classification" else [r[rows] for r in labels],
            task,
        )

    controlled = nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(items), validation, validation_fn=validate, max_drop=0.01, **extra
    )
    onnx.save(controlled, str(out / "nncf-accuracy-control.onnx"))
    return {"nncf-accuracy-control": time.perf_counter() - start}


def inc_variants(fp32: Path, items: list[dict], labels, kind: str, task: str, out: Path, tune: bool) -> dict:
    import onnx
    from onnx_neural_compressor import data_reader
    from onnx_neural_compressor.quantization import config, quantize, tuning

    class Reader(data_reader.CalibrationDataReader):
        def __init__(self):
            self.rewind()

        def get_next(self):
            return next(self.items, None)

        def rewind(self):
            self.items = iter(items)

    start = time.perf_counter()
    if not tune:
        default = (
            config.SmoothQuantConfig(calibration_data_reader=Reader())
            if kind == "transformer"
            else config.StaticQuantConfig(calibration_data_reader=Reader())
        )
        quantize(str(fp32), str(out / "inc-default.onnx"), default)
        return {"inc-default": time.perf_counter() - start}
    space = (
        config.SmoothQuantConfig if kind == "transformer" else config.StaticQuantConfig
    ).get_config_set_for_tuning()
    best = tuning.autotune(
        str(fp32),
        tuning.TuningConfig(config_set=space, tolerable_loss=0.01),
        eval_fn=lambda path: score_of(Path(path), items, labels, task),
        calibration_data_reader=Reader(),
    )
    if best is None:
        raise RuntimeError("autotune found no configuration within tolerable_loss 0.01")
    onnx.save(best, str(out / "inc-autotune.onnx"))
    return {"inc-autotune": time.perf_counter() - start}


def olive_variants(fp32: Path, calibration: Path, out: Path, samples: int) -> dict:
    """Olive's ORT quantization passes, configured as its docs show (a data config with a user script that loads the
    npz).
    """
    from olive.workflows import run

    script = out / "olive_data.py"
    script.write_text(
        "import numpy as np\n"
        "from olive.data.registry import Registry\n\n"
        "@Registry.register_dataset()\n"
        "def npz_dataset(data_dir, **kwargs):\n"
        f"    arrays = {{k: v[:{samples}] for k, v in np.load(data_dir).items()}}\n"
        "    arrays.pop('labels', None)\n"
        "    n = len(next(iter(arrays.values())))\n"
        "    return [({k: v[i] for k, v in arrays.items()}, 0) for i in range(n)]\n"
    )
    built = {}
    for name, kind in (("olive-static", "OnnxStaticQuantization"), ("olive-dynamic", "OnnxDynamicQuantization")):
        folder = out / name
        passes = {
            "quantize": {"type": kind, **({"data_config": "calibration"} if kind == "OnnxStaticQuantization" else {})}
        }
        workflow = {
            "input_model": {"type": "ONNXModel", "model_path": str(fp32)},
            "systems": {
                "local": {
                    "type": "LocalSystem",
                    "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}],
                }
            },
            "data_configs": [
                {
                    "name": "calibration",
                    "user_script": str(script),
                    "load_dataset_config": {"type": "npz_dataset", "data_dir": str(calibration)},
                    "dataloader_config": {"batch_size": 1},
                }
            ],
            "passes": passes,
            "host": "local",
            "target": "local",
            "output_dir": str(folder),
            "log_severity_level": 3,
        }
        start = time.perf_counter()
        run(workflow)
        found = sorted(folder.rglob("*.onnx"))
        if not found:
            raise RuntimeError(f"{name}: Olive wrote no model under {folder}")
        found[0].replace(out / f"{name}.onnx")
        built[name] = time.perf_counter() - start
    return built


def versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("nncf", "onnx-neural-compressor", "olive-ai", "onnxruntime", "onnx", "numpy")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fp32", type=Path)
    parser.add_argument("calibration", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--kind",
        choices=("cnn", "transformer", "recurrent"),
        default="cnn",
        help="transformer: the toolkits' transformer presets (NNCF model_type, INC SmoothQuant)",
    )
    parser.add_argument(
        "--task", choices=("classification", "regression", "embedding", "generic"), default="classification"
    )
    parser.add_argument("--only", nargs="*", default=("nncf", "nncf-accuracy-control", "inc", "inc-autotune", "olive"))
    parser.add_argument(
        "--samples",
        type=int,
        default=300,
        help="calibration samples (NNCF's default subset_size), which also score accuracy control and autotune",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    items, labels = feeds(args.calibration, args.samples)
    if args.task != "classification":  # accuracy control and autotune score closeness to the FP32 outputs
        labels = outputs_of(args.fp32, items)
    found = args.out / "toolkits.json"  # several calls (one per tool, each under its own time limit) add to one file
    result = (
        json.loads(found.read_text()) if found.is_file() else {"versions": versions(), "variants": {}, "errors": {}}
    )
    common = (args.fp32, items, labels, args.kind, args.task, args.out)
    jobs = {
        "nncf": lambda: nncf_variants(*common, False),
        "nncf-accuracy-control": lambda: nncf_variants(*common, True),
        "inc": lambda: inc_variants(*common, False),
        "inc-autotune": lambda: inc_variants(*common, True),
        "olive": lambda: olive_variants(args.fp32, args.calibration, args.out, len(items)),
    }
    for tool in args.only:
        try:
            for name, wall in jobs[tool]().items():
                result["variants"][name] = {"file": f"{name}.onnx", "tool_wall_s": round(wall, 2)}
        except Exception as e:  # a toolkit that fails on a model is a result too
            result["errors"][tool] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
            traceback.print_exc()
        found.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
