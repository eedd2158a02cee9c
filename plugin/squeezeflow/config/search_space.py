"""The search space: steps whose parameters are choices, sampled into a recipe by an Optuna trial.

A space is a list of entries `{step: body}`. `body` maps each parameter to a spec: a list is a
categorical choice, `{low, high}` (optional `log`, `step`) a range, another mapping a nested spec
(e.g. a student's `{width: {low: 0.25, high: 1}}`), anything else a fixed value. A body given as a
list of mappings chooses one of them (alternatives, e.g. dynamic or static quantization with their
own options). `optional: true` lets the search leave the step out; a string names a group whose
steps are in or out together (prune with its fine-tuning).
"""

from __future__ import annotations

import json
import math
from typing import Any

from squeezeflow.config.messages import describe_validation_error
from squeezeflow.errors import ConfigError
from squeezeflow.steps import config_class

PRIMITIVE = (type(None), bool, int, float, str)
NOT_SEARCHABLE = {"searched": "it is what the search fills"}


def parse(space: Any, file: str = "params.yaml") -> list[tuple[str, list[dict[str, Any]], Any]]:
    """Check a space and return its entries as (step kind, alternatives, optional).

    Every choice and both ends of every range are validated as the step's config, so a space that
    cannot produce a valid recipe fails here, before any trial.

    Raises:
        ConfigError: an empty or contradictory space, an unknown step or parameter, a bad value.
    """

    where = f"{file}: search.space"
    if not isinstance(space, list) or not space:
        raise ConfigError(
            f"{where} is empty; list the steps to search, e.g. [{{quantize: {{mode: [static, "
            "dynamic]}}], or use space: auto."
        )
    entries, formats = [], []
    for i, entry in enumerate(space):
        at = f"{where}.{i}"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(
                f"{at} must be a mapping with exactly one step name, such as {{quantize: {{mode: "
                f"[static, dynamic]}}}}. Got {json.dumps(entry, default=str)[:120]}."
            )
        ((kind, body),) = entry.items()
        if kind in NOT_SEARCHABLE:
            raise ConfigError(
                f"{at}: step {kind} cannot be searched ({NOT_SEARCHABLE[kind]}); put it in a recipe of its own."
            )
        try:
            cls = config_class(kind)
        except ConfigError as e:
            raise ConfigError(f"{at}: {e}") from None
        alternatives = body if isinstance(body, list) else [body or {}]
        if not alternatives or not all(isinstance(a, dict) for a in alternatives):
            raise ConfigError(
                f"{at}.{kind} must be a mapping of parameters to choices, or a non-empty list of "
                "such mappings (alternatives)."
            )
        optional = None
        if kind == "distill" and any(_names_models(alt) for alt in alternatives):
            raise ConfigError(
                f"{at}.distill: a searched distillation learns from the source model only, and its "
                "student is a shrunken copy of it "
                "(search width and depth); drop teachers and a registered student here, or give such "
                "a distill step a recipe of its own."
            )
        for k, alt in enumerate(alternatives):
            alt = dict(alt)
            flag = alt.pop("optional", None)
            if flag is not None and not isinstance(flag, (bool, str)):
                raise ConfigError(f"{at}.{kind}.optional must be true, false or a group name. Got {flag!r}.")
            optional = optional or flag or None
            alternatives[k] = alt
            path = f"search.space.{i}.{kind}" + (f".{k}" if len(alternatives) > 1 else "")
            try:
                corners = _corners(alt, path)
            except ConfigError as e:
                raise ConfigError(f"{file}: {e}") from None
            for values in corners:
                _validate(cls, values, path, file)
        entries.append((kind, alternatives, optional))
        formats.append((cls.input_format, optional))
    required_onnx = [j for j, (fmt, opt) in enumerate(formats) if fmt == "onnx" and not opt]
    for j, (fmt, _) in enumerate(formats):
        if fmt == "torch" and any(r < j for r in required_onnx):
            raise ConfigError(
                f"{where}.{j}: step {entries[j][0]} needs a PyTorch model but follows an ONNX step; "
                "put PyTorch steps (prune, finetune, qat, cluster) first."
            )
    return entries


def _names_models(spec: dict[str, Any]) -> bool:
    """Whether a distill spec names registered models (teachers other than the source, a registered student)."""
    teachers = spec.get("teachers")
    return (
        (teachers is not None and teachers != [{"uri": "source"}])
        or isinstance(spec.get("student"), (str, list))
        and any(
            isinstance(v, str) for v in (spec["student"] if isinstance(spec["student"], list) else [spec["student"]])
        )
    )


def size(entries: list[tuple[str, list[dict[str, Any]], Any]]) -> float:
    """How many distinct recipes the space holds (inf with a continuous range; an upper bound when very large)."""
    upper = 1.0
    for _, alternatives, optional in entries:
        upper *= sum(_count(alt) for alt in alternatives) * (2 if optional else 1)
    return float(len(grid(entries))) if upper <= 20000 else upper


