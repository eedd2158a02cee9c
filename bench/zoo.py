"""The zoo: every pipeline of pipelines/ whose source is a real pretrained model, from an empty registry to a promoted
version.

Each zoo pipeline (params.yaml with `demo.pretrained`) is copied into a temporary git + DVC
repository with its own sqlite registry; `squeezeflow demo` writes its real inputs, registers
the pretrained model in MLflow's default pt2 format and runs `dvc repro` with the pipeline's own
recipes and budgets. Per model: the FP32 metric, each candidate's metric with its interval, speedup
at batch 1 (the pipeline's target) and at batch 8 (timed again here, interleaved), size ratio,
verdict, the promoted version, and the wall time of each stage (SQUEEZEFLOW_TIMINGS). Writes
bench/results/zoo.json.

    python bench/zoo.py                      # every zoo pipeline
    python bench/zoo.py efficientnet-lite1   # some of them
    python bench/zoo.py --smoke              # efficientnet-lite1, fewer crops, one recipe (what the tests run)

Beside the gate's task metric, each model's own read-out of its outputs, candidate against FP32 on
the eval set: the recognizer's decoded words (greedy CTC), the detector's text pixels (region
score > 0.4, easyocr's low_text), ONet's face decision (probability > 0.7, MTCNN's third
threshold), the classifier's top-1 and the encoder's nearest neighbour are in the task metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import arguments, header, init_repo, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PIPELINES = tuple(
    sorted(
        p.parent.name
        for p in (ROOT / "pipelines").glob("*/params.yaml")
        if (yaml.safe_load(p.read_text()).get("demo") or {}).get("pretrained")
    )
)
SMOKE_COUNTS = {"eval": 48, "calibration": 32, "train": 32}
SMOKE_MODEL = "efficientnet-lite1"  # needs only the [zoo] extra, which the suite installs
BATCH = 8


def run_pipeline(name: str, work: Path, smoke: bool) -> dict:
    """Copy pipelines/NAME into `work`, run `squeezeflow demo` there, and collect the figures."""
    from squeezeflow.demo import pretrained

    shutil.copy(ROOT / "pipelines" / name / "dvc.yaml", work)
    params = yaml.safe_load((ROOT / "pipelines" / name / "params.yaml").read_text())
    if smoke:
        params["recipes"] = dict(list(params["recipes"].items())[:1])
        params["target"].update(repeats=20, max_seconds=3)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    timings = work / "timings.jsonl"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "SQUEEZEFLOW_TIMINGS": str(timings),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    init_repo(work, env)
    if smoke:  # fewer crops: the demo keeps data files that exist
        files = {role: work / params["data"][role] for role in ("eval", "calibration", "train")}
        pretrained.write_data(params["demo"]["pretrained"], files, params.get("seed", 0), SMOKE_COUNTS)
    proc = subprocess.run([str(BIN / "squeezeflow"), "demo"], cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 1):  # 1: the gate failed, which is a result too
        raise SystemExit(
            f"{name}: squeezeflow demo exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    verdict = json.loads((work / "reports" / "gate.json").read_text())
    promoted = work / "reports" / "promotion.json"
    promotion = json.loads(promoted.read_text()) if proc.returncode == 0 and promoted.is_file() else {"model_uri": None}
    stage_times = {}
    for line in timings.read_text().splitlines():
        entry = json.loads(line)
        stage_times[entry["command"]] = round(entry["wall_s"], 2)
    files = {
        "fp32": work / "artifacts/source/model.onnx",
        **{r: work / "artifacts/candidates" / r / "model.onnx" for r in params["recipes"]},
    }
    return {
        "verdict": verdict,
        "promotion": promotion,
        "stages_wall_s": stage_times,
        "batch8": batch_speedups(work, files, params),
        "readout": readouts(params["demo"]["pretrained"], work, files, params),
    }


def readouts(model: str, work: Path, files: dict[str, Path], params: dict) -> dict[str, dict]:
    """Per candidate, how often the model's own read-out of its outputs matches FP32's (see the module doc); {} for the
    other models.
    """
    import numpy as np

    from squeezeflow import data
    from squeezeflow.onnx import sessions

    if model not in ("easyocr-crnn", "easyocr-craft", "mtcnn-onet"):
        return {}
    feed = data.inputs_of(data.load(work / params["data"]["eval"], "eval"))
    outputs = {name: list(sessions.run_outputs(sessions.session(path), feed).values()) for name, path in files.items()}
    result = {}
    for name, outs in outputs.items():
        base = outputs["fp32"]
        if model == "easyocr-crnn":
            from squeezeflow.demo.pretrained import ocr

            result[name] = {
                "words_read_as_fp32": float(np.mean([a == b for a, b in zip(ocr.read(outs[0]), ocr.read(base[0]))]))
            }
        elif model == "easyocr-craft":
            mine, ref = outs[0][..., 0] > 0.4, base[0][..., 0] > 0.4
            result[name] = {"text_pixel_iou": float((mine & ref).sum() / max((mine | ref).sum(), 1))}
        else:
            result[name] = {
                "face_decision_agreement": float(np.mean((outs[2][:, 1] > 0.7) == (base[2][:, 1] > 0.7))),
                "faces_fp32": int((base[2][:, 1] > 0.7).sum()),
            }
    return result


def batch_speedups(work: Path, files: dict[str, Path], params: dict) -> dict[str, float]:
    """Each candidate's speedup over FP32 at batch 8, one thread, timed interleaved (median of the rounds' ratios)."""
    from squeezeflow import data
    from squeezeflow.evaluate import latency
    from squeezeflow.onnx import sessions

    arrays = data.load(work / params["data"]["eval"], "eval")
    feed = {k: v[:BATCH] for k, v in data.inputs_of(arrays).items()}
    opened = {name: sessions.session(path) for name, path in files.items()}
    _, stats = latency.measure_until(
        opened, feed, "fp32", warmup=3, min_repeats=20, ci_width=0.1, max_seconds=10, round_size=5, progress=False
    )
    return {r: round(float(stats[r]["speedup"]), 3) for r in files if r != "fp32"}


def summary(result: dict) -> dict:
    """The figures of one model: FP32 metric, per candidate metric/interval, speedups, size ratio, status."""
    from squeezeflow.evaluate.tasks import PRIMARY

    verdict = result["verdict"]
    metric, versus = PRIMARY[verdict["task"]]
    rows = {}
    for name, cand in verdict["candidates"].items():
        m = cand["metrics"]
        rows[name] = {
            metric: m.get(metric),
            versus: m.get(versus),
            f"{versus}_ci": [m.get(f"{versus}_ci_low"), m.get(f"{versus}_ci_high")],
            "agreement": m.get("agreement"),
            "speedup_batch1": m["speedup"],
            "speedup_batch1_ci": [m["speedup_ci_low"], m["speedup_ci_high"]],
            "speedup_batch8": result["batch8"].get(name),
            "size_ratio": m["compression_ratio"],
            "status": cand["status"],
            "missed": [v["budget"] for v in cand["violations"]],
            **({"mean_rel_error": m["mean_rel_error"]} if "mean_rel_error" in m else {}),
            **result["readout"].get(name, {}),
        }
    return {
        "task": verdict["task"],
        f"fp32_{metric}": verdict["baseline"].get(metric),
        "budgets": verdict["budgets"],
        "candidates": rows,
        "selected": verdict["selected"],
        "verdict": verdict["verdict"],
        "promoted": result["promotion"]["model_uri"],
        "stages_wall_s": result["stages_wall_s"],
        **({"fp32_readout": result["readout"]["fp32"]} if "fp32" in result["readout"] else {}),
    }


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "zoo", argv, PIPELINES)
    names = [SMOKE_MODEL] if args.smoke and args.models == list(PIPELINES) else args.models
    report = header(
        "each zoo pipeline of pipelines/ (a real pretrained model, real inputs) in a temporary git+DVC "
        "repository with a sqlite registry: "
        "`squeezeflow demo` (register in pt2, dvc repro with the pipeline's recipes and budgets); "
        "batch-1 figures are the gate's "
        f"(interleaved, 95% intervals), batch {BATCH} timed again here, 1 thread"
        + ("; SMOKE: fewer crops, first recipe" if args.smoke else "")
    )
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"sf-zoo-{name}-") as tmp:
            report["models"][name] = summary(run_pipeline(name, Path(tmp), args.smoke))
        print(json.dumps(report["models"][name], indent=1)[:2000])
    write(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
