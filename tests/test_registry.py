"""Pull and promote against a real sqlite MLflow registry."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import BIN, error_line, register_onnx, restore, sh, write_params
from helpers import run_until_gate
from squeezeflow import registry
from squeezeflow.config import load_params
from squeezeflow.errors import GateFailedError, NotFoundError
from squeezeflow.registry.lineage import walk
from squeezeflow.stages.gate import gate
from squeezeflow.stages.promote import promote
from squeezeflow.stages.pull import pull


def _example(digits_dir):
    return np.load(digits_dir / "eval.npz")["input"][:4]


def test_pull_resolves_alias_version_and_latest(local_registry, digits_cnn, digits_dir, tmp_path):
    registry.register_torch(digits_cnn, "digits-cnn", _example(digits_dir), alias="champion")
    registry.register_torch(digits_cnn, "digits-cnn", _example(digits_dir))
    for folder, uri, version in [
        ("a", "models:/digits-cnn@champion", "1"),
        ("v", "models:/digits-cnn/2", "2"),
        ("l", "models:/digits-cnn/latest", "2"),
    ]:
        params = load_params(write_params(tmp_path, digits_dir, source__model_uri=uri))
        manifest = pull(params, out_dir=tmp_path / folder)
        assert manifest["root"]["version"] == version and manifest["root"]["requested"] == uri
        assert manifest["root"]["flavor"] == "pytorch" and manifest["root"]["model_id"].startswith("m-")
        on_disk = json.loads((tmp_path / folder / "manifest.json").read_text())
        assert on_disk["sha256"] == manifest["sha256"]
    # same version twice, into fresh folders: byte-identical outputs (what lets DVC skip downstream)
    params = load_params(write_params(tmp_path, digits_dir, source__model_uri="models:/digits-cnn/2"))
    pull(params, out_dir=tmp_path / "again")
    for name in ("manifest.json", "model.onnx"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "v" / name).read_bytes()


def test_two_input_torch_model_registers_as_pt2_and_pulls(local_registry, tmp_path):
    from squeezeflow.torch import architectures

    rng = np.random.default_rng(0)
    ids, mask = rng.integers(0, 100, size=(16, 8)), np.ones((16, 8), dtype=np.int64)
    np.savez(tmp_path / "eval.npz", input_ids=ids, attention_mask=mask, labels=rng.integers(0, 2, 16))
    registry.register_torch(
        architectures.text_transformer(100, 8, 2, dim=32, heads=2, layers=1, ff=64),
        "tw",
        (ids[:4], mask[:4]),
        alias="champion",
    )
    params = load_params(write_params(tmp_path, tmp_path, source__model_uri="models:/tw@champion"))
    manifest = pull(params, out_dir=tmp_path / "src")
    assert manifest["root"]["flavor"] == "pytorch" and [i["name"] for i in manifest["inputs"]] == [
        "input_ids",
        "attention_mask",
    ]


def test_pull_onnx_flavor_keeps_the_file(local_registry, digits_onnx, digits_dir, tmp_path):
    register_onnx(digits_onnx, "digits-onnx", alias="prod")
    params = load_params(write_params(tmp_path, digits_dir, source__model_uri="models:/digits-onnx@prod"))
    manifest = pull(params, out_dir=tmp_path / "src")
    assert manifest["root"]["flavor"] == "onnx"
    assert manifest["files"] == {"model": "model.onnx"}
    assert manifest["root"]["artifact_sha256"] == manifest["sha256"]


def test_unchanged_pull_skips_mlflow_and_sees_a_moved_alias(local_registry, digits_onnx, digits_dir, tmp_path):
    from squeezeflow.registry import fast_lookup

    register_onnx(digits_onnx, "digits-onnx", alias="prod")
    path = write_params(tmp_path, digits_dir, source__model_uri="models:/digits-onnx@prod")
    sh(BIN / "squeezeflow", "--params", path, "pull", cwd=tmp_path)
    again = sh(BIN / "python", "-X", "importtime", "-m", "squeezeflow", "--params", path, "pull", cwd=tmp_path)
    imported = {line.split("|")[-1].strip() for line in again.stderr.splitlines() if line.startswith("import time:")}
    assert "squeezeflow.stages.pull" in imported and not any(m.startswith("mlflow") for m in imported)
    assert fast_lookup.version("models:/digits-onnx@prod")[:2] == ("digits-onnx", "1")
    assert (
        fast_lookup.version("models:/digits-onnx@gold") is None
        and fast_lookup.version("models:/digits-onnx/latest") is None
    )
    register_onnx(digits_onnx, "digits-onnx", alias="prod")  # the alias moves: the lookup must see it
    assert fast_lookup.version("models:/digits-onnx@prod")[:2] == ("digits-onnx", "2")
    sh(BIN / "squeezeflow", "--params", path, "pull", cwd=tmp_path)
    assert json.loads((tmp_path / "artifacts/source/manifest.json").read_text())["root"]["version"] == "2"
    registry.client().delete_model_version("digits-onnx", "1")
    assert fast_lookup.version("models:/digits-onnx/1") is None


@pytest.mark.parametrize(
    "uri,message",
    [
        ("models:/nope@champion", "registered model 'nope' does not exist"),
        ("models:/digits-onnx@gold", "has no alias 'gold'. Its aliases: prod"),
        ("models:/digits-onnx/7", "has no version 7"),
    ],
)
def test_missing_model_alias_or_version(local_registry, digits_onnx, digits_dir, tmp_path, uri, message):
    register_onnx(digits_onnx, "digits-onnx", alias="prod")
    path = write_params(tmp_path, digits_dir, source__model_uri=uri)
    with pytest.raises(NotFoundError, match=message):
        pull(load_params(path), out_dir=tmp_path / "src")
    proc = sh(BIN / "squeezeflow", "--params", path, "pull", check=False)
    assert proc.returncode == 2 and message in error_line(proc)
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.integration  # starts a process
def test_unreachable_registry_exits_3(tmp_path, digits_dir, monkeypatch):
    from conftest import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:s3cret@127.0.0.1:{free_port()}")
    monkeypatch.setenv("SQUEEZEFLOW_REGISTRY_DEADLINE", "2")
    monkeypatch.chdir(tmp_path)
    path = write_params(tmp_path, digits_dir)
    proc = sh(BIN / "squeezeflow", "--params", path, "pull", check=False)
    assert proc.returncode == 3, proc.stderr
    line = error_line(proc)
    assert "does not answer" in line and "MLFLOW_TRACKING_URI" in line and "SQUEEZEFLOW_REGISTRY_DEADLINE" in line
    assert "s3cret" not in proc.stderr and "***@127.0.0.1" in line


def _promotable(evaluated_snapshot, digits_dir, tmp_path, **overrides):
    """The session's evaluated pipeline restored into tmp_path; `overrides` change only what the gate and
    promote read (budgets, promote), which evaluate's sealed metrics do not depend on."""
    restore(evaluated_snapshot, tmp_path)
    return load_params(write_params(tmp_path, digits_dir, **overrides))


