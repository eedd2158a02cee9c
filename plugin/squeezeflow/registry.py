"""Everything squeezeflow says to MLflow: resolve, download, register, alias, log runs.

Errors are translated at this boundary: a missing model, version or alias is a `NotFoundError`
(exit 2); a server or database that does not answer is a `RegistryUnreachableError` (exit 3).
Credentials in URIs never reach a message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from squeezeflow import env
from squeezeflow.errors import ModelError, NotFoundError, RegistryUnreachableError

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+|latest))$")
_UNREACHABLE = ("Max retries exceeded", "Connection refused", "Failed to establish", "unable to open database", "could not connect", "timed out", "Name or service not known", "Connection reset")
SHA_TAG = "squeezeflow.artifact_sha256"


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """An immutable registry coordinate: what a moving reference resolved to."""

    name: str
    version: str
    requested: str
    source: str
    model_id: str | None
    run_id: str | None
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def redact(text: str) -> str:
    """Hide user:password@ in URIs and token-like query values."""
    text = re.sub(r"(?<=://)[^/@\s]+@", "***@", text)
    return re.sub(r"(?i)((?:token|password|secret|key)=)[^&\s]+", r"\1***", text)


def client():
    """A MlflowClient on the configured tracking URI, failing fast when the server is down."""
    for key, value in env.MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import mlflow

    mlflow.set_tracking_uri(env.tracking_uri())
    return mlflow.MlflowClient()


@contextlib.contextmanager
def errors(what: str) -> Iterator[None]:
    """Translate MLflow and transport exceptions raised while doing `what`."""
    try:
        yield
    except (NotFoundError, ModelError):
        raise
    except Exception as e:
        text = redact(str(e))
        code = getattr(e, "error_code", "")
        if code == "RESOURCE_DOES_NOT_EXIST":
            raise NotFoundError(f"{what}: {text.splitlines()[0]}") from None
        if any(marker.lower() in text.lower() for marker in _UNREACHABLE) or type(e).__name__ in {"ConnectionError", "OperationalError", "Timeout"}:
            where = redact(env.tracking_uri())
            raise RegistryUnreachableError(f"MLflow registry at {where} does not answer while {what}. Start the server or fix {env.TRACKING_URI}.") from None
        raise


def _registered(c: Any, name: str) -> Any | None:
    """The registered model `name`, or None when it does not exist (other errors propagate)."""
    try:
        return c.get_registered_model(name)
    except Exception as e:
        if getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split models:/NAME@ALIAS | models:/NAME/VERSION | models:/NAME/latest."""
    m = _URI.match(uri)
    if not m:
        from squeezeflow.errors import ConfigError

        raise ConfigError(f"model URI {uri!r} is not models:/NAME@ALIAS, models:/NAME/VERSION or models:/NAME/latest.")
    return m["name"], m["alias"], m["version"]


def resolve(uri: str) -> ModelRef:
    """Resolve a moving reference to an immutable version.

    Args:
        uri: models:/NAME@ALIAS, models:/NAME/VERSION or models:/NAME/latest.

    Returns:
        The resolved `ModelRef`.

    Raises:
        NotFoundError: no such model, version or alias (the message lists what exists).
        RegistryUnreachableError: the registry does not answer.

    Example:
        >>> resolve("models:/digits-cnn@champion").version  # doctest: +SKIP
        '1'
    """
    name, alias, version = parse_uri(uri)
    c = client()
    with errors(f"resolving {uri}"):
        registered = _registered(c, name)
        if registered is None:
            known = sorted(m.name for m in c.search_registered_models(max_results=50))
            raise NotFoundError(f"registered model {name!r} does not exist in {redact(env.tracking_uri())}. Known models: {', '.join(known) or 'none'}.")
        if alias:
            aliases = dict(getattr(registered, "aliases", {}) or {})
            if alias not in aliases:
                raise NotFoundError(f"registered model {name!r} has no alias {alias!r}. Its aliases: {', '.join(sorted(aliases)) or 'none'}. Set one with `MlflowClient().set_registered_model_alias`.")
            mv = c.get_model_version_by_alias(name, alias)
        elif version == "latest":
            versions = c.search_model_versions(f"name='{name}'")
            if not versions:
                raise NotFoundError(f"registered model {name!r} has no versions.")
            mv = max(versions, key=lambda v: int(v.version))
        else:
            try:
                mv = c.get_model_version(name, version)
            except Exception as e:
                if getattr(e, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                    raise
                raise NotFoundError(f"registered model {name!r} has no version {version}.") from None
    if str(mv.status) not in ("READY", "ModelVersionStatus.READY"):
        raise NotFoundError(f"{name} version {mv.version} is {mv.status}, not READY; it cannot be pulled yet.")
    model_id = mv.model_id or (mv.source[len("models:/"):] if mv.source.startswith("models:/m-") else None)
    return ModelRef(name, str(mv.version), uri, mv.source, model_id, mv.run_id, dict(mv.tags or {}))


def download(ref: ModelRef, dst: Path) -> Path:
    """Download the version's MLflow model directory into `dst` (which must not exist)."""
    import mlflow.artifacts

    client()
    dst.mkdir(parents=True)
    with errors(f"downloading {ref.uri}"):
        path = mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=str(dst))
    path = Path(path).resolve()
    if dst.resolve() not in (path, *path.parents):  # artifact paths stay inside the stage's folder
        raise ModelError(f"{ref.uri}: downloaded outside {dst}; refusing to use it.")
    return path


