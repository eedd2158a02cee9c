"""The params.yaml reference, rendered from the config models' field descriptions.

docs/reference.md holds it between the markers below; `make docs` rewrites it and a test keeps it in sync.
"""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from squeezeflow import config
from squeezeflow.steps import config_class, known_steps

START, END = "<!-- params-reference:start (make docs) -->", "<!-- params-reference:end -->"


def _default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.default is PydanticUndefined:
        return "*required*"
    return str(_plain(field.default))


def _plain(value: Any) -> Any:
    """Defaults as they would be written in YAML: models as mappings, tuples as lists."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def choices(annotation: Any) -> tuple[Any, ...]:
    """The allowed values of a Literal field (also inside Optional or a tuple), or () for free ones."""

    if get_origin(annotation) is Literal:
        return get_args(annotation)
    return tuple(v for arg in get_args(annotation) for v in choices(arg))


def describe(field: Any) -> str:
    """A field's description, with its allowed values when they are a fixed set."""
    allowed = choices(field.annotation)
    return (field.description or "") + (f" One of: {', '.join(f'`{v}`' for v in allowed)}." if allowed else "")


def _rows(prefix: str, model: Any, seen: set | None = None) -> list[str]:
    """One row per field; nested models expanded once (a model documented already, such as the
    budgets a target may override, is not repeated)."""
    from pydantic import BaseModel

    seen = set() if seen is None else seen
    seen.add(model)
    rows = []
    for name, field in model.model_fields.items():
        rows.append(f"| `{prefix}{name}` | {_default(field)} | {describe(field)} |")
        nested = [
            a
            for a in getattr(field.annotation, "__args__", (field.annotation,))
            if isinstance(a, type) and issubclass(a, BaseModel) and a not in seen
        ]
        for sub in nested:
            rows += _rows(f"{prefix}{name}.", sub, seen)
    return rows


def params_reference() -> str:
    """Markdown tables: every params.yaml key, then every step's parameters."""
    from pydantic import BaseModel

    head = ["| key | default | meaning |", "|---|---|---|"]
    lines, seen = list(head), set()
    for section, field in config.Params.model_fields.items():  # every section, so a new one cannot go undocumented
        models = [
            a
            for a in getattr(field.annotation, "__args__", (field.annotation,))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if models and section != "targets":  # `search` is optional: its keys are documented all the same
            if field.default is None:
                lines.append(f"| `{section}` | None | {field.description} |")
            lines += _rows(f"{section}.", models[0], seen)
        elif section == "targets":
            lines.append(
                f"| `targets` | None | {field.description} Each `targets.NAME` takes the keys of `target` "
                "(NAME replaces `target.name`). |"
            )
    lines += [
        f"| `recipes` | *required* | {config.Params.model_fields['recipes'].description} |",
        f"| `seed` | {config.Params.model_fields['seed'].default} | {config.Params.model_fields['seed'].description} |",
    ]
    for kind in known_steps():
        cls = config_class(kind)
        takes = "a PyTorch model" if cls.input_format == "torch" else "an ONNX model"
        lines += [
            "",
            f"### `{kind}`",
            "",
            f"{(cls.__doc__ or '').strip()} Takes {takes}.",
            "",
            "| parameter | default | meaning |",
            "|---|---|---|",
            *_rows("", cls),
        ]
    return "\n".join(lines)


def render(readme: str) -> str:
    """The reference text with the generated block replaced."""
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{params_reference()}\n{END}{after}"


if __name__ == "__main__":
    import pathlib
    import sys

    path = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reference.md")
    path.write_text(render(path.read_text()))
