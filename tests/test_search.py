"""The search stage: Optuna over a recipe space under the budgets, resumable, recorded in MLflow, consumed by
compress/evaluate/gate.
"""

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, error_line, register_onnx, sh, write_params
from squeezeflow import registry
from squeezeflow.config import load_params
from squeezeflow.search.study import WORKER
from squeezeflow.stages.compress import compress
from squeezeflow.stages.evaluate import evaluate
from squeezeflow.stages.gate import gate
from squeezeflow.stages.pull import pull
from squeezeflow.stages.search import search

FAST = {"warmup": 3, "repeats": 20, "max_seconds": 5}


def _params(tmp_path, digits_dir, search_block, recipes=None, **overrides):
    path = write_params(tmp_path, digits_dir, search=search_block, **overrides)
    params = yaml.safe_load(path.read_text())
    params["target"].update(FAST)
    if recipes is not None:
        params["recipes"] = recipes
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_search_finds_the_known_best_recipe_and_the_gate_judges_it(local_registry, digits_onnx, digits_dir, tmp_path):
    # on x86 ONNX Runtime, dynamic INT8 convolutions and FP16 are slower than FP32, static INT8 is faster: one right
    # answer
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    space = [{"quantize": {"mode": ["dynamic", "fp16", "static"], "per_channel": [False]}}]
    recipes = {"best": [{"searched": {"rank": 1}}], "int8-dynamic": [{"quantize": {"mode": "dynamic"}}]}
    params = load_params(
        _params(
            tmp_path,
            digits_dir,
            {"space": space, "objectives": ["speedup"], "trials": 10, "latency_seconds": 3, "keep": 2},
            recipes,
        )
    )
    pull(params)
    summary = search(params)
    assert summary["trials"] == 3  # a finite space smaller than search.trials is tried whole, once each
    assert summary["best"][0]["steps"] == [{"quantize": {"per_channel": False}}]  # static is the default mode
    # min_speedup 1.0 is a constraint: dynamic INT8 does not meet it
    assert all(b["steps"][0]["quantize"].get("mode") != "dynamic" for b in summary["best"])
    found = json.loads(Path("artifacts/search/trials.json").read_text())
    # a repeated proposal is recorded, not measured
    rows = {r["recipe"][0]["quantize"].get("mode", "static"): r for r in found["trials"] if not r["duplicate"]}
    assert (
        rows["dynamic"]["metrics"]["speedup"] < 1.0 < rows["static"]["metrics"]["speedup"]
        and not rows["dynamic"]["feasible"]
    )
    # every trial is an MLflow child run of one parent
    c = registry.client()
    exp = c.get_experiment_by_name("squeezeflow")
    runs = c.search_runs([exp.experiment_id], filter_string="tags.`squeezeflow.search.trial` != ''")
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert (
        len(runs) == 3
        and len(parents) == 1
        and c.get_run(parents.pop()).data.tags["squeezeflow.search.study"] == summary["name"]
    )
    # the slot recipe is compressed and gated like any other
    for name in params.recipes:
        compress(params, name)
    manifest = json.loads(Path("artifacts/candidates/best/manifest.json").read_text())
    assert [s["kind"] for s in manifest["steps"]][-1] == "quantize" and manifest["steps"][-1]["mode"] == "static"
    evaluate(params, "baseline")
    for name in params.recipes:
        evaluate(params, name)
    verdict = gate(params)
    assert verdict["selected"] == "best"
    page = Path("reports/index.html").read_text()
    assert "Search: every trial, the Pareto front and the budgets" in page and "3 trials measured" in page
    # a second run resumes the finished study: nothing is measured again, the outputs are the same
    before = Path("artifacts/search/recipes.yaml").read_text()
    again = search(params)
    assert again["trials"] == 3 and Path("artifacts/search/recipes.yaml").read_text() == before
    assert len(c.search_runs([exp.experiment_id], filter_string="tags.`squeezeflow.search.trial` != ''")) == 3


