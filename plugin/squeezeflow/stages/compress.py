"""compress@RECIPE: apply a recipe's steps in order to the source model."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from squeezeflow import artifacts, data, lineage, modelio
from squeezeflow.config import Params, recipe_digest, step_params
from squeezeflow.errors import ConfigError
from squeezeflow.stages import CANDIDATES_DIR, REGISTERED_DIR, SOFT_LABELS_DIR, SOURCE_DIR
from squeezeflow.steps import StepContext, get_step


def compress(params: Params, recipe: str, source_dir: Path = SOURCE_DIR, out_root: Path = CANDIDATES_DIR,
             registered_dir: Path = REGISTERED_DIR, soft_labels_dir: Path = SOFT_LABELS_DIR) -> dict[str, Any]:
    """Run recipe `recipe` on the source model and write artifacts/candidates/RECIPE/.

    Steps also see the other registered models pulled into `registered_dir` and the teachers'
    logits in `soft_labels_dir` (distillation).

    Returns:
        The candidate's manifest (steps with resolved parameters and statistics).

    Raises:
        ConfigError: unknown recipe; ModelError: a step produced an invalid model.
    """
    from tqdm import tqdm

    if recipe not in params.recipes:
        raise ConfigError(f"Unknown recipe {recipe!r}. Recipes in params.yaml: {', '.join(sorted(params.recipes))}.")
    source = artifacts.read_manifest(source_dir)
    steps = params.recipes[recipe]
    out_dir = out_root / recipe
    applied = []
    with tempfile.TemporaryDirectory(prefix=f"squeezeflow-{recipe}-") as work, artifacts.staged(out_dir) as tmp:
        current: Any = artifacts.model_path(source_dir)
        for i, config in enumerate(tqdm(steps, desc=f"compress {recipe}", unit="step")):
            current = _as_format(current, config, source, source_dir, params, Path(work) / f"{i}-export.onnx", recipe)
            ctx = StepContext(
                workdir=Path(work) / f"{i}-{config.kind}",
                calibration=params.data.calibration,
                train=params.data.train,
                seed=params.seed,
                threads=params.target.threads,
                batch_size=params.target.batch_size,
                providers=params.target.providers,
                registered=registered_dir,
                soft_labels=soft_labels_dir,
            )
            ctx.workdir.mkdir()
            result = get_step(config)(current, config, ctx)
            applied.append({**step_params(config), "stats": result.stats})
            current = result.model
        if not isinstance(current, Path):
            current = _export(current, params, Path(work) / "final-export.onnx")
        model = artifacts.model_path(tmp)
        modelio.copy_onnx(current, model)
        manifest = {
            "format": "onnx",
            "files": {"model": artifacts.MODEL_FILE},
            "parent_digest": artifacts.manifest_digest(source_dir),
            "steps": source["steps"] + applied,
            "root": source["root"],
            "recipe": {"name": recipe, "digest": recipe_digest(steps)},
            "inputs": source["inputs"],
        }
        modelio.set_metadata(model, lineage.onnx_props(manifest))
        modelio.load_onnx(model)
        manifest["sha256"] = artifacts.model_digest(model)
        artifacts.write_manifest(tmp, manifest)
    return manifest


def _as_format(current: Any, config: Any, source: dict[str, Any], source_dir: Path, params: Params, export_to: Path, recipe: str) -> Any:
    """Give the step the format it takes: the source's torch model, or an ONNX export of a module."""
    want = type(config).input_format
    if want == "onnx" and not isinstance(current, Path):
        return _export(current, params, export_to)
    if want == "torch" and isinstance(current, Path):
        if current != artifacts.model_path(source_dir):
            raise ConfigError(f"recipes.{recipe}: step '{config.kind}' needs a PyTorch model but follows an ONNX step. Put PyTorch steps before ONNX steps such as quantize.")
        torch_dir = source["files"].get("torch")
        if not torch_dir:
            raise ConfigError(f"recipes.{recipe}: step '{config.kind}' needs a PyTorch model, but the source {source['root']['name']}/{source['root']['version']} is registered as ONNX. Register the PyTorch model (mlflow.pytorch) to use it.")
        return modelio.load_torch(source_dir / torch_dir)
    return current


def _export(module: Any, params: Params, path: Path) -> Path:
    """Export a torch module produced by a step, with eval samples as the example."""
    arrays = data.load(params.data.eval, "eval")
    modelio.export_onnx(module, {k: v[:32] for k, v in data.inputs_of(arrays).items()}, path)
    return path
