"""`squeezeflow init`: a pipeline for a registered model that `dvc repro` runs to a verdict without hand edits."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from conftest import BIN, error_line, register_onnx, sh
from squeezeflow import registry

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]


def _init_and_repro(folder, digits_dir, uri, *flags, edit=None):
    out = sh(BIN / "squeezeflow", "init", "--from-model", uri, *flags, cwd=folder).stdout
    assert "init: wrote params.yaml for " + uri in out and "init: ran git init" in out and "init: ran dvc init" in out
    if edit:
        params = yaml.safe_load((folder / "params.yaml").read_text())
        edit(params)
        (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "data").mkdir()
    for split in ("eval", "calibration", "train"):
        shutil.copy(digits_dir / f"{split}.npz", folder / "data" / f"{split}.npz")
    sh(*GIT, "add", "-A", cwd=folder)
    sh(*GIT, "commit", "-qm", "pipeline", cwd=folder)
    assert (
        "data/" in (folder / ".gitignore").read_text().splitlines()
        and sh("git", "status", "--porcelain", cwd=folder).stdout == ""
    )
    proc = sh(BIN / "dvc", "repro", cwd=folder, check=False)
    verdict = json.loads((folder / "reports/gate.json").read_text())
    assert proc.returncode == (0 if verdict["verdict"] == "pass" else 255), proc.stdout[-2000:] + proc.stderr[-2000:]
    return yaml.safe_load((folder / "params.yaml").read_text()), verdict


@pytest.mark.e2e
def test_init_from_a_pt2_model_runs_to_a_verdict(local_registry, digits_cnn, digits_dir, tmp_path):
    registry.register_torch(digits_cnn, "digits-cnn", np.load(digits_dir / "eval.npz")["input"][:4], alias="champion")
    folder = tmp_path / "repo"
    folder.mkdir()
    params, verdict = _init_and_repro(folder, digits_dir, "models:/digits-cnn@champion")
    assert params["data"]["task"] == "classification" and params["promote"]["registered_model"] == "digits-cnn-edge"
    # a PyTorch source can take the torch steps
    assert set(params["recipes"]) == {"int8-static", "int8-dynamic", "cluster256"}
    assert set(verdict["candidates"]) == set(params["recipes"]) and verdict["task"] == "classification"


@pytest.mark.e2e
def test_init_from_an_onnx_model_with_search_runs_to_a_verdict(local_registry, digits_onnx, digits_dir, tmp_path):
    register_onnx(digits_onnx, "digits-onnx", alias="champion")
    folder = tmp_path / "repo"
    folder.mkdir()

    def short(params):  # the test judges the wiring, not the search
        params["search"].update(trials=3, latency_seconds=1)

    params, verdict = _init_and_repro(folder, digits_dir, "models:/digits-onnx@champion", "--search", edit=short)
    # ONNX steps only, and the search's best trial
    assert set(params["recipes"]) == {"int8-static", "int8-dynamic", "searched"}
    assert (
        verdict["candidates"]["int8-static"]["status"] != "failed"
        and verdict["candidates"]["searched"]["status"] != "failed"
    )
    assert (
        "  search:" in (folder / "dvc.yaml").read_text()
        and json.loads((folder / "artifacts/search/trials.json").read_text())["study"]["trials"] == 3
    )


@pytest.mark.integration  # starts a process
def test_init_never_overwrites_and_writes_a_skeleton(tmp_path):
    out = sh(BIN / "squeezeflow", "init", cwd=tmp_path).stdout
    assert "set source.model_uri" in out
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["source"]["model_uri"] == "models:/NAME@champion"
    again = sh(BIN / "squeezeflow", "init", cwd=tmp_path, check=False)
    assert again.returncode == 2 and "already exists; squeezeflow init does not overwrite" in error_line(again)


def test_every_pipeline_uses_the_template_init_writes():
    from importlib import resources

    import yaml

    template = resources.files("squeezeflow").joinpath("templates/dvc.yaml.in").read_text()
    several = resources.files("squeezeflow").joinpath("templates/dvc-targets.yaml.in").read_text()
    # the targets template is the plain one with the evaluate stages depending on `targets`
    assert several.splitlines()[2:] == [
        line.replace("- target", "- targets") if line.strip() == "- target" else line
        for line in template.splitlines()[1:]
    ]
    searching = resources.files("squeezeflow").joinpath("templates/dvc-search.yaml.in").read_text()
    # the search template is the plain one with the search stage before compress, and each compress depending on its
    # slot file
    plain = yaml.safe_load(template)["stages"]
    stages = yaml.safe_load(searching)["stages"]
    assert list(stages) == [
        "pull",
        "check-data",
        "soft-labels",
        "search",
        *[s for s in plain if s not in ("pull", "check-data", "soft-labels")],
    ]
    slot = "artifacts/search/slots/${key}.json"
    assert (
        slot in stages["compress"]["do"]["deps"]
        and [d for d in stages["compress"]["do"]["deps"] if d != slot] == plain["compress"]["do"]["deps"]
    )
    assert {k: v for k, v in stages["compress"].items() if k != "do"} == {
        k: v for k, v in plain["compress"].items() if k != "do"
    }
    assert stages["gate"]["deps"] == plain["gate"]["deps"] + ["artifacts/search/trials.json"]
    assert {k: v for k, v in stages.items() if k not in ("search", "compress", "gate")} == {
        k: v for k, v in plain.items() if k not in ("compress", "gate")
    }


def test_init_quotes_what_the_model_names(local_registry, tmp_path):
    """An input name is data: one with a newline and YAML in it cannot add keys to params.yaml."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    hostile = 'x"\ndata:\n  classes: 3\n#'
    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", [hostile, "w"], ["logits"])],
        "g",
        [helper.make_tensor_value_info(hostile, TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [weight],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    register_onnx(path, "odd-inputs", alias="champion")
    folder = tmp_path / "repo"
    folder.mkdir()
    sh(BIN / "squeezeflow", "init", "--from-model", "models:/odd-inputs@champion", cwd=folder)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    assert "classes" not in params["data"] and params["source"] == {"model_uri": "models:/odd-inputs@champion"}
    assert json.dumps(hostile) in (folder / "params.yaml").read_text()  # shown, escaped, in the comment


def test_the_repository_pipelines_are_the_templates(tmp_path):
    """Every dvc.yaml in the repository is what `make pipelines` writes from the package's templates."""
    from conftest import ROOT
    from squeezeflow.cli import scaffold

    folders = [ROOT, *sorted(p.parent for p in (ROOT / "pipelines").glob("*/params.yaml"))]
    assert len(folders) == 11
    stale = [str(f / "dvc.yaml") for f in folders if (f / "dvc.yaml").read_text() != scaffold.dvc_yaml_for(f)]
    assert not stale, f"run `make pipelines`: {stale}"
    # and refresh rewrites a stale copy with the template its params.yaml calls for
    copy = tmp_path / "p"
    copy.mkdir()
    (copy / "params.yaml").write_text((ROOT / "pipelines/digits-search/params.yaml").read_text())
    (copy / "dvc.yaml").write_text("stages: {}\n")
    assert scaffold.refresh([copy]) == [copy / "dvc.yaml"]
    assert (copy / "dvc.yaml").read_text() == scaffold.template("search") != scaffold.template(None)
    assert scaffold.refresh([copy]) == []