def _study_trials(db: Path):
    """The trials (number, state) of the study a running search writes, read-only: opening the file as an
    Optuna storage would create its tables, racing the search that is creating them. A trial is RUNNING
    here once its worker is recorded, before that WAITING."""
    import sqlite3
    from types import SimpleNamespace

    import optuna

    if not db.is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            # a trial counts as running once its worker is recorded: what a resumed search goes by
            rows = conn.execute(
                "SELECT number, CASE WHEN state = 'RUNNING' AND trial_id NOT IN (SELECT trial_id FROM "
                "trial_user_attributes WHERE key = ?) THEN 'WAITING' ELSE state END FROM trials",
                (WORKER,),
            ).fetchall()
    except sqlite3.OperationalError:  # the tables are not there yet, or the file is locked mid-write
        return []
    return [SimpleNamespace(number=n, state=optuna.trial.TrialState[state]) for n, state in rows]


def test_a_search_killed_mid_trial_resumes_without_repeating_a_trial(local_registry, digits_onnx, digits_dir, tmp_path):
    import optuna

    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    space = [
        {
            "quantize": {
                "mode": "static",
                "per_channel": [True, False],
                "calibration": ["minmax", "percentile"],
                "percentile": {"low": 99.9, "high": 99.999},
            }
        }
    ]
    _params(
        tmp_path,
        digits_dir,
        {"space": space, "objectives": ["speedup", "accuracy_drop"], "trials": 4, "latency_seconds": 2},
    )
    sh(BIN / "squeezeflow", "pull")
    proc = subprocess.Popen([str(BIN / "squeezeflow"), "search"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db, deadline, killed = Path("artifacts/search/study/study.db"), time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        trials = _study_trials(db)
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        if running and any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
            os.kill(proc.pid, signal.SIGKILL)  # mid-trial: no handler, no cleanup
            proc.wait()
            killed = running[0]
            break
        time.sleep(0.05)
    assert killed is not None, "the search ended before a second trial started"
    resumed = sh(BIN / "squeezeflow", "search")
    assert f"trial(s) {killed.number} of a killed run are run again" in resumed.stderr
    rows = json.loads(Path("artifacts/search/trials.json").read_text())["trials"]
    by_number = {r["number"]: r for r in rows}
    assert by_number[killed.number]["state"] == "fail"
    retry = [r for r in rows if r["retry_of"] == killed.number]
    assert (
        len(retry) == 1 and retry[0]["state"] == "complete" and retry[0]["recipe"] == by_number[killed.number]["recipe"]
    )
    counted = [r for r in rows if r["state"] in ("complete", "pruned") and not r["duplicate"]]
    assert len(counted) == 4
    recipes = [json.dumps(r["recipe"], sort_keys=True) for r in counted]
    assert len(set(recipes)) == len(recipes)  # no recipe was measured twice
    spans = sorted(r["latency_span"] for r in counted if r["latency_span"])
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # no two timings overlapped
    assert "search-1: trial" in sh(BIN / "squeezeflow", "search", "--status").stdout


@pytest.mark.parametrize(
    "block, recipes, expected",
    [
        ({"space": []}, None, "search.space is empty"),
        ({"space": [{"quantize": {"mode": ["static", "int3"]}}]}, None, "search.space.0.quantize.mode must be"),
        (
            {"space": [{"prune": {"amount": {"low": 0.5, "high": 0.2}}}]},
            None,
            "search.space.0.prune.amount: low 0.5 must be below high 0.2",
        ),
        ({"space": "auto", "objectives": ["accuracy_drop", "bogus"]}, None, "search.objectives.1 must be"),
        ({"space": "auto", "objectives": ["cosine"]}, None, "search.objectives: cosine is a metric of task embedding"),
        (
            {"space": "auto", "keep": 2},
            {"best": [{"searched": {"rank": 3}}]},
            "searched rank 3 is beyond search.keep 2",
        ),
        (None, {"best": [{"searched": {}}]}, "has no search: block"),
        ({"space": "auto"}, {"best": [{"quantize": {}}, {"searched": {}}]}, "step 'searched' must come first"),
    ],
)
@pytest.mark.integration  # starts a process
def test_bad_search_params_are_one_line_with_exit_2(tmp_path, digits_dir, block, recipes, expected):
    _params(tmp_path, digits_dir, block, recipes)
    proc = sh(BIN / "squeezeflow", "--params", tmp_path / "params.yaml", "search", check=False)
    assert proc.returncode == 2 and expected in error_line(proc)


def test_a_budget_no_trial_meets_is_a_warning_and_the_hand_recipes_still_run(
    local_registry, digits_onnx, digits_dir, tmp_path
):
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    recipes = {"best": [{"searched": {"rank": 1}}], "int8-static": [{"quantize": {"mode": "static"}}]}
    _params(
        tmp_path,
        digits_dir,
        {"space": [{"quantize": {"mode": "fp16", "per_channel": [True, False]}}], "latency_seconds": 1},
        recipes,
        budgets={"max_size_mb": 0.2},  # the digits CNN: 0.17 MB in static INT8, twice that in FP16
    )
    sh(BIN / "squeezeflow", "pull")
    proc = sh(BIN / "squeezeflow", "search", check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "search: WARNING: no trial met budgets.max_size_mb 0.2 (the closest of" in proc.stderr
    assert json.loads(Path("artifacts/search/trials.json").read_text())["study"]["best"] == []
    # the searched slot is a failed row, the hand-written recipe a candidate
    sh(BIN / "squeezeflow", "compress", "best")
    assert json.loads(Path("artifacts/candidates/best/failed.json").read_text())["failed"] is True
    sh(BIN / "squeezeflow", "compress", "int8-static")
    assert Path("artifacts/candidates/int8-static/manifest.json").is_file()


def _ray_node(args: list[str], temp: str) -> subprocess.Popen:
    """`ray start ... --block` in its own process group (stopped by that group's id)."""
    return subprocess.Popen(
        [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RAY_TMPDIR": temp},
    )


def _stop_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.mark.e2e
def test_search_on_a_local_ray_cluster_retries_a_killed_worker_and_never_times_two_trials_at_once(
    local_registry, digits_onnx, digits_dir, tmp_path, monkeypatch
):
    import socket
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix socket paths must fit in 107 characters
    head = _ray_node(
        [
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
        ],
        temp,
    )
    worker = None
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.time() + 120
        while sh(BIN / "ray", "status", f"--address={address}", check=False).returncode != 0:
            assert time.time() < deadline and head.poll() is None, "the Ray head did not start"
            time.sleep(1)
        worker = _ray_node([f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1"], temp)
        # head and worker both alive
        while sh(BIN / "ray", "status", f"--address={address}", check=False).stdout.count(" node_") < 2:
            assert time.time() < deadline and worker.poll() is None, "the Ray worker node did not join"
            time.sleep(1)
        monkeypatch.setenv("RAY_ADDRESS", address)
        register_onnx(digits_onnx, "digits-cnn", alias="champion")
        space = [{"quantize": {"mode": "static", "per_channel": [True, False], "calibration": ["minmax", "entropy"]}}]
        _params(
            tmp_path,
            digits_dir,
            {"space": space, "objectives": ["speedup"], "trials": 4, "latency_seconds": 2, "executor": "ray"},
        )
        sh(BIN / "squeezeflow", "pull")
        proc = subprocess.Popen(
            [str(BIN / "squeezeflow"), "search"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        pids, killed, deadline = Path("artifacts/search/work/ray-pids"), None, time.time() + 400
        while proc.poll() is None and time.time() < deadline:
            marks = sorted(p.name for p in pids.glob("*-prepare-*")) if pids.is_dir() else []
            if marks and killed is None:
                number, _, pid = marks[0].split("-")
                os.kill(int(pid), signal.SIGKILL)  # the Ray worker process running trial `number`, mid-trial
                killed = int(number)
            time.sleep(0.05)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()[-2000:]
        assert killed is not None
        rows = [r for r in json.loads(Path("artifacts/search/trials.json").read_text())["trials"] if not r["duplicate"]]
        assert sorted(r["state"] for r in rows) == ["complete"] * 4
        # Ray ran the killed trial's task again, in another worker
        assert len(list(pids.glob(f"{killed}-prepare-*"))) == 2
        timings = sorted((r["latency_span"], r["node"]) for r in rows)
        assert all(a[0][1] <= b[0][0] for a, b in zip(timings, timings[1:]))  # one timing at a time in the cluster
        for span, node in timings:  # and no recipe was being applied on the node while it timed
            assert not any(
                r["node"] == node and r["prepare_span"][0] < span[1] and span[0] < r["prepare_span"][1] for r in rows
            )
    finally:
        for p in (worker, head):
            if p is not None:
                _stop_group(p)


@pytest.mark.e2e
def test_search_pipeline_runs_with_dvc_and_a_finished_search_is_not_run_again(tmp_path, monkeypatch):
    """pipelines/digits-search under `dvc repro`: the searched recipes are candidates of the gate; editing a
    hand-written recipe re-measures no trial.
    """
    from conftest import repo_of_pipeline
    from test_pipeline import _ran

    def short(params):
        params["search"].update(trials=6, latency_seconds=2)  # enough that some trial meets the budgets
        params["target"].update(FAST)
        params["demo"]["epochs"] = 2

    repo = tmp_path / "repo"
    params = repo_of_pipeline("digits-search", repo, monkeypatch, short)
    demo = sh(BIN / "squeezeflow", "demo", check=False)
    assert "search" in _ran(demo), demo.stdout[-3000:]
    verdict = json.loads(Path("reports/gate.json").read_text())
    assert {"int8-static", "searched", "searched-2"} <= set(verdict["candidates"]), demo.stdout[-3000:]
    found = json.loads(Path("artifacts/search/trials.json").read_text())
    assert found["study"]["trials"] == 6 and found["study"]["best"]
    # fewer passing trials than the slot's rank: a failed candidate, not a broken pipeline
    if len(found["study"]["best"]) < 2:
        assert (
            verdict["candidates"]["searched-2"]["status"] == "failed"
            and "fewer than 2 trials" in verdict["candidates"]["searched-2"]["metrics"]["failure"]
        )
    slot = json.loads(Path("artifacts/search/slots/searched.json").read_text())
    manifest = json.loads(Path("artifacts/candidates/searched/manifest.json").read_text())
    # the candidate is made of the searched steps
    assert [s["kind"] for s in manifest["steps"]][-len(slot["steps"]) :] == [next(iter(step)) for step in slot["steps"]]
    params["recipes"]["int8-static"] = [{"quantize": {"mode": "static", "calibration": "entropy"}}]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = sh(BIN / "dvc", "repro", check=False)
    ran = _ran(again)
    assert "compress@int8-static" in ran and "compress@searched" not in ran and "compress@searched-2" not in ran, (
        again.stdout[-3000:]
    )
    # the finished study: no trial measured again
    assert json.loads(Path("artifacts/search/trials.json").read_text())["trials"] == found["trials"]


def test_architecture_search_over_distilled_students_trains_each_trial_briefly(
    local_registry, digits_cnn, digits_dir, tmp_path
):
    import numpy as np

    example = np.load(digits_dir / "eval.npz")["input"][:2]
    registry.register_torch(digits_cnn, "digits-cnn", example, alias="champion")
    space = [
        {"distill": {"student": {"width": [0.25, 1.0], "depth": [1.0]}, "epochs": 6}},
        {"quantize": {"mode": "static"}},
    ]
    params = load_params(
        _params(
            tmp_path,
            digits_dir,
            {
                "space": space,
                "objectives": ["params", "accuracy_drop"],
                "trials": 5,
                "latency_seconds": 1,
                "trial_epochs": 2,
            },
            {"nas": [{"searched": {}}]},
            budgets={"max_accuracy_drop": 0.6},
        )
    )
    pull(params)
    summary = search(params)
    rows = json.loads(Path("artifacts/search/trials.json").read_text())["trials"]
    assert len(rows) == 2 and all(r["state"] == "complete" for r in rows)
    # each trial a short distillation (trial_epochs) ...
    assert all(r["trained"] == [{"step": "distill", "epochs": 2}] for r in rows)
    width = {r["recipe"][0]["distill"]["student"]["width"]: r["metrics"]["params"] for r in rows}
    assert width[0.25] < width[1.0] / 8  # a quarter of the channels: about 1/16 of the conv weights
    # both on the front: fewer parameters, or a smaller drop
    assert [b["steps"][0]["distill"]["student"]["width"] for b in summary["best"]] == [0.25, 1.0]
    # ... and the chosen architecture trains fully in compress
    assert summary["best"][0]["steps"][0]["distill"]["epochs"] == 6
    compress(params, "nas")
    manifest = json.loads(Path("artifacts/candidates/nas/manifest.json").read_text())
    # search-1's student (the ONNX count adds the INT8 scales)
    assert (
        manifest["steps"][0]["epochs"] == 6
        and abs(manifest["steps"][0]["stats"]["student_params"] / width[0.25] - 1) < 0.05
    )


def _graph(tmp_path, nodes, inits, name):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        nodes, name, [x], [y], [numpy_helper.from_array(np.ones(s, np.float32), n) for n, s in inits.items()]
    )
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_the_auto_space_follows_the_model_and_the_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from types import SimpleNamespace

    from onnx import helper

    from squeezeflow.search.space import auto

    depthwise = _graph(
        tmp_path, [helper.make_node("Conv", ["input", "w"], ["output"], group=4)], {"w": (4, 1, 3, 3)}, "depthwise"
    )
    attention = _graph(
        tmp_path,
        [
            helper.make_node("MatMul", ["input", "a"], ["q"]),
            helper.make_node("Softmax", ["q"], ["p"]),
            helper.make_node("MatMul", ["p", "b"], ["output"]),
        ],
        {"a": (8, 8), "b": (8, 8)},
        "attention",
    )
    with_calibration = SimpleNamespace(data=SimpleNamespace(calibration=Path("cal.npz"), train=None))
    (q,) = [e["quantize"] for e in auto(depthwise, True, with_calibration) if "quantize" in e]
    static = next(a for a in q if a["mode"] == "static")
    # depthwise: never per-tensor
    assert (
        static["per_channel"] == [True] and static["bias_correction"] == [False, True] and "smoothquant" not in static
    )
    labelled = Path("train.npz")
    import numpy as np

    np.savez(labelled, input=np.zeros((4, 8), np.float32), labels=np.zeros(4, np.int64))
    torch_params = SimpleNamespace(data=SimpleNamespace(calibration=Path("cal.npz"), train=labelled))
    # a PyTorch CNN with labelled training data
    assert [next(iter(e)) for e in auto(depthwise, True, torch_params)] == ["prune", "finetune", "cluster", "quantize"]
    # no structured pruning of attention
    assert [next(iter(e)) for e in auto(attention, True, torch_params)] == ["cluster", "quantize"]
    (q,) = [e["quantize"] for e in auto(attention, False, with_calibration) if "quantize" in e]
    static = next(a for a in q if a["mode"] == "static")
    assert (
        static["scope"] == ["all", "weighted"]
        and static["smoothquant"] == [None, 0.5]
        and static["per_channel"] == [True, False]
    )
    assert not any(a["mode"] == "int4" for a in q)  # a small model: no weight-only INT4
    (q,) = [
        e["quantize"]
        for e in auto(attention, False, SimpleNamespace(data=SimpleNamespace(calibration=None, train=None)))
        if "quantize" in e
    ]
    assert [a["mode"] for a in q] == ["dynamic"]  # nothing to calibrate static ranges on


def test_a_study_in_postgresql_is_shared_by_two_pipeline_folders(
    local_registry, digits_onnx, digits_dir, tmp_path, monkeypatch
):
    from conftest import postgres_database

    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    with postgres_database() as uri:
        storage = uri.replace("postgresql://", "postgresql+psycopg://")
        block = {
            "space": [{"quantize": {"mode": "static", "per_channel": [True, False]}}],
            "objectives": ["speedup"],
            "latency_seconds": 1,
            "storage": storage,
        }
        first = load_params(_params(tmp_path, digits_dir, block))
        pull(first)
        summary = search(first)
        # no user or password on disk
        assert summary["trials"] == 2 and json.loads(Path("artifacts/search/study/storage.json").read_text())[
            "storage"
        ].startswith("postgresql+psycopg://127.0.0.1:5432/")
        other = tmp_path / "teammate"
        other.mkdir()
        # another checkout of the same pipeline: same source, data and search, so the same study
        monkeypatch.chdir(other)
        second = load_params(_params(other, digits_dir, block))
        pull(second)
        again = search(second)
        assert again["name"] == summary["name"] and again["best"] == summary["best"]
        assert not Path("artifacts/search/study/study.db").exists()  # nothing local: the study is the team's
        c = registry.client()
        runs = c.search_runs(
            [c.get_experiment_by_name("squeezeflow").experiment_id],
            filter_string="tags.`squeezeflow.search.trial` != ''",
        )
        assert len(runs) == 2  # the second folder measured nothing


def test_a_storage_url_that_is_not_one_is_bad_config(local_registry, digits_onnx, digits_dir, tmp_path):
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    _params(tmp_path, digits_dir, {"space": [{"quantize": {"mode": "static"}}], "storage": "not a url"})
    sh(BIN / "squeezeflow", "pull")
    proc = sh(BIN / "squeezeflow", "search", check=False)
    # exit 3 is for a database that does not answer
    assert proc.returncode == 2 and "search.storage 'not a url' is not a database URL" in error_line(proc)


@pytest.mark.parametrize(
    "storage",
    [
        "postgresql+psycopg://127.0.0.1:1/db?password=hunter2",
        "postgresql+psycopg://u:hunter2@127.0.0.1:1/db?sslpassword=hunter2",
        "mysql+pymysql://127.0.0.1:1/db?passwd=hunter2",
    ],
)
def test_a_password_in_the_storage_url_is_never_shown_or_written(
    local_registry, digits_onnx, digits_dir, tmp_path, storage
):
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    _params(tmp_path, digits_dir, {"space": [{"quantize": {"mode": "static"}}], "storage": storage})
    sh(BIN / "squeezeflow", "pull")
    proc = sh(BIN / "squeezeflow", "search", check=False)
    assert proc.returncode in (2, 3) and "hunter2" not in proc.stderr + proc.stdout, proc.stderr[-2000:]
    error_line(proc)
    assert (tmp_path / "artifacts/search/study/storage.json").is_file()
    assert not any(b"hunter2" in f.read_bytes() for f in (tmp_path / "artifacts").rglob("*") if f.is_file())


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"], ids=["silent", "http"])
def test_ray_address_that_is_not_ray_is_unreachable_not_a_hang(
    local_registry, digits_onnx, digits_dir, tmp_path, monkeypatch, answer
):
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    held = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)  # keep it open: a port that accepts and never speaks gRPC
            if answer:
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    _params(tmp_path, digits_dir, {"space": [{"quantize": {"mode": "static"}}], "executor": "ray"})
    sh(BIN / "squeezeflow", "pull")
    try:
        proc = subprocess.run(
            [str(BIN / "squeezeflow"), "search"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "RAY_ADDRESS": address},
        )
    finally:
        listener.close()
    assert proc.returncode == 3 and f"RAY_ADDRESS {address} is not a Ray cluster" in error_line(proc), proc.stderr[
        -2000:
    ]


def test_a_corrupt_local_study_file_is_bad_local_state(local_registry, digits_onnx, digits_dir, tmp_path):
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    _params(tmp_path, digits_dir, {"space": [{"quantize": {"mode": "static"}}]})
    sh(BIN / "squeezeflow", "pull")
    study = tmp_path / "artifacts/search/study/study.db"
    study.parent.mkdir(parents=True)
    study.write_bytes(b"this is not an sqlite database" * 100)
    proc = sh(BIN / "squeezeflow", "search", check=False)
    assert (
        proc.returncode == 2
        and f"the study file {study.resolve()} cannot be read" in error_line(proc)
        and "delete it" in error_line(proc)
    ), proc.stderr[-2000:]
