"""Every gate attempt, passing or not, becomes an MLflow run: params, all metrics, reports."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from squeezeflow import envvars, registry
from squeezeflow.config import Params

OWNER_TAG = "squeezeflow.owner"


def record_attempt(
    params: Params,
    verdict: dict[str, Any],
    files: list[Path],
    run_name: str,
    tags: dict[str, str],
    parent_model_id: str | None = None,
    with_metrics: bool = True,
) -> str:
    """Create an MLflow run holding the params, every candidate's metrics (unless `with_metrics` is
    False: `registry.publish` logs them once the model exists) and the reports.

    The run records which process owns it (`squeezeflow.owner`: host and pid). Runs of the same
    experiment left RUNNING by an owner on this host that no longer exists (a promote killed
    mid-way) are first closed as KILLED, with what they had got done.
    """
    close_abandoned(params.promote.experiment)
    run_id = registry.start_run(params.promote.experiment, run_name, {**tags, OWNER_TAG: owner()})
    flat_params = {
        "source.model_uri": params.source.model_uri,
        "selection.objective": params.selection.objective,
        **{f"budgets.{k}": v for k, v in params.budgets.model_dump().items() if v is not None and k != "inconclusive"},
        **{
            f"targets.{t}.{k}" if params.targets is not None else f"target.{k}": v
            for t, target in params.deployment_targets().items()
            for k, v in target.model_dump(exclude={"budgets"}).items()
        },
        **{f"recipes.{n}": json.dumps([s.kind for s in steps]) for n, steps in params.recipes.items()},
    }
    registry.log_run(run_id, flat_params, attempt_metrics(verdict) if with_metrics else {}, files, parent_model_id)
    return run_id


def attempt_metrics(verdict: dict[str, Any]) -> dict[str, float]:
    """The baseline's and every candidate's numeric metrics, as NAME.METRIC (TARGET.NAME.METRIC for a verdict per
    target).
    """
    if "targets" in verdict:
        return {
            f"{t}.{k}": v
            for t, one in verdict["targets"].items()
            if one.get("candidates")
            for k, v in attempt_metrics(one).items()
        }
    metrics = {f"baseline.{k}": v for k, v in verdict["baseline"].items() if isinstance(v, (int, float))}
    for name, cand in verdict["candidates"].items():
        metrics.update({f"{name}.{k}": v for k, v in cand["metrics"].items() if isinstance(v, (int, float))})
    return metrics


def owner() -> str:
    """HOST:PID of this process (what `close_abandoned` checks)."""

    return f"{socket.gethostname()}:{os.getpid()}"


def close_abandoned(experiment: str, registered: dict[str, str] | None = None) -> list[str]:
    """Mark KILLED every RUNNING squeezeflow run of `experiment` whose owner process on this host is gone.

    Runs owned by another host are left alone (their process cannot be checked from here).
    `registered` maps run ids to the version they are known to have registered (promote passes
    the version it found for its artifact). Returns the run ids closed.
    """

    host = socket.gethostname()
    closed = []
    for run_id, tags in registry.running_runs(experiment, OWNER_TAG):
        owner_host, _, pid = tags.get(OWNER_TAG, "").rpartition(":")
        if owner_host != host or not pid.isdigit() or envvars.process_alive(int(pid)) or int(pid) == os.getpid():
            continue
        done = tags.get("squeezeflow.promotion.version") or (registered or {}).get(run_id)
        registry.set_run_tags(
            run_id,
            {
                "squeezeflow.outcome": f"killed (process {pid} ended without closing the run)"
                + (f" after registering version {done}" if done else "")
            },
        )
        registry.end_run(run_id, "KILLED")
        closed.append(run_id)
    return closed
