"""search: find the best recipes under the budgets (Optuna), and write them for compress/evaluate/gate.

Trials are scored on samples held back from the training data (never data.eval), timed with the
evaluate stage's interleaved method on the search target, and recorded as MLflow child runs of
one parent run per study. The study lives in Optuna storage (artifacts/search/study.db unless
search.storage says otherwise), so a search that was killed resumes where it stopped, and one
that finished is not run again: `dvc repro` after any change elsewhere costs nothing here.
"""

from __future__ import annotations

import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from squeezeflow import data, registry
from squeezeflow.config import BUDGET_METRICS, Params, recipe_digest, search_space
from squeezeflow.data import artifacts
from squeezeflow.errors import ConfigError
from squeezeflow.search import executor, results, space
from squeezeflow.search import study as studies
from squeezeflow.search import trial as trials
from squeezeflow.stages import REGISTERED_DIR, SEARCH_DIR, SOURCE_DIR
from squeezeflow.steps.distill import SOURCE, run_teacher, write_soft_labels

RUN_TAG = "squeezeflow.search.study"


def search(
    params: Params,
    source_dir: Path = SOURCE_DIR,
    search_dir: Path = SEARCH_DIR,
    registered_dir: Path = REGISTERED_DIR,
    log_runs: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the search and write artifacts/search/.

    Returns:
        The study summary: name, trials counted, best trials with their objective values.

    Raises:
        ConfigError: no search block or a space that cannot be built (exit 2). No trial that meets the budgets is a
        warning: the searched slots are then failed candidates, and the gate judges the other recipes;
        RegistryUnreachableError: MLflow or the study storage does not answer (exit 3).
    """
    from tqdm import tqdm

    if params.search is None:
        raise ConfigError(
            "params.yaml has no search: block; add one (search: {space: auto}) or remove the search "
            "stage from dvc.yaml."
        )
    cfg, objectives = params.search, params.search_objectives()
    manifest = artifacts.read_manifest(source_dir)
    source_model = artifacts.model_path(source_dir)
    raw = cfg.space if cfg.space != "auto" else space.auto(source_model, bool(manifest["files"].get("torch")), params)
    entries = search_space.parse(raw, "search.space (auto)" if cfg.space == "auto" else "params.yaml")
    target_name, target = studies.search_target(params)
    target = target.model_copy(update={"max_seconds": min(target.max_seconds, cfg.latency_seconds)})
    digests = {
        k: data.digest(p)
        for k, p in (("calibration", params.data.calibration), ("train", params.data.train))
        if p is not None
    }
    name = studies.name_of(params, manifest["sha256"], entries, digests)
    work = search_dir / "work"
    holdout, calibration, train = trials.split(params, work)
    setup = trials.soft_labels(
        trials.Setup(
            params,
            source_dir,
            registered_dir,
            work,
            holdout,
            calibration,
            train,
            target,
            params.budgets_for(target_name),
            objectives,
        ),
        entries,
    )
    total = search_space.size(entries)
    study = studies.open_study(studies.storage_url(params, search_dir), name, objectives, _sampler(params))
    # a finite space's recipes in a seeded order: what to try when the sampler repeats itself
    unseen = _grid(entries, total, params.seed)
    retried = studies.recover(study)
    if retried:
        print(
            f"search: resuming study {name}; trial(s) {', '.join(map(str, retried))} of a killed run are run again",
            file=sys.stderr,
        )
    wanted = int(min(cfg.trials, total))
    parent = _parent_run(study, params, name, raw, objectives) if log_runs else None
    done = studies.counted(study)
    # measured (complete or pruned) or failed at a step: a recipe is never run twice (a trial killed mid-run has no
    # result, and runs again)
    seen = {
        t.user_attrs["squeezeflow.recipe_digest"]
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and "squeezeflow.seconds" in t.user_attrs
    }
    deadline = time.monotonic() + cfg.timeout_minutes * 60
    attempts, asked = 0, {}  # asked: trial number -> (trial, recipe digest, recipe) while it runs
    if cfg.executor == "ray":
        (work / "ray-pids").mkdir(parents=True, exist_ok=True)  # which worker process runs which trial (best effort)
    runner = executor.open_executor(cfg.executor, setup)
    try:
        with tqdm(total=wanted, initial=min(len(done), wanted), desc=f"search {name[-8:]}", unit="trial") as bar:
            while True:
                while (
                    runner.busy() < runner.slots
                    and len(done) + runner.busy() < wanted
                    and len(seen) + runner.busy() < total
                    and attempts < 4 * wanted + 10
                    and study.user_attrs.get("finished_for", 0) < wanted
                    and time.monotonic() < deadline
                ):
                    attempts += 1
                    t = study.ask()
                    steps = search_space.sample(t, entries)
                    recipe, digest = search_space.as_yaml_steps(steps), _digest(steps)
                    t.set_user_attr(studies.WORKER, studies.worker_id())
                    t.set_user_attr("squeezeflow.recipe", recipe)
                    t.set_user_attr("squeezeflow.recipe_digest", digest)
                    # proposed again (or nothing: every step left out): measured once, and it does not count
                    if not steps or digest in seen or digest in {d for _, d, _ in asked.values()}:
                        t.set_user_attr(studies.DUPLICATE, True)
                        t.set_user_attr("constraints", [1.0] * _n_constraints(setup))
                        study.tell(t, state=_state("PRUNED"))
                        busy = seen | {d for _, d, _ in asked.values()}
                        fresh = next((i for i, (_, d) in enumerate(unseen) if d not in busy), None)
                        # TPE proposes what it has measured once a finite space is mostly covered: take an untried
                        # recipe instead
                        if fresh is not None:
                            study.enqueue_trial(unseen.pop(fresh)[0])
                        continue
                    asked[t.number] = (t, digest, recipe)
                    runner.submit(t.number, steps)
                if not runner.busy():
                    break
                number, result = runner.next()
                t, digest, recipe = asked.pop(number)
                _finish(study, t, result, setup, objectives)
                seen.add(digest)
                if parent:
                    _child_run(params, parent, number, recipe, result, objectives)
                done = studies.counted(study)
                bar.update(1)
                best = studies.ranked(done, objectives)
                if best:
                    bar.set_postfix_str(", ".join(f"{o} {v:.4g}" for o, v in zip(objectives, best[0][0].values)))
    finally:
        runner.close()
    # a finished search is not extended by a later run, unless search.trials grows
    if len(done) >= wanted or len(seen) >= total or time.monotonic() >= deadline:
        study.set_user_attr("finished_for", wanted)
    summary = _write(params, study, name, objectives, search_dir, target_name, source_dir)
    if parent:
        _close_parent(parent, summary)
    if not summary["best"]:  # the searched slots become failed rows; the hand-written recipes still go to the gate
        print(
            f"search: WARNING: {_nothing_passed(summary, search_dir)} Recipes that take a "
            "searched slot are failed candidates; the other recipes go to the gate.",
            file=sys.stderr,
        )
    return summary


def _grid(entries: list[Any], total: float, seed: int) -> list[tuple[dict[str, Any], str]]:
    """(trial parameters, recipe digest) of every recipe of a finite space (at most 5,000), in a seeded random order; []
    otherwise.
    """

    import optuna

    if total > 5000:
        return []
    out = [(p, _digest(search_space.sample(optuna.trial.FixedTrial(p), entries))) for p in search_space.grid(entries)]
    random.Random(seed).shuffle(out)
    return out


def _sampler(params: Params) -> Any:
    """TPE (multi-objective, with the budgets as constraints); enqueued trials (retries, untried recipes of a finite
    space) come first.
    """
    import optuna

    assert params.search is not None
    return optuna.samplers.TPESampler(
        seed=params.seed,
        n_startup_trials=min(10, max(2, params.search.trials // 4)),
        multivariate=True,
        group=True,
        constraints_func=lambda t: t.user_attrs.get("constraints", [1.0]),
    )


def _state(name: str) -> Any:
    import optuna

    return getattr(optuna.trial.TrialState, name)


def _digest(steps: list[Any]) -> str:

    return recipe_digest(steps)


def _n_constraints(setup: trials.Setup) -> int:
    return len(trials.constraints({}, setup.budgets))


def _finish(study: Any, t: Any, result: dict[str, Any], setup: trials.Setup, objectives: tuple[str, ...]) -> None:
    """Record a trial's result and tell the study."""
    metrics = result["metrics"]
    for key in ("metrics", "reason", "latency_span", "seconds", "node", "prepare_span", "trained"):
        if key in result:
            t.set_user_attr(f"squeezeflow.{key}", result[key])
    t.set_user_attr(
        "constraints",
        trials.constraints(metrics, setup.budgets) if result["state"] == "complete" else [1.0] * _n_constraints(setup),
    )
    if result["state"] == "complete":
        missing = [o for o in objectives if o not in metrics]
        if missing:
            raise ConfigError(
                f"search.objectives: {missing[0]} is not a metric the trials measure "
                f"({', '.join(sorted(metrics))}); choose one of those."
            )
        study.tell(t, [metrics[o] for o in objectives])
    else:
        study.tell(t, state=_state("PRUNED" if result["state"] == "pruned" else "FAIL"))


def _write(
    params: Params,
    study: Any,
    name: str,
    objectives: tuple[str, ...],
    search_dir: Path,
    target_name: str,
    source_dir: Path,
) -> dict[str, Any]:
    assert params.search is not None
    all_trials = study.get_trials(deepcopy=False)
    ranked = studies.ranked(studies.counted(study), objectives)
    best = [
        {
            "number": t.number,
            "steps": t.user_attrs["squeezeflow.recipe"],
            "values": dict(zip(objectives, t.values)),
            "pareto_rank": r,
        }
        for t, r in ranked[: params.search.keep]
    ]
    ranks = {t.number: r for t, r in ranked}
    rows = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "recipe": t.user_attrs.get("squeezeflow.recipe"),
            "values": dict(zip(objectives, t.values)) if t.values else None,
            "metrics": t.user_attrs.get("squeezeflow.metrics"),
            "constraints": t.user_attrs.get("constraints"),
            "feasible": studies.feasible(t) if t.values else False,
            "pareto_rank": ranks.get(t.number),
            "reason": t.user_attrs.get("squeezeflow.reason"),
            "latency_span": t.user_attrs.get("squeezeflow.latency_span"),
            "seconds": t.user_attrs.get("squeezeflow.seconds"),
            "node": t.user_attrs.get("squeezeflow.node"),
            "prepare_span": t.user_attrs.get("squeezeflow.prepare_span"),
            "trained": t.user_attrs.get("squeezeflow.trained"),
            "duplicate": bool(t.user_attrs.get(studies.DUPLICATE)),
            "retry_of": t.user_attrs.get("squeezeflow.retry_of"),
        }
        for t in all_trials
    ]
    summary = {
        "name": name,
        "objectives": list(objectives),
        "target": target_name,
        "trials": len(studies.counted(study)),
        "best": best,
        "budgets": {
            k: v
            for k, v in params.budgets_for(target_name).model_dump().items()
            if v is not None and k != "inconclusive"
        },
    }
    results.write(search_dir, params.recipes, best, rows, summary)
    # what compress of a searched distillation needs: the source's logits on all of data.train
    if any("distill" in step for b in best for step in b["steps"]):
        train = params.data.train
        write_soft_labels(
            results.soft_labels_dir(search_dir),
            {SOURCE: run_teacher(SOURCE, source_dir, data.inputs_of(data.load(train, "train")), train)},
        )
    return summary


