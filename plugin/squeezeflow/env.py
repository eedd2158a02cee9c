"""Names of the environment variables squeezeflow reads, in one place."""

import os

DEBUG = "SQUEEZEFLOW_DEBUG"
DRY_RUN = "SQUEEZEFLOW_DRY_RUN"
TRACKING_URI = "MLFLOW_TRACKING_URI"
GITHUB_STEP_SUMMARY = "GITHUB_STEP_SUMMARY"
GITHUB_OUTPUT = "GITHUB_OUTPUT"
GITHUB_ACTIONS = "GITHUB_ACTIONS"
GITHUB_SHA = "GITHUB_SHA"

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

# MLflow retries an unreachable server for minutes by default; a gate should fail fast.
MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # keeps stage logs and error output readable
}


def flag(name: str) -> bool:
    """True when the variable is set to a truthy value (1, true, yes)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def tracking_uri() -> str:
    """The MLflow tracking URI: MLFLOW_TRACKING_URI, else a sqlite file in the working directory."""
    return os.environ.get(TRACKING_URI) or DEFAULT_TRACKING_URI
