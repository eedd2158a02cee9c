"""Human-readable renderings of a gate verdict: markdown for PRs, a plain table for terminals."""

from __future__ import annotations

import html
from typing import Any

from squeezeflow.config import BUDGET_INTERVALS, BUDGET_METRICS
from squeezeflow.evaluate.tasks import PRIMARY

SPEED_SIZE = ("latency_p50_ms", "latency_p95_ms", "speedup", "size_mb", "compression_ratio")


def columns(verdict: dict[str, Any]) -> tuple[str, ...]:
    """The table's metric columns: the task's primary metric and its comparison to FP32, every other metric a budget
    judges (the verdict is never on a metric the table hides), then speed and size."""
    primary = PRIMARY[verdict.get("task", "classification")]
    judged = [BUDGET_METRICS[k][0] for k in verdict.get("budgets", {}) if k in BUDGET_METRICS]
    extra = [m for m in dict.fromkeys(judged) if m not in primary and m not in SPEED_SIZE]
    return (*primary, *extra, *SPEED_SIZE)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def cell(metrics: dict[str, Any], key: str) -> str:
    """A metric, with its 95% interval when it has one: `1.31 [1.22, 1.40]`; a candidate's p50 latency with FP32's
    from the same interleaved rounds (the baseline row's comes from its own stage, another run)."""
    if key == "latency_p50_ms" and "baseline_latency_p50_ms" in metrics:
        return f"{_fmt(metrics.get(key, ''))} (FP32 {_fmt(metrics['baseline_latency_p50_ms'])} alongside)"
    low, high = BUDGET_INTERVALS.get(key, (None, None))
    if low in metrics and high in metrics and metrics[low] != metrics[high]:
        return f"{_fmt(metrics.get(key, ''))} [{metrics[low]:.3g}, {metrics[high]:.3g}]"
    return _fmt(metrics.get(key, ""))


def rows(verdict: dict[str, Any]) -> list[list[str]]:
    """Table rows: baseline first, then every candidate with its status; ✗ marks a missed budget, ? an inconclusive
    one.
    """
    failed_cells = {name: {v["metric"] for v in c["violations"]} for name, c in verdict["candidates"].items()}
    unsure_cells = {name: {v["metric"] for v in c.get("inconclusive", [])} for name, c in verdict["candidates"].items()}
    cols = columns(verdict)
    out = [["baseline (fp32)", *(_fmt(verdict["baseline"].get(k, "")) for k in cols), "reference"]]
    for name, cand in verdict["candidates"].items():
        cells = [
            cell(cand["metrics"], k) + (" ✗" if k in failed_cells[name] else " ?" if k in unsure_cells[name] else "")
            for k in cols
        ]
        status = "selected" if name == verdict["selected"] else cand.get("status", "pass" if cand["passed"] else "fail")
        warned = any(n.startswith("WARNING: ") for n in cand.get("notes", []))
        out.append([name, *cells, status + (" (warning: see notes)" if warned else "")])
    return out


def inconclusive_lines(verdict: dict[str, Any]) -> list[str]:
    """One sentence per budget that lies inside a metric's 95% interval."""
    policy = verdict.get("inconclusive_policy", "fail")
    return [
        f"{name}: {v['budget']} inconclusive: the 95% interval of {v['metric']} [{v['interval'][0]:.4g}, "
        f"{v['interval'][1]:.4g}] contains the threshold {v['threshold']:.4g} "
        f"({'warning only' if policy == 'warn' else 'counts as a miss'}; more repeats or a quieter machine "
        "narrow it)"
        for name, cand in verdict["candidates"].items()
        for v in cand.get("inconclusive", [])
    ]


def step_notes(manifest: dict[str, Any]) -> list[str]:
    """What a reader of the report must know about how a candidate was made (warnings first)."""
    notes = [f"WARNING: {w}" for w in manifest.get("warnings", [])]
    for step in manifest.get("steps", []):
        stats = step.get("stats", {})
        if stats.get("note"):
            notes.append(f"{step['kind']}: {stats['note']}")
        if stats.get("chosen"):
            speed = stats.get("speedup_vs_fp32", {}).get(stats["chosen"])
            notes.append(
                f"{step['kind']} auto chose {stats['chosen']}"
                + (f" ({speed}x FP32 when measured)" if speed else "")
                + (
                    f"; rejected for accuracy: {', '.join(stats['rejected_for_accuracy'])}"
                    if stats.get("rejected_for_accuracy")
                    else ""
                )
            )
        if stats.get("teachers"):
            taught = ", ".join(f"{t['name']}/{t['version']} (weight {t['weight']:g})" for t in stats["teachers"])
            notes.append(
                f"{step['kind']}: student with {stats['param_ratio']:.1%} of the parameters, taught by {taught}"
            )
        fallback = stats.get("fallback")
        if fallback and fallback.get("kept_float"):
            state = "met" if fallback["met"] else "NOT met"
            notes.append(
                f"{step['kind']} fallback kept {len(fallback['kept_float'])} layer(s) in float: "
                f"{', '.join(fallback['kept_float'])} (budget {fallback['max_accuracy_drop']:g} {state} "
                "on calibration data)"
            )
    return notes


def summary(verdict: dict[str, Any]) -> dict[str, Any]:
    """reports/summary.json: the verdict in a few flat keys, the columns `dvc exp show` needs to compare experiments."""
    selected = verdict["selected"]
    metrics = verdict["candidates"][selected]["metrics"] if selected else {}
    statuses = [c["status"] for c in verdict["candidates"].values()]
    return {
        "verdict": verdict["verdict"],
        "selected": selected or "",
        "objective": verdict["objective"],
        # names of their own: `dvc exp show --keep` matches bare names
        **{f"selected_{k}": metrics[k] for k in columns(verdict) if k in metrics},
        "candidates": len(statuses),
        "passing": sum(s in ("pass", "pass-warning") for s in statuses),
        "failed_recipes": statuses.count("failed"),
    }