def _nothing_passed(summary: dict[str, Any], search_dir: Path) -> str:
    """One line: the budget no trial met, and how close the best came."""
    rows = [r for r in results.read_trials(search_dir)["trials"] if r["state"] == "complete" and r["metrics"]]
    if not rows:
        return (
            f"none of {summary['trials']} trials completed (all pruned or failed; see "
            "artifacts/search/trials.json for the reasons); widen search.space or relax the budgets."
        )

    for budget, threshold in sorted(summary["budgets"].items()):
        metric, bound = BUDGET_METRICS.get(budget, (None, None))
        values = [r["metrics"][metric] for r in rows if metric in r["metrics"]]
        if metric and values:
            closest = min(values) if bound == "max" else max(values)
            if (closest > threshold) if bound == "max" else (closest < threshold):
                return (
                    f"no trial met budgets.{budget} {threshold:g} (the closest of {len(rows)} trials: "
                    f"{metric} {closest:.4g}); relax the budget or widen search.space."
                )
    return f"no trial met every budget at once ({len(rows)} trials); relax the budgets or widen search.space."


def _parent_run(study: Any, params: Params, name: str, raw: Any, objectives: tuple[str, ...]) -> str:
    """The MLflow run of this study: created once, found again on resume."""

    known = study.user_attrs.get("mlflow_run_id")
    if known:
        return known
    assert params.search is not None
    run_id = registry.start_run(
        params.promote.experiment, f"search {name}", {RUN_TAG: name, "squeezeflow.source": params.source.model_uri}
    )
    registry.log_run(
        run_id,
        {
            "search.objectives": ",".join(objectives),
            "search.trials": params.search.trials,
            "search.space": json.dumps(raw)[:6000],
            "search.executor": params.search.executor,
            "source": params.source.model_uri,
        },
        {},
        [],
    )
    study.set_user_attr("mlflow_run_id", run_id)
    return run_id