def test_promote_registers_once_with_lineage(local_registry, evaluated_snapshot, digits_onnx, digits_dir, tmp_path):
    params = _promotable(evaluated_snapshot, digits_dir, tmp_path)
    verdict = gate(params)
    first = promote(params)
    assert first["action"] == "register" and first["version"] == "1"
    c = registry.client()
    mv = c.get_model_version("digits-cnn-edge", "1")
    assert mv.tags["squeezeflow.source.name"] == "digits-cnn" and mv.tags["squeezeflow.source.version"] == "1"
    assert mv.tags["squeezeflow.recipe.name"] == verdict["selected"]
    assert mv.tags["squeezeflow.artifact_sha256"] == first["sha256"]
    assert len(mv.tags["squeezeflow.data.eval_sha256"]) == 64
    assert registry.alias_version("digits-cnn-edge", "candidate") == "1"
    run = c.get_run(first["run_id"])
    assert run.info.status == "FINISHED"
    source_model_id = registry.resolve("models:/digits-cnn/1").model_id
    assert [m.model_id for m in run.inputs.model_inputs] == [source_model_id]
    assert "budgets.max_accuracy_drop" in run.data.params and f"{verdict['selected']}.accuracy" in run.data.metrics
    # the run's metrics are linked to the promoted model (logged after it, in one request)
    model_id = registry.resolve("models:/digits-cnn-edge/1").model_id
    logged = c.get_logged_model(model_id)
    assert {m.key for m in logged.metrics} == set(run.data.metrics) and all(
        m.model_id == model_id for m in logged.metrics
    )
    # the compressed ONNX file carries its lineage too
    from squeezeflow.onnx import modelfile

    props = modelfile.metadata(Path("artifacts/candidates") / verdict["selected"] / "model.onnx")
    assert json.loads(props["squeezeflow.root"])["name"] == "digits-cnn"

    # same artifact again: no new version; a moved alias is moved back
    assert promote(params)["action"] == "none"
    assert len(c.search_model_versions("name='digits-cnn-edge'")) == 1

    chain = [v["uri"] for v in walk("models:/digits-cnn-edge@candidate")]
    assert chain == ["models:/digits-cnn-edge/1", "models:/digits-cnn/1"]


