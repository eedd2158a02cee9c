"""What no commit holds does not ship by default: promotion from a dirty tree or another branch is a
dry run unless params allow it, and when it does ship the version and `squeezeflow lineage` say so.
(`dvc exp run` itself: tests/test_pipeline.py.)"""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import restore, sh
from squeezeflow import registry
from squeezeflow.config import load_params
from squeezeflow.registry import gitstate, lineage

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]


@pytest.fixture
def gated_repo(local_registry, evaluated_snapshot, tmp_path, monkeypatch):
    """A committed git repository on main whose pipeline has run up to a passing gate (evaluated once
    per session, restored here; only the params file and the ignore rules are committed)."""
    from squeezeflow.stages.gate import gate

    for name in ("GITHUB_REF_NAME", "GITHUB_SHA", gitstate.EXP_NAME, gitstate.EXP_BASELINE):
        monkeypatch.delenv(name, raising=False)

    path = restore(evaluated_snapshot, tmp_path) / "params.yaml"
    (tmp_path / ".gitignore").write_text("mlflow.db\nmlruns/\n")
    sh("git", "init", "-q", "-b", "main")
    sh(*GIT, "add", "params.yaml", ".gitignore")
    sh(*GIT, "commit", "-qm", "pipeline")
    assert gate(load_params(path))["verdict"] == "pass"
    return path


def _edit(path, **promote):
    params = yaml.safe_load(path.read_text())
    params["promote"].update(promote)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return load_params(path)


@pytest.mark.integration  # starts a process
def test_outputs_of_the_pipeline_are_not_uncommitted_changes(gated_repo):
    sh(*GIT, "add", "-f", "metrics", "reports")
    sh(*GIT, "commit", "-qm", "metrics")
    (gated_repo.parent / "metrics" / "baseline.json").write_text("{}\n")  # dvc repro rewrites these
    assert gitstate.state().changed == ()
    gated_repo.write_text(gated_repo.read_text() + "# edited\n")
    assert gitstate.state().changed == ("params.yaml",)


def test_dirty_tree_is_a_dry_run_unless_allowed(gated_repo, capsys):
    from squeezeflow.stages.promote import promote

    params = _edit(gated_repo, registered_model="digits-cnn-dirty")  # an uncommitted edit of params.yaml
    held = promote(params)
    assert held["dry_run"] and held["version"] is None and "uncommitted changes (params.yaml)" in held["held"][0]
    assert (
        "promote: dry run, the registry is not written: the working tree has uncommitted changes (params.yaml)"
        in capsys.readouterr().out
    )
    assert not registry.client().search_registered_models(filter_string="name='digits-cnn-dirty'")

    shipped = promote(_edit(gated_repo, from_dirty=True))
    assert shipped["action"] == "register" and not shipped["dry_run"] and shipped["held"] == []
    tags = registry.client().get_model_version("digits-cnn-dirty", shipped["version"]).tags
    assert (
        tags["squeezeflow.git.dirty"] == "true"
        and tags["squeezeflow.git.changed"] == "params.yaml"
        and tags["squeezeflow.git.branch"] == "main"
    )
    text = lineage.render(lineage.walk(shipped["model_uri"]), "text")
    assert "on main + UNCOMMITTED CHANGES (params.yaml)" in text
    assert json.loads(lineage.render(lineage.walk(shipped["model_uri"]), "json"))[0]["git_dirty"] == "true"


@pytest.mark.integration  # starts a process
def test_other_branches_are_a_dry_run_unless_listed(gated_repo):
    from squeezeflow.stages.promote import promote

    sh("git", "checkout", "-q", "-b", "try-int4")
    held = promote(load_params(gated_repo))
    assert held["dry_run"] and "branch try-int4 is not a release branch (main, master)" in held["held"][0]
    params = _edit(gated_repo, branches=["main", "try-int4"])
    sh(*GIT, "commit", "-qam", "release from try-int4 too")
    shipped = promote(params)
    assert shipped["action"] == "register" and shipped["held"] == []
    tags = registry.client().get_model_version(shipped["registered_model"], shipped["version"]).tags
    assert tags["squeezeflow.git.branch"] == "try-int4" and tags["squeezeflow.git.dirty"] == "false"
    assert tags["squeezeflow.git_commit"] == sh("git", "rev-parse", "HEAD").stdout.strip()


def test_an_untracked_params_file_is_an_uncommitted_change(gated_repo):
    from squeezeflow.stages.promote import promote

    release = gated_repo.parent / "release.yaml"
    release.write_text(gated_repo.read_text())
    held = promote(load_params(release), params_file=release)
    assert held["dry_run"] and "uncommitted changes (release.yaml (untracked))" in held["held"][0]
    assert registry.alias_version("digits-cnn-edge", "candidate") is None


@pytest.mark.integration  # starts a process
def test_only_the_exact_lock_file_is_a_pipeline_output(gated_repo):
    notes = gated_repo.parent / "dvc.lock-notes.md"
    notes.write_text("notes\n")
    sh(*GIT, "add", "dvc.lock-notes.md")
    sh(*GIT, "commit", "-qm", "notes")
    notes.write_text("edited\n")
    assert gitstate.state().changed == ("dvc.lock-notes.md",)


@pytest.mark.integration  # starts a process
def test_github_variables_count_only_inside_actions(gated_repo, monkeypatch):
    sh("git", "checkout", "-q", "-b", "feature")
    head = sh("git", "rev-parse", "HEAD").stdout.strip()
    monkeypatch.setenv("GITHUB_REF_NAME", "main")
    monkeypatch.setenv("GITHUB_SHA", "0" * 40)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    assert (gitstate.state().branch, gitstate.state().commit) == ("feature", head)
    # a detached Actions checkout names its branch this way; HEAD still names the commit
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert (gitstate.state().branch, gitstate.state().commit) == ("main", head)
