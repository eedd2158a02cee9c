"""The Optuna study behind a search: its name, storage, recovery after a kill, and the ranking of trials.

The study is keyed by everything a trial's result depends on (source model, data, space,
objectives, budgets, target, seed), so `dvc repro` after a kill resumes the same study, and a
changed search starts a new one in the same storage.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from squeezeflow import envvars
from squeezeflow.config import METRIC_DIRECTIONS
from squeezeflow.errors import ConfigError, RegistryUnreachableError, redact, url_without_credentials

WORKER = "squeezeflow.worker"  # trial user attribute: host:pid that runs it
DUPLICATE = "squeezeflow.duplicate_of"  # a sampled recipe that a finished trial already measured


def name_of(params: Any, source_sha256: str, entries: Any, data_digests: dict[str, str]) -> str:
    """A study name that changes whenever a trial's result could."""
    search = params.search
    key = {
        "source": source_sha256,
        "data": data_digests,
        "space": entries,
        "objectives": params.search_objectives(),
        "seed": params.seed,
        "search": search.model_dump(
            mode="json", include={"holdout", "prune_samples", "latency_seconds", "trial_epochs"}
        ),
        "budgets": params.budgets.model_dump(mode="json"),
        "target": search_target(params)[1].model_dump(mode="json"),
        "task": params.data.task,
    }
    return "squeezeflow-" + hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def search_target(params: Any) -> tuple[str, Any]:
    """(name, target) trials are timed on: search.target, or the first ONNX one."""
    targets = params.deployment_targets()
    if params.search.target:
        return params.search.target, targets[params.search.target]
    name = next((n for n, t in targets.items() if t.runtime != "executorch"), next(iter(targets)))
    return name, targets[name]


def storage_url(params: Any, search_dir: Path) -> str:
    """search.storage, or a sqlite file in `search_dir`/study/ (kept between runs: the dvc.yaml output is
    persistent).
    """
    folder = search_dir / "study"
    folder.mkdir(parents=True, exist_ok=True)
    if params.search.storage:
        # no credentials on disk
        (folder / "storage.json").write_text(
            json.dumps({"storage": url_without_credentials(params.search.storage)}) + "\n"
        )
        return params.search.storage
    return f"sqlite:///{(folder / 'study.db').resolve()}"


def open_study(url: str, name: str, objectives: tuple[str, ...], sampler: Any) -> Any:
    """Create or load the study.

    Raises:
        RegistryUnreachableError: the storage does not answer.
    """
    import optuna
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["maximize" if METRIC_DIRECTIONS[o] else "minimize" for o in objectives]
    try:
        return optuna.create_study(
            storage=url, study_name=name, directions=directions, sampler=sampler, load_if_exists=True
        )
    # a URL SQLAlchemy cannot parse, or a driver that is not installed: the config, not the service
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        raise ConfigError(
            f"search.storage {url_without_credentials(url)!r} is not a database URL SQLAlchemy can "
            f"open ({type(e).__name__}); "
            "use e.g. postgresql+psycopg://USER@HOST/DB, or remove it for the sqlite default."
        ) from None
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors for a storage that does not answer have no common base
        if url.startswith("sqlite:"):  # a local file: nothing to start, the file itself is bad
            path = url.removeprefix("sqlite:///")
            raise ConfigError(
                f"search: the study file {path} cannot be read ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:120]}); "
                "delete it to start the study over (its trials are lost), or set search.storage."
            ) from None
        raise RegistryUnreachableError(
            f"search: the study storage {url_without_credentials(url)} did not answer "
            f"({type(e).__name__}: {redact(str(e).splitlines()[0][:200])}); "
            "start the database or fix search.storage."
        ) from None


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def recover(study: Any) -> list[int]:
    """Trials left RUNNING by a process of this host that is gone (killed): failed, and their recipe queued again.

    Returns:
        The numbers of the trials taken over.
    """
    import optuna

    host = socket.gethostname()
    taken = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = str(t.user_attrs.get(WORKER, ""))
        owner_host, _, pid = owner.rpartition(":")
        if owner_host == host and pid.isdigit() and not envvars.process_alive(int(pid)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            study.enqueue_trial(t.params, user_attrs={"squeezeflow.retry_of": t.number})
            taken.append(t.number)
    return taken


def counted(study: Any) -> list[Any]:
    """Trials that count towards search.trials: complete or pruned, not repeats of a finished recipe."""
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False, states=done) if DUPLICATE not in t.user_attrs]


def feasible(trial: Any) -> bool:
    return all(c <= 0 for c in trial.user_attrs.get("constraints", []))


def ranked(trials: list[Any], objectives: tuple[str, ...]) -> list[tuple[Any, int]]:
    """(trial, Pareto rank) of the feasible complete trials, by rank (0: the non-dominated front), then the first
    objective, then number.
    """
    import optuna

    pool = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and feasible(t)]
    signs = [-1.0 if METRIC_DIRECTIONS[o] else 1.0 for o in objectives]
    cost = {t.number: [s * v for s, v in zip(signs, t.values)] for t in pool}

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    rank, left, level = {}, list(pool), 0
    while left:
        front = [t for t in left if not any(dominates(cost[o.number], cost[t.number]) for o in left if o is not t)]
        for t in front:
            rank[t.number] = level
        left = [t for t in left if t.number not in rank]
        level += 1
    return [(t, rank[t.number]) for t in sorted(pool, key=lambda t: (rank[t.number], cost[t.number][0], t.number))]