def flavor(model_dir: Path) -> tuple[str, str]:
    """The usable flavor of an MLflow model dir: ("onnx", file) or ("pytorch", file)."""
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise ModelError(f"{model_dir}: no MLmodel file; the registered artifact is not an MLflow model.")
    flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
    if "onnx" in flavors:
        return "onnx", flavors["onnx"].get("data", "model.onnx")
    if "pytorch" in flavors:
        return "pytorch", flavors["pytorch"].get("model_data", "data")
    raise ModelError(f"{model_dir}: flavors {sorted(flavors)} are not supported. Register the model with mlflow.pytorch or mlflow.onnx.")


def find_by_sha(name: str, sha256: str) -> ModelRef | None:
    """The version of `name` whose artifact sha256 tag equals `sha256`, if any."""
    c = client()
    with errors(f"searching versions of {name}"):
        if _registered(c, name) is None:
            return None
        hits = c.search_model_versions(f"name='{name}' and tags.`{SHA_TAG}`='{sha256}'")
    if not hits:
        return None
    mv = min(hits, key=lambda v: int(v.version))
    return ModelRef(name, str(mv.version), f"models:/{name}/{mv.version}", mv.source, mv.model_id, mv.run_id, dict(mv.tags or {}))


def alias_version(name: str, alias: str) -> str | None:
    """The version `alias` points at, or None."""
    c = client()
    with errors(f"reading aliases of {name}"):
        registered = _registered(c, name)
    version = dict(registered.aliases or {}).get(alias) if registered else None
    return None if version is None else str(version)  # MLflow returns ints here


def set_alias(name: str, alias: str, version: str) -> None:
    """Point `alias` of `name` at `version`."""
    with errors(f"setting alias {name}@{alias}"):
        client().set_registered_model_alias(name, alias, version)


def publish(name: str, alias: str, onnx_file: Path, run_id: str, tags: dict[str, str]) -> str:
    """Log `onnx_file` as a model of run `run_id`, register it with `tags`, then move `alias`.

    All or nothing: if anything fails after the version exists, the version is deleted, so no
    version without its lineage tags and no alias on an unfinished version is ever left behind.

    Returns:
        The new version number.
    """
    import mlflow
    import mlflow.onnx
    import onnx

    c = client()
    with errors(f"registering {name}"):
        with mlflow.start_run(run_id=run_id):
            info = mlflow.onnx.log_model(onnx.load(str(onnx_file)), name="model", pip_requirements=["onnxruntime"], save_as_external_data=False)
        mv = mlflow.register_model(info.model_uri, name, tags=tags)
        try:
            if str(mv.status) not in ("READY", "ModelVersionStatus.READY"):
                raise NotFoundError(f"{name} version {mv.version} did not become READY.")
            c.set_registered_model_alias(name, alias, mv.version)
        except BaseException:
            with contextlib.suppress(Exception):
                c.delete_model_version(name, mv.version)
            raise
    return str(mv.version)


def register_torch(model: Any, name: str, example: Any, alias: str | None = None, experiment: str = "squeezeflow") -> str:
    """Log a torch module (pt2 format, batch axis dynamic) in a new run, register it, set `alias`.

    Used by the demo and the tests to create source models; `example` (an array, or a tuple of
    arrays for several inputs) needs >= 2 samples.

    Returns:
        models:/NAME/VERSION of the new version.
    """
    import mlflow
    import mlflow.pytorch
    import numpy as np

    c = client()
    with errors(f"registering {name}"):
        exp = c.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else c.create_experiment(experiment)
        with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{name}"):
            sample = tuple(np.ascontiguousarray(e) for e in example) if isinstance(example, tuple) else np.ascontiguousarray(example)
            info = mlflow.pytorch.log_model(model, name="model", input_example=sample, pip_requirements=["torch"])
        mv = mlflow.register_model(info.model_uri, name)
        if alias:
            c.set_registered_model_alias(name, alias, mv.version)
    return f"models:/{name}/{mv.version}"


def start_run(experiment: str, run_name: str, tags: dict[str, str]) -> str:
    """Create a run (not active) and return its id."""

    c = client()
    with errors(f"creating a run in experiment {experiment}"):
        exp = c.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else c.create_experiment(experiment)
        return c.create_run(exp_id, run_name=run_name, tags=tags).info.run_id


def log_run(run_id: str, params: dict[str, Any], metrics: dict[str, float], files: list[Path], parent_model_id: str | None = None) -> None:
    """Log params, metrics, files and the parent model input to an existing run."""
    from mlflow.entities import LoggedModelInput, Metric, Param

    c = client()
    with errors(f"logging run {run_id}"):
        items = sorted(params.items())
        for start in range(0, len(items), 100):
            c.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in items[start : start + 100]])
        ms = [Metric(k, float(v), 0, 0) for k, v in sorted(metrics.items())]
        for start in range(0, len(ms), 500):
            c.log_batch(run_id, metrics=ms[start : start + 500])
        for f in files:
            if f.is_file():
                c.log_artifact(run_id, str(f), artifact_path="squeezeflow")
        if parent_model_id:  # the client API; the fluent one allows models only on Databricks
            c.log_inputs(run_id, models=[LoggedModelInput(parent_model_id)])


def end_run(run_id: str, status: str) -> None:
    """Terminate a run as FINISHED or FAILED."""
    with errors(f"closing run {run_id}"):
        client().set_terminated(run_id, status=status)
