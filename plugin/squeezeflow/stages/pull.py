"""pull: resolve the source reference to one immutable version and write artifacts/source/.

It also pulls every other registered model a recipe names (distillation teachers and students)
into artifacts/registered/, so that no later stage talks to the registry.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from squeezeflow import data, registry
from squeezeflow.config import Params, registry_refs
from squeezeflow.data import artifacts
from squeezeflow.data.artifacts import INDEX, read_index
from squeezeflow.errors import ModelError
from squeezeflow.onnx import modelfile, sessions
from squeezeflow.registry import fast_lookup, gitstate
from squeezeflow.stages import REGISTERED_DIR, REPORTS_DIR, SOURCE_DIR
from squeezeflow.torch import convert

EXAMPLE_SAMPLES = 32


def pull(
    params: Params,
    out_dir: Path = SOURCE_DIR,
    registered_dir: Path = REGISTERED_DIR,
    params_file: Path = Path("params.yaml"),
) -> dict[str, Any]:
    """Download the source model, export it to ONNX when it is PyTorch, and write its manifest.

    Outputs are byte-identical when the reference resolves to the same version, so DVC skips
    everything downstream; when artifacts/source/ already holds that version intact (its model
    sha256 checks out), nothing is downloaded or exported again. The models named by recipes
    (`registry_refs`) go the same way into registered_dir/, with index.json mapping each
    requested URI to its folder.

    Args:
        params: the pipeline parameters (`source`, `data.eval`, `recipes`).
        out_dir: the model directory to write.
        registered_dir: where the other registered models go.
        params_file: the params file promote will judge (reports/release.json, see `release_record`).

    Returns:
        The source's manifest.

    Raises:
        NotFoundError, RegistryUnreachableError, ModelError, DataError.
    """
    release_record(params, params_file)
    unchanged = _unchanged(params, out_dir, registered_dir)
    if unchanged is not None:
        return unchanged
    source = registry.resolve(params.source.model_uri)
    refs = {uri: registry.resolve(uri) for uri in registry_refs(params)}  # a bad URI fails before any download
    manifest = fetch(source, out_dir, params.data.eval)
    pull_registered(refs, registered_dir, params.data.eval)
    return manifest


def release_record(
    params: Params, params_file: Path = Path("params.yaml"), reports_dir: Path = REPORTS_DIR
) -> list[str]:
    """Write reports/release.json: why promotion would be a dry run now (empty: it may ship).

    Pull runs on every `dvc repro` and the promote stage depends on this file, so a promote whose
    last run was a dry run (a DVC experiment, a dirty tree) runs again once the experiment is applied
    and committed, and only then; the stages between are not touched.
    """
    _, held = gitstate.held(params, params_file)
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / "release.json").write_text(json.dumps({"held": held}, indent=2) + "\n")
    return held


def _unchanged(params: Params, out_dir: Path, registered_dir: Path) -> dict[str, Any] | None:
    """The source's manifest when every model already on disk is what its URI names now
    (looked up without MLflow: the no-op `dvc repro` case); None when anything differs or is unsure."""

    def current(uri: str, folder: Path) -> dict[str, Any] | None:
        hit = fast_lookup.version(uri)
        return hit and _current(folder, registry.ModelRef(hit[0], hit[1], uri, hit[2], None, None, {}))

    manifest = current(params.source.model_uri, out_dir)
    index, refs = read_index(registered_dir), registry_refs(params)
    if (
        manifest is None
        or not (registered_dir / INDEX).is_file()
        or set(index) != set(refs)
        or not all(current(uri, registered_dir / index[uri]["dir"]) for uri in refs)
    ):
        return None
    return manifest


def pull_registered(refs: dict[str, registry.ModelRef], out_dir: Path, eval_path: Path) -> dict[str, Any]:
    """Write each resolved model into out_dir/NAME-vVERSION/ and index.json (requested URI -> folder).

    Folders no longer named are removed; the index is written last.
    """
    index = {}
    for uri, ref in refs.items():
        folder = f"{ref.name}-v{ref.version}"
        manifest = fetch(ref, out_dir / folder, eval_path)
        index[uri] = {
            "dir": folder,
            "name": ref.name,
            "version": ref.version,
            "model_id": ref.model_id or "",
            "run_id": ref.run_id or "",
            "sha256": manifest["sha256"],
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = {entry["dir"] for entry in index.values()} | {INDEX}
    for stale in out_dir.iterdir():
        if stale.name not in keep:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    (out_dir / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


def fetch(ref: registry.ModelRef, out_dir: Path, eval_path: Path) -> dict[str, Any]:
    """Write one resolved version into a model directory (ONNX file, torch folder, manifest)."""
    current = _current(out_dir, ref)
    if current is not None:
        return current
    with artifacts.staged(out_dir) as tmp:
        mlflow_dir = registry.download(ref, tmp / "mlflow_model")
        kind, rel = registry.flavor(mlflow_dir)
        signature = registry.signature(mlflow_dir)  # the promoted version gets it too
        onnx_file = artifacts.model_path(tmp)
        # the inputs' shapes and an example, not the whole file
        eval_arrays = data.head(eval_path, "eval", EXAMPLE_SAMPLES)
        example = data.inputs_of(eval_arrays)
        files = {"model": artifacts.MODEL_FILE}
        if kind == "onnx":
            modelfile.copy_onnx(mlflow_dir / rel, onnx_file)
            modelfile.load_onnx(onnx_file)
            artifact_sha256 = artifacts.model_digest(mlflow_dir / rel)
            shutil.rmtree(mlflow_dir)  # the ONNX file is all later stages need
        else:
            convert.export_onnx(convert.load_torch(mlflow_dir), example, onnx_file)
            artifact_sha256 = _tree_digest(mlflow_dir / rel)
            files["torch"] = mlflow_dir.name
        sess = sessions.session(onnx_file)
        data.check_inputs(eval_arrays, sess.get_inputs(), eval_path)
        sessions.run(sess, example)
        root = {
            "name": ref.name,
            "version": ref.version,
            "requested": ref.requested,
            "source": ref.source,
            "model_id": ref.model_id,
            "run_id": ref.run_id,
            "flavor": kind,
            "artifact_sha256": artifact_sha256,
        }
        manifest = {
            "format": "onnx",
            "files": files,
            "sha256": artifacts.model_digest(onnx_file),
            "parent_digest": None,
            "steps": [],
            "root": root,
            "inputs": [
                {"name": i.name, "shape": [d if isinstance(d, int) else str(d) for d in i.shape], "type": i.type}
                for i in sess.get_inputs()
            ],
            "signature": signature,
            "weights": modelfile.weight_stats(onnx_file),  # parameter count and sparsity, for evaluate
        }
        artifacts.write_manifest(tmp, manifest)
    return manifest


def _current(out_dir: Path, ref: registry.ModelRef) -> dict[str, Any] | None:
    """The existing manifest when it already holds this exact version, intact; else None."""

    try:
        manifest = artifacts.read_manifest(out_dir)
    except (ModelError, ValueError, KeyError):
        return None
    root = manifest.get("root", {})
    if (root.get("name"), root.get("version"), root.get("requested"), root.get("source")) != (
        ref.name,
        ref.version,
        ref.requested,
        ref.source,
    ):
        return None
    torch_dir = manifest["files"].get("torch")
    if torch_dir and not (out_dir / torch_dir).is_dir():
        return None
    return manifest


def _tree_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents) in sorted order."""

    if path.is_file():
        return data.digest(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + data.digest(f).encode())
    return h.hexdigest()
