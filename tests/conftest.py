"""Real parts only: sqlite registries in tmp, real `mlflow server` processes, real DVC repos."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "bench"))  # bench/common.py: the pipeline repositories tests and benches share

from common import init_repo  # noqa: E402

os.environ.update(MLFLOW_DISABLE_TELEMETRY="true", DVC_NO_ANALYTICS="1", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("SQUEEZEFLOW_DRY_RUN", None)


# Tiers (pyproject.toml markers): `e2e` is marked by hand; a test that uses a registry or a server
# fixture is `integration`, so is one marked so by hand (it starts a process); every other test is
# `unit`, and a unit test that starts a process fails, naming the fix.
REGISTRY_FIXTURES = frozenset(
    {"local_registry", "mlflow_server", "postgres_server", "pipeline_repo", "demo_repo", "server"}
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("e2e") or item.get_closest_marker("integration"):
            continue
        item.add_marker(pytest.mark.integration if REGISTRY_FIXTURES & set(item.fixturenames) else pytest.mark.unit)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request, monkeypatch):
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"unit test {request.node.nodeid} started a process: mark it integration")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(*cmd, cwd=None, check=True, env=None) -> subprocess.CompletedProcess:
    """Run a command, capturing output; on unexpected failure show it."""
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{cmd} exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}"
        )
    return proc


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one `squeezeflow: error:` line of a failed command (there must be exactly one)."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("squeezeflow: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    if proc.returncode != 4:  # a refusal or a failed gate is the line itself: only a squeezeflow bug offers a traceback
        assert "SQUEEZEFLOW_DEBUG" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """The digits train/calibration/eval npz files, written once."""
    from squeezeflow.demo import datasets

    folder = tmp_path_factory.mktemp("digits")
    datasets.write_splits("digits", {s: folder / f"{s}.npz" for s in ("train", "calibration", "eval")})
    return folder


@pytest.fixture(scope="session")
def digits_cnn(digits_dir):
    """A small CNN trained for a few epochs on the digits train split."""
    import numpy as np

    from squeezeflow.torch import architectures, train

    arrays = np.load(digits_dir / "train.npz")
    return train.fit(architectures.small_cnn(8), arrays["input"], arrays["labels"], epochs=3, seed=0, desc="fixture")


@pytest.fixture(scope="session")
def digits_onnx(digits_cnn, digits_dir, tmp_path_factory) -> Path:
    """digits_cnn exported to ONNX (FP32)."""
    import numpy as np

    from squeezeflow.torch import convert

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    convert.export_onnx(digits_cnn, {"input": np.load(digits_dir / "eval.npz")["input"][:16]}, path)
    return path


@pytest.fixture
def local_registry(tmp_path, monkeypatch) -> str:
    """A fresh sqlite registry in tmp_path (artifacts under tmp_path/mlruns), cwd = tmp_path."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def register_onnx(path: Path, name: str, alias: str | None = None) -> str:
    """Register an ONNX file as an mlflow.onnx model version; returns its version."""
    import mlflow

    from squeezeflow import registry

    c = registry.client()
    with mlflow.start_run():
        info = registry.log_onnx(path)
    mv = mlflow.register_model(info.model_uri, name)
    if alias:
        c.set_registered_model_alias(name, alias, mv.version)
    return str(mv.version)


