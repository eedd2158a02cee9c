"""One search trial: apply a sampled recipe to the source, then measure it on the held-back split.

Measured by the same code as the evaluate stage (squeezeflow.evaluate.compare): quality against
FP32 with its intervals, then the interleaved latency. A trial whose quality already misses a
budget on the first `prune_samples` held-back samples (even at its interval's optimistic end) is
pruned before the timing, which is most of a cheap trial's cost.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

from squeezeflow import data
from squeezeflow.config import BUDGET_INTERVALS, BUDGET_METRICS, TASK_BUDGETS, Budgets, Params, Target
from squeezeflow.data import artifacts
from squeezeflow.errors import ConfigError, ModelError, SqueezeflowError
from squeezeflow.evaluate import compare, size
from squeezeflow.evaluate.budgets import violations
from squeezeflow.steps import recipe
from squeezeflow.steps.distill import SOURCE, run_teacher, write_soft_labels

REFERENCE = "fp32"


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every trial of one search shares (plain values: a Ray worker receives it pickled)."""

    params: Params
    source_dir: Path
    registered_dir: Path
    work: Path
    holdout: Path  # scored on
    calibration: Path | None  # what the steps see
    train: Path | None
    target: Target  # max_seconds capped at search.latency_seconds
    budgets: Budgets
    objectives: tuple[str, ...]
    soft_labels: Path | None = None  # the source's logits on `train`, when the space distills


