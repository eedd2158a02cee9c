"""Everything squeezeflow says to MLflow: resolve, download, register, alias, log runs.

Errors are translated at this boundary: a missing model, version or alias is a `NotFoundError`
(exit 2); a server or database that does not answer is a `RegistryUnreachableError` (exit 3).
Transient failures (connection refused or reset, timeouts, 5xx, a locked database) are retried
with exponential backoff until a total deadline (`SQUEEZEFLOW_REGISTRY_DEADLINE`, default 60 s).
Credentials in URIs never reach a message.

The package owns everything that touches the registry or the tracking store: this client, the
version lookups that skip MLflow (`fast_lookup`), gate attempts as runs (`gate_runs`), lineage
(`lineage`), the git and DVC state of a run (`gitstate`) and MLflow's run-context plugin
(`run_context`). It may import `onnx`, `torch`, `data`, `config` and below; `mlflow` is imported
inside functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from squeezeflow import envvars
from squeezeflow.config import safeyaml
from squeezeflow.data import artifacts
from squeezeflow.errors import (
    ConfigError,
    ModelError,
    NotARegistryError,
    NotFoundError,
    RegistryAccessError,
    RegistryUnreachableError,
    redact,
    url_without_credentials,  # noqa: F401  (re-exported: registry.url_without_credentials)
)
from squeezeflow.onnx import modelfile

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+|latest))$")
_UNREACHABLE = (
    "Max retries exceeded",
    "Connection refused",
    "Failed to establish",
    "unable to open database",
    "could not connect",
    "timed out",
    "Name or service not known",
    "Connection reset",
    "Connection aborted",
    "RemoteDisconnected",
    "database is locked",
    "TEMPORARILY_UNAVAILABLE",
    "error code 500",
    "error code 502",
    "error code 503",
    "error code 504",
    "server closed the connection",
)
T = TypeVar("T")
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


def client():
    """A MlflowClient on the configured tracking URI, failing fast when the server is down."""
    for key, value in envvars.MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import mlflow

    mlflow.set_tracking_uri(envvars.tracking_uri())
    return mlflow.MlflowClient()


@contextlib.contextmanager
def errors(what: str) -> Iterator[None]:
    """Translate MLflow and transport exceptions raised while doing `what`."""
    try:
        yield
    except (NotFoundError, ModelError, RegistryAccessError, RegistryUnreachableError):
        raise
    except Exception as e:
        text = redact(str(e))
        code = getattr(e, "error_code", "")
        if code == "RESOURCE_DOES_NOT_EXIST":
            raise NotFoundError(f"{what}: {text.splitlines()[0]}") from None
        status = re.search(r"error code (\d{3}) != 200", text)
        if code in ("UNAUTHENTICATED", "PERMISSION_DENIED") or (status and status[1] in ("401", "403")):
            raise RegistryAccessError(
                f"MLflow registry at {redact(envvars.tracking_uri())} refused access while "
                f"{what} ({code or 'HTTP ' + status[1]}). "
                "Set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD, to credentials it accepts."
            ) from None
        if (status and status[1].startswith("4")) or "not in a valid JSON format" in text:
            body = text.split("Response body:", 1)[-1].strip()[:80] if "Response body:" in text else ""
            raise NotARegistryError(
                f"the server at {redact(envvars.tracking_uri())} does not answer as an MLflow "
                f"tracking server while {what} "
                f"({'HTTP ' + status[1] if status else 'a reply that is not JSON'}{': ' + body if body else ''}). "
                f"Set {envvars.TRACKING_URI} to the server's root URL."
            ) from None
        if any(marker.lower() in text.lower() for marker in _UNREACHABLE) or type(e).__name__ in {
            "ConnectionError",
            "OperationalError",
            "Timeout",
        }:
            where = redact(envvars.tracking_uri())
            raise RegistryUnreachableError(
                f"MLflow registry at {where} does not answer while {what}. Start the "
                f"server or fix {envvars.TRACKING_URI}."
            ) from None
        raise


def call(what: str, fn: Callable[[], T], transfer: bool = False) -> T:
    """Run `fn` (registry calls) with errors translated, retrying transient failures until the deadline.

    The deadline (`SQUEEZEFLOW_REGISTRY_DEADLINE`) bounds the whole call from its first request
    (importing MLflow comes before the clock starts), however the registry fails: each attempt's HTTP timeout is cut to
    the time left, and an attempt that still has not
    returned at the deadline (a server that accepts and never answers, MLflow's own retries
    against a database that refuses connections) is abandoned in its thread. A `transfer`
    (uploading or downloading a model) is not cut off while it makes progress: its HTTP timeout
    bounds each wait for the server, not the whole transfer, which grows with the model.

    Raises:
        RegistryUnreachableError: still failing at the deadline; the message names the URI and how long it tried.
    """
    import mlflow.tracking  # noqa: F401 - imported before the clock starts: squeezeflow's start-up is not the registry's time

    budget = envvars.registry_deadline()
    start = time.monotonic()  # the clock starts at the first request
    deadline = start + budget
    delay, tries = 0.5, 0
    while True:
        tries += 1
        left = max(deadline - time.monotonic(), 0.1)
        _cap_http_timeout(left)
        try:
            with errors(what):
                return fn() if transfer else _bounded(fn, left, what)
        except RegistryUnreachableError as e:
            if isinstance(e, NotARegistryError):
                raise
            if time.monotonic() + delay > deadline:
                raise RegistryUnreachableError(
                    f"{e} (tried {tries} time{'s' if tries > 1 else ''} in "
                    f"{time.monotonic() - start:.0f} s; "
                    f"{envvars.REGISTRY_DEADLINE}={budget:g} sets the deadline)"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


_HTTP_TIMEOUT = "MLFLOW_HTTP_REQUEST_TIMEOUT"
_configured_timeout: list[float] = []  # the user's (or squeezeflow's default) value, read once


def _cap_http_timeout(left: float) -> None:
    """MLflow reads its per-request timeout from the environment at each request: cut it to the time left."""
    if not _configured_timeout:
        try:
            _configured_timeout.append(
                float(os.environ.get(_HTTP_TIMEOUT) or envvars.MLFLOW_CLIENT_DEFAULTS[_HTTP_TIMEOUT])
            )
        except ValueError:
            _configured_timeout.append(float(envvars.MLFLOW_CLIENT_DEFAULTS[_HTTP_TIMEOUT]))
    os.environ[_HTTP_TIMEOUT] = str(max(1, int(min(_configured_timeout[0], left + 0.999))))


def _bounded(fn: Callable[[], T], seconds: float, what: str) -> T:
    """fn() in a daemon thread, given up after `seconds` (then RegistryUnreachableError)."""

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = e

    worker = threading.Thread(target=target, name=f"registry: {what}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        where = redact(envvars.tracking_uri())
        raise RegistryUnreachableError(
            f"MLflow registry at {where} did not answer within {seconds:.0f} s while "
            f"{what}. Start the server or fix {envvars.TRACKING_URI}."
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


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
    mv = call(f"resolving {uri}", lambda: _resolve(client(), uri, name, alias, version))
    if str(mv.status) not in ("READY", "ModelVersionStatus.READY"):
        raise NotFoundError(f"{name} version {mv.version} is {mv.status}, not READY; it cannot be pulled yet.")
    model_id = mv.model_id or (mv.source[len("models:/") :] if mv.source.startswith("models:/m-") else None)
    return ModelRef(name, str(mv.version), uri, mv.source, model_id, mv.run_id, dict(mv.tags or {}))


def _resolve(c: Any, uri: str, name: str, alias: str | None, version: str | None) -> Any:
    """The ModelVersion a URI names (NotFoundError when there is none)."""
    registered = _registered(c, name)
    if registered is None:
        known = sorted(m.name for m in c.search_registered_models(max_results=50))
        raise NotFoundError(
            f"registered model {name!r} does not exist in {redact(envvars.tracking_uri())}. Known "
            f"models: {', '.join(known) or 'none'}."
        )
    if alias:
        aliases = dict(getattr(registered, "aliases", {}) or {})
        if alias not in aliases:
            raise NotFoundError(
                f"registered model {name!r} has no alias {alias!r}. Its aliases: "
                f"{', '.join(sorted(aliases)) or 'none'}. Set one with "
                "`MlflowClient().set_registered_model_alias`."
            )
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
    return mv


def download(ref: ModelRef, dst: Path) -> Path:
    """Download the version's MLflow model directory into `dst` (which must not exist)."""
    import mlflow.artifacts

    client()
    dst.mkdir(parents=True)
    outside = f"{ref.uri}: the artifact holds a path that resolves outside its folder (a symlink or `..`); refusing it."
    try:
        path = Path(
            call(
                f"downloading {ref.uri}",
                lambda: mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=str(dst)),
                transfer=True,
            )
        ).resolve()
    except Exception as e:
        if "resolved path is outside" in str(e) or "Invalid path" in str(e):  # MLflow's own refusal of such a path
            raise ModelError(outside) from None
        raise
    if not artifacts.inside(dst, path) or any(p.is_symlink() or not artifacts.inside(dst, p) for p in path.rglob("*")):
        raise ModelError(outside)
    return path


