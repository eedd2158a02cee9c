"""Search against the hand-written recipes: same budgets, same machine time, judged by the gate on the eval set.

Per model (the digits and MNIST CNNs and the tweets transformer, trained here; EfficientNet-Lite1
from the zoo), a pipeline in a temporary folder with its own sqlite registry, with the recipes,
budgets and selection objective of that model's params.yaml (params.yaml, pipelines/mnist-cnn,
pipelines/tweets-transformer, pipelines/efficientnet-lite1):

1. the hand-written recipes are compressed and evaluated, and their wall time T is taken;
2. the search (`space: auto`, objectives: the pipeline's selection objective and the task's
   quality metric) runs with `timeout_minutes` = T (at least 2 minutes) and many trials, so the
   machine time binds, and its best trial becomes the recipe `searched`;
3. `searched` is compressed and evaluated like the others and the gate judges them all on the
   eval set, with intervals.

Per model: each candidate's objective and status, whether `searched` beats every passing
hand-written recipe on the objective (outside the interval where the objective has one), the
search's trials, wall time and its Pareto front. Writes bench/results/search.json.

    python bench/search.py                       # every model (about 40 minutes)
    python bench/search.py digits-cnn mnist-cnn
    python bench/search.py --smoke               # digits CNN, a few trials (what the tests run)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import arguments, header, pipeline_folder, write  # noqa: E402

ROOT = Path(__file__).parents[1]
MODELS = ("digits-cnn", "mnist-cnn", "tweets-transformer", "efficientnet-lite1")
PIPELINES = {
    "digits-cnn": ROOT / "params.yaml",
    "mnist-cnn": ROOT / "pipelines/mnist-cnn/params.yaml",
    "tweets-transformer": ROOT / "pipelines/tweets-transformer/params.yaml",
    "efficientnet-lite1": ROOT / "pipelines/efficientnet-lite1/params.yaml",
}
ZOO_COUNTS = {"efficientnet-lite1": {"eval": 320, "calibration": 160, "train": 8}}


def run_model(name: str, work: Path, smoke: bool) -> dict:
    import targets
    from squeezeflow import registry
    from squeezeflow.config import load_params
    from squeezeflow.errors import GateFailedError, SqueezeflowError
    from squeezeflow.stages import pipeline
    from squeezeflow.stages.gate import gate
    from squeezeflow.stages.search import search

    targets.ZOO_COUNTS.update(ZOO_COUNTS)
    module, files, example = targets.source(name, work)
    registry.register_torch(module, name, example, alias="champion")
    own = yaml.safe_load(PIPELINES[name].read_text())
    timing = {"warmup": 5, "repeats": 40 if smoke else 200, "max_seconds": 3 if smoke else 15}
    recipes = {k: v for k, v in own["recipes"].items() if not smoke or k == "int8-static"}
    params = {k: own[k] for k in ("budgets", "selection", "contracts") if k in own}
    params.update(
        source={"model_uri": f"models:/{name}@champion"},
        recipes=recipes,
        target={"name": "cpu-x86", "threads": 1, "batch_size": 1, **timing},
        promote={"registered_model": f"{name}-edge", "alias": "candidate"},
        seed=0,
        data={"task": own["data"]["task"], **{k: str(v) for k, v in files.items()}},
    )
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    hand = load_params(work / "params.yaml")
    pipeline.run(hand, until="pull")
    started = time.perf_counter()
    pipeline.run(hand, until="evaluate", skip=("pull", "check-data"))
    hand_seconds = time.perf_counter() - started
    budget_minutes = 0.5 if smoke else max(2.0, hand_seconds / 60)
    params["recipes"] = {**recipes, "searched": [{"searched": {"rank": 1}}]}
    params["search"] = {
        "space": "auto",
        "trials": 4 if smoke else 200,
        "timeout_minutes": round(budget_minutes, 2),
        "keep": 3,
        "latency_seconds": 2 if smoke else 8,
    }
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    loaded = load_params(work / "params.yaml")
    started = time.perf_counter()
    try:
        summary = search(loaded, log_runs=True)
    except SqueezeflowError as e:
        summary = {"error": str(e)}
    search_seconds = time.perf_counter() - started
    found = (
        json.loads((work / "artifacts/search/trials.json").read_text())
        if (work / "artifacts/search/trials.json").is_file()
        else {"trials": []}
    )
    if "error" in summary:
        loaded = hand
    else:
        pipeline.run(
            loaded, until="evaluate", skip=("pull", "check-data", "soft-labels", "search"), recipes=["searched"]
        )
    try:
        verdict = gate(loaded, audit=False)
    except GateFailedError:
        verdict = json.loads((work / "reports" / "gate.json").read_text())
    objective = verdict["objective"]
    rows = {
        n: {
            "status": c["status"],
            objective: c["metrics"].get(objective),
            "interval": [c["metrics"].get(f"{objective}_ci_low"), c["metrics"].get(f"{objective}_ci_high")],
            "quality": {k: c["metrics"].get(k) for k in ("accuracy_drop", "agreement") if k in c["metrics"]},
        }
        for n, c in verdict["candidates"].items()
    }
    beats = against_hand(rows, objective)
    states = [t["state"] for t in found["trials"]]
    return {
        "objective": objective,
        "budgets": verdict["budgets"],
        "selected": verdict.get("selected"),
        "candidates": rows,
        "searched_vs_hand": beats,
        "hand_seconds": round(hand_seconds, 1),
        "search_seconds": round(search_seconds, 1),
        "search_timeout_minutes": round(budget_minutes, 2),
        "search": {k: summary.get(k) for k in ("name", "objectives", "trials", "best", "error") if k in summary},
        "trial_states": {st: states.count(st) for st in sorted(set(states))},
        "pareto_front": [
            {"number": t["number"], "recipe": t["recipe"], "values": t["values"]}
            for t in found["trials"]
            if t.get("pareto_rank") == 0
        ],
        "trials": [
            {
                "number": t["number"],
                "state": t["state"],
                "recipe": t["recipe"],
                "values": t["values"],
                "feasible": t["feasible"],
                "seconds": t["seconds"],
                "reason": t["reason"],
            }
            for t in found["trials"]
        ],
    }


def against_hand(rows: dict, objective: str) -> dict | None:
    """`searched` against each passing hand-written recipe: better or worse outside both 95% intervals (for a metric
    without one, such as size, by more than 1%), else a tie; None when `searched` did not pass."""
    from squeezeflow.config import METRIC_DIRECTIONS

    s = rows.get("searched")
    if not s or not s["status"].startswith("pass"):
        return None
    sign = 1 if METRIC_DIRECTIONS[objective] else -1

    def ahead(a: dict, b: dict) -> bool:
        if None not in a["interval"] + b["interval"]:
            return (a["interval"][0] > b["interval"][1]) if sign > 0 else (a["interval"][1] < b["interval"][0])
        return sign * (a[objective] - b[objective]) > 0.01 * abs(b[objective])

    return {
        n: "better" if ahead(s, r) else "worse" if ahead(r, s) else "tie"
        for n, r in rows.items()
        if n != "searched" and r["status"].startswith("pass")
    }


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "search", argv, MODELS)
    names = ["digits-cnn"] if args.smoke else args.models
    report = header(
        "a pipeline per model run in-process (pull, soft-labels, compress, evaluate, search, gate): "
        "the hand-written recipes of the model's params.yaml, "
        "then a search with space auto given the hand recipes' wall time; every candidate timed "
        "interleaved against FP32 on ORT, 1 thread, batch 1, "
        "until the speedup's interval is 10% wide or 15 s pass; the gate judges all on the eval set"
    )
    for name in names:
        with pipeline_folder(f"sf-bench-search-{name}-") as work:
            report["models"][name] = run_model(name, work, args.smoke)
        m = report["models"][name]
        print(
            name,
            json.dumps(
                {
                    "selected": m["selected"],
                    "searched_vs_hand": m["searched_vs_hand"],
                    "trials": m["trial_states"],
                    "s": m["search_seconds"],
                }
            ),
            flush=True,
        )
        write(report, args.out)  # after each model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
