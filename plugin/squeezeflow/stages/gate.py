"""gate: check every candidate against the budgets, select the best, write the reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from squeezeflow import registry
from squeezeflow.config import Budgets, Params
from squeezeflow.data import artifacts
from squeezeflow.errors import DataError, GateFailedError, SqueezeflowError
from squeezeflow.evaluate import plotfiles, promises, seal
from squeezeflow.evaluate.budgets import decide
from squeezeflow.registry.gate_runs import record_attempt
from squeezeflow.report import github, html, markdown
from squeezeflow.stages import BASELINE, CANDIDATES_DIR, METRICS_DIR, PLOTS_DIR, REPORTS_DIR, SEARCH_DIR, SOURCE_DIR


def gate(
    params: Params,
    metrics_dir: Path = METRICS_DIR,
    reports_dir: Path = REPORTS_DIR,
    audit: bool = True,
    candidates_dir: Path = CANDIDATES_DIR,
    plots_dir: Path = PLOTS_DIR,
    params_file: Path = Path("params.yaml"),
    search_dir: Path = SEARCH_DIR,
    source_dir: Path = SOURCE_DIR,
) -> dict[str, Any]:
    """Write reports/gate.json, reports/summary.json, reports/gate.md and reports/index.html; fail when no candidate
    passes.

    A failed gate still writes its reports first and records the attempt as a FAILED MLflow run
    (best effort: a registry outage must not hide the verdict).

    Returns:
        The verdict.

    Raises:
        GateFailedError: no candidate met every budget (exit 1).
        DataError: a metrics file is missing, or does not measure the candidate, source, eval
            data and target there now (`evaluate.seal`).
    """
    source_sha = artifacts.read_manifest(source_dir)["sha256"]
    digest = seal.params_digest(params)
    baseline = _read(metrics_dir / f"{BASELINE}.json", source_sha, source_sha, digest)
    shas = {name: _candidate_sha(candidates_dir / name) for name in sorted(params.recipes)}
    rows = {name: _read(metrics_dir / f"{name}.json", sha, source_sha, digest) for name, sha in shas.items()}
    reports_dir.mkdir(parents=True, exist_ok=True)
    if params.targets is not None:
        return _gate_targets(
            params, baseline, rows, reports_dir, audit, candidates_dir, plots_dir, params_file, search_dir, shas
        )
    verdict = _judge(params, baseline, rows, params.budgets, candidates_dir, shas)
    (reports_dir / "gate.json").write_text(json.dumps(verdict, indent=2, sort_keys=True) + "\n")
    (reports_dir / "summary.json").write_text(json.dumps(markdown.summary(verdict), indent=2, sort_keys=True) + "\n")
    plotfiles.write(reports_dir / "pareto.json", plotfiles.pareto_records(verdict, markdown.columns(verdict)[0]))
    md = markdown.markdown(verdict)
    (reports_dir / "gate.md").write_text(md)
    html.write(verdict, plots_dir, candidates_dir, reports_dir, search_dir=search_dir)
    github.summary(md)
    github.output("verdict", verdict["verdict"])
    github.output("selected", verdict["selected"])
    _annotate(verdict, params_file)
    print(markdown.text_table(verdict))
    for line in markdown.failed_lines(verdict) + markdown.inconclusive_lines(verdict):
        print(f"gate: {line}", file=sys.stderr)
    if verdict["verdict"] == "pass":
        print(f"gate: PASS, selected {verdict['selected']} ({verdict['selection_rule']})")
        return verdict
    missed = markdown.missed_lines(verdict) + markdown.inconclusive_lines(verdict) + markdown.failed_lines(verdict)
    if audit:
        _record_failure(params, verdict, reports_dir)
    raise GateFailedError(
        "gate failed: no candidate met every budget; "
        f"{missed[0] if missed else 'there are no candidates'}"
        + (f" (and {len(missed) - 1} more, see {reports_dir / 'gate.md'})" if len(missed) > 1 else ".")
    )


def _judge(
    params: Params,
    baseline: dict[str, Any],
    rows: dict[str, dict[str, Any]],
    budgets: Budgets,
    candidates_dir: Path,
    shas: dict[str, str | None],
) -> dict[str, Any]:
    """One verdict over the candidates, with each candidate's step notes and the sha256 of the artifact judged (promote
    checks it).
    """
    verdict = decide(baseline, rows, budgets, params.selection.objective, params.data.task, params.selection.tie_break)
    for name, cand in verdict["candidates"].items():
        cand["sha256"] = shas[name]
        path = candidates_dir / name / "manifest.json"
        manifest = json.loads(path.read_text()) if path.is_file() else {}
        cand["notes"] = markdown.step_notes(manifest) if manifest else []
        warning = promises.slower(manifest, cand["metrics"]) if manifest else None
        if warning:
            cand["notes"].insert(0, f"WARNING: {warning}")
    return verdict


def _on(row: dict[str, Any], target: str, file: str) -> dict[str, Any]:
    """A metrics file's view for one target: its section over the target-independent keys."""
    if row.get("failed"):
        return row
    section = (row.get("targets") or {}).get(target)
    if section is None:
        raise DataError(
            f"metrics/{file}.json has no section for target {target!r}: it was measured before the "
            "target was added. Run the evaluate stages again (`dvc repro`)."
        )
    return {**{k: v for k, v in row.items() if k != "targets"}, **section}


