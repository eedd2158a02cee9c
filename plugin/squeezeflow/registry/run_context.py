"""MLflow plugin entry points: a run context provider that tags runs started in a pipeline folder.

Registered in pyproject.toml under `mlflow.run_context_provider`, so every run created with
`mlflow.start_run` (and every squeezeflow run) inside a squeezeflow/DVC pipeline folder carries
the git commit, branch, dirty flag and the digest of dvc.lock: what reproduces it.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking.context.abstract_context import RunContextProvider

from squeezeflow import data
from squeezeflow.registry import gitstate

PIPELINE_FILE = "dvc.yaml"
LOCK_FILE = "dvc.lock"


class PipelineRunContext(RunContextProvider):
    """Tags `squeezeflow.git.{commit,branch,dirty}` and `squeezeflow.dvc_lock_digest`."""

    def in_context(self) -> bool:
        return Path(PIPELINE_FILE).is_file()

    def tags(self) -> dict[str, str]:

        lock = Path(LOCK_FILE)
        current = gitstate.state(reads=(Path(PIPELINE_FILE),))
        return {
            "squeezeflow.git.commit": current.commit,
            **{f"squeezeflow.{k}": v for k, v in current.tags().items()},
            "squeezeflow.dvc_lock_digest": data.digest(lock) if lock.is_file() else "",
        }