def flavor(model_dir: Path) -> tuple[str, str]:
    """The usable flavor of an MLflow model dir: ("onnx", file) or ("pytorch", file)."""

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file() or mlmodel.is_symlink():
        raise ModelError(f"{model_dir}: no MLmodel file; the registered artifact is not an MLflow model.")
    spec = safeyaml.load_file(mlmodel, ModelError)
    flavors = spec.get("flavors") if isinstance(spec, dict) else None
    if not isinstance(flavors, dict) or not all(isinstance(f, dict) for f in flavors.values()):
        raise ModelError(f"{mlmodel}: has no `flavors` mapping; the registered artifact is not an MLflow model.")
    for kind, key, default in (("onnx", "data", "model.onnx"), ("pytorch", "model_data", "data")):
        if kind in flavors:
            rel = flavors[kind].get(key, default)
            if not isinstance(rel, str) or not artifacts.inside(model_dir, model_dir / rel):
                raise ModelError(
                    f"{mlmodel}: flavors.{kind}.{key} is {str(rel)[:80]!r}, a path outside the model "
                    "folder; refusing it."
                )
            return kind, rel
    raise ModelError(
        f"{model_dir}: flavors {sorted(flavors)} are not supported. Register the model with "
        "mlflow.pytorch or mlflow.onnx."
    )


