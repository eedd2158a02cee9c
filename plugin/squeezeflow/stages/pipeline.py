"""The stages in dvc.yaml's order, in this process: what `dvc repro` runs, for tests, benchmarks and notebooks.

`run(params, until="gate")` pulls the source, checks the data, computes the teachers' soft labels,
searches (when params.yaml has `search:`), compresses every recipe, evaluates the baseline and
every recipe, gates, and promotes, stopping after the stage `until`. It caches nothing and skips
nothing that is out of date: DVC does that. Paths are relative to the current folder, as in a
pipeline folder.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from squeezeflow import data
from squeezeflow.config import Params
from squeezeflow.errors import ConfigError
from squeezeflow.stages import BASELINE
from squeezeflow.stages.check_data import check_data
from squeezeflow.stages.compress import compress
from squeezeflow.stages.evaluate import evaluate
from squeezeflow.stages.gate import gate
from squeezeflow.stages.promote import promote
from squeezeflow.stages.pull import pull
from squeezeflow.stages.search import search
from squeezeflow.stages.soft_labels import soft_labels

STAGES = ("pull", "check-data", "soft-labels", "search", "compress", "evaluate", "gate", "promote")


def run(
    params: Params,
    until: str = "gate",
    *,
    skip: Collection[str] = (),
    recipes: Iterable[str] | None = None,
    audit: bool = True,
    dry_run: bool = False,
    params_file: Path = Path("params.yaml"),
) -> dict[str, Any]:
    """Run the stages from pull to `until` (one of STAGES) and return each stage's result by name.

    `skip` leaves stages out (e.g. "check-data", whose Great Expectations run a test may not need);
    `recipes` limits compress and evaluate to those recipes (default: all of params.recipes).
    `search` runs only when params.yaml has a `search:` section. `compress` and `evaluate` map each
    recipe (and `baseline`) to the stage's result; `gate` is the verdict; `promote` its record.
    `audit` (the gate's MLflow run of the attempt), `dry_run` (promote) and `params_file` (what gate and
    promote record and compare against git) are passed to those stages.

    Raises:
        ConfigError: `until` or a name in `skip` is not a stage, or a recipe is not in params.recipes.
    """
    unknown = sorted({until, *skip} - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown stage {unknown[0]!r}; the stages are {', '.join(STAGES)}.")
    names = list(params.recipes) if recipes is None else list(recipes)
    missing = [n for n in names if n not in params.recipes]
    if missing:
        raise ConfigError(f"recipe {missing[0]!r} is not in params.recipes ({', '.join(params.recipes)}).")
    wanted = [
        s for s in STAGES[: STAGES.index(until) + 1] if s not in skip and (s != "search" or params.search is not None)
    ]
    data.use_layout(params.data.inputs)
    out: dict[str, Any] = {}
    for stage in wanted:
        if stage == "pull":
            out[stage] = pull(params, params_file=params_file)
        elif stage == "check-data":
            out[stage] = check_data(params)
        elif stage == "soft-labels":
            out[stage] = soft_labels(params)
        elif stage == "search":
            out[stage] = search(params)
        elif stage == "compress":
            out[stage] = {name: compress(params, name) for name in names}
        elif stage == "evaluate":
            out[stage] = {name: evaluate(params, name) for name in [BASELINE, *names]}
        elif stage == "gate":
            out[stage] = gate(params, audit=audit, params_file=params_file)
        else:
            out[stage] = promote(params, dry_run=dry_run, params_file=params_file)
    return out
