"""Calibration memory: peak resident memory of static INT8 quantization against the calibration sample count.

On the zoo's EfficientNet-Lite1 (ImageNet, 240x240 crops of the bundled photos; 1,024 calibration
crops, 320 eval crops), each run in its own process, peak RSS from wait4: squeezeflow's quantize
step (static QDQ, per-channel; its streaming calibrator) at 64, 256 and 1,024 samples for every
calibration method, and ONNX Runtime's own calibrator fed the same samples in one
`collect_data` call (what squeezeflow did before: every sample's activations kept until the end)
at 16, 32 and 64 samples, where it still fits. Beside memory: wall time, the INT8 model's top-1
agreement with FP32 on the eval crops, and the resident memory of a process that only imports the
libraries. The peak is the quantize step's process alone (agreement is measured in another).
Writes bench/results/calibration.json.

    python bench/calibration.py            # about 20 minutes
    python bench/calibration.py --smoke    # the digits CNN, 32 and 128 samples (what the tests run)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import arguments, header, run_measured, write  # noqa: E402

METHODS = ("minmax", "percentile", "mse", "entropy")
FULL = {"model": "efficientnet-lite1", "counts": (64, 256, 1024), "ort_counts": (16, 32, 64), "methods": METHODS}
SMOKE = {"model": "digits-cnn", "counts": (32, 128), "ort_counts": (32,), "methods": ("minmax", "entropy")}
ORT_METHODS = ("minmax", "percentile", "entropy")  # ONNX Runtime's own calibrators (mse is squeezeflow's)
LIBRARIES = "import numpy, onnx, onnxruntime, onnxruntime.quantization, squeezeflow.steps.quantize"


def setup(model: str, work: Path, calibration_samples: int) -> None:
    """(child process) The data files and the FP32 ONNX model in `work`."""
    from squeezeflow.torch import convert

    files = {s: work / f"{s}.npz" for s in ("eval", "calibration", "train")}
    if model == "digits-cnn":
        from quantization import train_and_export
        from squeezeflow.demo import datasets

        datasets.write_splits("digits", files)
        train_and_export("digits-cnn", files, work, epochs=2)
        return
    from squeezeflow import data
    from squeezeflow.demo import pretrained

    pretrained.write_data(model, files, 0, {"eval": 320, "calibration": calibration_samples, "train": 8})
    convert.export_onnx(
        pretrained.build(model),
        data.inputs_of(data.head(files["eval"], "eval", 2)),
        work / "fp32.onnx",
        min_agreement=0.99,
    )


def squeezeflow_run(method: str, count: int, work: Path) -> dict:
    """(child process) squeezeflow's quantize step alone (its peak memory is the row's)."""
    from squeezeflow.steps import StepContext
    from squeezeflow.steps.quantize import QuantizeConfig, quantize

    out = work / f"sf-{method}-{count}"
    out.mkdir()
    result = quantize(
        work / "fp32.onnx",
        QuantizeConfig(calibration=method, num_samples=count),
        StepContext(workdir=out, calibration=work / "calibration.npz"),
    )
    return {"model": str(result.model), "samples": result.stats["calibration_samples"]}


def agreement(model: Path, work: Path) -> dict:
    """(child process, not measured) Top-1 agreement of `model` with FP32 on the eval split."""
    from squeezeflow import data
    from squeezeflow.onnx import sessions

    inputs = data.inputs_of(data.load(work / "eval.npz", "eval"))
    fp32 = sessions.run(sessions.session(work / "fp32.onnx"), inputs, 32).argmax(1)
    int8 = sessions.run(sessions.session(model), inputs, 32).argmax(1)
    return {"agreement": round(float((fp32 == int8).mean()), 4)}


def ort_run(method: str, count: int, work: Path) -> dict:
    """(child process) ONNX Runtime's calibrator, every sample in one collect_data call, on the pre-processed model."""
    from squeezeflow import data
    from squeezeflow.onnx import sessions
    from squeezeflow.quantization import calibration

    sessions.ort_tools_without_torch()  # as squeezeflow's runs: the difference is the calibrator's alone
    from onnxruntime.quantization import CalibrationMethod, quant_pre_process
    from onnxruntime.quantization.calibrate import create_calibrator

    prepared = work / f"ort-{method}-{count}.onnx"
    quant_pre_process(str(work / "fp32.onnx"), str(prepared))
    inputs = data.inputs_of(
        data.load(
            work / "calibration.npz",
            "calibration",
            rows=calibration.pick(data.samples_in(work / "calibration.npz", "calibration"), count, 0),
        )
    )
    calibrator = create_calibrator(
        prepared,
        augmented_model_path=str(work / f"ort-aug-{method}-{count}.onnx"),
        calibrate_method=getattr(CalibrationMethod, calibration.METHODS[method]),
        extra_options={"num_bins": 2048},
    )
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator.collect_data(calibration.reader(inputs, 32 if method == "minmax" else 1))
        calibrator.compute_data()
    return {"samples": count}


