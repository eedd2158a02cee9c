"""compress@RECIPE: apply a recipe's steps in order to the source model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from squeezeflow.config import Params
from squeezeflow.data import artifacts
from squeezeflow.errors import ConfigError, ModelError, PipelineError, SqueezeflowError
from squeezeflow.search import results
from squeezeflow.stages import CANDIDATES_DIR, REGISTERED_DIR, SEARCH_DIR, SOFT_LABELS_DIR, SOURCE_DIR
from squeezeflow.steps import recipe as recipes


def compress(
    params: Params,
    recipe: str,
    source_dir: Path = SOURCE_DIR,
    out_root: Path = CANDIDATES_DIR,
    registered_dir: Path = REGISTERED_DIR,
    soft_labels_dir: Path = SOFT_LABELS_DIR,
    search_dir: Path = SEARCH_DIR,
) -> dict[str, Any]:
    """Run recipe `recipe` on the source model and write artifacts/candidates/RECIPE/.

    Steps also see the other registered models pulled into `registered_dir` and the teachers'
    logits in `soft_labels_dir`/RECIPE (distillation). A recipe that starts with the `searched`
    step takes that rank's steps from the search stage's `search_dir`/recipes.yaml.

    A recipe the model cannot take (a step refuses the model with ModelError, crashes, or yields
    an invalid model) does not stop the pipeline: artifacts/candidates/RECIPE/failed.json records
    the step and the one-line reason, evaluate turns it into a `failed` row, and the gate judges
    the other candidates. Problems of the pipeline itself (params, data, the registry, a stage
    that has not run) still raise.

    Returns:
        The candidate's manifest (steps with resolved parameters and statistics), or for a failed
        recipe the failure record (`failed: true`, `step`, `reason`).

    Raises:
        ConfigError, DataError, RegistryUnreachableError: the pipeline, not the recipe, is wrong.
    """
    if recipe not in params.recipes:
        raise ConfigError(f"Unknown recipe {recipe!r}. Recipes in params.yaml: {', '.join(sorted(params.recipes))}.")

    out_dir = out_root / recipe
    at = ["(start)"]  # the step being applied, for the failure record
    try:
        at[0] = "searched" if params.recipes[recipe][0].kind == "searched" else at[0]
        steps = results.expand(params.recipes[recipe], search_dir, recipe)
        # a slot: its teachers' logits come from the search, which ran after the soft-labels stage
        searched = steps is not params.recipes[recipe]
        # this recipe's teachers only: its own DVC dependency
        soft = results.soft_labels_dir(search_dir) if searched else soft_labels_dir / recipe
        return recipes.apply(params, recipe, steps, source_dir, out_dir, registered_dir, soft, at)
    except PipelineError:  # the source folder is missing or corrupt: re-run pull, no candidate is to blame
        raise
    except ModelError as e:  # the model cannot take this recipe
        return artifacts.write_failure(out_dir, recipe, at[0], e)
    except SqueezeflowError:  # params, data, registry, an upstream stage: the user must fix the pipeline
        raise
    except Exception as e:  # noqa: BLE001 - a step that crashes is a failed row too, not the end of the pipeline
        return artifacts.write_failure(out_dir, recipe, at[0], e)