def signature(model_dir: Path) -> dict[str, Any] | None:
    """The MLflow signature of a downloaded model (as MLmodel stores it), or None when it has none
    or one MLflow cannot parse; promote gives it to the compressed version."""

    return signature_of(safeyaml.load_file(model_dir / "MLmodel", ModelError))


def signature_of(spec: Any) -> dict[str, Any] | None:
    """The signature of a loaded MLmodel document (see `signature`)."""
    from mlflow.models.signature import ModelSignature

    found = spec.get("signature") if isinstance(spec, dict) else None
    if not isinstance(found, dict):
        return None
    try:
        ModelSignature.from_dict(found)
    except Exception:  # noqa: BLE001 - an unreadable signature is left out, not fatal
        return None
    return {k: v for k, v in found.items() if isinstance(v, str)}


def find_by_sha(name: str, sha256: str) -> ModelRef | None:
    """The version of `name` whose artifact sha256 tag equals `sha256`, if any."""
    c = client()
    hits = call(
        f"searching versions of {name}",
        lambda: _registered(c, name) and c.search_model_versions(f"name='{name}' and tags.`{SHA_TAG}`='{sha256}'"),
    )
    if not hits:
        return None
    mv = min(hits, key=lambda v: int(v.version))
    return ModelRef(
        name, str(mv.version), f"models:/{name}/{mv.version}", mv.source, mv.model_id, mv.run_id, dict(mv.tags or {})
    )


def derived_from(name: str, version: str) -> list[ModelRef]:
    """Versions of any registered model whose `squeezeflow.source.*` tags name NAME/VERSION."""
    c = client()
    query = f"tags.`squeezeflow.source.name` = '{name}' and tags.`squeezeflow.source.version` = '{version}'"
    hits = call(f"searching versions derived from {name}/{version}", lambda: c.search_model_versions(query))
    return [
        ModelRef(
            mv.name,
            str(mv.version),
            f"models:/{mv.name}/{mv.version}",
            mv.source,
            mv.model_id,
            mv.run_id,
            dict(mv.tags or {}),
        )
        for mv in sorted(hits, key=lambda v: (v.name, int(v.version)))
    ]


def alias_version(name: str, alias: str) -> str | None:
    """The version `alias` points at, or None."""
    c = client()
    registered = call(f"reading aliases of {name}", lambda: _registered(c, name))
    version = dict(registered.aliases or {}).get(alias) if registered else None
    return None if version is None else str(version)  # MLflow returns ints here


def set_alias(name: str, alias: str, version: str) -> None:
    """Point `alias` of `name` at `version`."""
    c = client()
    call(f"setting alias {name}@{alias}", lambda: c.set_registered_model_alias(name, alias, version))


