"""The HTTP path: a real `mlflow server` (sqlite backend, and PostgreSQL, the production setup)."""

import uuid

import pytest

from conftest import register_onnx, write_params
from helpers import run_until_gate
from squeezeflow import registry
from squeezeflow.registry import fast_lookup
from squeezeflow.stages.gate import gate
from squeezeflow.stages.promote import promote

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("server", ["mlflow_server", "postgres_server"])
def test_pull_gate_promote_over_http(server, request, digits_onnx, digits_dir, tmp_path, monkeypatch):
    url = request.getfixturevalue(server)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.chdir(tmp_path)
    suffix = uuid.uuid4().hex[:8]
    source, target = f"src-{suffix}", f"edge-{suffix}"
    register_onnx(digits_onnx, source, alias="champion")
    # what crosses HTTP is under test, not speed: a 25-microsecond CNN timed beside a busy server can sit at 1.0x
    path = write_params(
        tmp_path,
        digits_dir,
        source__model_uri=f"models:/{source}@champion",
        promote__registered_model=target,
        budgets__min_speedup=0.5,
    )
    params = run_until_gate(path)
    verdict = gate(params)
    first = promote(params)
    assert first["action"] == "register"
    mv = registry.client().get_model_version(target, first["version"])
    assert mv.tags["squeezeflow.source.name"] == source
    assert mv.tags["squeezeflow.recipe.name"] == verdict["selected"]
    assert registry.alias_version(target, "candidate") == first["version"]
    # the lookup `pull` makes without MLflow on a no-op `dvc repro` reads the same over REST
    assert fast_lookup.version(f"models:/{target}@candidate") == (target, first["version"], mv.source)
    assert fast_lookup.version(f"models:/{target}/{first['version']}") == (target, first["version"], mv.source)
    assert fast_lookup.version(f"models:/{target}@nope") is None
    # the promoted artifact is downloadable over HTTP and is the candidate byte for byte
    import mlflow.artifacts

    from squeezeflow.data import digest

    local = mlflow.artifacts.download_artifacts(f"models:/{target}@candidate", dst_path=str(tmp_path / "dl"))
    assert digest(f"{local}/model.onnx") == first["sha256"]
    assert promote(params)["action"] == "none"
    assert [str(v.version) for v in registry.client().search_model_versions(f"name='{target}'")] == [first["version"]]
