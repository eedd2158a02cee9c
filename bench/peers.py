"""Against the peers: what a user would do by hand versus squeezeflow's selected candidate.

For each model of the project's pipelines (the root digits CNN, pipelines/mnist-cnn, mnist-mlp,
tweets-transformer): train it, then build, side by side,
- plain ONNX Runtime: ORT's pre-processing, then quantize_dynamic / quantize_static with default
  arguments (static calibrated on 256 calibration samples);
- PyTorch + torchao: quantize_(model, Int8DynamicActivationInt8WeightConfig()) in eager mode
  (what torchao documents for CPU inference), against the FP32 PyTorch model;
- squeezeflow: the pipeline's own params.yaml (recipes, budgets) run stage by stage against a
  sqlite registry; the gate's selected candidate.
All models are timed interleaved in one process, one thread, at batch 1 and at batch 32 (median of
the repeats); ratios are against FP32 ONNX Runtime, and torchao also against FP32 PyTorch.
Writes bench/results/peers.json.

    python bench/peers.py            # the four pipelines' models (about 20 minutes)
    python bench/peers.py mnist-mlp  # some of them
    python bench/peers.py --smoke    # digits CNN, few repeats (what the tests run)
"""

from __future__ import annotations

import copy
import io
import json
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import arguments, header, workspace, write  # noqa: E402
from quantization import MODELS, ort_defaults, train_and_export  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = {
    "digits-cnn": ROOT,
    "mnist-cnn": ROOT / "pipelines/mnist-cnn",
    "mnist-mlp": ROOT / "pipelines/mnist-mlp",
    "tweets-transformer": ROOT / "pipelines/tweets-transformer",
}
BATCHES = (1, 32)
BATCH32_FEWER = 10


class TorchRunner:
    """A PyTorch module behind the `run(None, feed)` call ONNX Runtime sessions answer, so both are timed by one
    loop.
    """

    def __init__(self, module):
        self.module = module

    def run(self, _outputs, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            return [self.module(*[torch.from_numpy(v) for v in feed.values()]).numpy()]


def torchao_dynamic(model):
    """torchao's dynamic INT8 (int8 activations per token, int8 weights per channel) on nn.Linear layers."""
    import logging

    logging.getLogger("torchao").setLevel(logging.ERROR)
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    q = copy.deepcopy(model).eval()
    quantize_(q, Int8DynamicActivationInt8WeightConfig())
    return q


def torch_bytes(module) -> int:
    import torch

    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def selected_candidate(name: str, model, files: dict, work: Path, max_seconds: float) -> tuple[Path, dict]:
    """Run the pipeline's recipes and budgets on `model` (registered as its source) up to the gate."""
    from squeezeflow import registry
    from squeezeflow.config import load_params, registry_refs
    from squeezeflow.stages import pipeline

    params = yaml.safe_load((PIPELINES[name] / "params.yaml").read_text())
    params["data"].update({k: str(v) for k, v in files.items()})
    params["target"].update(max_seconds=max_seconds)
    inputs = {k: v[:8] for k, v in np.load(files["train"]).items() if k != "labels"}
    source, alias, _ = registry.parse_uri(params["source"]["model_uri"])
    registry.register_torch(
        model, source, tuple(inputs.values()) if len(inputs) > 1 else next(iter(inputs.values())), alias=alias
    )
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    p = load_params(work / "params.yaml")
    if registry_refs(p):
        raise SystemExit(
            f"{name}: its recipes name other registered models ({registry_refs(p)}); this bench "
            "registers only the source."
        )
    verdict = pipeline.run(p, until="gate", skip=("check-data",))["gate"]
    return work / "artifacts/candidates" / verdict["selected"] / "model.onnx", {
        "selected": verdict["selected"],
        "recipes": sorted(p.recipes),
        "budgets": verdict["budgets"],
    }


def compare(runners: dict, sizes: dict[str, int], files: dict, repeats: int) -> dict:
    """Accuracy, size and interleaved latency at each batch size of every runner."""
    from squeezeflow import data
    from squeezeflow.evaluate import latency
    from squeezeflow.evaluate.classification import accuracy
    from squeezeflow.onnx import sessions

    ev = dict(np.load(files["eval"]))
    inputs, labels = data.inputs_of(ev), ev[data.LABELS]
    acc = {k: accuracy(sessions.run(r, inputs), labels) for k, r in runners.items()}
    rows = {
        k: {
            "accuracy": round(acc[k], 5),
            "accuracy_drop_points": round(100 * (acc["onnxruntime-fp32"] - acc[k]), 3),
            "size_bytes": sizes[k],
            "size_ratio": round(sizes["onnxruntime-fp32"] / sizes[k], 3),
        }
        for k in runners
    }
    for batch in BATCHES:
        # torchao's eager int8 matmul takes ~1 s a call at batch 32 on the transformer
        n = repeats if batch == 1 else max(10, repeats // BATCH32_FEWER)
        times = latency.measure(
            runners, next(data.batches(ev, batch)), warmup=max(3, n // 10), repeats=n, progress=False
        )
        p50 = {k: float(np.median(v)) for k, v in times.items()}
        for k in runners:
            rows[k][f"batch{batch}_p50_ms"] = round(p50[k], 4)
            rows[k][f"batch{batch}_speedup"] = round(p50["onnxruntime-fp32"] / p50[k], 3)
        rows["torchao-dynamic"][f"batch{batch}_speedup_vs_torch_fp32"] = round(
            p50["torch-fp32"] / p50["torchao-dynamic"], 3
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "peers", argv, tuple(PIPELINES))
    import torch

    torch.set_num_threads(1)
    from squeezeflow.onnx import sessions

    names = ["digits-cnn"] if args.smoke else args.models
    report = header(
        f"1 thread, batch {' and '.join(map(str, BATCHES))}, median of {args.repeats} interleaved runs "
        "per model at batch 1 and "
        f"{max(10, args.repeats // BATCH32_FEWER)} at batch 32; "
        "accuracy on the eval split; squeezeflow = the gate's selected candidate under the pipeline's "
        "own recipes and budgets"
    )
    for name in names:
        with workspace(f"sf-bench-peers-{name}-", MODELS[name][0]) as (work, files):
            model, fp32 = train_and_export(name, files, work, epochs=2 if args.smoke else None)
            ort = ort_defaults(fp32, files, work)
            selected, info = selected_candidate(name, model, files, work, max_seconds=3 if args.smoke else 15)
            onnx_models = {"onnxruntime-fp32": fp32, **ort, "squeezeflow-selected": selected}
            runners = {k: sessions.session(p, threads=1) for k, p in onnx_models.items()}
            ao = torchao_dynamic(model)
            runners.update({"torch-fp32": TorchRunner(model.eval()), "torchao-dynamic": TorchRunner(ao)})
            sizes = {k: Path(p).stat().st_size for k, p in onnx_models.items()} | {
                "torch-fp32": torch_bytes(model),
                "torchao-dynamic": torch_bytes(ao),
            }
            report["models"][name] = {"squeezeflow": info, "variants": compare(runners, sizes, files, args.repeats)}
        print(name, json.dumps(report["models"][name])[:2500], flush=True)
    write(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