def publish(
    name: str,
    alias: str,
    onnx_file: Path,
    run_id: str,
    tags: dict[str, str],
    metrics: dict[str, float] | None = None,
    signature: dict[str, Any] | None = None,
) -> tuple[str, bool]:
    """Log `onnx_file` as a model of run `run_id` (with `signature`), register it with `tags` (one call), then move
    `alias`.

    `metrics` go to the run once the model is logged, linked to it in the same request (logged
    before, MLflow copies each one to the model with one history request per metric).

    Safe when several processes publish at once: after registering, the lowest version carrying
    the same artifact sha256 wins; a process that lost deletes its own version and points the
    alias at the winner. A version is complete when it exists (its lineage tags come with it), and
    the alias moves only afterwards, so an interrupted publish leaves at most a complete version
    without the alias, which the next `promote` finds by its sha256 and finishes.

    Returns:
        (the version the alias now points at, True when another process had registered it).
    """
    import mlflow

    c = client()
    sha = tags[SHA_TAG]

    log = log_program if onnx_file.suffix == ".pte" else log_onnx
    # the run stays RUNNING until promote ends it
    info = call(f"logging the model of run {run_id}", lambda: log(onnx_file, run_id, signature), transfer=True)
    if metrics:
        call(f"logging metrics of run {run_id}", lambda: _log_metrics(c, run_id, metrics, info.model_id))
    mv = call(f"registering {name}", lambda: mlflow.register_model(info.model_uri, name, tags=tags))
    if str(mv.status) not in ("READY", "ModelVersionStatus.READY"):
        call(f"deleting {name} version {mv.version}", lambda: c.delete_model_version(name, mv.version))
        raise NotFoundError(f"{name} version {mv.version} did not become READY; it was deleted. Run promote again.")
    winner = find_by_sha(name, sha)
    version = winner.version if winner else str(mv.version)
    if version != str(mv.version):  # another process registered the same artifact first
        call(f"deleting duplicate {name} version {mv.version}", lambda: c.delete_model_version(name, mv.version))
    set_alias(name, alias, version)
    return version, version != str(mv.version)


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    """Set tags on an existing model version (one call per tag, each retried)."""
    c = client()
    for key, value in tags.items():
        call(f"tagging {name} version {version}", lambda k=key, v=value: c.set_model_version_tag(name, version, k, v))


def log_program(program: Path, run_id: str | None = None, signature: dict[str, Any] | None = None) -> Any:
    """Log an ExecuTorch program (.pte) as an MLflow pyfunc model of run `run_id` (models from code:
    squeezeflow's templates/executorch_pyfunc.py, nothing pickled), with `signature`; returns the ModelInfo."""

    import mlflow.pyfunc
    from mlflow.models import Model
    from mlflow.models.signature import ModelSignature

    script = resources.files("squeezeflow") / "templates" / "executorch_pyfunc.py"
    extra = {"signature": ModelSignature.from_dict(signature)} if signature else {}
    return Model.log(
        None,
        name="model",
        flavor=mlflow.pyfunc,
        run_id=run_id,
        python_model=str(script),
        artifacts={"program": str(program)},
        pip_requirements=["executorch"],
        **extra,
    )


def log_onnx(onnx_file: Path, run_id: str | None = None, signature: dict[str, Any] | None = None) -> Any:
    """Log an ONNX file as an mlflow.onnx model of run `run_id` (default: the active run), weights as
    external data when large, requirements given so MLflow infers none, with `signature` (as
    `signature()` returns it: the source's); returns the ModelInfo."""
    import mlflow.onnx
    import onnx
    from mlflow.models.signature import ModelSignature

    model = onnx.load(str(onnx_file))  # with its external data, if any
    kwargs = {"run_id": run_id} if run_id else {}
    if signature:
        kwargs["signature"] = ModelSignature.from_dict(signature)
    return mlflow.onnx.log_model(
        model, name="model", pip_requirements=["onnxruntime"], save_as_external_data=modelfile.is_large(model), **kwargs
    )


