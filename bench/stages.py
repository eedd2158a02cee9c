"""Stage memory: peak resident memory of check-data, compress and evaluate against the number of samples.

On the zoo's EfficientNet-Lite1 (ImageNet, 240x240 crops of the bundled photos), registered in
pt2 and pulled as a user's pipeline does, the three stages that read data files run as
`squeezeflow STAGE` processes (peak RSS from wait4) with eval and calibration files of 64, 256
and 1,024 samples (`int8-static`: static QDQ per-channel, minmax, calibrated on every sample of
the file). Beside each stage: the resident memory of a process that only imports that stage's
libraries, and the issue's bound (3 x the FP32 model + those libraries). Writes
bench/results/stages.json.

    python bench/stages.py            # about 15 minutes
    python bench/stages.py --smoke    # the digits CNN at 32 and 128 samples (what the tests run)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).parent))
from common import arguments, header, init_repo, run_measured, write  # noqa: E402

FULL = {"pipeline": "pipelines/efficientnet-lite1", "counts": (64, 256, 1024)}
SMOKE = {"pipeline": ".", "counts": (32, 128)}
RECIPE = "int8-static"
STAGES = {  # stage -> its command, and what it imports before it reads anything (the libraries row)
    "check-data": (
        ["check-data"],
        "import numpy, pandas, onnxruntime, great_expectations, squeezeflow.data.contracts, "
        "squeezeflow.stages.check_data",
    ),
    "compress": (
        ["compress", RECIPE],
        "import numpy, onnx, onnxruntime, onnxruntime.quantization, "
        "squeezeflow.steps.quantize, squeezeflow.stages.compress",
    ),
    "evaluate": (["evaluate", RECIPE], "import numpy, onnx, onnxruntime, squeezeflow.stages.evaluate"),
}


def setup(work: Path, counts: list[int]) -> None:
    """(child process) The data files at every count, the registered source model, `squeezeflow pull`."""
    import numpy as np

    from squeezeflow import config, data
    from squeezeflow.demo import bootstrap, datasets, pretrained

    params = config.load_params(work / "params.yaml")
    full = {role: work / "data" / f"{role}-all.npz" for role in ("eval", "calibration")} | {
        "train": work / params.data.train
    }
    if params.demo.pretrained:
        pretrained.write_data(
            params.demo.pretrained, full, params.seed, {"eval": max(counts), "calibration": max(counts), "train": 8}
        )
    else:
        datasets.write_splits(params.demo.dataset, full, params.seed)
    for role in ("eval", "calibration"):
        for n in counts:
            rows = range(min(n, data.samples_in(full[role], role)))
            np.savez(work / "data" / f"{role}-{n}.npz", **data.load(full[role], role, rows=rows))
    # what registration takes its example from
    shutil.copy(work / "data" / f"eval-{counts[0]}.npz", work / params.data.eval)
    bootstrap.ensure_source(params)


def project(source: Path, work: Path, count: int | None) -> None:
    """dvc.yaml and params.yaml of the pipeline in `work`: one static INT8 recipe on `count` samples."""
    params = yaml.safe_load((source / "params.yaml").read_text())
    params["recipes"] = {
        RECIPE: [
            {"quantize": {"mode": "static", "per_channel": True, "calibration": "minmax", "num_samples": count or 1}}
        ]
    }
    params["data"].update(
        {"eval": f"data/eval-{count}.npz", "calibration": f"data/calibration-{count}.npz"}
        if count
        else {"eval": "data/eval.npz", "calibration": "data/calibration.npz"}
    )
    params["data"]["train"] = "data/train.npz"
    params["target"].update(repeats=20, max_seconds=3)
    shutil.copy(source / "dvc.yaml", work / "dvc.yaml")
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--setup":
        setup(Path(argv[1]), [int(c) for c in argv[2:]])
        return 0
    args = arguments(__doc__, "stages", argv)
    plan = SMOKE if args.smoke else FULL
    source = ROOT / plan["pipeline"]
    model = (yaml.safe_load((source / "params.yaml").read_text()).get("demo") or {}).get("pretrained") or "digits-cnn"
    report = header(
        f"{model}: check-data, compress ({RECIPE}) and evaluate as `squeezeflow STAGE` processes, peak "
        "RSS from wait4, "
        f"at {', '.join(map(str, plan['counts']))} eval and calibration samples"
    )
    with tempfile.TemporaryDirectory(prefix="sf-bench-stages-") as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            # an empty entry would put the current folder on the path
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])),
        }
        project(source, work, None)
        init_repo(work, env)
        setup_row = run_measured([sys.executable, __file__, "--setup", str(work), *map(str, plan["counts"])], work, env)
        run_measured([str(BIN / "squeezeflow"), "pull"], work, env)
        fp32_bytes = (work / "artifacts/source/model.onnx").stat().st_size
        libraries = {
            stage: run_measured([sys.executable, "-c", imports], work, env)["peak_rss_bytes"]
            for stage, (_, imports) in STAGES.items()
        }
        rows: dict[str, dict] = {}
        for count in plan["counts"]:
            project(source, work, count)
            for stage, (cmd, _) in STAGES.items():
                measured = run_measured([str(BIN / "squeezeflow"), *cmd], work, env)
                bound = 3 * fp32_bytes + libraries[stage]
                rows[f"{stage} {count}"] = {
                    **measured,
                    "samples": count,
                    "above_libraries_mb": round((measured["peak_rss_bytes"] - libraries[stage]) / 1e6, 1),
                    "bound_bytes": bound,
                    "within_bound": measured["peak_rss_bytes"] <= bound,
                }
                print(f"{stage} {count}: {rows[f'{stage} {count}']}", flush=True)
    first, last = plan["counts"][0], plan["counts"][-1]
    report["growth"] = {
        stage: round(rows[f"{stage} {last}"]["peak_rss_bytes"] / rows[f"{stage} {first}"]["peak_rss_bytes"], 3)
        for stage in STAGES
    }
    report["models"][model] = {
        "fp32_bytes": fp32_bytes,
        "libraries_rss_bytes": libraries,
        "setup": setup_row,
        "runs": rows,
    }
    write(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
