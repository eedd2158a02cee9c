"""One exception root; each kind of failure carries its documented exit code."""


class SqueezeflowError(Exception):
    """A known failure: printed as one line, mapped to `exit_code` by the CLI."""

    exit_code = 2


class ConfigError(SqueezeflowError):
    """params.yaml or a command-line argument is invalid."""


class DataError(SqueezeflowError):
    """A data file is missing or does not match the model."""


class ModelError(SqueezeflowError):
    """A model file is corrupt, cannot be exported, or produces non-finite outputs."""


class NotFoundError(SqueezeflowError):
    """A registered model, version or alias does not exist."""


class RegistryUnreachableError(SqueezeflowError):
    """The tracking server or registry database does not answer."""

    exit_code = 3


class GateFailedError(SqueezeflowError):
    """No candidate met the budgets (or the verdict forbids promotion)."""

    exit_code = 1
