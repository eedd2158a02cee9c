"""Latency measured interleaved (A B A B ...) so that machine noise hits every model alike."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from squeezeflow.evaluate.stats import mean_interval

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime


def measure(
    sessions: dict[str, onnxruntime.InferenceSession],
    feed: dict[str, np.ndarray],
    warmup: int,
    repeats: int,
    progress: bool = True,
    warmup_seconds: float = float("inf"),
) -> dict[str, np.ndarray]:
    """Per-call latencies in milliseconds of each session on the same input.

    Args:
        sessions: name -> session; all are timed in alternation within each repeat.
        feed: one batch of inputs.
        warmup: untimed calls per session first, stopped after `warmup_seconds` in all.
        repeats: timed calls per session.

    Returns:
        name -> array of `repeats` latencies (ms).
    """
    import numpy as np
    from tqdm import tqdm

    stop = time.monotonic() + warmup_seconds
    for _ in range(warmup):
        if time.monotonic() > stop:
            break
        for sess in sessions.values():
            sess.run(None, feed)
    times = {name: np.empty(repeats) for name in sessions}
    order = list(sessions.items())
    for i in tqdm(range(repeats), desc="latency", unit="rep", disable=not progress, leave=False):
        for name, sess in order if i % 2 == 0 else reversed(order):
            start = time.perf_counter_ns()
            sess.run(None, feed)
            times[name][i] = (time.perf_counter_ns() - start) / 1e6
    return times


def summarize(ms: np.ndarray, batch_size: int) -> dict[str, float]:
    """p50, p95, p99 (ms) and throughput (samples/s at the median)."""
    import numpy as np

    p50, p95, p99 = (float(np.percentile(ms, q)) for q in (50, 95, 99))
    return {
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "latency_p99_ms": p99,
        "throughput_per_s": batch_size * 1000.0 / p50,
    }


def measure_until(
    sessions: dict[str, onnxruntime.InferenceSession],
    feed: dict[str, np.ndarray],
    reference: str,
    warmup: int,
    min_repeats: int,
    ci_width: float,
    max_seconds: float,
    round_size: int = 20,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """Interleaved rounds until every speedup's 95% interval is narrow enough or time runs out.

    Each round times every session `round_size` times in alternation; a round gives one ratio
    reference p50 / session p50 and one p95 per session. Warm-up takes at most half of
    `max_seconds`. Rounds continue (at least 3) until `min_repeats` calls were timed and the
    interval of each speedup satisfies high / low - 1 <= `ci_width`, or until `max_seconds` have
    passed since the warm-up began, whichever comes first.

    Returns:
        (name -> all latencies in ms, name -> speedup / speedup_ci_low / speedup_ci_high /
        latency_p95_ms_ci_low / latency_p95_ms_ci_high / latency_rounds).
    """
    import numpy as np
    from tqdm import tqdm

    start = time.monotonic()
    measure(sessions, feed, warmup, 1, progress=False, warmup_seconds=max_seconds / 2)
    rounds: list[dict[str, np.ndarray]] = []
    bar = tqdm(desc="latency rounds", unit="round", disable=not progress, leave=False)
    while True:
        rounds.append(measure(sessions, feed, 0, round_size, progress=False))
        bar.update()
        if len(rounds) >= 3:  # the fewest that give an interval
            if time.monotonic() - start > max_seconds:
                break
            if len(rounds) * round_size >= min_repeats and all(
                hi / lo - 1 <= ci_width for n, (_, lo, hi) in _speedups(rounds, reference).items() if n != reference
            ):
                break
    bar.close()
    return {n: np.concatenate([r[n] for r in rounds]) for n in sessions}, _round_stats(rounds, reference)


def _speedups(rounds: list, reference: str) -> dict[str, tuple[float, float, float]]:
    """Per session: geometric mean over rounds of reference p50 / session p50, with its 95% interval."""
    import numpy as np

    return {
        name: mean_interval(np.array([np.median(r[reference]) / np.median(r[name]) for r in rounds]), log=True)
        for name in rounds[0]
    }


def _round_stats(rounds: list, reference: str) -> dict[str, dict[str, float]]:
    """Speedup with its interval, and the pooled p95 with a 95% interval from resampling whole
    rounds (a round shares one machine state)."""
    import numpy as np

    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(rounds), size=(500, len(rounds)))
    out = {}
    for name, (speedup, lo, hi) in _speedups(rounds, reference).items():
        samples = np.stack([r[name] for r in rounds])  # rounds x calls
        p95s = np.percentile(samples[picks].reshape(len(picks), -1), 95, axis=1)
        p95_lo, p95_hi = (float(v) for v in np.percentile(p95s, [2.5, 97.5]))
        out[name] = {
            "speedup": speedup,
            "speedup_ci_low": lo,
            "speedup_ci_high": hi,
            "latency_p95_ms_ci_low": p95_lo,
            "latency_p95_ms_ci_high": p95_hi,
            "latency_rounds": len(rounds),
        }
    return out
