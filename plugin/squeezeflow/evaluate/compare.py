"""One candidate against its reference on one target: quality on a data file and interleaved latency.

The evaluate stage runs it on data.eval; the search runs it on its held-back split, so every
trial is measured by the same code as the final verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from squeezeflow import data, runtimes
from squeezeflow.evaluate import latency, plotfiles, tasks
from squeezeflow.onnx import sessions

PROBE = 64  # samples read whole: the input checks, whether outputs depend on the batch, the timed batch


def compare(
    model_files: dict[str, Path],
    name: str,
    target: Any,
    path: Path,
    task: str,
    seed: int,
    inputs: list[Any] | None = None,
    reference: str = "baseline",
    role: str = "eval",
    timing: bool = True,
    samples: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Quality and interleaved latency of `name` against `reference`, both run by the target's runtime.

    Args:
        model_files: `reference` and `name` -> model file.
        path: the npz both are scored on (`role` names it in errors).
        inputs: the source model's input specs, for runtimes whose programs do not name them.
        timing: False skips the latency measurement (quality only).
        samples: score only the first `samples` rows (default all).

    Returns:
        (metrics, latency samples per model, per-class plot rows).
    """
    count = data.samples_in(path, role) if samples is None else min(samples, data.samples_in(path, role))
    # checks, the batch-dependence probe, the timed batch: the rest streams
    probe = data.head(path, role, max(PROBE, 2 * target.batch_size))
    runners = {n: runtimes.open_model(model_files[n], target, inputs) for n in dict.fromkeys((reference, name))}
    for runner in runners.values():
        data.check_inputs(probe, runner.get_inputs(), path, count)
    large = data.batch_for(probe)  # batches of at most 2 MB of inputs: memory does not grow with the data file
    # dynamic INT8 is judged as deployed
    scoring = {n: sessions.scoring_batch(r, probe, target.batch_size, large) for n, r in runners.items()}
    outputs = {
        n: tasks.check_outputs(
            sessions.run_batches(r, data.stream(path, role, range(count), scoring[n])), count, task, str(model_files[n])
        )
        for n, r in runners.items()
    }
    labels = data.labels(path, role)
    if labels is not None:
        labels = labels[:count]
    if task == "classification":
        labels = data.check_labels(
            {} if labels is None else {data.LABELS: labels}, next(iter(outputs[reference].values())).shape[1], path
        )
    quality, extra_plots = tasks.score(task, outputs[reference], outputs[name], labels, seed)
    metrics = {**quality, "scoring_batch_size": scoring[name]}
    times: dict[str, Any] = {}
    if timing:
        feed = data.feed(next(data.batches(probe, target.batch_size)))
        times, measured = latency.measure_until(
            runners, feed, reference, target.warmup, target.repeats, target.ci_width, target.max_seconds
        )
        metrics.update({**latency.summarize(times[name], target.batch_size), **measured[name]})
        # FP32's median in the same interleaved rounds: the one latency to set beside this candidate's and its speedup
        metrics["baseline_latency_p50_ms"] = latency.summarize(times[reference], target.batch_size)["latency_p50_ms"]
        times = {reference: times[reference], name: times[name]}
    classes = extra_plots.get("class_accuracy")
    return metrics, times, plotfiles.class_records(classes["baseline"], classes["candidate"]) if classes else []
