"""YAML from files others write (params.yaml, a registered model's MLmodel): no tags, bounded size before and after
aliases expand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from squeezeflow.errors import SqueezeflowError

MAX_BYTES = 1 << 20  # params.yaml and MLmodel files are a few kB


MAX_NODES = 100_000  # values after aliases are expanded; a params file has a few hundred


class _Expands(yaml.composer.ComposerError):
    """The document's aliases expand past MAX_NODES."""


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses documents whose aliases expand to more than MAX_NODES values.

    PyYAML shares one object per anchor, so an alias bomb (`b: [*a, *a, ...]`, nested) costs
    nothing to load; it explodes in whatever walks the result as a tree (validation, messages,
    json). The expanded size is counted on the node graph, each node once (linear time).
    """

    def compose_document(self) -> Any:
        node = super().compose_document()
        sizes: dict[int, int] = {}

        def expanded(n: Any) -> int:
            if id(n) not in sizes:
                sizes[id(n)] = 0  # a cycle (an alias to an enclosing node) counts as unbounded below
                children = (
                    [c for pair in n.value for c in pair]
                    if isinstance(n, yaml.MappingNode)
                    else n.value
                    if isinstance(n, yaml.SequenceNode)
                    else []
                )
                total = 1 + sum(expanded(c) if sizes.get(id(c)) != 0 else MAX_NODES + 1 for c in children)
                sizes[id(n)] = min(total, MAX_NODES + 1)
            return sizes[id(n)]

        if node is not None and expanded(node) > MAX_NODES:
            raise _Expands(
                None,
                None,
                f"its aliases (*name) expand to more than {MAX_NODES} values; write the values out",
                node.start_mark,
            )
        return node


def load(text: str, where: str | Path, error: type[SqueezeflowError]) -> Any:
    """Parse YAML safely.

    Args:
        text: the document.
        where: the file, for the message.
        error: the exception class to raise (ConfigError for params, ModelError for artifacts).

    Raises:
        `error`: larger than MAX_BYTES, invalid YAML, or aliases expanding past MAX_NODES; the message names the line.

    Example:
        >>> load("a: [1, 2]", "params.yaml", ValueError)  # doctest: +SKIP
        {'a': [1, 2]}
    """
    if len(text) > MAX_BYTES:
        raise error(
            f"{where}: {len(text)} characters, more than such a file needs ({MAX_BYTES} at most); refusing to parse it."
        )
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        what = "refused" if isinstance(e, _Expands) else "not valid YAML"
        raise error(f"{where}: {what}{line} ({problem}).") from None


def load_file(path: str | Path, error: type[SqueezeflowError]) -> Any:
    """`load` of a file, checking its size before reading it."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise error(f"{path}: {size} bytes, more than such a file needs ({MAX_BYTES} at most); refusing to parse it.")
    return load(path.read_text(errors="replace"), path, error)
