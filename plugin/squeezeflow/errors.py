"""One exception root; each kind of failure carries its documented exit code.

Exit codes: 0 ok, 1 gate failed, 2 bad input or config, 3 registry or service unreachable,
4 an error squeezeflow did not anticipate (a bug: never read as a failed gate). Messages never carry
credentials: `redact` and `url_without_credentials` clean what a message quotes.
"""

from __future__ import annotations

import re
import urllib.parse

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
    """An upstream stage's output (a model folder, its manifest) is missing or corrupt: the pipeline is broken, not the
    recipe.
    """


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


def redact(text: str) -> str:
    """Hide user:password@ in URIs and token-like query values.

    User info ends at the last `@` before the host: a password with an unencoded `@`
    (`user:S3c@ret@host`) is hidden whole.
    """
    text = re.sub(r"(?<=://)[^/\s]+@", "***@", text)
    return re.sub(
        r"(?i)((?:[a-z_]*(?:token|pass|pwd|secret|key|auth|credential)[a-z_]*)(?:=|%3D))[^&;\s]+", r"\1***", text
    )


def url_without_credentials(url: str) -> str:
    """scheme://host:port/path of a URL: no user info and no query (where SQLAlchemy and libpq accept
    passwords, keys and tokens under many names), so what is left can be shown and written."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    if not (parts.scheme and parts.netloc):
        return redact(url)[:200]
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" + ("?..." if parts.query else "")
