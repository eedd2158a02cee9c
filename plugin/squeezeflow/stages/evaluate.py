"""evaluate@NAME: accuracy, agreement, latency, size of a candidate against the baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from squeezeflow import artifacts, data, modelio
from squeezeflow.config import Params
from squeezeflow.evaluate import classification, latency, size
from squeezeflow.stages import BASELINE, CANDIDATES_DIR, METRICS_DIR, SOURCE_DIR


def evaluate(params: Params, name: str, source_dir: Path = SOURCE_DIR, candidates_dir: Path = CANDIDATES_DIR, out_dir: Path = METRICS_DIR) -> dict[str, float]:
    """Measure `name` (a recipe, or `baseline`) and write metrics/NAME.json.

    The baseline and the candidate are timed alternately in this one process, so `speedup`
    (baseline p50 / candidate p50) sees the same machine load for both.

    Returns:
        The flat metrics of DESIGN.md.

    Raises:
        ConfigError: unknown recipe; DataError: eval data does not fit the model;
        ModelError: a corrupt model or non-finite outputs.
    """
    from squeezeflow.errors import ConfigError

    if name != BASELINE and name not in params.recipes:
        raise ConfigError(f"Unknown candidate {name!r}. Use `baseline` or a recipe of params.yaml: {', '.join(sorted(params.recipes))}.")
    base_dir = Path(source_dir)
    cand_dir = base_dir if name == BASELINE else Path(candidates_dir) / name
    artifacts.read_manifest(base_dir)
    cand_manifest = artifacts.read_manifest(cand_dir)
    target = params.target
    arrays = data.load(params.data.eval, "eval")
    sessions = {BASELINE: modelio.session(artifacts.model_path(base_dir), target.threads, target.providers)}
    if name != BASELINE:
        sessions[name] = modelio.session(artifacts.model_path(cand_dir), target.threads, target.providers)
    for sess in sessions.values():
        data.check_inputs(arrays, sess.get_inputs(), params.data.eval)
    logits = {n: modelio.run(s, arrays) for n, s in sessions.items()}
    labels = data.check_labels(arrays, logits[BASELINE].shape[1], params.data.eval)
    base_acc = classification.accuracy(logits[BASELINE], labels)
    acc = classification.accuracy(logits[name], labels)
    feed = next(data.batches(arrays, target.batch_size))
    times = latency.measure(sessions, feed, target.warmup, target.repeats)
    lat = latency.summarize(times[name], target.batch_size)
    base_size = size.sizes(artifacts.model_path(base_dir))
    cand_size = size.sizes(artifacts.model_path(cand_dir))
    metrics: dict[str, Any] = {
        "accuracy": acc,
        "accuracy_drop": base_acc - acc,
        "agreement": classification.agreement(logits[name], logits[BASELINE]),
        **lat,
        "speedup": float(latency.summarize(times[BASELINE], 1)["latency_p50_ms"] / lat["latency_p50_ms"]) if name != BASELINE else 1.0,
        "size_mb": cand_size["size_mb"],
        "size_gzip_mb": cand_size["size_gzip_mb"],
        "compression_ratio": base_size["bytes"] / cand_size["bytes"],
        **modelio.weight_stats(artifacts.model_path(cand_dir)),
        "steps": len(cand_manifest["steps"]),
    }
    metrics = {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
