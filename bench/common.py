"""What every benchmark shares: its arguments, the report header, writing the JSON."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import sys
from collections.abc import Iterator
from pathlib import Path


def arguments(doc: str, name: str, argv: list[str] | None, models: tuple[str, ...] = ()) -> argparse.Namespace:
    """--smoke, --out (bench/results/NAME.json), --repeats, and with `models` the ones to run
    (positional, default all; `args.models`)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if models:
        parser.add_argument(
            "models", nargs="*", metavar="MODEL", help=f"which to run: {', '.join(models)} (default: all)"
        )
    parser.add_argument(
        "--smoke", action="store_true", help="smallest model, short training, few repeats (what the tests run)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / f"{name}.json")
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats = 20
    if models:
        unknown = sorted(set(args.models) - set(models))
        if unknown:
            parser.error(f"unknown {', '.join(unknown)}; choose from {', '.join(models)}")
        args.models = args.models or list(models)
    return args


def header(method: str) -> dict:
    """Date, machine, versions and method of a benchmark report."""
    from importlib.metadata import version

    return {
        "date": datetime.date.today().isoformat(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": sys.version.split()[0],
        },
        "versions": {
            p: version(p) for p in ("torch", "onnx", "onnxruntime", "torchao", "torch-pruning", "mlflow", "squeezeflow")
        },
        "method": method,
        "models": {},
    }


def write(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def accuracy_and_speed(models: dict[str, Path], eval_file: Path, repeats: int) -> dict[str, dict[str, float]]:
    """Per model: accuracy on the eval file, drop against `fp32` (points), batch-1 single-thread
    p50 (ms) timed interleaved in this process, and speedup over `fp32`."""
    import numpy as np

    from squeezeflow import data
    from squeezeflow.evaluate import latency
    from squeezeflow.evaluate.classification import accuracy
    from squeezeflow.onnx import sessions

    ev = dict(np.load(eval_file))
    inputs, labels = data.inputs_of(ev), ev[data.LABELS]
    opened = {k: sessions.session(p, threads=1) for k, p in models.items()}
    acc = {k: accuracy(sessions.run(s, inputs), labels) for k, s in opened.items()}
    times = latency.measure(
        opened, next(data.batches(ev, 1)), warmup=max(10, repeats // 10), repeats=repeats, progress=False
    )
    p50 = {k: float(np.median(v)) for k, v in times.items()}
    return {
        k: {
            "accuracy": round(acc[k], 5),
            "accuracy_drop_points": round(100 * (acc["fp32"] - acc[k]), 3),
            "latency_p50_ms": round(p50[k], 5),
            "speedup": round(p50["fp32"] / p50[k], 3),
        }
        for k in models
    }


def model_folders(prefix: str, names: list[str]) -> Iterator[tuple[str, Path]]:
    """(name, an empty folder of its own) for each model, inside one temporary folder."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            yield name, work


@contextlib.contextmanager
def pipeline_folder(prefix: str) -> Iterator[Path]:
    """A temporary, empty pipeline folder, the cwd while inside, with its own sqlite registry."""
    import os
    import tempfile

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        os.chdir(work)
        try:
            yield work
        finally:
            os.chdir(cwd)


@contextlib.contextmanager
def workspace(prefix: str, dataset: str) -> Iterator[tuple[Path, dict[str, Path]]]:
    """A temporary pipeline folder (the cwd while inside) with its own sqlite registry and the
    dataset's train / calibration / eval splits; yields (folder, split files)."""
    from squeezeflow.demo import datasets

    with pipeline_folder(prefix) as work:
        files = {s: work / f"data/{s}.npz" for s in ("train", "calibration", "eval")}
        (work / "data").mkdir()
        datasets.write_splits(dataset, files)
        yield work, files


def pipeline_params(files: dict[str, Path], **sections) -> dict:
    """The repository's params.yaml with these data files and sections replaced."""
    import yaml

    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["data"].update({k: str(v) for k, v in files.items()})
    params.update(sections)
    return params


IGNORED = "data/\nartifacts/\nmlflow.db\nmlruns/\nmetrics/\nplots/\nreports/\ntimings.jsonl\n"


def init_repo(work: Path, env: dict, gitignore: str | None = IGNORED) -> None:
    """Make `work` (holding dvc.yaml and params.yaml) a committed git + DVC repository on main, as a
    team's pipeline repository is: promotion ships only what a commit holds. The benches and the
    tests build their pipeline repositories with it; `gitignore` None keeps a .gitignore already
    there, and a `.dvc` folder already there is kept too."""
    import subprocess

    if gitignore is not None:
        (work / ".gitignore").write_text(gitignore)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=work, check=True, env=env, capture_output=True)
    if not (work / ".dvc").is_dir():
        subprocess.run(["dvc", "init", "-q"], cwd=work, check=True, env=env, capture_output=True)
    commit(work, env, "pipeline")


def commit(work: Path, env: dict, message: str) -> None:
    """Commit every change of `work`'s repository (a params edit, before it is promoted from)."""
    import subprocess

    git = ["git", "-c", "user.email=bench@example.com", "-c", "user.name=bench"]
    for cmd in (["git", "add", "-A"], [*git, "commit", "-qm", message]):
        subprocess.run(cmd, cwd=work, check=True, env=env, capture_output=True)


def run_measured(cmd: list[str], cwd: Path, env: dict, keep_output: bool = False) -> dict:
    """Run a command; its wall time and the peak resident memory of that process alone (wait4), and its output when
    asked.
    """
    import os
    import subprocess
    import time

    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{cmd} exited {proc.returncode}:\n{out.decode(errors='replace')[-3000:]}")
    row = {"wall_s": round(time.perf_counter() - t, 2), "peak_rss_bytes": usage.ru_maxrss * 1024}
    return {**row, "output": out.decode(errors="replace")} if keep_output else row
