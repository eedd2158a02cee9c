"""Budgets as a Great Expectations suite over the candidates table, and the selection."""

from __future__ import annotations

import logging
from typing import Any

from squeezeflow.config import BUDGET_METRICS, METRIC_DIRECTIONS, Budgets

CANDIDATE = "candidate"


def violations(rows: dict[str, dict[str, float]], budgets: Budgets) -> dict[str, list[dict[str, Any]]]:
    """Each candidate's missed budgets, as found by Great Expectations.

    Args:
        rows: candidate name -> metrics.
        budgets: the thresholds; unset ones are not checked.

    Returns:
        candidate -> list of {budget, metric, measured, threshold, by} (empty when it passes).
    """
    active = {k: v for k, v in budgets.model_dump().items() if v is not None}
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in rows}
    if not active or not rows:
        return found
    for budget, result in _validate(rows, active).items():
        metric, bound = BUDGET_METRICS[budget]
        threshold = active[budget]
        for hit in result:
            measured = float(hit[metric])
            found[hit[CANDIDATE]].append({
                "budget": budget,
                "metric": metric,
                "measured": measured,
                "threshold": threshold,
                "by": abs(measured - threshold),
                "bound": bound,
            })
    return found


def _validate(rows: dict[str, dict[str, float]], active: dict[str, float]) -> dict[str, list[dict[str, Any]]]:
    """Run one GX expectation per budget; return budget -> unexpected rows."""
    import great_expectations as gx
    import pandas as pd

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    frame = pd.DataFrame([{CANDIDATE: name, **metrics} for name, metrics in rows.items()])
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    batch = ctx.data_sources.add_pandas("squeezeflow").add_dataframe_asset("candidates").add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(gx.ExpectationSuite(name="budgets"))
    for budget, threshold in active.items():
        metric, bound = BUDGET_METRICS[budget]
        limits = {"max_value": threshold} if bound == "max" else {"min_value": threshold}
        suite.add_expectation(gx.expectations.ExpectColumnValuesToBeBetween(column=metric, meta={"budget": budget}, **limits))
    run = ctx.validation_definitions.add(gx.ValidationDefinition(name="gate", data=batch, suite=suite))
    result = run.run(batch_parameters={"dataframe": frame}, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [CANDIDATE]})
    out = {}
    for r in result.results:
        if r.exception_info and r.exception_info.get("raised_exception"):
            from squeezeflow.errors import ConfigError

            raise ConfigError(f"budget {r.expectation_config.meta['budget']} could not be checked: {r.exception_info.get('exception_message')}")
        out[r.expectation_config.meta["budget"]] = list(r.result.get("unexpected_index_list") or [])
    return out


def decide(baseline: dict[str, float], rows: dict[str, dict[str, float]], budgets: Budgets, objective: str) -> dict[str, Any]:
    """The verdict: per-candidate budget checks and the best passing candidate by `objective`."""
    missed = violations(rows, budgets)
    passing = [name for name in rows if not missed[name]]
    larger_is_better = METRIC_DIRECTIONS[objective]
    ranked = sorted(passing, key=lambda n: (-rows[n][objective] if larger_is_better else rows[n][objective], n))
    return {
        "verdict": "pass" if ranked else "fail",
        "selected": ranked[0] if ranked else None,
        "objective": objective,
        "budgets": {k: v for k, v in budgets.model_dump().items() if v is not None},
        "baseline": baseline,
        "candidates": {name: {"passed": not missed[name], "violations": missed[name], "metrics": rows[name]} for name in sorted(rows)},
    }
