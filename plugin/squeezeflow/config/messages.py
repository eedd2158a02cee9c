"""One-line messages for params that do not validate: the YAML path, what was wrong, the keys that exist."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError


def describe_validation_error(err: ValidationError, file: str, prefix: str, model: type[BaseModel]) -> str:
    """One sentence for the first error: where, what was expected, what was received."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    path = ".".join([prefix, *loc] if prefix else loc)
    kind = first["type"]
    if kind == "extra_forbidden":
        known = _known_keys(model, first["loc"][:-1])
        hint = f" Known keys: {', '.join(known)}." if known else ""
        return f"{file}: {path} is not a known key.{hint}"
    if kind == "missing":
        return f"{file}: {path} is required."
    msg = first["msg"].replace("Input should be", "must be").replace("Value error, ", "")
    if not loc and not prefix:  # a check across sections (model_validator): the message names its keys
        return f"{file}: {msg}."
    more = len(err.errors()) - 1
    tail = f" ({more} more error{'s' if more > 1 else ''} after this one)" if more else ""
    return f"{file}: {path} {msg[0].lower() + msg[1:]}. Got {show(first['input'])}.{tail}"


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model found at `loc` (best effort, for the hint)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(model.model_fields)


def show(value: Any) -> str:
    text = json.dumps(_clip(value), default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _clip(value: Any, depth: int = 0) -> Any:
    """A bounded preview of a value (messages never serialize a huge input whole)."""
    if depth > 3:
        return "..."
    if isinstance(value, dict):
        return {str(k)[:40]: _clip(v, depth + 1) for k, v in list(value.items())[:8]}
    if isinstance(value, (list, tuple)):
        return [_clip(v, depth + 1) for v in list(value)[:8]]
    return value[:200] if isinstance(value, str) else value
