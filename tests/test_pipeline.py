"""The real dvc.yaml under `dvc repro` / `dvc exp run` in a temp git repo, against a real registry."""

import json
from pathlib import Path

import pytest

from conftest import BIN, register_onnx, sh
from squeezeflow import registry

pytestmark = pytest.mark.e2e


def _ran(proc) -> set[str]:
    """Names of the stages DVC actually ran."""
    return {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage '")}


def _versions(name: str) -> list[str]:
    c = registry.client()
    if not c.search_registered_models(filter_string=f"name='{name}'"):
        return []
    return sorted(str(v.version) for v in c.search_model_versions(f"name='{name}'"))


def _plots_have_data(shown: dict, ids: list[str]) -> None:
    """Each plot of `dvc plots show --json` renders records that hold its x and y fields."""
    shown = shown["data"]
    assert set(ids) <= set(shown), sorted(shown)
    for plot_id in ids:
        (rendered,) = shown[plot_id]
        content = rendered["content"]
        values, encoding = content["data"]["values"], content["encoding"]
        assert isinstance(values, list) and values, plot_id
        assert all(encoding[axis]["field"] in v for v in values for axis in ("x", "y")), plot_id


def test_demo_then_noop_then_alias_move_then_recipe_edit(demo_repo):
    # 1. demo: bootstraps data + source model, runs every stage, promotes
    demo = demo_repo
    assert "demo: registered models:/digits-cnn/1 as @champion" in demo.stdout
    assert {
        "pull",
        "compress@int8-static",
        "compress@int8-dynamic",
        "evaluate-baseline",
        "evaluate@int8-static",
        "evaluate@int8-dynamic",
        "gate",
        "promote",
    } <= _ran(demo)
    promotion = json.loads(Path("reports/promotion.json").read_text())
    assert f"promoted: {promotion['model_uri']}" in demo.stdout and "verdict: PASS" in demo.stdout
    assert _versions("digits-cnn-edge") == ["1"]
    for name in ("baseline", "int8-static", "int8-dynamic"):
        metrics = json.loads(Path(f"metrics/{name}.json").read_text())
        assert {
            "accuracy",
            "accuracy_drop",
            "agreement",
            "latency_p50_ms",
            "latency_p95_ms",
            "latency_p99_ms",
            "throughput_per_s",
            "speedup",
            "size_mb",
            "size_gzip_mb",
            "compression_ratio",
            "params",
            "sparsity",
        } <= set(metrics)
    assert json.loads(Path("metrics/int8-static.json").read_text())["compression_ratio"] > 3
    shown = json.loads(sh(BIN / "dvc", "plots", "show", "--json").stdout)
    _plots_have_data(
        shown, ["plots/int8-static.json", "plots/classes/int8-static.json", "reports/pareto.json", "pareto-size"]
    )

    # 2. again: only pull runs (always_changed), nothing downstream, no new version
    again = sh(BIN / "squeezeflow", "demo")
    assert _ran(again) == {"pull"}
    assert _versions("digits-cnn-edge") == ["1"]

    # 3. the source alias moves to a new version: everything downstream of pull runs again
    src = registry.resolve("models:/digits-cnn@champion")
    import mlflow.pytorch
    import numpy as np

    model = mlflow.pytorch.load_model(f"models:/digits-cnn/{src.version}")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd[[k for k in sd if k.endswith("bias")][-1]] += 0.01  # a different (still good) model
    model.load_state_dict(sd)
    registry.register_torch(model, "digits-cnn", np.load("data/eval.npz")["input"][:4], alias="champion")
    moved = sh(BIN / "dvc", "repro")
    assert {
        "pull",
        "compress@int8-static",
        "compress@int8-dynamic",
        "evaluate-baseline",
        "evaluate@int8-static",
        "evaluate@int8-dynamic",
        "gate",
    } <= _ran(moved)
    manifest = json.loads(Path("artifacts/source/manifest.json").read_text())
    assert manifest["root"]["version"] == "2"
    assert len(_versions("digits-cnn-edge")) == 2

    # 4. edit one recipe: only that candidate is recomputed
    import yaml

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["recipes"]["int8-dynamic"][0]["quantize"]["per_channel"] = False
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    edited = sh(BIN / "dvc", "repro")
    ran = _ran(edited)
    assert {"compress@int8-dynamic", "evaluate@int8-dynamic"} <= ran
    assert not ran & {"compress@int8-static", "evaluate@int8-static", "evaluate-baseline"}


def test_impossible_budget_fails_the_experiment_and_registers_nothing(demo_repo):
    before = _versions("digits-cnn-edge")
    alias_before = registry.alias_version("digits-cnn-edge", "candidate")
    sh("git", "-c", "user.email=t@example.com", "-c", "user.name=t", "add", "-A")
    sh("git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "demo ran", "--allow-empty")

    proc = sh(BIN / "dvc", "exp", "run", "-S", "budgets.max_size_mb=0.000001", check=False)
    assert proc.returncode != 0
    assert "gate failed: no candidate met every budget" in proc.stderr + proc.stdout

    verdict = json.loads(Path("reports/gate.json").read_text())
    assert verdict["verdict"] == "fail" and verdict["selected"] is None
    for cand in verdict["candidates"].values():
        (miss,) = [v for v in cand["violations"] if v["budget"] == "max_size_mb"]
        assert miss["threshold"] == 0.000001 and miss["measured"] > miss["threshold"]
    md = Path("reports/gate.md").read_text()
    assert "## squeezeflow gate: FAIL" in md and "int8-static: max_size_mb missed: size_mb = " in md

    assert _versions("digits-cnn-edge") == before
    assert registry.alias_version("digits-cnn-edge", "candidate") == alias_before
    c = registry.client()
    runs = c.search_runs(
        [c.get_experiment_by_name("squeezeflow").experiment_id], filter_string="attributes.run_name = 'gate-failed'"
    )
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.params["budgets.max_size_mb"] == "1e-06"


def test_experiments_do_not_ship_unless_asked(demo_repo):
    sh("git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qam", "demo ran", "--allow-empty")

    tried = sh(BIN / "dvc", "exp", "run", "-n", "try-it", "-S", "promote.registered_model=digits-cnn-exp")
    assert "promote: dry run, the registry is not written: it runs in DVC experiment try-it" in tried.stdout
    assert json.loads(Path("reports/promotion.json").read_text())["dry_run"] is True
    assert _versions("digits-cnn-exp") == []

    # +: a key params.yaml does not have yet
    shipped = sh(
        BIN / "dvc",
        "exp",
        "run",
        "-n",
        "ship-it",
        "-S",
        "promote.registered_model=digits-cnn-exp",
        "-S",
        "+promote.from_experiments=true",
    )
    assert "promote: registered models:/digits-cnn-exp/1" in shipped.stdout, shipped.stdout[-3000:]
    tags = registry.client().get_model_version("digits-cnn-exp", "1").tags
    assert (
        tags["squeezeflow.dvc.experiment"] == "ship-it"
        and tags["squeezeflow.git.dirty"] == "true"
        and "params.yaml" in tags["squeezeflow.git.changed"]
    )
    assert "from DVC experiment ship-it" in sh(BIN / "squeezeflow", "lineage", "models:/digits-cnn-exp/1").stdout

    # the compact summary is what `dvc exp show` compares experiments by
    summary = json.loads(Path("reports/summary.json").read_text())
    assert (
        summary["verdict"] == "pass"
        and summary["selected"]
        and summary["selected_speedup"] > 0
        and summary["candidates"] == 2
    )
    # the README's readable `dvc exp show`
    keep = r"Experiment|verdict|selected|passing|failed_recipes|budgets\.|recipes\."
    header = sh(BIN / "dvc", "exp", "show", "--csv", "--drop", ".*", "--keep", keep).stdout.splitlines()[0].split(",")
    assert {
        "Experiment",
        "verdict",
        "selected",
        "selected_speedup",
        "budgets.min_speedup",
        "recipes.int8-static",
    } <= set(header) and len(header) < 20, header

    # a dry-run experiment, applied and committed, ships on the next `dvc repro`: promote runs again (its git state
    # changed), nothing else does; once shipped, a repro leaves it alone and a rerun says it skips
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    sh("git", "checkout", "HEAD", "--", "params.yaml")  # `dvc exp run` left ship-it's params in the workspace
    sh(*git, "commit", "-qam", "after the experiments", "--allow-empty")
    later = sh(BIN / "dvc", "exp", "run", "-n", "later", "-S", "promote.registered_model=digits-cnn-later")
    assert "promote: dry run" in later.stdout and _versions("digits-cnn-later") == []
    sh(BIN / "dvc", "exp", "apply", "later")
    sh(*git, "commit", "-qam", "apply the experiment")
    applied = sh(BIN / "dvc", "repro")
    assert _ran(applied) == {"pull", "promote"}, applied.stdout[-3000:]
    assert "promote: registered models:/digits-cnn-later/1" in applied.stdout and _versions("digits-cnn-later") == ["1"]
    sh(*git, "commit", "-qam", "shipped", "--allow-empty")
    assert _ran(sh(BIN / "dvc", "repro")) == {"pull"}
    assert "already promoted" in sh(BIN / "squeezeflow", "promote").stdout


def test_a_failing_recipe_is_a_row_and_the_others_still_ship(pipeline_repo: Path, digits_onnx):
    """Structured pruning needs a PyTorch model and the source is ONNX: that recipe fails, the gate judges the other."""
    import yaml

    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["recipes"] = {
        "int8-static": [{"quantize": {"mode": "static"}}],
        "pruned": [{"prune": {"method": "structured", "amount": 0.5}}],
    }
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qam", "two recipes")

    proc = sh(BIN / "dvc", "repro")
    assert "compress pruned: FAILED at step prune: recipes.pruned: step 'prune' needs a PyTorch model" in proc.stderr
    verdict = json.loads(Path("reports/gate.json").read_text())
    assert verdict["candidates"]["pruned"]["status"] == "failed" and verdict["selected"] == "int8-static"
    assert "Failed recipes (not judged):" in Path("reports/gate.md").read_text()
    assert json.loads(Path("metrics/pruned.json").read_text())["failed_step"] == "prune"
    assert _versions("digits-cnn-edge") == ["1"]


def test_mnist_variant_runs_from_its_folder(tmp_path, monkeypatch):
    """pipelines/mnist-cnn is runnable with `dvc repro pipelines/mnist-cnn/dvc.yaml`."""
    import shutil

    from conftest import ROOT

    repo = tmp_path / "repo"
    shutil.copytree(
        ROOT,
        repo,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "artifacts",
            "metrics",
            "reports",
            "mlflow.db",
            "mlruns",
            "data",
            "*.egg-info",
            "__pycache__",
            "dvc.lock",
            "tmp",
            "cache",
        ),
    )
    monkeypatch.chdir(repo)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sh("git", "init", "-q", "-b", "main")
    folder = repo / "pipelines/mnist-cnn"
    import yaml

    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["target"].update(warmup=3, repeats=20, max_seconds=5)
    params["demo"]["epochs"] = 1
    # what the test checks: one that distills, one that does not
    params["recipes"] = {k: params["recipes"][k] for k in ("int8-static", "distilled")}
    params["recipes"]["distilled"][0]["distill"]["epochs"] = 2
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    demo = sh(BIN / "squeezeflow", "demo", cwd=folder)
    assert "verdict:" in demo.stdout
    assert (folder / "mlflow.db").is_file() and (folder / "reports/gate.json").is_file()
    distilled = json.loads((folder / "artifacts/candidates/distilled/manifest.json").read_text())
    assert [s["kind"] for s in distilled["steps"]] == ["distill", "quantize"]
    assert distilled["steps"][0]["stats"]["teachers"][0]["name"] == "mnist-cnn"
    assert json.loads((folder / "artifacts/soft-labels/distilled/index.json").read_text())["source"]["version"] == "1"
    # it does not distill
    assert json.loads((folder / "artifacts/soft-labels/int8-static/index.json").read_text()) == {}
    noop = sh(BIN / "dvc", "repro", "pipelines/mnist-cnn/dvc.yaml", cwd=repo)
    assert _ran(noop) == {"pipelines/mnist-cnn/dvc.yaml:pull"} or _ran(noop) == {"pull"}

    # removing the distill recipe reruns no other recipe's compress or evaluate stage
    del params["recipes"]["distilled"]
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    removed = {name.split(":")[-1] for name in _ran(sh(BIN / "dvc", "repro", "pipelines/mnist-cnn/dvc.yaml", cwd=repo))}
    assert "soft-labels" in removed and not {n for n in removed if n.startswith(("compress@", "evaluate@"))}, removed


def test_targets_pipeline_runs_with_dvc(tmp_path, monkeypatch):
    """pipelines/digits-targets under `dvc repro`: metrics per target that `dvc metrics show` reads, a verdict and an
    alias per target.
    """
    from conftest import repo_of_pipeline

    def short(params):
        params["targets"] = {
            t: {**params["targets"][t], "warmup": 3, "repeats": 20, "max_seconds": 3} for t in ("x86-edge", "mobile")
        }
        params["demo"]["epochs"] = 2

    repo_of_pipeline("digits-targets", tmp_path / "repo", monkeypatch, short)
    demo = sh(BIN / "squeezeflow", "demo", check=False)
    verdict = json.loads(Path("reports/gate.json").read_text())
    assert (
        verdict["targets"]["mobile"]["selected"] == "mobile-int8"
        and verdict["matrix"]["int8-static"]["mobile"] == "n/a"
    ), demo.stdout[-2000:]
    shown = json.loads(sh(BIN / "dvc", "metrics", "show", "--json").stdout)
    flat = json.dumps(shown)
    # the per-target sections, as DVC reads them
    assert '"x86-edge"' in flat and '"mobile"' in flat and "speedup" in flat
    if verdict["verdict"] == "pass":
        assert demo.returncode == 0 and "promoted for mobile" in demo.stdout
        assert registry.alias_version("digits-cnn-edge", "candidate-mobile") is not None
    noop = sh(BIN / "dvc", "repro")
    # nothing re-measured when nothing changed
    assert not {n for n in _ran(noop) if n.startswith(("compress@", "evaluate"))}