def sample(trial: Any, entries: list[tuple[str, list[dict[str, Any]], Any]]) -> list[Any]:
    """The recipe (step configs) that `trial` chooses from the space."""

    steps, groups = [], {}
    for i, (kind, alternatives, optional) in enumerate(entries):
        if optional:
            group = optional if isinstance(optional, str) else f"{i}.{kind}"
            if group not in groups:
                groups[group] = trial.suggest_categorical(f"use.{group}", [True, False])
            if not groups[group]:
                continue
        k = trial.suggest_categorical(f"{i}.{kind}", list(range(len(alternatives)))) if len(alternatives) > 1 else 0
        body = _choose(trial, alternatives[k], f"{i}.{kind}" + (f".{k}" if len(alternatives) > 1 else ""))
        steps.append(config_class(kind).model_validate(body))
    return steps


def as_yaml_steps(steps: list[Any]) -> list[dict[str, Any]]:
    """Step configs as recipe entries of params.yaml ({kind: {changed params}})."""
    return [{s.kind: s.model_dump(mode="json", exclude_defaults=True)} for s in steps]


def _is_range(spec: Any) -> bool:
    return isinstance(spec, dict) and "low" in spec and "high" in spec


def _choose(trial: Any, spec: dict[str, Any], prefix: str) -> dict[str, Any]:
    out = {}
    for name, value in spec.items():
        key = f"{prefix}.{name}"
        if isinstance(value, list):
            if all(isinstance(v, PRIMITIVE) for v in value):
                out[name] = trial.suggest_categorical(key, value)
            else:  # Optuna stores only primitive choices: lists and mappings travel as JSON
                out[name] = json.loads(trial.suggest_categorical(key, [json.dumps(v, sort_keys=True) for v in value]))
        elif _is_range(value):
            low, high = value["low"], value["high"]
            if isinstance(low, int) and isinstance(high, int) and not isinstance(value.get("step", 1), float):
                out[name] = trial.suggest_int(
                    key, low, high, step=value.get("step", 1), log=bool(value.get("log", False))
                )
            else:
                out[name] = trial.suggest_float(
                    key, float(low), float(high), step=value.get("step"), log=bool(value.get("log", False))
                )
        elif isinstance(value, dict):
            out[name] = _choose(trial, value, key)
        else:
            out[name] = value
    return out


def _count(spec: dict[str, Any]) -> float:
    total = 1.0
    for value in spec.values():
        if isinstance(value, list):
            total *= len(value)
        elif _is_range(value):
            if (
                isinstance(value["low"], int)
                and isinstance(value["high"], int)
                and not isinstance(value.get("step", 1), float)
            ):
                total *= (value["high"] - value["low"]) // value.get("step", 1) + 1
            elif value.get("step"):
                total *= int(round((value["high"] - value["low"]) / value["step"])) + 1
            else:
                return math.inf
        elif isinstance(value, dict):
            total *= _count(value)
    return total


def _corners(spec: dict[str, Any], at: str) -> list[dict[str, Any]]:
    """Assignments to validate: every parameter at its first choice, then each choice and range end in turn."""
    first, variants = {}, []
    for name, value in spec.items():
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"{at}.{name} is an empty choice; list at least one value.")
            first[name], options = value[0], value[1:]
        elif _is_range(value):
            low, high = value["low"], value["high"]
            extra = set(value) - {"low", "high", "log", "step"}
            if extra or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
                raise ConfigError(
                    f"{at}.{name} must be a range {{low, high}} of numbers (optional log, step). Got "
                    f"{json.dumps(value, default=str)[:120]}."
                )
            if not low < high:
                raise ConfigError(f"{at}.{name}: low {low} must be below high {high}.")
            if value.get("log") and low <= 0:
                raise ConfigError(f"{at}.{name}: a log range needs low > 0. Got {low}.")
            first[name], options = low, [high]
        elif isinstance(value, dict):
            nested = _corners(value, f"{at}.{name}")
            first[name], options = nested[0], nested[1:]
        else:
            first[name], options = value, []
        variants += [(name, o) for o in options]
    return [first] + [{**first, name: o} for name, o in variants]


def _validate(cls: type, values: dict[str, Any], at: str, file: str) -> None:
    from pydantic import ValidationError

    try:
        cls.model_validate(values)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, file, at, cls)) from None


def grid(entries: list[tuple[str, list[dict[str, Any]], Any]]) -> list[dict[str, Any]]:
    """Every recipe of a finite space, as the trial parameters `sample` reads (to enqueue them once each)."""
    out: list[dict[str, Any]] = []
    stack: list[dict[str, int]] = [{}]
    while stack:
        forced = stack.pop()
        rec = _Recorder(forced)
        sample(rec, entries)
        out.append(rec.params)
        for j, (name, count) in enumerate(rec.decisions):
            if name in forced:
                continue
            prefix = {n: rec.index[n] for n, _ in rec.decisions[:j]}
            stack += [{**prefix, name: i} for i in range(1, count)]
    return out


class _Recorder:
    """A stand-in trial that takes the forced choice (else the first) of each decision, and records them."""

    def __init__(self, forced: dict[str, int]):
        self.forced, self.params, self.index, self.decisions = forced, {}, {}, []

    def _take(self, name: str, choices: list[Any]) -> Any:
        i = self.forced.get(name, 0)
        self.decisions.append((name, len(choices)))
        self.index[name] = i
        self.params[name] = choices[i]
        return choices[i]

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self._take(name, list(choices))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return self._take(name, list(range(low, high + 1, step)))

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        if step is None:
            raise ValueError("a continuous range has no grid")
        n = int(round((high - low) / step)) + 1
        return self._take(name, [round(low + k * step, 12) for k in range(n)])