def _child_run(
    params: Params,
    parent: str,
    number: int,
    recipe: list[dict[str, Any]],
    result: dict[str, Any],
    objectives: tuple[str, ...],
) -> None:

    import yaml

    run_id = registry.start_run(
        params.promote.experiment,
        f"trial {number}",
        {
            "mlflow.parentRunId": parent,
            "squeezeflow.search.trial": str(number),
            "squeezeflow.search.state": result["state"],
            **({"squeezeflow.search.reason": result["reason"][:5000]} if result["reason"] else {}),
        },
    )
    flat = {
        f"step{i}.{kind}.{k}": v
        for i, step in enumerate(recipe)
        for kind, body in step.items()
        for k, v in ({"used": True, **body}).items()
    }
    metrics = {k: v for k, v in result["metrics"].items() if math.isfinite(v)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(yaml.safe_dump({f"trial-{number}": recipe}, sort_keys=False))
        registry.log_run(run_id, flat, {**metrics, "trial_seconds": result["seconds"]}, [path])
    registry.end_run(
        run_id, "FINISHED" if result["state"] == "complete" else "KILLED" if result["state"] == "pruned" else "FAILED"
    )


def _close_parent(parent: str, summary: dict[str, Any]) -> None:

    best = summary["best"][0]["values"] if summary["best"] else {}
    registry.log_run(parent, {}, {**{f"best_{k}": v for k, v in best.items()}, "trials": summary["trials"]}, [])
    registry.end_run(parent, "FINISHED")


def status(params: Params, source_dir: Path = SOURCE_DIR, search_dir: Path = SEARCH_DIR) -> str:
    """The study as a table: each trial's state, objective values, whether it meets the budgets, its recipe."""
    found = results.read_trials(search_dir)
    if found is None:
        return (
            f"search: no study yet ({search_dir / 'trials.json'} is missing); run `dvc repro` or `squeezeflow search`."
        )
    head = found["study"]
    lines = [
        f"study {head['name']}: {head['trials']} trials counted; objectives {', '.join(head['objectives'])} "
        f"on target {head['target']}; budgets {head['budgets'] or 'none'}"
    ]
    for row in found["trials"]:
        values = ", ".join(f"{k} {v:.4g}" for k, v in (row["values"] or {}).items()) or "-"
        flag = "" if row["state"] != "complete" else (" meets budgets" if row["feasible"] else " misses a budget")
        lines.append(
            f"  #{row['number']:<4} {row['state']:<9} {values}{flag}  {json.dumps(row['recipe'])}"
            + (f"  ({row['reason']})" if row["reason"] else "")
        )
    for k, b in enumerate(head["best"], 1):
        lines.append(f"search-{k}: trial {b['number']} " + ", ".join(f"{o} {v:.4g}" for o, v in b["values"].items()))
    return "\n".join(lines)
