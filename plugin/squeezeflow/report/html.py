"""reports/index.html: one self-contained page (inline SVG and CSS, no network) for people to read."""

from __future__ import annotations

import html
import io
import json
import re
from pathlib import Path
from typing import Any

from squeezeflow.config import BUDGET_METRICS
from squeezeflow.evaluate import plotfiles
from squeezeflow.registry.lineage import without_stats
from squeezeflow.report.markdown import columns, failed_lines, inconclusive_lines, missed_lines, rows

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1b1f24}
h1{margin:0 0 4px} h2{margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.verdict{padding:16px 20px;border-radius:8px;color:#fff;font-size:22px;font-weight:600}
.pass{background:#1a7f37} .fail{background:#cf222e}
table{border-collapse:collapse;margin:8px 0;width:100%} td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left} th{background:#f6f8fa}
td.miss{background:#ffebe9;color:#a40e26;font-weight:600} td.unsure{background:#fff8c5} tr.selected td{font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:12px} .plots svg{width:520px;height:auto}
code{background:#f6f8fa;padding:1px 4px;border-radius:4px} ul{margin:4px 0}
"""


def render(
    verdict: dict[str, Any],
    plots: dict[str, dict[str, Any]],
    manifests: dict[str, dict[str, Any]],
    contracts: dict[str, Any] | None,
    classes: dict[str, list[dict[str, Any]]] | None = None,
    preface: str = "",
    heading: str = "",
    search: dict[str, Any] | None = None,
) -> str:
    """The whole page.

    Args:
        verdict: reports/gate.json.
        plots: name -> plots/NAME.json (latency samples); baseline included.
        classes: name -> plots/classes/NAME.json (per-class accuracy records), where the task has classes.
        manifests: candidate -> manifest (lineage of the selected one).
        contracts: reports/data.json (Great Expectations results of the data contracts), if any.
        preface: HTML above the verdict (the targets x candidates matrix); heading: what the verdict below is of (a
        target).
        search: artifacts/search/trials.json, when the pipeline searched (its trials and Pareto front).
    """
    ok = verdict["verdict"] == "pass"
    selected = verdict.get("selected")
    title = (
        f"PASS: {selected} selected ({verdict.get('selection_rule') or 'best ' + verdict['objective']})"
        if ok
        else "FAIL: no candidate met every budget; nothing is promoted"
    )
    parts = [
        preface,
        f"<h2>{html.escape(heading)}</h2>" if heading else "",
        f"<div id='verdict' class='verdict {'pass' if ok else 'fail'}'>squeezeflow gate: {html.escape(title)}</div>",
        "<h2>Candidates against the budgets</h2>",
        _budgets(verdict),
        _table(verdict),
        _lines(verdict),
        f"<h2>{html.escape(columns(verdict)[0].capitalize())} against latency and size</h2>",
        f"<div class='plots'>{_pareto(verdict, 'latency_p50_ms', 'latency p50 (ms)')}"
        f"{_pareto(verdict, 'size_mb', 'size (MB)')}</div>",
    ]
    if search:
        parts += ["<h2>Search: every trial, the Pareto front and the budgets</h2>", _search(search)]
    if selected and selected in plots:
        parts += ["<h2>Latency distributions</h2>", f"<div class='plots'>{_latency(plots[selected], selected)}</div>"]
        if (classes or {}).get(selected):
            parts += ["<h2>Per-class accuracy</h2>", _classes(classes[selected], selected)]
    if selected and selected in manifests:
        parts += ["<h2>Lineage of the selected candidate</h2>", _lineage(manifests[selected])]
    if contracts:
        parts += ["<h2>Data contracts (Great Expectations)</h2>", _contracts(contracts)]
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>squeezeflow "
        f"gate</title><style>{CSS}</style></head><body><h1>squeezeflow</h1>{''.join(parts)}</body></html>\n"
    )


def _budgets(verdict: dict[str, Any]) -> str:
    items = ", ".join(f"<code>{html.escape(k)}</code> {v:g}" for k, v in verdict["budgets"].items()) or "none"
    return (
        f"<p>Budgets: {items}. Intervals are 95%; a budget inside an interval is <em>inconclusive</em> "
        f"({html.escape(verdict.get('inconclusive_policy', 'fail'))}).</p>"
    )


def _table(verdict: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ("candidate", *columns(verdict), "status"))
    body = []
    for row in rows(verdict):
        name = row[0]
        cells = "".join(
            f"<td class='{'miss' if c.endswith('✗') else 'unsure' if c.endswith('?') else ''}'>{html.escape(c)}</td>"
            for c in row[1:-1]
        )
        body.append(
            f"<tr class='{'selected' if name == verdict.get('selected') else ''}'><td>{html.escape(name)}</td>"
            f"{cells}<td>{html.escape(row[-1])}</td></tr>"
        )
    return f"<table id='candidates'><tr>{head}</tr>{''.join(body)}</table>"


def _lines(verdict: dict[str, Any]) -> str:
    lines = (
        failed_lines(verdict)
        + missed_lines(verdict)
        + inconclusive_lines(verdict)
        + [f"{n}: {note}" for n, c in verdict["candidates"].items() for note in c.get("notes", [])]
    )
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>" if lines else ""


def _svg(fig: Any) -> str:

    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg") :], flags=re.S)


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "squeezeflow"  # the same verdict renders the same bytes
    return plt.subplots(figsize=(5.2, 3.6))


def _pareto(verdict: dict[str, Any], x_key: str, x_label: str) -> str:
    """The task's primary metric against one cost, every candidate and the baseline, with the budget lines."""
    fig, ax = _figure()
    base = verdict["baseline"]
    y_key = columns(verdict)[0]
    ax.scatter([base[x_key]], [base.get(y_key, 0.0)], marker="s", color="#57606a", label="baseline (fp32)")
    for name, cand in verdict["candidates"].items():
        m = cand["metrics"]
        if cand.get("status") == "failed":
            continue  # nothing was measured
        color = "#1a7f37" if cand["passed"] else "#cf222e"
        ax.scatter(
            [m[x_key]],
            [m.get(y_key, 0.0)],
            color=color,
            marker="*" if name == verdict.get("selected") else "o",
            s=120 if name == verdict.get("selected") else 40,
        )
        ax.annotate(name, (m[x_key], m.get(y_key, 0.0)), fontsize=8, xytext=(4, 4), textcoords="offset points")
    for budget, axis, value in plotfiles.budget_lines(verdict, y_key):
        if axis == "quality":
            ax.axhline(value, ls="--", color="#9a6700", lw=1, label=f"{budget} budget")
        elif axis == x_key:
            ax.axvline(value, ls=":", color="#8250df", lw=1, label=f"{budget} budget")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_key)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return _svg(fig)


def _search(found: dict[str, Any]) -> str:
    """The trials on their first two objectives (or the first against the trial number): those that meet the budgets,
    those that miss one, the Pareto front joined by a line, the budget on each axis where one bounds that metric."""

    study, trials = found["study"], found["trials"]
    objectives = study["objectives"]
    x_key, y_key = (objectives[0], objectives[1]) if len(objectives) > 1 else ("number", objectives[0])
    done = [t for t in trials if t["state"] == "complete" and t["values"]]

    def value(t: dict[str, Any], key: str) -> float:
        return float(t["number"]) if key == "number" else float(t["values"][key])

    fig, ax = _figure()
    for feasible, color, marker, label in (
        (True, "#1a7f37", "o", "meets the budgets"),
        (False, "#cf222e", "x", "misses a budget"),
    ):
        pts = [t for t in done if bool(t["feasible"]) == feasible]
        if pts:
            ax.scatter(
                [value(t, x_key) for t in pts],
                [value(t, y_key) for t in pts],
                color=color,
                marker=marker,
                s=30,
                label=label,
            )
    front = sorted((t for t in done if t.get("pareto_rank") == 0), key=lambda t: value(t, x_key))
    if front:
        ax.plot(
            [value(t, x_key) for t in front],
            [value(t, y_key) for t in front],
            color="#0969da",
            lw=1,
            marker="*",
            ms=9,
            label="Pareto front",
        )
    for k, best in enumerate(study["best"], 1):
        t = next((t for t in done if t["number"] == best["number"]), None)
        if t:
            ax.annotate(
                f"search-{k}", (value(t, x_key), value(t, y_key)), fontsize=8, xytext=(4, 4), textcoords="offset points"
            )
    for budget, threshold in study["budgets"].items():
        metric = BUDGET_METRICS.get(budget, (None,))[0]
        if metric == x_key:
            ax.axvline(threshold, ls=":", color="#8250df", lw=1, label=f"{budget} budget")
        elif metric == y_key:
            ax.axhline(threshold, ls="--", color="#9a6700", lw=1, label=f"{budget} budget")
    ax.set_xlabel("trial" if x_key == "number" else x_key)
    ax.set_ylabel(y_key)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    counts = {state: sum(t["state"] == state for t in trials) for state in ("complete", "pruned", "fail")}
    best = (
        ", ".join(f"search-{k} = trial {b['number']}" for k, b in enumerate(study["best"], 1)) or "none met the budgets"
    )
    return (
        f"<p>Study <code>{html.escape(study['name'])}</code> on target {html.escape(study['target'])}: "
        f"{counts['complete']} trials measured "
        f"({sum(bool(t['feasible']) for t in done)} meet the budgets), {counts['pruned']} pruned or repeated, "
        f"{counts['fail']} failed. "
        "Trials are scored on samples held back from the training data; the table above is the gate's own "
        f"measurement on the eval set. {html.escape(best)}.</p>"
        f"<div class='plots'>{_svg(fig)}</div>"
    )


def _latency(plot: dict[str, Any], name: str) -> str:
    import numpy as np

    fig, ax = _figure()
    samples = plotfiles.latency_samples(plot)
    top = float(np.percentile(np.concatenate([np.asarray(v) for v in samples.values()]), 99))
    for label, values in samples.items():
        ax.hist(np.clip(values, None, top), bins=40, alpha=0.55, label=f"{label} (p50 {np.median(values):.3g} ms)")
    ax.set_xlabel("latency per call (ms), clipped at p99")
    ax.set_ylabel("calls")
    ax.legend(fontsize=8)
    ax.set_title(f"baseline and {name}, timed interleaved", fontsize=9)
    return _svg(fig)


def _classes(records: list[dict[str, Any]], name: str) -> str:
    body = "".join(
        f"<tr><td>{html.escape(str(r['class']))}</td><td>{r['baseline']:.4f}</td><td>{r['candidate']:.4f}</td>"
        f"<td class='{'miss' if r['drop'] > 0 else ''}'>{r['drop']:+.4f}</td></tr>"
        for r in records
    )
    return (
        f"<table id='classes'><tr><th>class</th><th>baseline</th><th>{html.escape(name)}</th><th>drop</th></tr>"
        f"{body}</table>"
    )


def _lineage(manifest: dict[str, Any]) -> str:
    root = manifest["root"]

    steps = "".join(
        f"<li><code>{html.escape(s['kind'])}</code> "
        f"{html.escape(json.dumps({k: v for k, v in without_stats(s).items() if k != 'kind'}, sort_keys=True))}</li>"
        for s in manifest["steps"]
    )
    return (
        f"<p>From <code>models:/{html.escape(root['name'])}/{html.escape(str(root['version']))}</code> (pulled "
        f"as <code>{html.escape(root.get('requested', ''))}</code>, "
        f"run {html.escape(root.get('run_id') or '')}), recipe "
        f"<code>{html.escape(manifest['recipe']['name'])}</code> "
        f"(digest {html.escape(manifest['recipe']['digest'][:12])}), artifact sha256 "
        f"{html.escape(manifest['sha256'][:16])}:</p><ol>{steps}</ol>"
    )


def _contracts(contracts: dict[str, Any]) -> str:
    body = "".join(
        f"<tr><td>{html.escape(r['file'])}</td><td>{html.escape(r['expectation'])}</td>"
        f"<td>{html.escape(r.get('column', ''))}</td><td class='{'' if r['success'] else 'miss'}'>"
        f"{'pass' if r['success'] else ('warning' if r.get('severity') == 'warning' else 'FAIL')}</td></tr>"
        for r in contracts.get("results", [])
    )
    return (
        f"<table id='contracts'><tr><th>file</th><th>expectation</th><th>column</th><th>result</th></tr>{body}</table>"
    )


def write(
    verdict: dict[str, Any],
    plots_dir: Path,
    candidates_dir: Path,
    reports_dir: Path,
    preface: str = "",
    heading: str = "",
    search_dir: Path | None = None,
) -> Path:
    """Render reports/index.html from the verdict and the files the stages wrote (see `render` for preface and heading;
    `search_dir`: the search's results, if it ran).
    """
    names = ["baseline", *verdict["candidates"]]
    plots = {n: json.loads((plots_dir / f"{n}.json").read_text()) for n in names if (plots_dir / f"{n}.json").is_file()}
    classes = {
        n: json.loads((plots_dir / "classes" / f"{n}.json").read_text())
        for n in names
        if (plots_dir / "classes" / f"{n}.json").is_file()
    }
    manifests = {
        n: json.loads((candidates_dir / n / "manifest.json").read_text())
        for n in verdict["candidates"]
        if (candidates_dir / n / "manifest.json").is_file()
    }
    data_report = reports_dir / "data.json"
    contracts = json.loads(data_report.read_text()) if data_report.is_file() else None
    out = reports_dir / "index.html"
    trials = search_dir / "trials.json" if search_dir else None
    search = json.loads(trials.read_text()) if trials and trials.is_file() else None
    out.write_text(render(verdict, plots, manifests, contracts, classes, preface, heading, search))
    return out