def write_params(folder: Path, data_dir: Path, **overrides) -> Path:
    """A params.yaml in `folder` based on the repository's, with data paths and overrides."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(
        eval=str(data_dir / "eval.npz"),
        calibration=str(data_dir / "calibration.npz"),
        train=str(data_dir / "train.npz"),
    )
    # tests judge behaviour: the 30 s default cap is for verdicts
    params["target"].update(warmup=3, repeats=20, max_seconds=8)
    for dotted, value in overrides.items():
        node = params
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer within {timeout}s:\n{log.read_text()[-3000:]}")


WEBHOOK_KEY = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="  # a fixed Fernet key: webhook secrets survive restarts


def start_mlflow_server(backend: str, folder: Path, port: int | None = None) -> tuple[str, subprocess.Popen]:
    """Start `mlflow server` on 127.0.0.1 with its own artifact store; stop it by PID.

    Webhooks may deliver to loopback receivers (the tests' own).
    """
    port = port or free_port()
    log = folder / "server.log"
    env = {
        **os.environ,
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": WEBHOOK_KEY,
    }
    proc = subprocess.Popen(
        [
            BIN / "mlflow",
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    _wait_http(f"http://127.0.0.1:{port}/health", proc, log)
    return f"http://127.0.0.1:{port}", proc


def stop(proc: subprocess.Popen) -> None:
    """Stop a server and its workers by process group id."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on a sqlite backend, for the HTTP path."""
    folder = tmp_path_factory.mktemp("server")
    url, proc = start_mlflow_server(f"sqlite:///{folder / 'mlflow.db'}", folder)
    yield url
    stop(proc)


def _postgres():
    """An autocommit connection to PostgreSQL on 127.0.0.1:5432, or a skip that says why."""
    try:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3, autocommit=True
        )
    except Exception as e:  # no server, no driver
        pytest.skip(
            "PostgreSQL on 127.0.0.1:5432 (user postgres) does not answer: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        )


@contextlib.contextmanager
def postgres_database():
    """A fresh PostgreSQL database (its URI), dropped afterwards."""
    conn = _postgres()
    db = f"squeezeflow_test_{os.getpid()}_{time.time_ns()}"
    conn.execute(f'CREATE DATABASE "{db}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{db}"
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A real `mlflow server` on a fresh PostgreSQL database (the production setup)."""
    with postgres_database() as backend:
        folder = tmp_path_factory.mktemp("pgserver")
        url, proc = start_mlflow_server(backend, folder)
        yield url
        stop(proc)


def repo_of_pipeline(pipeline: str, repo: Path, monkeypatch, edit) -> dict:
    """A git + DVC repository at `repo` (the cwd after, with its own sqlite registry) holding pipelines/PIPELINE's
    dvc.yaml and params.yaml, the params changed in place by `edit(params)`; returns the params."""
    import yaml

    repo.mkdir()
    shutil.copy(ROOT / "pipelines" / pipeline / "dvc.yaml", repo / "dvc.yaml")
    params = yaml.safe_load((ROOT / "pipelines" / pipeline / "params.yaml").read_text())
    edit(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    init_repo(repo, os.environ, gitignore="data/\nartifacts/\nmlflow.db\nmlruns/\n")
    return params


@pytest.fixture
def pipeline_repo(tmp_path, digits_dir, monkeypatch) -> Path:
    """A git + DVC repository holding the real dvc.yaml and a params.yaml pointing at the digits data."""
    repo = tmp_path / "repo"
    _pipeline_repo(repo, digits_dir)
    monkeypatch.chdir(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    return repo


@pytest.fixture(scope="session")
def _demo_snapshot(tmp_path_factory, digits_dir) -> tuple[Path, subprocess.CompletedProcess]:
    """`squeezeflow demo` run once per session in a pipeline repository; a copy of it, and the demo's output."""
    out = {}

    def build(folder):
        repo = folder / "repo"
        _pipeline_repo(repo, digits_dir)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
        out["demo"] = sh(BIN / "squeezeflow", "demo", cwd=repo, env=env)

    return snapshot(tmp_path_factory, "demo", build), out["demo"]


@pytest.fixture
def demo_repo(_demo_snapshot, tmp_path, monkeypatch) -> subprocess.CompletedProcess:
    """A pipeline repository after `squeezeflow demo` (the cwd), restored into tmp_path from the session's
    snapshot; returns the demo's output. (A fixed path would not do: an MLflow client in this process
    keeps its sqlite connection to the file a previous test had.)"""
    copy, demo = _demo_snapshot
    repo = restore(copy, tmp_path) / "repo"
    monkeypatch.chdir(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    return demo


def snapshot(tmp_path_factory, name: str, build) -> Path:
    """Build a pipeline folder once per session (`build(folder)` runs with that folder as the cwd and its
    own sqlite registry) and return a pristine copy of it for `restore`.

    The registry holds absolute paths into the folder it was built in, which stays for the session:
    artifacts a test logs later land there, never in the copy."""
    built = tmp_path_factory.mktemp(f"{name}-built")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(built)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{built / 'mlflow.db'}")
        build(built)
    copy = tmp_path_factory.mktemp(f"{name}-snapshot") / "folder"
    shutil.copytree(built, copy, symlinks=True)
    return copy


def restore(copy: Path, into: Path) -> Path:
    """The snapshot's files into `into` (a test's tmp_path), with new modification times, so neither git
    nor DVC mistakes one for a file an earlier test changed."""
    shutil.copytree(copy, into, symlinks=True, dirs_exist_ok=True, copy_function=shutil.copy)
    return into


def _registered_and_pulled(folder: Path, digits_onnx: Path, digits_dir: Path) -> None:
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    write_params(folder, digits_dir)
    sh(BIN / "squeezeflow", "pull")


@pytest.fixture(scope="session")
def pulled_snapshot(tmp_path_factory, digits_onnx, digits_dir) -> Path:
    """The digits ONNX model registered as digits-cnn@champion and pulled (`squeezeflow pull`), once."""
    return snapshot(tmp_path_factory, "pulled", lambda f: _registered_and_pulled(f, digits_onnx, digits_dir))


@pytest.fixture(scope="session")
def compressed_snapshot(tmp_path_factory, digits_onnx, digits_dir) -> Path:
    """pulled_snapshot plus `squeezeflow compress int8-static`, once."""

    def build(folder):
        _registered_and_pulled(folder, digits_onnx, digits_dir)
        sh(BIN / "squeezeflow", "compress", "int8-static")

    return snapshot(tmp_path_factory, "compressed", build)


@pytest.fixture(scope="session")
def evaluated_snapshot(tmp_path_factory, digits_onnx, digits_dir) -> Path:
    """The digits model registered, pulled, compressed by every recipe of the repository's params and
    evaluated with the baseline (stages.pipeline in process), once: what a gate or promotion test starts from."""

    def build(folder):
        from helpers import run_until_gate

        register_onnx(digits_onnx, "digits-cnn", alias="champion")
        run_until_gate(write_params(folder, digits_dir))

    return snapshot(tmp_path_factory, "evaluated", build)


def _pipeline_repo(repo: Path, digits_dir: Path) -> None:
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local"))
    data = repo / "data"
    shutil.copytree(digits_dir, data)
    write_params(repo, Path("data"), demo__epochs=3)
    init_repo(repo, os.environ, gitignore=None)
