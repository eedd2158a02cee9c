"""Budgets checked over the candidates table (with their intervals), and the selection."""

from __future__ import annotations

import math
from typing import Any

from squeezeflow.config import BUDGET_INTERVALS, BUDGET_METRICS, METRIC_DIRECTIONS, Budgets
from squeezeflow.errors import ConfigError


def violations(
    rows: dict[str, dict[str, float]], budgets: Budgets
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Each candidate's missed and inconclusive budgets.

    A metric measured with a 95% interval is judged on both bounds: a budget that even the
    optimistic bound misses is missed; one that only the conservative bound misses (the budget
    lies inside the interval) is inconclusive. Other metrics are judged on their value.

    Args:
        rows: candidate name -> metrics.
        budgets: the thresholds; unset ones are not checked.

    Returns:
        (missed, inconclusive): candidate -> list of {budget, metric, measured, threshold, by,
        bound, interval} (empty lists when it passes).
    """
    active = {k: v for k, v in budgets.model_dump().items() if k in BUDGET_METRICS and v is not None}
    missed: dict[str, list[dict[str, Any]]] = {name: [] for name in rows}
    unsure: dict[str, list[dict[str, Any]]] = {name: [] for name in rows}
    if not active or not rows:
        return missed, unsure
    checks = []  # (budget, column, bound, threshold, kind)
    for budget, threshold in active.items():
        metric, bound = BUDGET_METRICS[budget]
        interval = BUDGET_INTERVALS.get(metric)
        if interval and all(k in r for r in rows.values() for k in interval):
            low, high = interval
            conservative, optimistic = (high, low) if bound == "max" else (low, high)
            checks += [
                (budget, optimistic, bound, threshold, "missed"),
                (budget, conservative, bound, threshold, "inconclusive"),
            ]
        else:
            checks.append((budget, metric, bound, threshold, "missed"))
    failed = _validate(rows, checks)
    for (budget, column, bound, threshold, kind), names in zip(checks, failed):
        metric = BUDGET_METRICS[budget][0]
        for name in names:
            if kind == "inconclusive" and any(v["budget"] == budget for v in missed[name]):
                continue
            measured = float(rows[name][metric])
            interval = (
                [rows[name][k] for k in BUDGET_INTERVALS[metric]]
                if metric in BUDGET_INTERVALS and column != metric
                else None
            )
            entry = {
                "budget": budget,
                "metric": metric,
                "measured": measured,
                "threshold": threshold,
                "by": abs(measured - threshold),
                "bound": bound,
                "interval": interval,
            }
            (missed if kind == "missed" else unsure)[name].append(entry)
    return missed, unsure


def _validate(rows: dict[str, dict[str, float]], checks: list[tuple]) -> list[list[str]]:
    """Per check, the candidates that fail it: a value beyond the threshold, missing, or NaN.

    Plain comparisons: a Great Expectations suite here (as before) cost 4.9 s of imports per gate
    run for a dozen numbers (bench/overhead.py); GX checks the data files in check-data.

    Raises:
        ConfigError: no candidate has the budget's metric (a budget of another task).
    """

    out: list[list[str]] = []
    for budget, column, bound, threshold, _ in checks:
        if not any(column in r for r in rows.values()):
            raise ConfigError(
                f"budget {budget} could not be checked: no candidate has the metric {column!r}. "
                "Remove the budget or use one of its task."
            )
        within = (lambda v, t=threshold: v <= t) if bound == "max" else (lambda v, t=threshold: v >= t)
        out.append(
            [
                name
                for name, r in rows.items()
                if not (isinstance(r.get(column), (int, float)) and not math.isnan(r[column]) and within(r[column]))
            ]
        )
    return out


def select(
    rows: dict[str, dict[str, Any]], passing: list[str], objective: str, tie_break: str | None
) -> tuple[str | None, str]:
    """The best passing candidate by `objective` and the rule that chose it.

    Candidates whose 95% interval of the objective overlaps the best one's are tied (the
    measurement cannot order them); `tie_break` chooses among them, then the name.
    """
    if not passing:
        return None, ""

    def rank(metric: str):
        sign = -1 if METRIC_DIRECTIONS[metric] else 1
        return lambda n: (sign * rows[n].get(metric, float("inf") * sign), n)

    best = min(passing, key=rank(objective))
    low, high = BUDGET_INTERVALS.get(objective, (None, None))
    if not tie_break or tie_break == objective or not all(low in rows[n] and high in rows[n] for n in passing):
        return best, f"best {objective}"
    tied = [n for n in passing if rows[n][low] <= rows[best][high] and rows[best][low] <= rows[n][high]]
    if len(tied) == 1:
        return best, f"best {objective}"
    chosen = min(tied, key=rank(tie_break))
    return chosen, f"{objective} tied within the 95% intervals of {', '.join(sorted(tied))}; {tie_break} chose"


def decide(
    baseline: dict[str, float],
    rows: dict[str, dict[str, float]],
    budgets: Budgets,
    objective: str,
    task: str = "classification",
    tie_break: str | None = None,
) -> dict[str, Any]:
    """The verdict: per-candidate budget checks and the best passing candidate by `objective`.

    A row with `failed` (compress could not apply its recipe) has status `failed` and is never
    selected; the others are judged as usual.
    """
    failed = {name for name, row in rows.items() if row.get("failed")}
    missed, unsure = violations({n: r for n, r in rows.items() if n not in failed}, budgets)
    missed.update({n: [] for n in failed})
    unsure.update({n: [] for n in failed})
    warn = budgets.inconclusive == "warn"
    passing = [name for name in rows if name not in failed and not missed[name] and (warn or not unsure[name])]
    selected, rule = select(rows, passing, objective, tie_break)
    return {
        "verdict": "pass" if selected else "fail",
        "task": task,
        "selected": selected,
        "objective": objective,
        "selection_rule": rule,
        "budgets": {k: v for k, v in budgets.model_dump().items() if v is not None and k in BUDGET_METRICS},
        "inconclusive_policy": budgets.inconclusive,
        "baseline": baseline,
        "candidates": {
            name: {
                "passed": name in passing,
                "status": "failed" if name in failed else _status(name in passing, missed[name], unsure[name]),
                "violations": missed[name],
                "inconclusive": unsure[name],
                "metrics": rows[name],
            }
            for name in sorted(rows)
        },
    }


def _status(passed: bool, missed: list, unsure: list) -> str:
    """pass, pass-warning (inconclusive, policy warn), inconclusive (policy fail) or fail."""
    if missed:
        return "fail"
    if unsure:
        return "pass-warning" if passed else "inconclusive"
    return "pass"