def _gate_targets(
    params: Params,
    baseline: dict[str, Any],
    rows: dict[str, dict[str, Any]],
    reports_dir: Path,
    audit: bool,
    candidates_dir: Path,
    plots_dir: Path,
    params_file: Path,
    search_dir: Path,
    shas: dict[str, str | None],
) -> dict[str, Any]:
    """A verdict per target (its budgets: the shared ones with the target's own replacing theirs); the gate passes when
    every target that is not optional passed.
    """
    verdicts: dict[str, dict[str, Any]] = {}
    for name, target in params.deployment_targets().items():
        base = _on(baseline, name, BASELINE)
        if base.get("skipped"):
            verdicts[name] = {"verdict": "skipped", "reason": base["skipped"], "selected": None, "candidates": {}}
        else:
            views = {n: _on(r, name, n) for n, r in rows.items()}
            verdicts[name] = _judge(
                params,
                base,
                {n: v for n, v in views.items() if not v.get("not_applicable")},
                params.budgets_for(name),
                candidates_dir,
                shas,
            )
        verdicts[name].update(
            optional=target.optional,
            runtime={k: base.get(k) for k in ("runtime", "runtime_version", "device", "cpu_flags")},
        )
    blocking = [n for n, v in verdicts.items() if v["verdict"] != "pass" and not v["optional"]]
    combined = {
        "verdict": "fail" if blocking else "pass",
        "task": params.data.task,
        "objective": params.selection.objective,
        "targets": verdicts,
        "matrix": {
            c: {
                t: v["candidates"][c]["status"]
                if c in v["candidates"]
                else v["verdict"]
                if v["verdict"] == "skipped"
                else "n/a"
                for t, v in verdicts.items()
            }
            for c in sorted(rows)
        },
    }
    (reports_dir / "gate.json").write_text(json.dumps(combined, indent=2, sort_keys=True) + "\n")
    (reports_dir / "summary.json").write_text(
        json.dumps(
            {
                "verdict": combined["verdict"],
                "targets": {
                    t: markdown.summary(v) if v["candidates"] else {"verdict": v["verdict"]}
                    for t, v in verdicts.items()
                },
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    judged = {t: v for t, v in verdicts.items() if v["candidates"]}
    plotfiles.write(
        reports_dir / "pareto.json",
        [{**r, "target": t} for t, v in judged.items() for r in plotfiles.pareto_records(v, markdown.columns(v)[0])],
    )
    md = markdown.targets_markdown(combined)
    (reports_dir / "gate.md").write_text(md)
    if judged:
        first = next(iter(judged))
        html.write(
            judged[first],
            plots_dir,
            candidates_dir,
            reports_dir,
            preface=markdown.targets_matrix_html(combined),
            heading=f"target {first}",
            search_dir=search_dir,
        )
    github.summary(md)
    github.output("verdict", combined["verdict"])
    for t, v in verdicts.items():
        github.output(f"selected-{t}", v["selected"])
        if v["candidates"]:
            _annotate(v, params_file)
    for t, v in verdicts.items():
        state = (
            f"PASS, selected {v['selected']}"
            if v["verdict"] == "pass"
            else ("skipped: " + v["reason"] if v["verdict"] == "skipped" else "FAIL, no candidate met every budget")
        )
        print(
            f"gate: target {t}{' (optional)' if v['optional'] else ''}: {state}",
            file=sys.stderr if v["verdict"] != "pass" else sys.stdout,
        )
    if not blocking:
        return combined
    if audit:
        _record_failure(params, combined, reports_dir)
    first = verdicts[blocking[0]]
    why = (
        f"it was skipped ({first['reason']}); mark it `optional: true` to gate without it"
        if first["verdict"] == "skipped"
        else next(
            iter(markdown.missed_lines(first) + markdown.inconclusive_lines(first) + markdown.failed_lines(first)),
            "there are no candidates",
        )
    )
    raise GateFailedError(
        f"gate failed on target {blocking[0]}: {why}"
        + (f" (and {len(blocking) - 1} more targets, see {reports_dir / 'gate.md'})" if len(blocking) > 1 else ".")
    )


def _annotate(verdict: dict[str, Any], params_file: Path) -> None:
    """One annotation per missed (error) or inconclusive (error or warning) budget, on its params.yaml line."""
    lines = iter(markdown.missed_lines(verdict))
    unsure = iter(markdown.inconclusive_lines(verdict))
    level = "warning" if verdict.get("inconclusive_policy") == "warn" else "error"
    failed = iter(markdown.failed_lines(verdict))
    for name, cand in verdict["candidates"].items():
        if cand["status"] == "failed":
            github.annotate(
                "warning",
                next(failed),
                f"recipe {name} failed",
                str(params_file),
                github.params_line(params_file, "recipes", name),
            )
        for v in cand["violations"]:
            github.annotate(
                "error",
                next(lines),
                f"budget {v['budget']} missed",
                str(params_file),
                github.params_line(params_file, "budgets", v["budget"]),
            )
        for v in cand.get("inconclusive", []):
            github.annotate(
                level,
                next(unsure),
                f"budget {v['budget']} inconclusive",
                str(params_file),
                github.params_line(params_file, "budgets", v["budget"]),
            )


def _read(path: Path, candidate_sha: str | None, source_sha: str, params_digest: str) -> dict[str, Any]:
    """A metrics file, once `evaluate.seal` shows it measured these artifacts with today's params."""
    if not path.is_file():
        raise DataError(f"{path}: metrics not found. Run the evaluate stages first (`dvc repro`).")
    try:
        row = json.loads(path.read_text())
    except ValueError:
        raise DataError(f"{path}: not valid JSON. Run the evaluate stages again (`dvc repro`).") from None
    if not isinstance(row, dict):
        raise DataError(f"{path}: not a metrics file (a JSON object). Run the evaluate stages again (`dvc repro`).")
    return seal.verify(path, row, candidate_sha, source_sha, params_digest)


def _candidate_sha(cand_dir: Path) -> str | None:
    """sha256 of the candidate's model, checked against its manifest; None where compress could not apply the recipe."""
    return None if artifacts.read_failure(cand_dir) else artifacts.read_manifest(cand_dir)["sha256"]


def _record_failure(params: Params, verdict: dict[str, Any], reports_dir: Path) -> None:
    """Log the failed attempt as a FAILED run for audit; warn (never fail) if MLflow is down."""

    try:
        run_id = record_attempt(
            params,
            verdict,
            [reports_dir / "gate.json", reports_dir / "gate.md"],
            run_name="gate-failed",
            tags={"squeezeflow.gate.verdict": "fail"},
        )
        registry.end_run(run_id, "FAILED")
        print(f"gate: the failed attempt is recorded as MLflow run {run_id}", file=sys.stderr)
    except SqueezeflowError as e:
        print(f"warning: could not record the failed attempt in MLflow: {e}", file=sys.stderr)
