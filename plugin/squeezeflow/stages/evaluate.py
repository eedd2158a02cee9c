"""evaluate@NAME: accuracy, agreement, latency, size of a candidate against the baseline."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from squeezeflow import data, runtimes
from squeezeflow.config import Params
from squeezeflow.data import artifacts
from squeezeflow.errors import ConfigError, ModelError
from squeezeflow.evaluate import compare, plotfiles, seal, size
from squeezeflow.onnx import modelfile, sessions
from squeezeflow.stages import BASELINE, CANDIDATES_DIR, METRICS_DIR, PLOTS_DIR, SOURCE_DIR
from squeezeflow.torch import convert, executorch


def evaluate(
    params: Params,
    name: str,
    source_dir: Path = SOURCE_DIR,
    candidates_dir: Path = CANDIDATES_DIR,
    out_dir: Path = METRICS_DIR,
    plots_dir: Path = PLOTS_DIR,
) -> dict[str, float]:
    """Measure `name` (a recipe, or `baseline`) and write metrics/NAME.json and plots/NAME.json.

    Quality is scored by `data.task` (see `evaluate.tasks`): accuracy for classification,
    MAE/RMSE for regression, cosine similarity for embeddings, output error for generic models.

    With `targets`, both are run by each target's runtime (squeezeflow.runtimes) for quality and
    latency, and metrics/NAME.json holds one section per target under `targets` beside the
    target-independent keys (size, weights); a target that cannot run on this machine has
    `skipped` with the reason.

    The baseline and the candidate are timed alternately in this one process, in rounds, until the
    95% interval of `speedup` (geometric mean over rounds of baseline p50 / candidate p50) is as
    narrow as `target.ci_width` or `target.max_seconds` pass. The accuracy drop comes with a
    paired-bootstrap 95% interval and McNemar's exact p-value; per-class accuracies go to the
    plot data with the latency samples.

    Returns:
        The flat metrics of DESIGN.md.

    Raises:
        ConfigError: unknown recipe; DataError: eval data does not fit the model;
        ModelError: a corrupt model or non-finite outputs.
    """

    if name != BASELINE and name not in params.recipes:
        raise ConfigError(
            f"Unknown candidate {name!r}. Use `baseline` or a recipe of params.yaml: "
            f"{', '.join(sorted(params.recipes))}."
        )
    base_dir = Path(source_dir)
    cand_dir = base_dir if name == BASELINE else Path(candidates_dir) / name
    base_manifest = artifacts.read_manifest(base_dir)  # hashes the model: once, even for the baseline
    failure = None if name == BASELINE else artifacts.read_failure(cand_dir)
    measured = {"source_sha256": base_manifest["sha256"], "params_sha256": seal.params_digest(params)}
    if failure:  # compress could not apply the recipe: a failed row for the gate, nothing to measure
        return _write(
            name,
            {"failed": True, "failed_step": failure["step"], "failure": failure["reason"]},
            [],
            [],
            out_dir,
            plots_dir,
            {**measured, "candidate_sha256": None},
        )
    cand_manifest = base_manifest if cand_dir == base_dir else artifacts.read_manifest(cand_dir)
    measured["candidate_sha256"] = cand_manifest["sha256"]
    model_files = {BASELINE: artifacts.model_path(base_dir), name: artifacts.model_path(cand_dir)}
    cand_size = size.sizes(model_files[name])
    common: dict[str, Any] = {
        "size_mb": cand_size["size_mb"],
        "size_gzip_mb": cand_size["size_gzip_mb"],
        # bytes only: the FP32 gzip size is measured once, in the baseline row
        "compression_ratio": size.file_bytes(model_files[BASELINE]) / cand_size["bytes"],
        **(cand_manifest.get("weights") or modelfile.weight_stats(model_files[name])),  # in the manifest since 2026-12
        "steps": len(cand_manifest["steps"]),
    }
    if params.targets is None:  # one target: the flat metrics of DESIGN.md
        metrics, times, classes = compare.compare(
            model_files, name, params.target, params.data.eval, params.data.task, params.seed
        )
        return _write(
            name,
            _rounded({**metrics, **common}),
            plotfiles.latency_records(times),
            classes,
            out_dir,
            plots_dir,
            measured,
        )
    per_target, records, class_rows = {}, [], []
    # the source's input specs: what a .pte program does not name
    inputs = sessions.session(model_files[BASELINE]).get_inputs()
    with tempfile.TemporaryDirectory(prefix="squeezeflow-evaluate-") as work:
        for target_name, target in params.targets.items():
            why = runtimes.skipped(target)
            if why:
                print(f"evaluate {name}: target {target_name} skipped: {why}", file=sys.stderr)
                per_target[target_name] = {"skipped": why, **runtimes.describe(target)}
                continue
            # from the manifest: what DVC tracks for this stage
            scope = cand_manifest.get("recipe", {}).get("targets") if name != BASELINE else None
            wrong = f"recipe {name} is for {', '.join(scope)}" if scope and target_name not in scope else None
            wrong = wrong or (None if name == BASELINE else runtimes.applies(target, model_files[name]))
            if wrong:  # an ONNX candidate on executorch, a .pte program on an ONNX runtime
                per_target[target_name] = {"not_applicable": wrong}
                continue
            try:
                files = (
                    model_files
                    if target.runtime != "executorch"
                    else {**model_files, BASELINE: _source_program(params, base_dir, base_manifest, Path(work))}
                )
            # ExecuTorch cannot lower this source: nothing to measure on the target, and the gate says why
            except ModelError as e:
                print(f"evaluate {name}: target {target_name} skipped: {e}", file=sys.stderr)
                per_target[target_name] = {
                    "skipped": f"the source has no ExecuTorch program: {e}",
                    **runtimes.describe(target),
                }
                continue
            metrics, times, classes = compare.compare(
                files, name, target, params.data.eval, params.data.task, params.seed, inputs
            )
            per_target[target_name] = _rounded(
                {**metrics, **runtimes.describe(target), "threads": target.threads, "batch_size": target.batch_size}
            )
            records += plotfiles.latency_records({f"{k}@{target_name}": v for k, v in times.items()})
            class_rows = class_rows or classes
    return _write(name, {**_rounded(common), "targets": per_target}, records, class_rows, out_dir, plots_dir, measured)


def _source_program(params: Params, source_dir: Path, manifest: dict[str, Any], work: Path) -> Path:
    """The PyTorch source lowered to an FP32 ExecuTorch program: the baseline of an executorch target (built once per
    evaluate run).

    Raises:
        ConfigError: the source is registered as ONNX, so there is no PyTorch model to lower.
    """

    out = work / f"baseline{executorch.SUFFIX}"
    if out.is_file():
        return out
    torch_dir = manifest["files"].get("torch")
    if not torch_dir:
        raise ConfigError(
            "an executorch target needs a PyTorch source to lower, but "
            f"{manifest['root']['name']}/{manifest['root']['version']} is registered as ONNX. "
            "Register the PyTorch model (mlflow.pytorch), or remove the executorch target."
        )
    example = data.inputs_of(data.head(params.data.eval, "eval", 4))
    executorch.lower(convert.load_torch(source_dir / torch_dir), example, out)
    return out


def _rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}


def _write(
    name: str,
    metrics: dict[str, Any],
    latency: list[dict[str, Any]],
    classes: list[dict[str, Any]],
    out_dir: Path,
    plots_dir: Path,
    measured: dict[str, Any],
) -> dict[str, Any]:
    """metrics/NAME.json with what it measured (`evaluate.seal`), and the plot files (see
    squeezeflow.evaluate.plotfiles).
    """
    plotfiles.write(plots_dir / f"{name}.json", latency)
    plotfiles.write(plots_dir / "classes" / f"{name}.json", classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(seal.stamp(metrics, **measured), indent=2, sort_keys=True) + "\n")
    return metrics
