"""compress@RECIPE: apply a recipe's steps in order to the source model."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from squeezeflow import artifacts, data, lineage, modelio
from squeezeflow.config import Params, recipe_digest, step_params
from squeezeflow.errors import ConfigError
from squeezeflow.stages import CANDIDATES_DIR, SOURCE_DIR
from squeezeflow.steps import StepContext, get_step


def compress(params: Params, recipe: str, source_dir: Path = SOURCE_DIR, out_root: Path = CANDIDATES_DIR) -> dict[str, Any]:
    """Run recipe `recipe` on the source model and write artifacts/candidates/RECIPE/.

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
        current = artifacts.model_path(source_dir)
        for i, config in enumerate(tqdm(steps, desc=f"compress {recipe}", unit="step")):
            ctx = StepContext(
                workdir=Path(work) / f"{i}-{config.kind}",
                calibration=params.data.calibration,
                train=params.data.train,
                seed=params.seed,
                threads=params.target.threads,
                batch_size=params.target.batch_size,
                providers=params.target.providers,
            )
            ctx.workdir.mkdir()
            result = get_step(config)(current, config, ctx)
            applied.append({**step_params(config), "stats": result.stats})
            current = result.model
        model = artifacts.model_path(tmp)
        shutil.copyfile(current, model)
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
        manifest["sha256"] = data.digest(model)
        artifacts.write_manifest(tmp, manifest)
    return manifest