def split(params: Params, work: Path) -> tuple[Path, Path | None, Path | None]:
    """(holdout, calibration, train) files: `search.holdout` seeded random samples held back from data.train
    (data.calibration without one, or when train has no labels a classification needs); the steps get the rest.

    Raises:
        ConfigError: no file to hold samples back from, or too few samples in it.
    """
    import numpy as np

    assert params.search is not None
    task, cal, train = params.data.task, params.data.calibration, params.data.train
    usable = [
        p for p in (train, cal) if p is not None and (task != "classification" or data.labels(p, "search") is not None)
    ]
    if not usable:
        raise ConfigError(
            "search: trials are scored on samples held back from data.train or data.calibration, and "
            "a classification search needs their `labels`; "
            "add labels to data.train (or data.calibration), or set data.train."
        )
    # a train file of a few samples (zoo models) leaves calibration to hold back from
    source = next((p for p in usable if data.samples_in(p, "search") >= 32), usable[0])
    count = data.samples_in(source, "search")
    n = min(params.search.holdout, count // 2)
    if n < 16:
        raise ConfigError(
            f"search: {source} has {count} samples; holding back at least 16 for scoring trials "
            "needs 32. Add samples or point data.train at a larger file."
        )
    rows = np.sort(np.random.default_rng(params.seed).choice(count, size=n, replace=False))
    rest = np.setdiff1d(np.arange(count), rows)
    work.mkdir(parents=True, exist_ok=True)
    holdout, remainder = work / "holdout.npz", work / f"{'train' if source == train else 'calibration'}.npz"
    np.savez(holdout, **data.load(source, "search", rows.tolist()))
    np.savez(remainder, **data.load(source, "search", rest.tolist()))
    return holdout, (remainder if source == cal else cal), (remainder if source == train else train)


def run(setup: Setup, steps: list[Any], number: int) -> dict[str, Any]:
    """Apply and measure trial `number`'s recipe in this process (`prepare`, then `measure` unless it was pruned or
    failed).
    """
    prepared = prepare(setup, steps, number)
    return prepared if prepared["state"] != "prepared" else measure(setup, prepared)


def prepare(setup: Setup, steps: list[Any], number: int) -> dict[str, Any]:
    """The part of a trial that may share a machine with others: apply the recipe, score quality on the held-back split.

    Returns:
        {state: prepared (then `measure`), pruned or failed, metrics, reason, model (the candidate's folder), seconds}.

    Raises:
        SqueezeflowError other than ModelError: the pipeline, not the recipe, is wrong.
    """

    started = time.time()
    name = f"trial-{number}"
    out = setup.work / "trials" / name
    at = ["(start)"]
    params = setup.params
    try:
        short = [_shortened(s, params.search.trial_epochs) for s in steps]
        manifest = recipe.apply(
            params,
            name,
            short,
            setup.source_dir,
            out,
            setup.registered_dir,
            setup.soft_labels,
            at,
            setup.calibration,
            setup.train,
            progress=False,
        )
        files = _files(setup, out, name)
        task, seed = params.data.task, params.seed
        quick, _, _ = compare.compare(
            files,
            name,
            setup.target,
            setup.holdout,
            task,
            seed,
            reference=REFERENCE,
            role="search holdout",
            timing=False,
            samples=params.search.prune_samples,
        )
        quality = Budgets(**{k: v for k, v in setup.budgets.model_dump().items() if k in TASK_BUDGETS})
        missed, _ = violations({name: quick}, quality)
        if missed[name]:
            v = missed[name][0]
            _remove(out)
            return _result(
                "pruned",
                quick,
                started,
                f"{v['budget']} missed on {params.search.prune_samples} "
                f"held-back samples: {v['measured']:.4g} against "
                f"{v['threshold']:.4g}",
            )
        metrics, _, _ = compare.compare(
            files,
            name,
            setup.target,
            setup.holdout,
            task,
            seed,
            reference=REFERENCE,
            role="search holdout",
            timing=False,
        )
        cand = size.sizes(files[name])
        metrics.update(
            size_mb=cand["size_mb"],
            size_gzip_mb=cand["size_gzip_mb"],
            compression_ratio=size.file_bytes(files[REFERENCE]) / cand["bytes"],
            **(manifest.get("weights") or {}),
        )
        # what the trial trained (capped at trial_epochs)
        trained = [{"step": s.kind, "epochs": s.epochs} for s in short if hasattr(s, "epochs")]
        return {**_result("prepared", metrics, started, None), "model": str(out), "number": number, "trained": trained}
    except ModelError as e:
        _remove(out)
        return _result("failed", {}, started, f"{at[0]}: {e}")
    except SqueezeflowError:
        _remove(out)
        raise
    except Exception as e:  # noqa: BLE001 - a step that crashes on a sampled recipe fails that trial, not the search
        _remove(out)
        return _result(
            "failed",
            {},
            started,
            f"{at[0]}: {type(e).__name__}: {e}".splitlines()[0][:300],
            trace=traceback.format_exc(limit=3),
        )


def measure(setup: Setup, prepared: dict[str, Any]) -> dict[str, Any]:
    """The part of a trial that needs the machine to itself: the interleaved timing against FP32 (then the candidate is
    deleted).
    """

    out, name = Path(prepared["model"]), f"trial-{prepared['number']}"
    try:
        t0 = time.time()  # the span of the timing: a concurrent trial there would corrupt it
        timed, _, _ = compare.compare(
            _files(setup, out, name),
            name,
            setup.target,
            setup.holdout,
            setup.params.data.task,
            setup.params.seed,
            reference=REFERENCE,
            role="search holdout",
            samples=setup.params.search.prune_samples,
        )
        span = [t0, time.time()]
    finally:
        _remove(out)  # a trial's model is rebuilt from its recipe by compress: keep no copies
    metrics = {
        **prepared["metrics"],
        **{k: v for k, v in timed.items() if k.startswith(("latency_", "speedup", "throughput"))},
    }
    # the trial's own time, not its wait for a free machine
    return {
        **_result("complete", metrics, t0, None, span),
        "trained": prepared["trained"],
        "seconds": prepared["seconds"] + span[1] - span[0],
    }


def soft_labels(setup: Setup, entries: list[Any]) -> Setup:
    """With a distill step in the space: the source's logits on the steps' training split (what the soft-labels stage
    gives recipes), in the setup.
    """

    if not any(kind == "distill" for kind, _, _ in entries):
        return setup
    if setup.train is None:
        raise ConfigError("search.space distills, so data.train must name an npz of training inputs.")
    folder = setup.work / "soft-labels"
    write_soft_labels(
        folder,
        {SOURCE: run_teacher(SOURCE, setup.source_dir, data.inputs_of(data.load(setup.train, "train")), setup.train)},
    )
    return dataclasses.replace(setup, soft_labels=folder)


def _shortened(step: Any, epochs: int | None) -> Any:
    return step.model_copy(update={"epochs": epochs}) if epochs and getattr(step, "epochs", 0) > epochs else step


def _files(setup: Setup, out: Path, name: str) -> dict[str, Path]:
    return {REFERENCE: artifacts.model_path(setup.source_dir), name: artifacts.model_path(out)}


def _remove(path: Path) -> None:

    shutil.rmtree(path, ignore_errors=True)


def constraints(metrics: dict[str, Any], budgets: Budgets) -> list[float]:
    """Optuna constraint values, one per set budget in a fixed order: <= 0 where the trial meets it (relative excess
    otherwise).

    As the gate judges: a metric with a 95% interval is taken at its conservative end unless
    budgets.inconclusive is warn, so the search prefers recipes the gate will pass, not ones it
    would call inconclusive.
    """
    out = []
    for budget, threshold in sorted(budgets.model_dump().items()):
        if budget not in BUDGET_METRICS or threshold is None:
            continue
        metric, bound = BUDGET_METRICS[budget]
        low, high = BUDGET_INTERVALS.get(metric, (metric, metric))
        conservative = (high if bound == "max" else low) if budgets.inconclusive == "fail" else metric
        value = metrics.get(conservative, metrics.get(metric))
        if not isinstance(value, (int, float)):
            out.append(1.0)
            continue
        excess = value - threshold if bound == "max" else threshold - value
        out.append(excess / abs(threshold) if threshold else excess)
    return out


def failure(reason: str) -> dict[str, Any]:
    """The result of a trial that could not run to the end (its worker or node was lost)."""
    return _result("failed", {}, time.time(), reason)


def _result(
    state: str,
    metrics: dict[str, Any],
    started: float,
    reason: str | None,
    span: list[float] | None = None,
    trace: str | None = None,
) -> dict[str, Any]:
    clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {
        "state": state,
        "metrics": clean,
        "reason": reason,
        "latency_span": span,
        "seconds": time.time() - started,
        **({"trace": trace} if trace else {}),
    }
