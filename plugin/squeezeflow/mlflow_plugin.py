"""MLflow plugin entry points: a run context provider that tags runs started in a pipeline folder.

Registered in pyproject.toml under `mlflow.run_context_provider`, so every run created with
`mlflow.start_run` (and every squeezeflow run) inside a squeezeflow/DVC pipeline folder carries
the git commit, branch, dirty flag and the digest of dvc.lock: what reproduces it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mlflow.tracking.context.abstract_context import RunContextProvider

PIPELINE_FILE = "dvc.yaml"
LOCK_FILE = "dvc.lock"


class PipelineRunContext(RunContextProvider):
    """Tags `squeezeflow.git.{commit,branch,dirty}` and `squeezeflow.dvc_lock_digest`."""

    def in_context(self) -> bool:
        return Path(PIPELINE_FILE).is_file()

    def tags(self) -> dict[str, str]:
        from squeezeflow import data, env, lineage

        lock = Path(LOCK_FILE)
        return {
            "squeezeflow.git.commit": lineage.git_commit(),
            "squeezeflow.git.branch": os.environ.get(env.GITHUB_REF_NAME) or _git("rev-parse", "--abbrev-ref", "HEAD"),
            "squeezeflow.git.dirty": str(bool(_git("status", "--porcelain", "--untracked-files=no"))).lower(),
            "squeezeflow.dvc_lock_digest": data.digest(lock) if lock.is_file() else "",
        }


def _git(*args: str) -> str:
    """Output of a git command in the working directory, or '' outside a repository."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""