def test_promote_moves_alias_back_without_new_version(
    local_registry, evaluated_snapshot, digits_onnx, digits_dir, tmp_path
):
    params = _promotable(evaluated_snapshot, digits_dir, tmp_path)
    gate(params)
    promote(params)
    c = registry.client()
    register_onnx(digits_onnx, "digits-cnn-edge", alias="candidate")  # someone else moved the alias to v2
    again = promote(params)
    assert again["action"] == "move-alias" and again["version"] == "1"
    assert registry.alias_version("digits-cnn-edge", "candidate") == "1"
    assert len(c.search_model_versions("name='digits-cnn-edge'")) == 2


def test_dry_run_writes_nothing(local_registry, evaluated_snapshot, digits_onnx, digits_dir, tmp_path):
    params = _promotable(evaluated_snapshot, digits_dir, tmp_path)
    gate(params)
    result = promote(params, dry_run=True)
    assert result["action"] == "register" and result["dry_run"] and result["version"] is None
    assert registry.find_by_sha("digits-cnn-edge", result["sha256"]) is None
    assert registry.alias_version("digits-cnn-edge", "candidate") is None


def test_failed_gate_registers_nothing_and_leaves_a_failed_run(
    local_registry, evaluated_snapshot, digits_onnx, digits_dir, tmp_path
):
    params = _promotable(evaluated_snapshot, digits_dir, tmp_path, budgets__max_size_mb=0.0001)
    with pytest.raises(GateFailedError, match="gate failed: no candidate met every budget; .* missed"):
        gate(params)
    verdict = json.loads(Path("reports/gate.json").read_text())
    assert verdict["verdict"] == "fail" and verdict["selected"] is None
    for cand in verdict["candidates"].values():
        (miss,) = [v for v in cand["violations"] if v["budget"] == "max_size_mb"]
        assert miss["threshold"] == 0.0001 and miss["measured"] == cand["metrics"]["size_mb"]
    assert "max_size_mb missed" in Path("reports/gate.md").read_text()
    with pytest.raises(GateFailedError):
        promote(params)
    c = registry.client()
    assert c.search_registered_models(filter_string="name='digits-cnn-edge'") == []
    exp = c.get_experiment_by_name("squeezeflow")
    runs = c.search_runs([exp.experiment_id])
    assert [(r.info.run_name, r.info.status) for r in runs] == [("gate-failed", "FAILED")]


