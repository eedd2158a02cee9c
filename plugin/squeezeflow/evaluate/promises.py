"""Whether a recipe did what its steps are for: a compression that leaves the model about as it was
is reported as a warning naming the cause, never passed off as a success."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from squeezeflow.evaluate import size
from squeezeflow.onnx import modelfile

MIN_GAIN = 0.05  # less than 5% smaller, fewer parameters, or more zeros: the step changed next to nothing


def warnings(configs: list[Any], stats: list[dict[str, Any]], source: Path, candidate: Path) -> list[str]:
    """One sentence per promise of the recipe's steps (`StepConfig.promise`) that the candidate does not keep."""
    promises = {c.promise() for c in configs} - {None}
    if not promises:
        return []

    before, after = modelfile.weight_stats(source), modelfile.weight_stats(candidate)
    cause = _cause([c.kind for c in configs], stats)
    out = []
    if "size" in promises:
        ratio = size.file_bytes(source) / size.file_bytes(candidate)
        idle = _idle([c.kind for c in configs], stats)
        if idle:  # what the steps say they did, not the file: graph cleanup alone can shrink it
            out.append(f"{' and '.join(idle)} changed no layer ({ratio:.2f}x smaller from graph cleanup alone){cause}")
        elif ratio < 1 + MIN_GAIN:
            out.append(
                f"the file is {'larger than' if ratio < 0.99 else 'about as large as'} the source's "
                f"({ratio:.2f}x smaller){cause}"
            )
    if "params" in promises and before["params"] and after["params"] / before["params"] > 1 - MIN_GAIN:
        out.append(f"it keeps {after['params'] / before['params']:.0%} of the source's parameters{cause}")
    if "sparsity" in promises and after["sparsity"] - before["sparsity"] < MIN_GAIN:
        out.append(
            f"only {after['sparsity']:.1%} of its weights are zero (the source: {before['sparsity']:.1%}){cause}"
        )
    return out


def _idle(kinds: list[str], stats: list[dict[str, Any]]) -> list[str]:
    """The steps whose own statistics say they changed nothing: no op quantized, no layer palettized."""
    idle = []
    for kind, st in zip(kinds, stats):
        ops = st.get("quantized_ops")
        if (isinstance(ops, dict) and not sum(ops.values())) or st.get("layers_palettized", 1) == 0:
            idle.append(kind)
    return idle


def slower(manifest: dict[str, Any], metrics: dict[str, Any]) -> str | None:
    """A warning when the candidate is clearly slower than the source on the target (the whole 95%
    interval of its interleaved speedup below 1), with what its steps did; None otherwise."""
    high = metrics.get("speedup_ci_high", metrics.get("speedup"))
    if high is None or high >= 1:
        return None
    steps = [s for s in manifest.get("steps", []) if "kind" in s]
    cause = _cause([s["kind"] for s in steps], [s.get("stats", {}) for s in steps])
    return f"it runs at {metrics['speedup']:.2f}x the source's speed on this target, slower{cause}"


def _cause(kinds: list[str], stats: list[dict[str, Any]]) -> str:
    """What the steps' statistics say about why: how much they quantized or clustered, their notes."""
    said = []
    for kind, st in zip(kinds, stats):
        ops = st.get("quantized_ops")
        if isinstance(ops, dict):
            said.append(
                f"{kind} quantized {sum(ops.values())} op(s)"
                + (f" ({', '.join(f'{k} {v}' for k, v in sorted(ops.items()))})" if ops else "")
            )
        if "layers_clustered" in st:
            said.append(
                f"{kind} clustered {st['layers_clustered']} layer(s), {st.get('layers_palettized', 0)} "
                "palettized in the file"
            )
        if st.get("note"):
            said.append(f"{kind}: {st['note']}")
    return f": {'; '.join(said)}" if said else ""
