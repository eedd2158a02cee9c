"""What a pt2 archive's JSON graph may hold, checked before torch deserializes it.

MLflow's pickle-free check (on when pickle is not allowed) refuses pickled weights, constants and
sample inputs and bundled AOTInductor libraries, but it accepts any JSON record. torch's
deserializer evaluates three kinds of string in that JSON as Python:

- every symbolic size's `expr_str` goes through `sympy.sympify`, which calls `eval`;
- `guards_code` is compiled with `exec` into a guard function when `.module()` is called, and a
  string graph input is pasted into that code between quotes;
- each node's `target` names any attribute under `torch`, `math` or `operator` that the graph
  then calls (e.g. `torch.utils.cpp_extension.load_inline`).

So each of these is parsed here (Python's own parser, which evaluates nothing) and checked against
a grammar of what torch itself writes: sympy's `srepr` of shape expressions (symbols named like
`s0`, integers, arithmetic and the functions torch registers), guards over input sizes, and
operator overloads under `torch.ops.aten`/`prims`/`quantized_decomposed` or torch's own symbolic
operators. Custom objects (TorchBind classes, pickled), extension operators and bundled native
libraries are refused outright. Exponents are bounded so a shape cannot take a big-integer
computation hostage.
"""

from __future__ import annotations

import ast
import json
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

from squeezeflow.errors import ConfigError

MAX_JSON_BYTES = 512 * 1024**2
MAX_EXPR_CHARS = 20_000
MAX_EXPR_NODES = 4_000
MAX_POWERS = 4
MAX_EXPONENT = 64
MAX_INT = 10**20

SYMBOL = re.compile(r"(?:s|u|zf|zuf|ps|tmp|i|idx|x|y|z|h|q|r0_|r1_|indirect|view)[0-9]{1,9}\Z")
FLOAT_TEXT = re.compile(r"-?[0-9]{1,40}(?:\.[0-9]{0,40})?(?:e[-+]?[0-9]{1,4})?\Z")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}\Z")
# printable ASCII without quotes or backslash: "floor", "same", "bij,bjk->bik"
SAFE_STRING = re.compile(r"[ !#-&(-\[\]-~]{0,1000}\Z")
OVERLOAD = re.compile(
    r"torch\.ops\.(?:aten|prims|quantized_decomposed)\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*\Z"
)
HIGHER_ORDER = {
    f"torch.ops.higher_order.{op}"
    for op in ("cond", "while_loop", "scan", "map_impl", "wrap_with_set_grad_enabled", "wrap_with_autocast")
}

ASSUMPTIONS = {
    "integer",
    "positive",
    "nonnegative",
    "negative",
    "nonpositive",
    "real",
    "finite",
    "infinite",
    "extended_real",
    "zero",
    "nonzero",
    "rational",
    "irrational",
    "even",
    "odd",
    "prime",
    "composite",
    "commutative",
    "complex",
    "imaginary",
}
SYMPY_FUNCTIONS = {
    "Add",
    "Mul",
    "Pow",
    "Mod",
    "Max",
    "Min",
    "Abs",
    "floor",
    "ceiling",
    "Eq",
    "Ne",
    "Lt",
    "Le",
    "Gt",
    "Ge",
    "Equality",
    "Unequality",
    "StrictLessThan",
    "StrictGreaterThan",
    "LessThan",
    "GreaterThan",
    "And",
    "Or",
    "Not",
    # torch.utils._sympy.functions: what torch's deserializer passes to sympify as locals
    "FloorDiv",
    "ModularIndexing",
    "Where",
    "PythonMod",
    "CleanDiv",
    "CeilToInt",
    "FloorToInt",
    "CeilDiv",
    "LShift",
    "RShift",
    "PowByNatural",
    "FloatPow",
    "FloatTrueDiv",
    "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat",
    "TruncToInt",
    "RoundToInt",
    "RoundDecimal",
    "ToFloat",
    "Identity",
}
POWERS = {"Pow", "PowByNatural", "FloatPow", "LShift"}
SYMPY_CONSTANTS = {"true", "false", "oo", "zoo", "nan", "True", "False"}
GUARD_METHODS = {"size", "stride", "storage_offset", "dim", "numel"}
GUARD_FUNCTIONS = {"max", "min", "abs"}
OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
UNARY = (ast.USub, ast.UAdd, ast.Not)
COMPARE = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


class _Refused(Exception):
    """One string torch would evaluate is outside the grammar (internal: becomes a ConfigError)."""


