"""One exception root; each kind of failure carries its documented exit code.

Exit codes: 0 ok, 1 gate failed, 2 bad input or config, 3 registry or service unreachable,
4 an error squeezeflow did not anticipate (a bug: never read as a failed gate).
"""

INTERNAL_EXIT = 4


class SqueezeflowError(Exception):
    """A known failure: printed as one line, mapped to `exit_code` by the CLI."""

    exit_code = 2


class ConfigError(SqueezeflowError):
    """params.yaml or a command-line argument is invalid."""


class DataError(SqueezeflowError):
    """A data file is missing or does not match the model."""


class ModelError(SqueezeflowError):
    """A model file is corrupt, cannot be exported, or produces non-finite outputs."""


class PipelineError(ModelError):
    """An upstream stage's output (a model folder, its manifest) is missing or corrupt: the pipeline is broken, not the recipe."""


class NotFoundError(SqueezeflowError):
    """A registered model, version or alias does not exist."""


class RegistryUnreachableError(SqueezeflowError):
    """The tracking server or registry database does not answer."""

    exit_code = 3


class RegistryAccessError(SqueezeflowError):
    """The registry answered but refused the credentials (HTTP 401/403): a configuration problem."""


class NotARegistryError(RegistryUnreachableError):
    """What answers at the tracking URI is not an MLflow server (HTTP 404, not JSON); not retried."""


class GateFailedError(SqueezeflowError):
    """No candidate met the budgets (or the verdict forbids promotion)."""

    exit_code = 1