def test_lineage_formats_descendants_and_onnx_file(
    local_registry, evaluated_snapshot, digits_onnx, digits_dir, tmp_path
):
    params = _promotable(evaluated_snapshot, digits_dir, tmp_path)
    verdict = gate(params)
    promote(params)
    chain = json.loads(
        sh(BIN / "squeezeflow", "lineage", "models:/digits-cnn-edge@candidate", "--format", "json").stdout
    )
    assert [link["uri"] for link in chain] == ["models:/digits-cnn-edge/1", "models:/digits-cnn/1"]
    newest = chain[0]
    assert newest["recipe"] == verdict["selected"] and len(newest["recipe_digest"]) == 64
    # parameters, not just kinds
    assert newest["steps"][0]["kind"] == "quantize" and "per_channel" in newest["steps"][0]
    assert set(newest["data"]) == {"eval", "calibration", "train"} and newest["verdict"] == "pass"
    assert newest["metrics"]["accuracy"] > 0.9 and newest["parent"] == "models:/digits-cnn/1"
    mermaid = sh(BIN / "squeezeflow", "lineage", "models:/digits-cnn-edge/1", "--format", "mermaid").stdout
    assert mermaid.startswith("graph BT") and "n1 --> n0" in mermaid and "digits-cnn/1" in mermaid
    text = sh(BIN / "squeezeflow", "lineage", "models:/digits-cnn-edge/1").stdout
    assert f"recipe {verdict['selected']}" in text and "gate pass" in text and "(source model)" in text

    down = sh(BIN / "squeezeflow", "lineage", "models:/digits-cnn/1", "--descendants", "--format", "json").stdout
    (root,) = json.loads(down)
    assert root["uri"] == "models:/digits-cnn/1" and [c["uri"] for c in root["children"]] == [
        "models:/digits-cnn-edge/1"
    ]

    # the ONNX file alone, with no registry at all
    onnx_file = Path("artifacts/candidates") / verdict["selected"] / "model.onnx"
    offline = sh(
        BIN / "squeezeflow",
        "lineage",
        str(onnx_file),
        "--format",
        "json",
        env={**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
    ).stdout
    links = json.loads(offline)
    assert links[0]["recipe"] == verdict["selected"] and links[1]["uri"] == "models:/digits-cnn/1"


def test_runs_in_a_pipeline_folder_carry_git_and_dvc_lock(local_registry, tmp_path):
    import mlflow

    from squeezeflow.data import digest

    for name in ("dvc.yaml", "dvc.lock"):
        (tmp_path / name).write_text("stages: {}\n")
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    sh("git", "init", "-q", "-b", "release")
    sh(*git, "add", "dvc.yaml", "dvc.lock")
    sh(*git, "commit", "-qm", "pipeline")
    registry.client()
    with mlflow.start_run() as run:  # any fluent run, not only squeezeflow's
        pass
    tags = registry.client().get_run(run.info.run_id).data.tags
    assert tags["squeezeflow.git.commit"] == sh("git", "rev-parse", "HEAD").stdout.strip()
    assert tags["squeezeflow.git.branch"] == "release" and tags["squeezeflow.git.dirty"] == "false"
    assert tags["squeezeflow.dvc_lock_digest"] == digest(tmp_path / "dvc.lock")
    # what dvc repro rewrites is not an uncommitted change of the pipeline
    (tmp_path / "dvc.lock").write_text("changed\n")
    run_id = registry.start_run("squeezeflow", "probe", {})
    assert registry.client().get_run(run_id).data.tags["squeezeflow.git.dirty"] == "false"
    (tmp_path / "dvc.yaml").write_text("stages: {a: {cmd: 'true'}}\n")
    run_id = registry.start_run("squeezeflow", "probe", {})
    tags = registry.client().get_run(run_id).data.tags
    assert tags["squeezeflow.git.dirty"] == "true" and tags["squeezeflow.git.changed"] == "dvc.yaml"


def test_pickled_source_needs_explicit_permission(local_registry, digits_cnn, digits_dir, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_MODEL_CODE_EXECUTION", raising=False)
    registry.register_torch(
        digits_cnn,
        "digits-cnn",
        np.load(digits_dir / "eval.npz")["input"][:4],
        alias="champion",
        serialization_format="pickle",
    )
    path = write_params(tmp_path, digits_dir)
    proc = sh(BIN / "squeezeflow", "--params", path, "pull", check=False)
    assert proc.returncode == 2
    assert "pickle format" in error_line(proc) and "MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true" in error_line(proc)
    allowed = sh(
        BIN / "squeezeflow", "--params", path, "pull", env={**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
    )
    assert "models:/digits-cnn/1" in allowed.stdout


def test_promoted_version_keeps_the_source_signature(local_registry, digits_cnn, digits_dir, tmp_path):
    """The compressed version carries the source's signature and serves the source's input example through
    mlflow.pyfunc.
    """
    import mlflow.pyfunc
    import torch
    from mlflow.models import get_model_info

    example = np.load(digits_dir / "eval.npz")["input"][:4]
    registry.register_torch(digits_cnn, "digits-cnn", example, alias="champion")
    params = run_until_gate(write_params(tmp_path, digits_dir))
    gate(params)
    promoted = promote(params)
    source = get_model_info("models:/digits-cnn/1").signature
    assert source is not None and get_model_info(promoted["model_uri"]).signature == source
    predicted = mlflow.pyfunc.load_model(promoted["model_uri"]).predict(example)
    scores = np.asarray(next(iter(predicted.values())) if isinstance(predicted, dict) else predicted)
    with torch.no_grad():
        expected = digits_cnn(torch.from_numpy(example)).argmax(1).numpy()
    assert scores.shape == (4, 10) and (scores.argmax(1) == expected).mean() >= 0.75
