"""Latency measured interleaved (A B A B ...) so that machine noise hits every model alike."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime


def measure(sessions: dict[str, onnxruntime.InferenceSession], feed: dict[str, np.ndarray], warmup: int, repeats: int, progress: bool = True) -> dict[str, np.ndarray]:
    """Per-call latencies in milliseconds of each session on the same input.

    Args:
        sessions: name -> session; all are timed in alternation within each repeat.
        feed: one batch of inputs.
        warmup: untimed calls per session first.
        repeats: timed calls per session.

    Returns:
        name -> array of `repeats` latencies (ms).
    """
    import numpy as np
    from tqdm import tqdm

    for sess in sessions.values():
        for _ in range(warmup):
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
    return {"latency_p50_ms": p50, "latency_p95_ms": p95, "latency_p99_ms": p99, "throughput_per_s": batch_size * 1000.0 / p50}
