"""Gate stability: the same commit, gated again and again on this noisy machine, must not flip.

Trains and registers the demo digits CNN in a temporary sqlite registry, pulls it and builds the
static INT8 candidate once, measures its speedup, then runs `evaluate` + `gate` N times with a
`min_speedup` budget 20% below the measured speedup (every verdict should be pass) and N times 20%
above it (every verdict should be fail). Reports the verdicts, the flips, the intervals and the
time each evaluate + gate takes. Writes bench/results/gate_stability.json.

    python bench/gate_stability.py            # 20 runs each side
    python bench/gate_stability.py --smoke    # 2 runs each side
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import arguments, header, pipeline_params, workspace, write  # noqa: E402

MARGIN = 0.2


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "gate_stability", argv)
    runs = 2 if args.smoke else 20
    report = header(
        "digits CNN vs static INT8, evaluate + gate per run (interleaved latency rounds until the "
        "speedup's 95% interval is "
        "within target.ci_width = 0.1 or target.max_seconds = 30 s), 1 thread, batch 1"
    )
    with workspace("sf-bench-gate-", "digits") as (work, files):
        from squeezeflow import registry
        from squeezeflow.config import load_params
        from squeezeflow.errors import GateFailedError
        from squeezeflow.stages import pipeline
        from squeezeflow.stages.evaluate import evaluate
        from squeezeflow.stages.gate import gate
        from squeezeflow.torch import architectures, train

        tr = np.load(files["train"])
        registry.register_torch(
            train.fit(architectures.small_cnn(8), tr["input"], tr["labels"], epochs=8, desc="digits-cnn"),
            "digits-cnn",
            tr["input"][:8],
            alias="champion",
        )
        params = pipeline_params(files)
        params["recipes"] = {"int8-static": params["recipes"]["int8-static"]}

        def load(min_speedup: float | None):
            params["budgets"] = {
                "max_accuracy_drop": 0.01,
                **({"min_speedup": round(min_speedup, 4)} if min_speedup else {}),
            }
            (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            return load_params(work / "params.yaml")

        first = load(None)
        true_speedup = pipeline.run(first, until="evaluate", skip=("check-data",), recipes=["int8-static"])["evaluate"][
            "int8-static"
        ]["speedup"]
        sides = {}
        for side, factor in (("below", 1 - MARGIN), ("above", 1 + MARGIN)):
            p = load(true_speedup * factor)
            verdicts, seconds, intervals = [], [], []
            for _ in range(runs):
                start = time.perf_counter()
                m = evaluate(p, "int8-static")
                try:
                    verdict = gate(p, audit=False)["verdict"]
                except GateFailedError:
                    verdict = "fail"
                seconds.append(time.perf_counter() - start)
                verdicts.append(verdict)
                intervals.append([m["speedup_ci_low"], m["speedup_ci_high"]])
            expected = "pass" if side == "below" else "fail"
            sides[side] = {
                "min_speedup": round(true_speedup * factor, 4),
                "expected": expected,
                "verdicts": verdicts,
                "flips": sum(v != expected for v in verdicts),
                "median_seconds": round(statistics.median(seconds), 2),
                "max_seconds": round(max(seconds), 2),
                "speedup_intervals": [[round(a, 4), round(b, 4)] for a, b in intervals],
            }
            print(side, sides[side]["min_speedup"], verdicts, flush=True)
        report["models"]["digits-cnn"] = {
            "measured_speedup": round(true_speedup, 4),
            "runs_per_side": runs,
            "sides": sides,
            "flips": sum(s["flips"] for s in sides.values()),
        }
    write(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
