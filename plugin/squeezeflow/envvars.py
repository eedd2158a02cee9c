"""Names of the environment variables squeezeflow reads, in one place."""

import os

DEBUG = "SQUEEZEFLOW_DEBUG"
DRY_RUN = "SQUEEZEFLOW_DRY_RUN"
TRACKING_URI = "MLFLOW_TRACKING_URI"
GITHUB_STEP_SUMMARY = "GITHUB_STEP_SUMMARY"
GITHUB_OUTPUT = "GITHUB_OUTPUT"
GITHUB_ACTIONS = "GITHUB_ACTIONS"
GITHUB_SHA = "GITHUB_SHA"
GITHUB_REF_NAME = "GITHUB_REF_NAME"

REGISTRY_DEADLINE = "SQUEEZEFLOW_REGISTRY_DEADLINE"
WEBHOOK_SECRET = "SQUEEZEFLOW_WEBHOOK_SECRET"
GITHUB_TOKEN = "GITHUB_TOKEN"
ALLOW_PICKLE = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"  # MLflow's own switch (its default is true)
ALLOW_CODE = "MLFLOW_ALLOW_MODEL_CODE_EXECUTION"
EXTERNAL_DATA_BYTES = "SQUEEZEFLOW_EXTERNAL_DATA_BYTES"
TIMINGS = "SQUEEZEFLOW_TIMINGS"
MAX_DATA_BYTES = "SQUEEZEFLOW_MAX_DATA_BYTES"

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_REGISTRY_DEADLINE_S = 60.0
DEFAULT_MAX_DATA_BYTES = 1 << 32  # 4 GiB of arrays per data file: 1,000 ImageNet crops in float32 are 0.6 GB
# 256 MiB: protobuf caps a file at 2 GB, and with weights beside the graph steps stream tensors instead of copying whole
# protos
DEFAULT_EXTERNAL_DATA_BYTES = 1 << 28

# MLflow retries an unreachable server for minutes by default; squeezeflow retries each registry
# operation itself, with backoff, up to one total deadline (registry.call).
MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # keeps stage logs and error output readable
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # its run links repeat user:password@ from the tracking URI
}


def flag(name: str) -> bool:
    """True when the variable is set to a truthy value (1, true, yes)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def is_boolean(value: str) -> bool:
    """Whether MLflow reads `value` as a boolean switch (it refuses anything else, an empty value included)."""
    return value.strip().lower() in {"true", "false", "1", "0"}


def pickle_allowed() -> bool:
    """True only when the user set ALLOW_PICKLE or ALLOW_CODE to true themselves (MLflow's default does not count)."""
    return flag(ALLOW_PICKLE) or flag(ALLOW_CODE)


def external_data_bytes() -> int:
    """Weight bytes above which models are saved with ONNX external data (SQUEEZEFLOW_EXTERNAL_DATA_BYTES, default 256
    MiB).
    """
    try:
        return int(float(os.environ.get(EXTERNAL_DATA_BYTES, DEFAULT_EXTERNAL_DATA_BYTES)))
    except ValueError:
        return DEFAULT_EXTERNAL_DATA_BYTES


def max_data_bytes() -> int:
    """Largest array bytes (declared, and inflated) one npz data file may hold (SQUEEZEFLOW_MAX_DATA_BYTES, default 4
    GiB).
    """
    try:
        return int(float(os.environ.get(MAX_DATA_BYTES, DEFAULT_MAX_DATA_BYTES)))
    except ValueError:
        return DEFAULT_MAX_DATA_BYTES


def registry_deadline() -> float:
    """Seconds a registry operation is retried before it counts as unreachable (SQUEEZEFLOW_REGISTRY_DEADLINE)."""
    try:
        return max(0.0, float(os.environ.get(REGISTRY_DEADLINE, DEFAULT_REGISTRY_DEADLINE_S)))
    except ValueError:
        return DEFAULT_REGISTRY_DEADLINE_S


def tracking_uri() -> str:
    """The MLflow tracking URI: MLFLOW_TRACKING_URI, else a sqlite file in the working directory."""
    return os.environ.get(TRACKING_URI) or DEFAULT_TRACKING_URI


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host still exists (a run or trial it owns is not stale)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
