"""The on-disk contract of a model directory: model file + manifest.json."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from squeezeflow.data import digest
from squeezeflow.errors import PipelineError, SqueezeflowError, redact

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
PROGRAM_FILE = "model.pte"  # instead of model.onnx in a candidate of the executorch step
FAILED = "failed.json"  # in a candidate folder instead of a model: the recipe could not be applied


def write_manifest(model_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write manifest.json deterministically (sorted keys, no clock), so equal inputs give equal bytes."""
    path = model_dir / MANIFEST
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, **manifest}, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """Read a model directory's manifest.json, checking the model file's sha256.

    Raises:
        ModelError: no manifest, an unknown schema, or a model file whose digest does not match.
    """
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST
    rerun = f"Re-run the stage that writes it: `dvc repro {_stage_of(model_dir)}`."
    if not path.is_file():
        raise PipelineError(f"{path}: not found. {rerun}")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        model = model_dir / files["model"]
        recorded = manifest["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise PipelineError(f"{path}: corrupt manifest ({type(e).__name__}). {rerun}") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise PipelineError(
            f"{path}: schema_version {manifest.get('schema_version')} is not supported (expected "
            f"{SCHEMA_VERSION}). {rerun}"
        )
    if not inside(model_dir, model) or not model.is_file() or model_digest(model) != recorded:
        raise PipelineError(f"{model}: missing or changed since its manifest was written (sha256 mismatch). {rerun}")
    return manifest


def _stage_of(model_dir: Path) -> str:
    """The DVC stage that writes a model folder, for the re-run hint."""
    return f"compress@{model_dir.name}" if model_dir.parent.name == "candidates" else "pull"


def manifest_digest(model_dir: str | Path) -> str:
    """sha256 of the manifest file: the parent link of derived models."""
    return hashlib.sha256((Path(model_dir) / MANIFEST).read_bytes()).hexdigest()


def side_file(model: str | Path) -> Path:
    """Where a model's weights go when they are stored as ONNX external data: MODEL.data beside it.

    squeezeflow writes weights there when they exceed SQUEEZEFLOW_EXTERNAL_DATA_BYTES (default
    256 MiB; protobuf caps a file at 2 GB), and renames any other layout to this one when it copies a model in.
    """
    return Path(model).with_name(Path(model).name + ".data")


def model_files(model: str | Path) -> list[Path]:
    """The model file and, when it has one, its external data file."""
    return [Path(model)] + [f for f in [side_file(model)] if f.is_file()]


def model_digest(model: str | Path) -> str:
    """sha256 of a model: its file's, or, with external data, of both files' names and digests."""

    files = model_files(model)
    if len(files) == 1:
        return digest(model)
    return hashlib.sha256(b"".join(f.name.encode() + b"\0" + digest(f).encode() + b"\n" for f in files)).hexdigest()


def inside(folder: str | Path, path: str | Path) -> bool:
    """Whether `path` is `folder` or below it once `..` and symlinks are resolved (paths named by artifacts are
    untrusted).
    """
    folder, path = Path(folder).resolve(), Path(path).resolve()
    return path == folder or folder in path.parents


def model_path(model_dir: str | Path) -> Path:
    """The model file of a model directory: model.onnx, or the ExecuTorch program model.pte where that is what it
    holds.
    """
    folder = Path(model_dir)
    return (
        folder / PROGRAM_FILE
        if (folder / PROGRAM_FILE).is_file() and not (folder / MODEL_FILE).is_file()
        else folder / MODEL_FILE
    )


@contextlib.contextmanager
def staged(final: str | Path) -> Iterator[Path]:
    """Build a model directory in a sibling folder; it replaces `final` only if the block succeeds.

    A failing stage therefore leaves the previous output (or nothing) and never half a model.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def write_failure(model_dir: Path, recipe: str, step: str, error: BaseException) -> dict[str, Any]:
    """Record in `model_dir` (replacing what was there) that `recipe` failed at `step`; returns the record."""

    text = redact(" ".join(str(error).split()))[:300]
    reason = text if isinstance(error, SqueezeflowError) else f"{type(error).__name__}{': ' + text if text else ''}"
    record = {"failed": True, "recipe": recipe, "step": step, "reason": reason}
    with staged(model_dir) as tmp:
        (tmp / FAILED).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def read_failure(model_dir: Path) -> dict[str, Any] | None:
    """The failure record of a candidate folder, or None when it holds a model."""
    path = Path(model_dir) / FAILED
    return json.loads(path.read_text()) if path.is_file() else None


INDEX = "index.json"  # in the registered-models folder: resolved URI -> its folder, name, version, sha256


def read_index(registered_dir: Path) -> dict:
    """The index the pull stage writes beside the other registered models it fetched ({} when there is none)."""
    path = Path(registered_dir) / INDEX
    return json.loads(path.read_text()) if path.is_file() else {}
