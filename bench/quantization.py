"""Quantization benchmark: squeezeflow's modes against plain ONNX Runtime defaults, side by side.

Every variant of a model is timed in one process, interleaved with its FP32 baseline (batch 1,
one thread), so ratios are comparable on a noisy machine. The full run also prices the accuracy
fallback's layer ranking on a 21M-parameter transformer (`fallback_cost`). The matmul models get
every int4 weight algorithm (round to nearest, HQQ, k-quant, GPTQ) and the transformer its
embeddings packed too (GatherBlockQuantized). Writes
bench/results/quantization.json.

    python bench/quantization.py            # all models (several minutes)
    python bench/quantization.py --smoke    # digits CNN only, few repeats (what the tests run)
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import accuracy_and_speed, arguments, header, model_folders, write  # noqa: E402
from squeezeflow import data
from squeezeflow.demo import datasets
from squeezeflow.evaluate.classification import accuracy
from squeezeflow.onnx import sessions
from squeezeflow.steps import StepContext
from squeezeflow.steps.qat import QatConfig, qat
from squeezeflow.steps.quantize import QuantizeConfig, quantize
from squeezeflow.torch import architectures, convert, train

MODELS = {  # name: dataset, family, epochs, squeezeflow variants
    "digits-cnn": ("digits", "cnn", 8, ("static", "dynamic", "auto")),
    "mnist-cnn": ("mnist", "cnn", 4, ("static", "dynamic", "auto")),
    "tweets-transformer": (
        "tweets",
        "transformer",
        3,
        ("static", "dynamic", "auto", "int4", "int4-hqq", "int4-k_quant", "int4-gptq", "int4-embeddings"),
    ),
    "mnist-mlp": ("mnist", "mlp", 5, ("static", "dynamic", "auto", "int4", "int4-hqq", "int4-k_quant", "int4-gptq")),
}
VARIANTS = {  # squeezeflow variant -> its quantize parameters (beside the plain modes)
    "int4-hqq": {"mode": "int4", "int4_algorithm": "hqq"},
    "int4-k_quant": {"mode": "int4", "int4_algorithm": "k_quant"},
    "int4-gptq": {"mode": "int4", "int4_algorithm": "gptq", "num_samples": 128},
    "int4-embeddings": {"mode": "int4", "int4_embeddings": True},
}


def build(name: str, work: Path, epochs: int | None = None):
    """Write the data splits, train the model, export FP32 ONNX; returns (module, onnx, split files)."""
    files = {s: work / f"{s}.npz" for s in ("train", "calibration", "eval")}
    datasets.write_splits(MODELS[name][0], files)
    model, fp32 = train_and_export(name, files, work, epochs)
    return model, fp32, files


def train_and_export(name: str, files: dict, work: Path, epochs: int | None = None):
    """Train the model on files["train"] and export FP32 ONNX to work/fp32.onnx; returns (module, onnx)."""
    _, family, default_epochs, _ = MODELS[name]
    tr = np.load(files["train"])
    inputs = data.inputs_of(dict(tr))
    model = train.fit(
        datasets.for_data(family, inputs, int(tr["labels"].max()) + 1),
        inputs,
        tr["labels"],
        epochs=epochs or default_epochs,
        desc=name,
    )
    fp32 = work / "fp32.onnx"
    convert.export_onnx(model, {k: v[:32] for k, v in inputs.items()}, fp32)
    return model, fp32


def ort_defaults(fp32: Path, files: dict, work: Path) -> dict[str, Path]:
    """What a user does by hand: ORT's pre-processing, then quantize_dynamic / quantize_static with default
    arguments.
    """
    from onnxruntime.quantization import quant_pre_process, quantize_dynamic, quantize_static

    from squeezeflow.quantization import calibration

    pre = work / "ort-pre.onnx"
    quant_pre_process(str(fp32), str(pre))
    out = {"ort-dynamic-default": work / "ort-dynamic.onnx", "ort-static-default": work / "ort-static.onnx"}
    quantize_dynamic(str(pre), str(out["ort-dynamic-default"]))
    cal = data.inputs_of(dict(np.load(files["calibration"])))
    quantize_static(str(pre), str(out["ort-static-default"]), calibration.reader(calibration.subset(cal, 256, 0), 1))
    return out


def squeezeflow_variants(fp32: Path, files: dict, work: Path, modes: tuple[str, ...]) -> tuple[dict[str, Path], dict]:
    out, stats = {}, {}
    for mode in modes:
        folder = work / f"sf-{mode}"
        folder.mkdir()
        result = quantize(
            fp32,
            QuantizeConfig(**VARIANTS.get(mode, {"mode": mode})),
            StepContext(workdir=folder, calibration=files["calibration"]),
        )
        out[f"squeezeflow-{mode}"], stats[f"squeezeflow-{mode}"] = result.model, result.stats
    return out, stats


def measure(fp32: Path, variants: dict[str, Path], files: dict, repeats: int) -> dict:
    """Accuracy, size and interleaved batch-1 single-thread latency of FP32 and every variant."""
    models = {"fp32": fp32, **variants}
    rows = accuracy_and_speed(models, files["eval"], repeats)
    size = {k: Path(p).stat().st_size for k, p in models.items()}
    return {k: {**rows[k], "size_bytes": size[k], "size_ratio": round(size["fp32"] / size[k], 3)} for k in models}


def weight_bytes(path: Path) -> int:
    """Bytes of the weight initializers (what int4 shrinks), excluding graph structure."""
    import onnx

    return sum(len(i.raw_data) or 4 * int(np.prod(i.dims)) for i in onnx.load(str(path)).graph.initializer)


def fragile(model, files: dict, work: Path) -> Path:
    """A function-preserving rescale (hidden unit x1000 in, /1000 out) that breaks per-tensor INT8."""
    import torch

    model = copy.deepcopy(model)
    with torch.no_grad():
        model[-3].weight[0] *= 1000.0
        model[-3].bias[0] *= 1000.0
        model[-1].weight[:, 0] /= 1000.0
    path = work / "fragile.onnx"
    inputs = data.inputs_of(dict(np.load(files["eval"])))
    convert.export_onnx(model, {k: v[:32] for k, v in inputs.items()}, path)
    return path, model


def hard_cases(model, files: dict, work: Path, budget: float = 0.01) -> dict:
    """QAT against static PTQ, and the accuracy fallback, on the fragile CNN (strict budget)."""
    path, fragile_model = fragile(model, files, work)
    ev = dict(np.load(files["eval"]))
    inputs, labels = data.inputs_of(ev), ev[data.LABELS]
    base = accuracy(sessions.run(sessions.session(path), inputs), labels)

    def drop(p):
        return round(base - accuracy(sessions.run(sessions.session(p), inputs), labels), 5)

    results = {"budget_max_accuracy_drop": budget, "fp32_accuracy": round(base, 5)}
    for name, config in {
        "ptq-static-per-tensor": QuantizeConfig(per_channel=False),
        "ptq-static-per-channel": QuantizeConfig(),
    }.items():
        folder = work / name
        folder.mkdir()
        results[name] = {
            "drop": drop(quantize(path, config, StepContext(workdir=folder, calibration=files["calibration"])).model)
        }
    folder = work / "qat"
    folder.mkdir()
    t = time.perf_counter()
    q = qat(fragile_model, QatConfig(epochs=2), StepContext(workdir=folder, train=files["train"]))
    results["qat"] = {"drop": drop(q.model), "seconds": round(time.perf_counter() - t, 1)}
    folder = work / "fallback"
    folder.mkdir()
    fb = quantize(
        path,
        QuantizeConfig(per_channel=False, fallback={"max_accuracy_drop": budget}),
        StepContext(workdir=folder, calibration=files["calibration"]),
    )
    results["fallback"] = {
        "drop": drop(fb.model),
        "kept_float": fb.stats["fallback"]["kept_float"],
        "tried": fb.stats["fallback"]["tried"],
        "met_on_calibration": fb.stats["fallback"]["met"],
    }
    for key in ("ptq-static-per-tensor", "ptq-static-per-channel", "qat", "fallback"):
        results[key]["meets_budget"] = results[key]["drop"] <= budget
    return results


def fallback_cost(work: Path, samples: int = 64) -> dict:
    """What the accuracy fallback's ranking costs on a 21M-parameter transformer (random weights):
    one plain static quantization, the one-pass ranking, and one layer of the exhaustive ranking
    it replaced (that layer alone quantized, the model run over the samples), times the layers."""
    import glob
    import time

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    from squeezeflow.onnx import rewrites
    from squeezeflow.quantization import sensitivity
    from squeezeflow.steps.quantize.config import WEIGHT_OPS

    model = architectures.text_transformer(4000, 32, 2, dim=512, heads=8, layers=6, ff=2048).eval()
    rng = np.random.default_rng(0)
    inputs = {
        "input_ids": rng.integers(0, 4000, (samples, 32), dtype=np.int64),
        "attention_mask": np.ones((samples, 32), dtype=np.int64),
    }
    fp32 = work / "transformer.onnx"
    convert.export_onnx(model, {k: v[:8] for k, v in inputs.items()}, fp32)
    np.savez(work / "transformer-calibration.npz", **inputs)
    step = work / "transformer-static"
    step.mkdir()
    t = time.perf_counter()
    result = quantize(
        fp32,
        QuantizeConfig(mode="static", num_samples=samples),
        StepContext(workdir=step, calibration=work / "transformer-calibration.npz"),
    )
    static_s = time.perf_counter() - t
    prepared, layers = step / "prepared.onnx", rewrites.nodes_of(step / "prepared.onnx", WEIGHT_OPS)
    t = time.perf_counter()
    errors = sensitivity.layer_errors(prepared, result.model, data.batches(inputs, 16), layers)
    ranking_s = time.perf_counter() - t
    t = time.perf_counter()
    alone = step / "only-0.onnx"
    quantize_static(
        str(prepared),
        str(alone),
        None,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        nodes_to_quantize=[layers[0]],
        calibrate_method=CalibrationMethod.MinMax,
        calibration_cache_path=glob.glob(str(step / "ranges-*-minmax-*.json"))[0],
    )
    sessions.run(sessions.session(alone), inputs)
    per_layer_s = time.perf_counter() - t
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "layers": len(layers),
        "samples": samples,
        "static_quantization_s": round(static_s, 2),
        "one_pass_ranking_s": round(ranking_s, 2),
        "ranking_over_static": round(ranking_s / static_s, 3),
        "exhaustive_ranking_estimate_s": round(per_layer_s * len(layers), 1),
        "exhaustive_over_static": round(per_layer_s * len(layers) / static_s, 2),
        "most_sensitive": max(errors, key=errors.get),
    }


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "quantization", argv)
    names = ["digits-cnn"] if args.smoke else list(MODELS)
    report = header(
        f"batch 1, 1 thread, median of {args.repeats} interleaved runs per variant; accuracy on the eval split"
    )
    for name, work in model_folders("sf-bench-", names):
        model, fp32, files = build(name, work, epochs=2 if args.smoke else None)
        variants = ort_defaults(fp32, files, work)
        sf, stats = squeezeflow_variants(fp32, files, work, MODELS[name][3])
        row = {
            "variants": measure(fp32, {**variants, **sf}, files, args.repeats),
            "auto": {k: stats["squeezeflow-auto"][k] for k in ("prior", "chosen", "speedup_vs_fp32")},
        }
        # what int4 shrinks: the weights, beside the file
        for variant in (v for v in sf if v.startswith("squeezeflow-int4")):
            row[f"{variant.removeprefix('squeezeflow-')}_weight_ratio"] = round(
                weight_bytes(fp32) / weight_bytes(sf[variant]), 3
            )
        report["models"][name] = row
        print(name, json.dumps(row["variants"], indent=None)[:2000], flush=True)
        if name == ("digits-cnn" if args.smoke else "mnist-cnn"):
            report["hard_cases"] = {"model": name, **hard_cases(model, files, work)}
            print("hard cases", json.dumps(report["hard_cases"]), flush=True)
    if not args.smoke:
        with tempfile.TemporaryDirectory(prefix="sf-bench-fallback-") as tmp:
            report["fallback_cost"] = fallback_cost(Path(tmp))
        print("fallback cost", json.dumps(report["fallback_cost"]), flush=True)
    write(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