def register_torch(
    model: Any,
    name: str,
    example: Any,
    alias: str | None = None,
    experiment: str = "squeezeflow",
    serialization_format: str = "pt2",
    outputs: tuple[str, ...] = (),
) -> str:
    """Log a torch module (pt2 format, batch axis dynamic) in a new run, register it, set `alias`.

    Used by the demo and the tests to create source models; `example` (an array, or a tuple of
    arrays for several inputs) needs >= 2 samples. `outputs` names the model's outputs in the
    signature (one name per element of the tuple it returns): the pipeline keeps those names.

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
            sample = (
                tuple(np.ascontiguousarray(e) for e in example)
                if isinstance(example, tuple)
                else np.ascontiguousarray(example)
            )
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                input_example=sample,
                signature=_tensor_signature(sample, model if outputs else None, outputs),
                pip_requirements=["torch"],
                serialization_format=serialization_format,
            )
        mv = mlflow.register_model(info.model_uri, name)
        if alias:
            c.set_registered_model_alias(name, alias, mv.version)
    return f"models:/{name}/{mv.version}"


def _tensor_signature(sample: Any, model: Any = None, outputs: tuple[str, ...] = ()) -> Any:
    """One TensorSpec per input, batch axis -1: what MLflow's pt2 format needs (it cannot infer one
    from a tuple of arrays, so models with several inputs failed to register); with `model` and
    `outputs`, one named TensorSpec per output, from a forward pass on the sample."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    arrays = sample if isinstance(sample, tuple) else (sample,)
    inputs = Schema(
        [
            TensorSpec(a.dtype, (-1, *a.shape[1:]), f"input_{i}" if len(arrays) > 1 else None)
            for i, a in enumerate(arrays)
        ]
    )
    if model is None:
        return ModelSignature(inputs=inputs)
    import torch

    with torch.no_grad():
        out = model(*(torch.from_numpy(a) for a in arrays))
    values = [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]
    if len(values) != len(outputs):
        raise ConfigError(f"outputs names {len(outputs)} outputs, and the model returns {len(values)}.")
    specs = [TensorSpec(v.dtype, (-1, *v.shape[1:]), name) for v, name in zip(values, outputs)]
    return ModelSignature(inputs=inputs, outputs=Schema(specs))


def start_run(experiment: str, run_name: str, tags: dict[str, str]) -> str:
    """Create a run (not active) with `tags` plus the run context providers' (git, dvc.lock), and return its id."""
    from mlflow.tracking.context.registry import resolve_tags

    c = client()
    tags = resolve_tags(tags)

    def create() -> str:
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            try:
                return c.create_run(c.create_experiment(experiment), run_name=run_name, tags=tags).info.run_id
            except Exception as e:  # created meanwhile by a concurrent pipeline
                if getattr(e, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = c.get_experiment_by_name(experiment)
        return c.create_run(exp.experiment_id, run_name=run_name, tags=tags).info.run_id

    return call(f"creating a run in experiment {experiment}", create)


def log_run(
    run_id: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    files: list[Path],
    parent_model_id: str | None = None,
) -> None:
    """Log params, metrics, files and the parent model input to an existing run."""
    c = client()
    call(f"logging run {run_id}", lambda: _log(c, run_id, params, metrics, files, parent_model_id))


def _log(
    c: Any,
    run_id: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    files: list[Path],
    parent_model_id: str | None,
) -> None:
    from mlflow.entities import LoggedModelInput, Param

    items = sorted(params.items())
    for start in range(0, len(items), 100):
        c.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in items[start : start + 100]])
    _log_metrics(c, run_id, metrics)
    for f in files:
        if f.is_file():
            c.log_artifact(run_id, str(f), artifact_path="squeezeflow")
    if parent_model_id:  # the client API; the fluent one allows models only on Databricks
        c.log_inputs(run_id, models=[LoggedModelInput(parent_model_id)])


def _log_metrics(c: Any, run_id: str, metrics: dict[str, float], model_id: str | None = None) -> None:
    from mlflow.entities import Metric

    ms = [Metric(k, float(v), 0, 0, model_id=model_id) for k, v in sorted(metrics.items())]
    for start in range(0, len(ms), 500):
        c.log_batch(run_id, metrics=ms[start : start + 500])


def running_runs(experiment: str, tag: str) -> list[tuple[str, dict[str, str]]]:
    """(run id, tags) of the RUNNING runs of `experiment` that carry `tag`."""
    c = client()

    def search() -> list[tuple[str, dict[str, str]]]:
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            return []
        runs = c.search_runs(
            [exp.experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{tag}` != ''", max_results=1000
        )
        return [(r.info.run_id, dict(r.data.tags)) for r in runs]

    return call(f"searching running runs of experiment {experiment}", search)


def end_run(run_id: str, status: str) -> None:
    """Terminate a run as FINISHED, FAILED or KILLED."""
    c = client()
    call(f"closing run {run_id}", lambda: c.set_terminated(run_id, status=status))


def set_run_tags(run_id: str, tags: dict[str, str]) -> None:
    """Set tags on a run (what a promotion ended up doing)."""
    c = client()
    call(f"tagging run {run_id}", lambda: [c.set_tag(run_id, k, v) for k, v in tags.items()])