def child(argv: list[str]) -> int:
    """--setup MODEL WORK N | --run squeezeflow|ort METHOD N WORK | --agreement MODEL WORK: one process."""
    if argv[0] == "--setup":
        setup(argv[1], Path(argv[2]), int(argv[3]))
        return 0
    if argv[0] == "--agreement":
        print("RESULT " + json.dumps(agreement(Path(argv[1]), Path(argv[2]))))
        return 0
    impl, method, count, work = argv[1], argv[2], int(argv[3]), Path(argv[4])
    print("RESULT " + json.dumps((squeezeflow_run if impl == "squeezeflow" else ort_run)(method, count, work)))
    return 0


def _result(output: str) -> dict:
    return json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("--setup", "--run", "--agreement"):
        return child(argv)
    args = arguments(__doc__, "calibration", argv)
    plan = SMOKE if args.smoke else FULL
    report = header(
        f"{plan['model']}: static INT8 QDQ per-channel; each run its own process, peak RSS from wait4; "
        "agreement: top-1 with FP32 on the eval split"
    )
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))  # no empty entry
    env = {**os.environ, "PYTHONPATH": path}
    with tempfile.TemporaryDirectory(prefix="sf-bench-calibration-") as tmp:
        work = Path(tmp)
        setup_row = run_measured(
            [sys.executable, __file__, "--setup", plan["model"], str(work), str(max(plan["counts"]))], work, env
        )
        libraries = run_measured([sys.executable, "-c", LIBRARIES], work, env)["peak_rss_bytes"]
        rows: dict[str, dict] = {}
        for impl, counts in (("squeezeflow", plan["counts"]), ("ort", plan["ort_counts"])):
            for method in (m for m in plan["methods"] if impl == "squeezeflow" or m in ORT_METHODS):
                for count in counts:
                    measured = run_measured(
                        [sys.executable, __file__, "--run", impl, method, str(count), str(work)],
                        work,
                        env,
                        keep_output=True,
                    )
                    result = _result(measured.pop("output"))
                    if "model" in result:
                        result.update(
                            _result(
                                run_measured(
                                    [sys.executable, __file__, "--agreement", result.pop("model"), str(work)],
                                    work,
                                    env,
                                    keep_output=True,
                                )["output"]
                            )
                        )
                    rows[f"{impl} {method} {count}"] = {
                        **measured,
                        **result,
                        "above_libraries_mb": round((measured["peak_rss_bytes"] - libraries) / 1e6, 1),
                    }
                    print(f"{impl} {method} {count}: {rows[f'{impl} {method} {count}']}", flush=True)
        fp32_bytes = (work / "fp32.onnx").stat().st_size
    for method in plan["methods"]:  # how memory grows with samples: the largest count against the smallest
        ours = [rows[f"squeezeflow {method} {c}"]["peak_rss_bytes"] for c in plan["counts"]]
        theirs = (
            [rows[f"ort {method} {c}"]["peak_rss_bytes"] for c in plan["ort_counts"]]
            if method in ORT_METHODS
            else [None]
        )
        report.setdefault("growth", {})[method] = {
            f"squeezeflow_{plan['counts'][-1]}_over_{plan['counts'][0]}": round(ours[-1] / ours[0], 3),
            f"ort_{plan['ort_counts'][-1]}_over_{plan['ort_counts'][0]}": round(theirs[-1] / theirs[0], 3)
            if theirs[0]
            else None,
            "ort_mb_per_sample": round(
                (theirs[-1] - theirs[0]) / (plan["ort_counts"][-1] - plan["ort_counts"][0]) / 1e6, 1
            )
            if len(theirs) > 1
            else None,
        }
    report["models"][plan["model"]] = {
        "fp32_bytes": fp32_bytes,
        "libraries_rss_bytes": libraries,
        "setup": setup_row,
        "runs": rows,
    }
    write(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
