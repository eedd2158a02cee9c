"""Every gate attempt, passing or not, becomes an MLflow run: params, all metrics, reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from squeezeflow import registry
from squeezeflow.config import Params


def record_attempt(params: Params, verdict: dict[str, Any], files: list[Path], run_name: str, tags: dict[str, str], parent_model_id: str | None = None,
                   with_metrics: bool = True) -> str:
    """Create an MLflow run holding the params, every candidate's metrics (unless `with_metrics` is
    False: `registry.publish` logs them once the model exists) and the reports."""
    run_id = registry.start_run(params.promote.experiment, run_name, tags)
    flat_params = {
        "source.model_uri": params.source.model_uri,
        "selection.objective": params.selection.objective,
        **{f"budgets.{k}": v for k, v in verdict["budgets"].items()},
        **{f"target.{k}": v for k, v in params.target.model_dump().items()},
        **{f"recipes.{n}": json.dumps([s.kind for s in steps]) for n, steps in params.recipes.items()},
    }
    registry.log_run(run_id, flat_params, attempt_metrics(verdict) if with_metrics else {}, files, parent_model_id)
    return run_id


def attempt_metrics(verdict: dict[str, Any]) -> dict[str, float]:
    """The baseline's and every candidate's numeric metrics, as NAME.METRIC."""
    metrics = {f"baseline.{k}": v for k, v in verdict["baseline"].items() if isinstance(v, (int, float))}
    for name, cand in verdict["candidates"].items():
        metrics.update({f"{name}.{k}": v for k, v in cand["metrics"].items() if isinstance(v, (int, float))})
    return metrics
