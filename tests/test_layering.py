"""The package's layers hold: no module imports a layer above its own, and no import circle.

docs/architecture.md describes the layers; this test is their definition. It reads every import
statement of the package (those inside functions too) with `ast`, so nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "plugin" / "squeezeflow"

# bottom to top; a module may import its own package and the layers below it, never one above.
# `steps` is the step plugin interface (steps/__init__.py), which config parses recipes through;
# `steps.*` are the techniques and the recipe runner.
LAYERS = [
    ("", "errors", "envvars"),
    ("steps",),
    ("config",),
    ("data",),
    ("onnx",),
    ("torch",),
    ("quantization", "runtimes", "registry"),
    ("evaluate",),
    ("steps.*",),
    ("search",),
    ("report",),
    ("stages",),
    ("demo",),
    ("cli",),
    ("__main__",),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if "templates" in path.relative_to(PACKAGE).parts:
            continue  # files the package writes out, not modules it imports
        parts = ("squeezeflow", *path.relative_to(PACKAGE).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The squeezeflow modules `name` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "squeezeflow"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.split(".")[0] != "squeezeflow":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return found - {name}


EDGES = {name: _imports(name, path) for name, path in MODULES.items()}


def layer(module: str) -> tuple[str, int]:
    parts = module.split(".")[1:]
    key = "" if not parts else "steps.*" if parts[0] == "steps" and len(parts) > 1 else parts[0]
    assert key in RANK, f"{module} is in no layer: add its package to LAYERS (and to docs/architecture.md)"
    return key, RANK[key]


def test_every_module_has_a_layer():
    for module in MODULES:
        layer(module)


def upward(edges: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in edges.items():
        own, rank = layer(module)
        for target in targets:
            theirs, their_rank = layer(target)
            if their_rank > rank or (their_rank == rank and theirs != own):
                out.append(f"{module} ({own}) -> {target} ({theirs})")
    return sorted(out)


def circles(edges: dict[str, set[str]]) -> list[str]:
    seen: dict[str, int] = {}  # 1 on the current path, 2 done
    found = []

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(edges.get(module, ())):
            if seen.get(target) == 1:
                found.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in seen:
                visit(target, [*path, target])
        seen[module] = 2

    for module in sorted(edges):
        if module not in seen:
            visit(module, [module])
    return found


def test_no_module_imports_a_layer_above_its_own():
    bad = upward(EDGES)
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_import_circle():
    bad = circles(EDGES)
    assert not bad, "import circles:\n" + "\n".join(bad)


def test_the_checks_catch_what_they_forbid():
    """A technique importing a stage, a library package importing a sibling of its rank, and a circle."""
    assert "squeezeflow.onnx.sessions" in EDGES["squeezeflow.steps.quantize.int8"]  # the walk reads real imports
    assert upward({"squeezeflow.steps.quantize": {"squeezeflow.stages.gate"}}) == [
        "squeezeflow.steps.quantize (steps.*) -> squeezeflow.stages.gate (stages)"
    ]
    assert upward({"squeezeflow.evaluate.compare": {"squeezeflow.report.markdown"}})
    assert upward({"squeezeflow.registry.lineage": {"squeezeflow.quantization.gptq"}})
    assert not upward({"squeezeflow.stages.gate": {"squeezeflow.steps.quantize", "squeezeflow.errors"}})
    assert circles(
        {"squeezeflow.data": {"squeezeflow.data.artifacts"}, "squeezeflow.data.artifacts": {"squeezeflow.data"}}
    ) == ["squeezeflow.data -> squeezeflow.data.artifacts -> squeezeflow.data"]
