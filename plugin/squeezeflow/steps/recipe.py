"""Run a recipe's steps in order on the source model and write the candidate folder.

Shared by the compress stage (one recipe of params.yaml) and the search (one recipe per trial).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from squeezeflow import data
from squeezeflow.config import Params, recipe_digest, step_params
from squeezeflow.data import artifacts
from squeezeflow.errors import ConfigError, ModelError
from squeezeflow.evaluate import promises
from squeezeflow.onnx import modelfile
from squeezeflow.registry import lineage
from squeezeflow.steps import StepConfig, StepContext, get_step
from squeezeflow.torch import convert, executorch


def apply(
    params: Params,
    recipe: str,
    steps: list[StepConfig],
    source_dir: Path,
    out_dir: Path,
    registered_dir: Path | None,
    soft_labels_dir: Path | None,
    at: list[str],
    calibration: Path | None = None,
    train: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Apply `steps` to the model in `source_dir` and write `out_dir` (model, manifest with lineage).

    `calibration` and `train` replace params.yaml's data files (the search's splits); `at[0]`
    names the step being applied, for the caller's failure record.

    Returns:
        The candidate's manifest.
    """
    from tqdm import tqdm

    source = artifacts.read_manifest(source_dir)
    applied = []
    with tempfile.TemporaryDirectory(prefix=f"squeezeflow-{recipe}-") as work, artifacts.staged(out_dir) as tmp:
        current: Any = artifacts.model_path(source_dir)
        for i, config in enumerate(tqdm(steps, desc=f"compress {recipe}", unit="step", disable=not progress)):
            at[0] = config.kind
            current = _as_format(current, config, source, source_dir, params, Path(work) / f"{i}-export.onnx", recipe)
            ctx = StepContext(
                workdir=Path(work) / f"{i}-{config.kind}",
                calibration=calibration or params.data.calibration,
                train=train or params.data.train,
                seed=params.seed,
                threads=params.target.threads,
                batch_size=params.target.batch_size,
                providers=params.target.providers,
                registered=registered_dir,
                soft_labels=soft_labels_dir,
                task=params.data.task,
            )
            ctx.workdir.mkdir()
            result = get_step(config)(current, config, ctx)
            applied.append({**step_params(config), "stats": result.stats})
            current = result.model
        at[0] = "export"
        if not isinstance(current, Path):
            current = _export(current, params, Path(work) / "final-export.onnx")
        manifest = {
            "format": "onnx",
            "files": {"model": artifacts.MODEL_FILE},
            "parent_digest": artifacts.manifest_digest(source_dir),
            "steps": source["steps"] + applied,
            "root": source["root"],
            "recipe": {
                "name": recipe,
                "digest": recipe_digest(steps),
                **({"targets": list(params.recipe_targets(recipe))} if params.recipe_targets(recipe) else {}),
            },
            "inputs": source["inputs"],
            "signature": source.get("signature"),
        }
        # an ExecuTorch program: for executorch targets (its lineage is this manifest; a .pte has no metadata fields)
        if executorch.is_program(current):
            model = tmp / artifacts.PROGRAM_FILE
            shutil.copyfile(current, model)
            manifest.update(
                format="executorch",
                files={"model": artifacts.PROGRAM_FILE},
                warnings=[],
                sha256=artifacts.model_digest(model),
                weights={"params": applied[-1]["stats"].get("params")},
            )
            artifacts.write_manifest(tmp, manifest)
            return manifest
        model = artifacts.model_path(tmp)
        modelfile.copy_onnx(current, model)
        modelfile.set_metadata(model, lineage.onnx_props(manifest))
        modelfile.load_onnx(model)
        manifest["warnings"] = promises.warnings(
            steps, [a["stats"] for a in applied], artifacts.model_path(source_dir), model
        )
        manifest["sha256"] = artifacts.model_digest(model)
        manifest["weights"] = modelfile.weight_stats(model)  # evaluate reads them here: it need not import onnx
        artifacts.write_manifest(tmp, manifest)
    return manifest


def _as_format(
    current: Any, config: Any, source: dict[str, Any], source_dir: Path, params: Params, export_to: Path, recipe: str
) -> Any:
    """Give the step the format it takes: the source's torch model, or an ONNX export of a module."""
    want = type(config).input_format
    if executorch.is_program(current):
        raise ConfigError(
            f"recipes.{recipe}: step '{config.kind}' follows the executorch step, which writes the "
            "final program. Make executorch the last step of the recipe."
        )
    if want == "onnx" and not isinstance(current, Path):
        return _export(current, params, export_to)
    if want == "torch" and isinstance(current, Path):
        if current != artifacts.model_path(source_dir):
            raise ConfigError(
                f"recipes.{recipe}: step '{config.kind}' needs a PyTorch model but follows an ONNX "
                "step. Put PyTorch steps before ONNX steps such as quantize."
            )
        torch_dir = source["files"].get("torch")
        if not torch_dir:
            raise ModelError(
                f"recipes.{recipe}: step '{config.kind}' needs a PyTorch model, but the source "
                f"{source['root']['name']}/{source['root']['version']} is registered as ONNX. "
                "Register the PyTorch model (mlflow.pytorch) to use it."
            )
        return convert.load_torch(source_dir / torch_dir)
    return current


def _export(module: Any, params: Params, path: Path) -> Path:
    """Export a torch module produced by a step, with eval samples as the example (their shapes only)."""
    convert.export_onnx(module, data.inputs_of(data.head(params.data.eval, "eval", 32)), path)
    return path
