"""YAML from files others write (params.yaml, a registered model's MLmodel): no tags, no aliases, bounded size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from squeezeflow.errors import SqueezeflowError

MAX_BYTES = 1 << 20  # params.yaml and MLmodel files are a few kB


class _NoAliasLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses aliases: `*name` lets a few lines expand into billions of
    values before any validation sees them (the "billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"YAML aliases (*{event.anchor}) are not allowed; write the value out", event.start_mark)
        return super().compose_node(parent, index)


def load(text: str, where: str | Path, error: type[SqueezeflowError]) -> Any:
    """Parse YAML safely.

    Args:
        text: the document.
        where: the file, for the message.
        error: the exception class to raise (ConfigError for params, ModelError for artifacts).

    Raises:
        `error`: larger than MAX_BYTES, invalid YAML, or an alias; the message names the line.

    Example:
        >>> load("a: [1, 2]", "params.yaml", ValueError)  # doctest: +SKIP
        {'a': [1, 2]}
    """
    if len(text) > MAX_BYTES:
        raise error(f"{where}: {len(text)} characters, more than such a file needs ({MAX_BYTES} at most); refusing to parse it.")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise error(f"{where}: not valid YAML{line} ({problem}).") from None


def load_file(path: str | Path, error: type[SqueezeflowError]) -> Any:
    """`load` of a file, checking its size before reading it."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise error(f"{path}: {size} bytes, more than such a file needs ({MAX_BYTES} at most); refusing to parse it.")
    return load(path.read_text(errors="replace"), path, error)