def check_archive(path: str | Path, consent: str) -> None:
    """Refuse a pt2 archive whose JSON holds anything torch would run as code but never writes.

    Args:
        path: the `.pt2` file.
        consent: the sentence that tells the user how to allow model code (ends the error).

    Raises:
        ConfigError: the archive is not a zip file, holds native libraries, custom objects or
            extension operators, or a string outside the grammar.

    Example:
        >>> check_archive("artifacts/source/mlflow/data/model.pt2", "")  # doctest: +SKIP
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ConfigError(
            f"{path}: not a pt2 archive ({e}); register the model again with mlflow.pytorch.log_model."
        ) from None
    with archive:
        for info in archive.infolist():
            name = info.filename
            if "/aotinductor/" in f"/{name}" or name.endswith((".so", ".dll", ".dylib")):
                raise ConfigError(
                    f"{path}: the pt2 archive bundles a native library ({name}), which torch loads "
                    f"into the process. {consent}"
                )
            if not name.endswith(".json") or "/models/" not in f"/{name}":
                continue
            if info.file_size > MAX_JSON_BYTES:
                raise ConfigError(
                    f"{path}: {name} is {info.file_size / 1e6:.0f} MB, beyond the "
                    f"{MAX_JSON_BYTES // 1024**2} MB a pt2 graph may have; the archive is not one "
                    "torch.export.save wrote."
                )
            try:
                graph = json.loads(archive.read(info))
            # damaged, encrypted or not JSON
            except (ValueError, RecursionError, zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as e:
                raise ConfigError(
                    f"{path}: {name} cannot be read as JSON ({type(e).__name__}: {str(e)[:80]}); "
                    "register the model again."
                ) from None
            try:
                _walk(graph)
            except _Refused as e:
                raise ConfigError(
                    f"{path}: {name} holds {e}, which torch's loader would run as Python code; "
                    f"torch.export never writes this. {consent}"
                ) from None


def _walk(value: Any) -> None:
    """Check every string of the exported-program JSON that torch evaluates, at any depth (subgraphs included)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        for key, sub in item.items():
            if key == "expr_str":
                check_sym_expr(sub)
            elif key == "guards_code":
                for guard in sub if isinstance(sub, list) else [sub]:
                    check_guard(guard)
            elif key in ("target", "as_operator") and isinstance(sub, str):
                check_target(sub)
            # a string graph input is pasted between quotes into the guard code
            elif key in ("as_string", "as_strings"):
                for text in sub if isinstance(sub, list) else [sub]:
                    if not isinstance(text, str) or not SAFE_STRING.match(text):
                        raise _Refused(f"a string argument {_show(text)}")
            elif key in ("as_custom_obj", "custom_obj", "class_fqn") or (key == "custom_obj_values" and sub):
                raise _Refused("a custom object (a TorchBind class restored from a pickle)")
            else:
                stack.append(sub)


def check_target(target: str) -> None:
    """A node's operator: an ATen/prims overload, an allowed higher-order op, or one of torch's symbolic ops."""
    if OVERLOAD.match(target) or target in HIGHER_ORDER or target in _symbolic_ops():
        return
    raise _Refused(f"the operator {_show(target)}")


def _symbolic_ops() -> set[str]:
    """The names torch's serializer writes for its symbolic size operators (operator.add, math.floor, torch.sym_max,
    ...).
    """
    from torch._export.serde.serialize import _SYM_OPS

    return {f"{op.__module__}.{op.__name__}" for op in _SYM_OPS}


def check_sym_expr(text: Any) -> None:
    """A symbolic size: sympy's srepr of symbols, integers and torch's sympy functions."""

    def leaf(node: ast.AST, expr) -> bool:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            if name in ("Symbol", "Dummy"):
                _symbol(node)
            elif name == "Integer" and len(node.args) == 1 and not node.keywords:
                _integer(node.args[0])
            elif name == "Rational" and len(node.args) == 2 and not node.keywords:
                for arg in node.args:
                    _integer(arg)
            elif name == "Float":
                _float(node)
            elif name in SYMPY_FUNCTIONS and node.args and not node.keywords:
                for arg in node.args:
                    expr(arg)
            else:
                return False
            return True
        if isinstance(node, ast.Name):
            return bool(SYMBOL.match(node.id)) or node.id in SYMPY_CONSTANTS
        if isinstance(node, ast.Constant) and type(node.value) in (int, bool):
            _integer(node)
            return True
        return False

    _check(text, "a shape expression", leaf)


