"""Pipeline overhead: what `dvc repro` costs beyond the compute inside its stages.

Runs the repository's own pipeline (dvc.yaml, params.yaml: digits CNN, two INT8 recipes) in a
temporary git + DVC repository against a real `mlflow server` (sqlite backend) on 127.0.0.1, with
SQUEEZEFLOW_TIMINGS set so that every stage reports its interpreter start-up, library imports and
compute (export, compression, evaluation). Reports, side by side in one run:

- the whole `dvc repro` (cold, then forced re-runs) against the sum of its stages' compute, and
  where the rest goes (DVC itself, interpreter start-up, imports);
- a no-op `dvc repro` and `squeezeflow --help` (medians);
- the MLflow HTTP requests one promotion makes and its time, counted in the server's access log.

Writes bench/results/overhead.json.

    python bench/overhead.py            # 3 forced runs, 5 no-op runs
    python bench/overhead.py --smoke    # one of each (what the tests run)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests"))
from common import arguments, commit, header, init_repo, write  # noqa: E402

BIN = Path(sys.executable).parent


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - t


def stages(timings: Path) -> list[dict]:
    """The per-command lines SQUEEZEFLOW_TIMINGS collected, then empties the file."""
    lines = [json.loads(line) for line in timings.read_text().splitlines()] if timings.is_file() else []
    timings.unlink(missing_ok=True)
    return lines


def breakdown(wall: float, lines: list[dict]) -> dict:
    """dvc repro wall time split into compute, imports, interpreter start-up and DVC itself."""
    total = {k: sum(line[k] for line in lines) for k in ("compute_s", "import_s", "startup_s", "wall_s")}
    return {
        "wall_s": round(wall, 3),
        "compute_s": round(total["compute_s"], 3),
        "overhead_fraction": round(1 - total["compute_s"] / wall, 4),
        "imports_s": round(total["import_s"], 3),
        "startup_s": round(total["startup_s"], 3),
        "dvc_s": round(wall - total["wall_s"], 3),
        "stages": {line["command"]: {k: line[k] for k in ("compute_s", "import_s", "wall_s")} for line in lines},
    }


def requests_in(log: Path, since: int) -> tuple[list[str], int]:
    """The HTTP requests the server logged after byte `since` ("METHOD /path"), and the new end."""
    text = log.read_bytes()[since:].decode(errors="replace")
    hits = [
        line.split('"')[1].split(" HTTP")[0].split("?")[0]
        for line in text.splitlines()
        if '" ' in line and "HTTP/1.1" in line
    ]
    return hits, since + len(text.encode())


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "overhead", argv)
    forced, noops = (1, 1) if args.smoke else (3, 5)
    from conftest import start_mlflow_server, stop
    from squeezeflow.config import load_params
    from squeezeflow.demo import bootstrap

    report = header(
        "the repository's pipeline (dvc.yaml, params.yaml) in a temporary git+DVC repository against "
        "`mlflow server` (sqlite) on 127.0.0.1; "
        f"cold run, median of {forced} forced runs (`dvc repro -f`), median of {noops} no-op runs; "
        "stage compute from SQUEEZEFLOW_TIMINGS"
    )
    with tempfile.TemporaryDirectory(prefix="sf-bench-overhead-") as tmp:
        work = Path(tmp) / "repo"
        work.mkdir()
        url, server = start_mlflow_server(f"sqlite:///{Path(tmp) / 'server.db'}", Path(tmp))
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": url,
            "SQUEEZEFLOW_TIMINGS": str(Path(tmp) / "timings.jsonl"),
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        }
        timings, log = Path(env["SQUEEZEFLOW_TIMINGS"]), Path(tmp) / "server.log"
        try:
            shutil.copy(ROOT / "dvc.yaml", work)
            params = yaml.safe_load((ROOT / "params.yaml").read_text())
            if args.smoke:
                params["demo"]["epochs"] = 2
            (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            init_repo(work, env)
            os.environ["MLFLOW_TRACKING_URI"], cwd = url, os.getcwd()
            os.chdir(work)
            try:
                p = load_params(work / "params.yaml")
                bootstrap.ensure_data(p)
                bootstrap.register_demo_model(p)
            finally:
                os.chdir(cwd)
            runs = {"cold": breakdown(timed(["dvc", "repro"], work, env), stages(timings))}
            forced_runs = [breakdown(timed(["dvc", "repro", "-f"], work, env), stages(timings)) for _ in range(forced)]
            runs["forced_median"] = min(
                forced_runs, key=lambda r: abs(r["wall_s"] - statistics.median(x["wall_s"] for x in forced_runs))
            )
            runs["forced_wall_s"] = [r["wall_s"] for r in forced_runs]
            no_env = {k: v for k, v in env.items() if k != "SQUEEZEFLOW_TIMINGS"}
            noop = [timed(["dvc", "repro"], work, no_env) for _ in range(noops)]
            helps = [timed([str(BIN / "squeezeflow"), "--help"], work, no_env) for _ in range(max(noops, 3))]
            # one promotion of the selected candidate to a new registered model: the requests it makes
            params["promote"]["registered_model"] = "digits-cnn-overhead"
            (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            commit(work, env, "promote to digits-cnn-overhead")  # promotion ships only what a commit holds
            _, mark = requests_in(log, 0)
            promotions = {}
            for action in ("register", "none"):
                seconds = timed([str(BIN / "squeezeflow"), "promote"], work, env)
                hits, mark = requests_in(log, mark)
                line = stages(timings)[0]
                assert json.loads((work / "reports/promotion.json").read_text())["action"] == action
                promotions[action] = {
                    "requests": len(hits),
                    "wall_s": round(seconds, 3),
                    "compute_s": line["compute_s"],
                    "import_s": line["import_s"],
                    "by_endpoint": {h: hits.count(h) for h in sorted(set(hits))},
                }
        finally:
            stop(server)
    report["models"]["digits-cnn"] = {
        "repro": runs,
        "noop_repro_s": {"median": round(statistics.median(noop), 3), "runs": [round(x, 3) for x in noop]},
        "help_s": {"median": round(statistics.median(helps), 4), "runs": [round(x, 4) for x in helps]},
        "promotion": promotions,
        "targets": {"overhead_fraction": 0.25, "noop_repro_s": 2.0, "help_s": 0.2},  # issue 19's goals,
    }
    print(json.dumps(report["models"]["digits-cnn"], indent=1)[:3000])
    write(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
