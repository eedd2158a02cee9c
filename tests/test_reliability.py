"""The registry under stress, on the production setup (mlflow server on PostgreSQL): concurrent
promotions, a server killed mid-promotion, transient outages, webhooks, credentials."""

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import BIN, free_port, postgres_database, register_onnx, start_mlflow_server, stop, write_params
from helpers import run_until_gate
from squeezeflow import registry
from squeezeflow.stages.gate import gate

pytestmark = pytest.mark.e2e


def _gated_folder(folder: Path, digits_dir: Path, source: str, target: str, recipes=None) -> Path:
    """A pipeline folder whose gate passed, ready for `squeezeflow promote`."""
    folder.mkdir(parents=True)
    overrides = {"recipes": recipes} if recipes else {}
    overrides["budgets"] = {"max_accuracy_drop": 0.05}  # latency on a shared runner is not what these tests are about
    path = write_params(
        folder,
        digits_dir,
        source__model_uri=f"models:/{source}@champion",
        promote__registered_model=target,
        **overrides,
    )
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        gate(run_until_gate(path))
    finally:
        os.chdir(cwd)
    return folder


def _registered_source(url: str, digits_onnx: Path, tmp_path: Path, monkeypatch) -> tuple[str, str]:
    """A fresh source model (alias champion) on the server at `url`, and a fresh target name."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.chdir(tmp_path)
    suffix = uuid.uuid4().hex[:8]
    register_onnx(digits_onnx, f"src-{suffix}", alias="champion")
    return f"src-{suffix}", f"edge-{suffix}"


def _promote_all(folders: list[Path], extra_env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """Start `squeezeflow promote` in every folder at once; wait for all."""
    env = {**os.environ, **(extra_env or {})}
    procs = [
        subprocess.Popen(
            [BIN / "squeezeflow", "promote"], cwd=f, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for f in folders
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]


def test_eight_processes_promote_the_same_candidate(postgres_server, digits_onnx, digits_dir, tmp_path, monkeypatch):
    source, target = _registered_source(postgres_server, digits_onnx, tmp_path, monkeypatch)
    first = _gated_folder(
        tmp_path / "p0", digits_dir, source, target, recipes={"int8": [{"quantize": {"mode": "static"}}]}
    )
    folders = [first] + [Path(shutil.copytree(first, tmp_path / f"p{i}")) for i in range(1, 8)]

    results = _promote_all(folders)

    assert [r.returncode for r in results] == [0] * 8, [r.stderr[-500:] for r in results]
    assert not any("error" in r.stderr.lower() for r in results)
    versions = registry.client().search_model_versions(f"name='{target}'")
    assert len(versions) == 1
    (version,) = [str(v.version) for v in versions]
    assert registry.alias_version(target, "candidate") == version
    reports = [json.loads((f / "reports/promotion.json").read_text()) for f in folders]
    assert {r["version"] for r in reports} == {version}
    assert sum(r["action"] == "register" for r in reports) >= 1


def test_two_pipelines_race_for_one_alias(postgres_server, digits_onnx, digits_dir, tmp_path, monkeypatch):
    source, target = _registered_source(postgres_server, digits_onnx, tmp_path, monkeypatch)
    a = _gated_folder(
        tmp_path / "a", digits_dir, source, target, recipes={"static": [{"quantize": {"mode": "static"}}]}
    )
    b = _gated_folder(
        tmp_path / "b",
        digits_dir,
        source,
        target,
        recipes={"dyn": [{"quantize": {"mode": "dynamic"}}]},  # another artifact than a's
    )

    results = _promote_all([a, b], {"SQUEEZEFLOW_DEBUG": "0"})

    assert [r.returncode for r in results] == [0, 0], [r.stderr[-500:] for r in results]
    reports = [json.loads((f / "reports/promotion.json").read_text()) for f in (a, b)]
    assert len({r["version"] for r in reports}) == 2  # two artifacts, two versions
    final = registry.alias_version(target, "candidate")
    assert final in {r["version"] for r in reports}
    c = registry.client()
    for r in reports:  # both runs record what they did and where the alias was afterwards
        tags = c.get_run(r["run_id"]).data.tags
        assert tags["squeezeflow.promotion.version"] == r["version"] and tags["squeezeflow.promotion.alias_after"] in {
            x["version"] for x in reports
        }


def test_server_killed_mid_promotion_then_rerun_finishes(digits_onnx, digits_dir, tmp_path, monkeypatch):
    """Hold PostgreSQL's alias table so the promotion stops after registering, kill the server,
    restart it: the rerun finishes with one version and the alias on it."""
    import psycopg

    with postgres_database() as backend:
        port = free_port()
        url, server = start_mlflow_server(backend, tmp_path, port=port)
        try:
            monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
            monkeypatch.chdir(tmp_path)
            register_onnx(digits_onnx, "src", alias="champion")
            folder = _gated_folder(
                tmp_path / "p", digits_dir, "src", "edge", recipes={"int8": [{"quantize": {"mode": "static"}}]}
            )
            with psycopg.connect(backend) as lock:
                lock.execute("LOCK TABLE registered_model_aliases IN EXCLUSIVE MODE")  # reads go on, alias writes wait
                env = {**os.environ, "SQUEEZEFLOW_REGISTRY_DEADLINE": "3"}
                proc = subprocess.Popen(
                    [BIN / "squeezeflow", "promote"],
                    cwd=folder,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                deadline = time.time() + 120
                with psycopg.connect(backend, autocommit=True) as watch:
                    while not watch.execute("SELECT count(*) FROM model_versions WHERE name = 'edge'").fetchone()[0]:
                        assert time.time() < deadline and proc.poll() is None, (
                            proc.stderr.read() if proc.poll() is not None else "no version after 120 s"
                        )
                        time.sleep(0.05)
                time.sleep(1.0)  # the alias request is now waiting on the lock
                os.killpg(server.pid, signal.SIGKILL)  # killed, not stopped: no graceful shutdown
                server.wait(timeout=30)
                lock.rollback()
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 3, err
            assert "answer" in err and f"127.0.0.1:{port}" in err

            # the registry is back (same database, same port); while it starts, promote retries
            rerun = subprocess.Popen(
                [BIN / "squeezeflow", "promote"],
                cwd=folder,
                env={**os.environ, "SQUEEZEFLOW_REGISTRY_DEADLINE": "120"},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            url, server = start_mlflow_server(backend, tmp_path, port=port)
            out, err = rerun.communicate(timeout=300)
            assert rerun.returncode == 0, err
            report = json.loads((folder / "reports/promotion.json").read_text())
            assert report["action"] == "move-alias"  # found by its sha256: no second version
            versions = registry.client().search_model_versions("name='edge'")
            assert [str(v.version) for v in versions] == [report["version"]]
            assert registry.alias_version("edge", "candidate") == report["version"]
        finally:
            stop(server)


def test_credentials_never_leak(mlflow_server, digits_onnx, digits_dir, tmp_path, monkeypatch):
    host = mlflow_server.removeprefix("http://")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://robot:s3cr3t-pw@{host}")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-123-secret")
    monkeypatch.chdir(tmp_path)
    suffix = uuid.uuid4().hex[:8]
    register_onnx(digits_onnx, f"src-{suffix}", alias="champion")
    folder = _gated_folder(tmp_path / "p", digits_dir, f"src-{suffix}", f"edge-{suffix}")
    proc = subprocess.run([BIN / "squeezeflow", "promote"], cwd=folder, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((folder / "reports/promotion.json").read_text())
    c = registry.client()
    run = c.get_run(report["run_id"])
    mv = c.get_model_version(f"edge-{suffix}", report["version"])
    texts = [
        proc.stdout,
        proc.stderr,
        *(p.read_text() for p in (folder / "reports").iterdir()),
        json.dumps(run.data.params),
        json.dumps(run.data.tags),
        json.dumps(mv.tags),
    ]
    assert not [t for t in texts if "s3cr3t-pw" in t or "tok-123-secret" in t]
    # and an unreachable registry's error names the URI without the password
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://robot:s3cr3t-pw@127.0.0.1:{free_port()}")
    down = subprocess.run(
        [BIN / "squeezeflow", "pull"],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "SQUEEZEFLOW_REGISTRY_DEADLINE": "1"},
    )
    assert (
        down.returncode == 3
        and "s3cr3t-pw" not in down.stderr
        and "robot:***@" not in down.stderr
        and "***@127.0.0.1" in down.stderr
    )


def _receiver(folder: Path, port: int, *args: str) -> subprocess.Popen:
    env = {**os.environ, "SQUEEZEFLOW_WEBHOOK_SECRET": "shh-webhook"}
    log = (folder / "webhook.log").open("w")
    proc = subprocess.Popen(
        [BIN / "squeezeflow", "webhook", "--port", str(port), *args],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 30
    while "listening" not in (folder / "webhook.log").read_text():
        assert time.time() < deadline and proc.poll() is None, (folder / "webhook.log").read_text()
        time.sleep(0.1)
    return proc


def _post(port: int, body: bytes, headers: dict) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/", data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_webhook_starts_the_pipeline_and_refuses_forgeries(
    mlflow_server, digits_onnx, digits_dir, tmp_path, monkeypatch
):
    from squeezeflow.cli.webhook import sign

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    name = f"src-{uuid.uuid4().hex[:8]}"
    write_params(tmp_path, digits_dir, source__model_uri=f"models:/{name}@champion")
    port = free_port()
    marker = tmp_path / "triggered.txt"
    proc = _receiver(tmp_path, port, "--command", f"sh -c 'echo $SQUEEZEFLOW_WEBHOOK_MODEL_URI >> {marker}'")
    try:
        c = registry.client()
        hook = c.create_webhook(
            name=f"sf-{name}",
            url=f"http://127.0.0.1:{port}/",
            events=["model_version_alias.created"],
            secret="shh-webhook",
        )
        # the server caches each event's webhooks for MLFLOW_WEBHOOK_CACHE_TTL (1 s here, 60 s by default)
        time.sleep(2)
        register_onnx(digits_onnx, name, alias="champion")  # the server delivers model_version_alias.created
        deadline = time.time() + 60
        while not marker.is_file():
            assert time.time() < deadline, (tmp_path / "webhook.log").read_text()
            time.sleep(0.2)
        assert marker.read_text().split() == [f"models:/{name}/1"]

        payload = json.dumps(
            {
                "entity": "model_version_alias",
                "action": "created",
                "timestamp": "",
                "data": {"name": name, "alias": "champion", "version": "1"},
            }
        ).encode()
        now = str(int(time.time()))
        assert (
            _post(
                port,
                payload,
                {
                    "X-MLflow-Delivery-Id": "d-1",
                    "X-MLflow-Timestamp": now,
                    "X-MLflow-Signature": sign("wrong-secret", "d-1", now, payload),
                },
            )
            == 401
        )
        assert _post(port, payload, {"X-MLflow-Delivery-Id": "d-2", "X-MLflow-Timestamp": now}) == 401  # unsigned
        old = str(int(time.time()) - 3600)
        assert (
            _post(
                port,
                payload,
                {
                    "X-MLflow-Delivery-Id": "d-3",
                    "X-MLflow-Timestamp": old,
                    "X-MLflow-Signature": sign("shh-webhook", "d-3", old, payload),
                },
            )
            == 401
        )
        good = {
            "X-MLflow-Delivery-Id": "d-4",
            "X-MLflow-Timestamp": now,
            "X-MLflow-Signature": sign("shh-webhook", "d-4", now, payload),
        }
        assert _post(port, payload, good) == 202
        assert _post(port, payload, good) == 409  # the same delivery again: a replay
        other = json.dumps(
            {
                "entity": "model_version_alias",
                "action": "created",
                "data": {"name": "another", "alias": "champion", "version": "1"},
            }
        ).encode()
        assert (
            _post(
                port,
                other,
                {
                    "X-MLflow-Delivery-Id": "d-5",
                    "X-MLflow-Timestamp": now,
                    "X-MLflow-Signature": sign("shh-webhook", "d-5", now, other),
                },
            )
            == 200
        )
        deadline = time.time() + 30
        while len(marker.read_text().split()) < 2:
            assert time.time() < deadline
            time.sleep(0.2)
        time.sleep(1)
        assert marker.read_text().split() == [f"models:/{name}/1"] * 2  # the real delivery and d-4 only
        log = (tmp_path / "webhook.log").read_text()
        assert "signature does not match" in log and "replay window" in log and "already received" in log
        c.delete_webhook(hook.webhook_id)
    finally:
        stop(proc)


def test_webhook_sends_repository_dispatch(tmp_path, digits_dir, monkeypatch):
    """--github-repo mode: the accepted event becomes a repository_dispatch carrying the model URI."""
    import http.server
    import threading

    from squeezeflow.cli.webhook import sign

    got = []

    class GitHub(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(
                (
                    self.path,
                    self.headers.get("Authorization"),
                    json.loads(self.rfile.read(int(self.headers["Content-Length"]))),
                )
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_):
            pass

    github = http.server.HTTPServer(("127.0.0.1", 0), GitHub)
    threading.Thread(target=github.serve_forever, daemon=True).start()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GITHUB_TOKEN", "gh-token")
    write_params(tmp_path, digits_dir, source__model_uri="models:/digits-cnn@champion")
    port = free_port()
    url = f"http://127.0.0.1:{github.server_address[1]}/repos/acme/models/dispatches"
    proc = _receiver(tmp_path, port, "--github-repo", "acme/models", "--dispatch-url", url)
    try:
        payload = json.dumps(
            {
                "entity": "model_version_alias",
                "action": "created",
                "data": {"name": "digits-cnn", "alias": "champion", "version": "7"},
            }
        ).encode()
        now = str(int(time.time()))
        assert (
            _post(
                port,
                payload,
                {
                    "X-MLflow-Delivery-Id": "x",
                    "X-MLflow-Timestamp": now,
                    "X-MLflow-Signature": sign("shh-webhook", "x", now, payload),
                },
            )
            == 202
        )
        deadline = time.time() + 20
        while not got:
            assert time.time() < deadline, (tmp_path / "webhook.log").read_text()
            time.sleep(0.1)
        path, auth, body = got[0]
        assert path == "/repos/acme/models/dispatches" and auth == "Bearer gh-token"
        assert body == {"event_type": "model-registered", "client_payload": {"model_uri": "models:/digits-cnn/7"}}
    finally:
        stop(proc)
        github.shutdown()