def failed_lines(verdict: dict[str, Any]) -> list[str]:
    """One sentence per recipe that compress could not apply."""
    return [
        f"{name}: failed at step {c['metrics'].get('failed_step', '?')}: {c['metrics'].get('failure', '')}"
        for name, c in verdict["candidates"].items()
        if c.get("status") == "failed"
    ]


def missed_lines(verdict: dict[str, Any]) -> list[str]:
    """One sentence per missed budget: candidate, budget, measured value, threshold, margin."""
    lines = []
    for name, cand in verdict["candidates"].items():
        for v in cand["violations"]:
            word = "above" if v["bound"] == "max" else "below"
            lines.append(
                f"{name}: {v['budget']} missed: {v['metric']} = {v['measured']:.4g}, {word} the threshold "
                f"{v['threshold']:.4g} by {v['by']:.4g}"
            )
    return lines


def markdown(verdict: dict[str, Any]) -> str:
    """reports/gate.md: verdict, budgets, the candidates table and each missed budget."""
    head = ["candidate", *columns(verdict), "status"]
    lines = [
        f"## squeezeflow gate: {'PASS' if verdict['verdict'] == 'pass' else 'FAIL'}",
        "",
        f"Selected: **{verdict['selected']}** ({verdict.get('selection_rule') or 'best ' + verdict['objective']})"
        if verdict["selected"]
        else "No candidate met every budget; nothing is promoted.",
        "",
        "Budgets: "
        + (
            ", ".join(
                f"`{k}` {'≤' if BUDGET_METRICS[k][1] == 'max' else '≥'} {v:g}" for k, v in verdict["budgets"].items()
            )
            or "none"
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows(verdict)),
    ]
    failed = failed_lines(verdict)
    if failed:
        lines += ["", "Failed recipes (not judged):", "", *(f"- {m}" for m in failed)]
    missed = missed_lines(verdict)
    if missed:
        lines += ["", "Missed budgets:", "", *(f"- {m}" for m in missed)]
    unsure = inconclusive_lines(verdict)
    if unsure:
        lines += ["", "Inconclusive budgets:", "", *(f"- {m}" for m in unsure)]
    notes = [f"{name}: {note}" for name, cand in verdict["candidates"].items() for note in cand.get("notes", [])]
    if notes:
        lines += ["", "Notes:", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def text_table(verdict: dict[str, Any]) -> str:
    """A fixed-width table for the terminal."""
    head = ["candidate", *columns(verdict), "status"]
    body = rows(verdict)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)])


def targets_markdown(combined: dict[str, Any]) -> str:
    """reports/gate.md for a verdict per target: the targets x candidates matrix, then each target's own report."""
    targets = combined["targets"]
    head = ["candidate", *targets]
    lines = [
        f"## squeezeflow gate: {'PASS' if combined['verdict'] == 'pass' else 'FAIL'} on {len(targets)} targets",
        "",
        "| target | runtime | verdict | selected |",
        "|---|---|---|---|",
    ]
    for name, v in targets.items():
        rt = v.get("runtime") or {}
        lines.append(
            f"| {name}{' (optional)' if v.get('optional') else ''} | {rt.get('runtime')} "
            f"{rt.get('runtime_version') or ''} on {rt.get('device') or ''} | "
            f"{v['verdict'].upper()}{': ' + v['reason'] if v.get('reason') else ''} | "
            f"{v.get('selected') or '-'} |"
        )
    lines += ["", "Verdicts, candidates x targets:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([cand, *(per[t] for t in targets)]) + " |" for cand, per in combined["matrix"].items()]
    for name, v in targets.items():
        if v["candidates"]:
            lines += ["", f"# Target {name}", "", markdown(v).replace("## squeezeflow gate:", f"## {name}:", 1)]
    return "\n".join(lines) + "\n"


def targets_matrix_html(combined: dict[str, Any]) -> str:
    """The targets x candidates matrix of verdicts, as an HTML table (the top of reports/index.html)."""

    targets = combined["targets"]
    head = "".join(
        f"<th>{html.escape(t)}{' (optional)' if v.get('optional') else ''}"
        f"<br><small>{html.escape(str((v.get('runtime') or {}).get('runtime')))}</small></th>"
        for t, v in targets.items()
    )
    body = "".join(
        f"<tr><td>{html.escape(c)}</td>"
        + "".join(
            f"<td class='{'' if per[t].startswith('pass') or per[t] == 'n/a' else 'miss'}'>{html.escape(per[t])}</td>"
            for t in targets
        )
        + "</tr>"
        for c, per in combined["matrix"].items()
    )
    chosen = "".join(
        f"<li><code>{html.escape(t)}</code>: {html.escape(v['verdict'].upper())}"
        + (f", selected <b>{html.escape(v['selected'])}</b>" if v.get("selected") else "")
        + (f" ({html.escape(v['reason'])})" if v.get("reason") else "")
        + "</li>"
        for t, v in targets.items()
    )
    verdict = combined["verdict"]
    return (
        f"<div id='targets-verdict' class='verdict {verdict}'>squeezeflow gate over {len(targets)} targets: "
        f"{verdict.upper()}</div><ul>{chosen}</ul>"
        f"<table id='targets'><tr><th>candidate</th>{head}</tr>{body}</table>"
    )
