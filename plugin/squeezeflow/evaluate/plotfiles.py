"""The plot files of the pipeline, as flat records that `dvc plots show` renders with the x/y
declared in dvc.yaml, and that reports/index.html reads back.

- plots/NAME.json (evaluate): `[{call, model, latency_ms}]`, every timed call of the baseline and
  the candidate (template scatter, x call, y latency_ms).
- plots/classes/NAME.json (evaluate): `[{class, baseline, candidate, drop}]`, per-class accuracy
  (classification; an empty list for other tasks).
- reports/pareto.json (gate): `[{name, series, quality, latency_p50_ms, size_mb}]`, the baseline,
  every measured candidate and the budget lines' end points; `quality` is the task's primary
  metric (x latency_p50_ms or size_mb, y quality).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def latency_records(times: dict[str, Any]) -> list[dict[str, Any]]:
    """plots/NAME.json from the latency samples (ms) of each model, in call order."""
    return [
        {"call": i, "model": model, "latency_ms": round(float(v), 5)}
        for model, values in times.items()
        for i, v in enumerate(values)
    ]


def latency_samples(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The samples per model back from plots/NAME.json."""
    out: dict[str, list[float]] = {}
    for r in records:
        out.setdefault(r["model"], []).append(r["latency_ms"])
    return out


def class_records(base: dict[str, float], cand: dict[str, float]) -> list[dict[str, Any]]:
    return [
        {"class": c, "baseline": base[c], "candidate": cand[c], "drop": round(base[c] - cand[c], 6)}
        for c in sorted(base, key=lambda k: (len(k), k))
    ]


def pareto_records(verdict: dict[str, Any], quality: str) -> list[dict[str, Any]]:
    """reports/pareto.json: baseline, measured candidates, and two end points per budget line."""
    base = verdict["baseline"]
    rows = [
        {
            "name": "baseline (fp32)",
            "series": "baseline",
            "quality": base.get(quality),
            "latency_p50_ms": base.get("latency_p50_ms"),
            "size_mb": base.get("size_mb"),
        }
    ]
    for name, cand in verdict["candidates"].items():
        m = cand["metrics"]
        if cand.get("status") != "failed":
            series = "selected" if name == verdict.get("selected") else "pass" if cand["passed"] else "fail"
            rows.append(
                {
                    "name": name,
                    "series": series,
                    "quality": m.get(quality),
                    "latency_p50_ms": m.get("latency_p50_ms"),
                    "size_mb": m.get("size_mb"),
                }
            )
    qualities = [r["quality"] for r in rows if r["quality"] is not None]
    line = budget_lines(verdict, quality)
    for budget, axis, value in line:
        if axis == "quality":  # horizontal: across the measured latencies and sizes
            for x in ("latency_p50_ms", "size_mb"):
                xs = [r[x] for r in rows if r[x] is not None]
                rows += (
                    [
                        {
                            "name": f"budget {budget}",
                            "series": "budget",
                            "quality": value,
                            "latency_p50_ms": None,
                            "size_mb": None,
                            x: end,
                        }
                        for end in (min(xs), max(xs))
                    ]
                    if xs
                    else []
                )
        elif qualities:  # vertical: across the measured qualities
            rows += [
                {
                    "name": f"budget {budget}",
                    "series": "budget",
                    "quality": q,
                    "latency_p50_ms": None,
                    "size_mb": None,
                    axis: value,
                }
                for q in (min(qualities), max(qualities))
            ]
    return rows


def budget_lines(verdict: dict[str, Any], quality: str) -> list[tuple[str, str, float]]:
    """(budget, axis, value) of each budget a Pareto plot can draw: axis `quality` is a horizontal
    line, `latency_p50_ms` or `size_mb` a vertical one."""
    base, budgets = verdict["baseline"], verdict["budgets"]
    out = []
    if "max_accuracy_drop" in budgets and quality == "accuracy" and "accuracy" in base:
        out.append(("max_accuracy_drop", "quality", base["accuracy"] - budgets["max_accuracy_drop"]))
    for budget in ("min_accuracy", "min_cosine"):
        if budget in budgets and quality == budget.removeprefix("min_"):
            out.append((budget, "quality", budgets[budget]))
    if "min_speedup" in budgets and base.get("latency_p50_ms"):
        out.append(("min_speedup", "latency_p50_ms", base["latency_p50_ms"] / budgets["min_speedup"]))
    if "max_size_mb" in budgets:
        out.append(("max_size_mb", "size_mb", budgets["max_size_mb"]))
    return out


def write(path: Path, records: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, sort_keys=True) + "\n")