def check_guard(text: Any) -> None:
    """An input guard: comparisons and arithmetic over `L['name'].size()[i]` and numbers."""

    def leaf(node: ast.AST, expr) -> bool:
        if _input_access(node):
            return True
        if isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
            if type(node.value) is not float:
                _integer(node)
            return True
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in GUARD_FUNCTIONS
            and node.args
            and not node.keywords
        ):
            for arg in node.args:
                expr(arg)
            return True
        return False

    _check(text, "a guard", leaf)


def _check(text: Any, what: str, leaf) -> None:
    """Walk `text`'s syntax tree: arithmetic, comparisons and boolean operators between leaves the grammar accepts."""
    tree = _parse(text, what)
    _bounded_powers(tree, text, what)

    def expr(node: ast.AST) -> None:
        if leaf(node, expr):
            return
        if isinstance(node, ast.BinOp) and isinstance(node.op, OPERATORS):
            children = [node.left, node.right]
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, UNARY):
            children = [node.operand]
        elif isinstance(node, ast.Compare) and all(isinstance(op, COMPARE) for op in node.ops):
            children = [node.left, *node.comparators]
        elif isinstance(node, ast.BoolOp):
            children = node.values
        else:
            raise _Refused(f"{what} {_show(text)}")
        for child in children:
            expr(child)

    expr(tree.body)


def _bounded_powers(tree: ast.Expression, text: str, what: str) -> None:
    """At most MAX_POWERS powers or left shifts, each by a literal exponent of at most MAX_EXPONENT."""
    powers = [n.right for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow)]
    powers += [
        n.args[-1]
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in POWERS and n.args
    ]
    if len(powers) > MAX_POWERS or any(_small_int(e) is None for e in powers):
        raise _Refused(f"{what} with an unbounded power {_show(text)}")


def _input_access(node: ast.AST) -> bool:
    """L['x'], L['x'].size()[0], L['x'][1].stride()[2]: a graph input or one of its sizes."""
    while True:
        if isinstance(node, ast.Name):
            return node.id == "L"
        if isinstance(node, ast.Subscript):
            key = node.slice
            if not (
                isinstance(key, ast.Constant)
                and (type(key.value) is int or (isinstance(key.value, str) and IDENTIFIER.match(key.value)))
            ):
                return False
            node = node.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in GUARD_METHODS
            and not node.args
            and not node.keywords
        ):
            node = node.func.value
        else:
            return False


def _parse(text: Any, what: str) -> ast.Expression:
    """Python's parser on a bounded ASCII string: builds a tree, evaluates nothing."""
    if not isinstance(text, str) or not text.isascii() or len(text) > MAX_EXPR_CHARS or "\n" in text or "\\" in text:
        raise _Refused(f"{what} {_show(text)}")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _Refused(f"{what} {_show(text)}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_EXPR_NODES:
        raise _Refused(f"{what} of more than {MAX_EXPR_NODES} terms")
    return tree


def _symbol(node: ast.Call) -> None:
    """Symbol('s0', integer=True, positive=True): a name torch gives sizes, and boolean assumptions."""
    args_ok = (
        len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and SYMBOL.match(node.args[0].value)
    )
    keywords_ok = all(
        k.arg in ASSUMPTIONS and isinstance(k.value, ast.Constant) and type(k.value.value) is bool
        for k in node.keywords
    )
    if not (args_ok and keywords_ok):
        raise _Refused(f"a symbol {_show(ast.unparse(node))}")


def _integer(node: ast.AST) -> None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    if not (isinstance(node, ast.Constant) and type(node.value) in (int, bool) and abs(int(node.value)) < MAX_INT):
        raise _Refused(f"an integer {_show(ast.unparse(node))}")


def _float(node: ast.Call) -> None:
    """Float('0.5', precision=53)"""
    value = node.args[0] if len(node.args) == 1 else None
    text_ok = isinstance(value, ast.Constant) and isinstance(value.value, str) and FLOAT_TEXT.match(value.value)
    number_ok = isinstance(value, ast.Constant) and type(value.value) in (int, float)
    keywords_ok = all(
        k.arg in ("precision", "dps")
        and isinstance(k.value, ast.Constant)
        and type(k.value.value) is int
        and 0 < k.value.value <= 1024
        for k in node.keywords
    )
    if not ((text_ok or number_ok) and keywords_ok):
        raise _Refused(f"a float {_show(ast.unparse(node))}")


def _small_int(node: ast.AST) -> int | None:
    """The value of Integer(n) or n when 0 <= |n| <= MAX_EXPONENT, else None."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "Integer"
        and len(node.args) == 1
    ):
        node = node.args[0]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) is int and node.value <= MAX_EXPONENT:
        return node.value
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 90 else text[:87] + "..."
