"""params.yaml as typed, frozen config; every error names its YAML path and the fix.

The package owns what a user writes: the params schema (here), the recipe slot `searched`, the
YAML reader for files others write (`safeyaml`), the search-space grammar (`search_space`) and the
generated params reference (`reference`). It may import only `errors`, `envvars` and the step
plugin interface (`squeezeflow.steps`, whose config classes it parses).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from squeezeflow.config import safeyaml, search_space
from squeezeflow.config.messages import describe_validation_error, show
from squeezeflow.config.searched import KIND as SEARCHED
from squeezeflow.config.searched import SearchedConfig
from squeezeflow.errors import ConfigError
from squeezeflow.steps import MAX_BATCH, MAX_EPOCHS, MAX_STEPS, StepConfig, config_class

METRIC_DIRECTIONS = {  # objective -> True when larger is better
    "accuracy": True,
    "accuracy_drop": False,
    "agreement": True,
    "latency_p50_ms": False,
    "latency_p95_ms": False,
    "latency_p99_ms": False,
    "throughput_per_s": True,
    "speedup": True,
    "size_mb": False,
    "size_gzip_mb": False,
    "compression_ratio": True,
    "params": False,
    "mae": False,
    "mae_increase": False,
    "rmse": False,
    "rmse_increase": False,
    "cosine": True,
    "retrieval_agreement": True,
    "max_abs_error": False,
    "mean_abs_error": False,
    "max_rel_error": False,
    "mean_rel_error": False,
}


MAX_SEED = 2**32 - 1  # numpy's legacy seeding and torch's generators take 32-bit seeds everywhere
RECIPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # recipe names become folder and file names
TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")  # target names become file names and alias suffixes
RESERVED_NAMES = frozenset({"baseline"})  # the source's own row in metrics/ and the gate


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Model):
    model_uri: str = Field(
        pattern=r"^models:/[^/@]+(@[^/@]+|/(\d+|latest))$",
        description="Registered model to compress: models:/NAME@ALIAS, models:/NAME/VERSION or models:/NAME/latest.",
    )


class InputLayout(_Model):
    """How one model input is fed when it is not a batch-first array: recurrent state batched on another axis, or a
    constant (a sample rate, a flag) that is not in the data files."""

    batch_axis: int = Field(
        0,
        ge=0,
        le=7,
        description="The input's sample axis as the model takes it (Silero VAD's state [2, N, 128]: 1). The data files "
        "still store the samples first ([N, 2, 128]); every stage moves the axis when it feeds the model.",
    )
    value: bool | int | float | list | None = Field(
        None,
        description="A constant fed on every run, in every stage (Silero VAD's sr: 16000). The input is then not in "
        "the data files.",
    )
    dtype: Literal["float32", "float64", "int64", "int32", "bool"] | None = Field(
        None, description="value: its dtype (default: int64 for integers, float32 for floats, bool for booleans)."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> InputLayout:
        if self.value is not None and self.batch_axis:
            raise ValueError("an input is either a constant (value) or batched on an axis (batch_axis), not both")
        if self.dtype and self.value is None:
            raise ValueError("dtype is the dtype of a constant: set value too, or remove dtype")
        if self.value is not None:
            self.array()  # a value numpy cannot make an array of that dtype is refused here, with the params
        return self

    def array(self) -> Any:
        """The constant as the array every run feeds."""
        import numpy as np

        try:
            kind = np.asarray(self.value).dtype
            default = "bool" if kind == np.bool_ else "int64" if np.issubdtype(kind, np.integer) else "float32"
            return np.asarray(self.value, dtype=self.dtype or default)
        except (ValueError, TypeError, OverflowError) as e:
            raise ValueError(
                f"value {str(self.value)[:60]} is not an array of {self.dtype or 'numbers'} "
                f"({str(e).splitlines()[0][:80]}): give a number, a boolean, or a rectangular list of them"
            ) from None


class Data(_Model):
    task: Literal["classification", "regression", "embedding", "generic"] = Field(
        "classification",
        description="What the model predicts; sets the metrics: classification (accuracy, "
        "agreement), regression (MAE/RMSE and their increase), "
        "embedding (cosine similarity to FP32, retrieval agreement), generic (absolute and relative difference to "
        "FP32 per output).",
    )
    eval: Path = Field(
        description="npz with one array per model input, plus `labels` (integer classes for "
        "classification; optional targets for regression), for quality and latency."
    )
    calibration: Path | None = Field(None, description="npz of representative inputs for static quantization.")
    train: Path | None = Field(None, description="npz of training inputs (and labels) for steps that train.")
    inputs: dict[str, InputLayout] = Field(
        {},
        description="Per model input that is not a batch-first array in the data files: its batch_axis, or a "
        "constant value (`{state: {batch_axis: 1}, sr: {value: 16000}}`). `squeezeflow init` writes it.",
    )
    classes: int | None = Field(
        None,
        ge=2,
        description="How many classes the model predicts (default: the width "
        "of its output; a different width is an error). Labels "
        "must lie in 0..classes-1.",
    )


class Contracts(_Model):
    strict: bool = Field(
        False,
        description="Fail check-data when the calibration inputs are distributed unlike "
        "the eval inputs (default: a warning with the statistic; real "
        "calibration data often comes from other sources than eval).",
    )
    all_classes: bool = Field(
        False,
        description="Require every class in the eval set (default: the labels present "
        "must be valid classes; an eval set covering 60 of 1,000 classes "
        "is normal).",
    )


class Budgets(_Model):
    max_accuracy_drop: float | None = Field(
        None, ge=0, description="Largest allowed baseline-minus-candidate accuracy (absolute, 0.01 = 1 point)."
    )
    min_accuracy: float | None = Field(None, ge=0, le=1, description="Smallest allowed candidate accuracy.")
    max_latency_p95_ms: float | None = Field(
        None, gt=0, description="Largest allowed p95 latency in milliseconds on the target."
    )
    min_speedup: float | None = Field(None, gt=0, description="Smallest allowed baseline p50 / candidate p50.")
    max_size_mb: float | None = Field(None, gt=0, description="Largest allowed model file size in MB (1e6 bytes).")
    min_compression_ratio: float | None = Field(
        None, gt=0, description="Smallest allowed baseline bytes / candidate bytes."
    )
    max_class_accuracy_drop: float | None = Field(
        None, ge=0, description="Largest allowed accuracy drop on any single class (absolute)."
    )
    min_agreement: float | None = Field(
        None,
        ge=0,
        le=1,
        description="classification: smallest allowed share of samples where the candidate predicts the FP32 "
        "model's class.",
    )
    max_mae_increase: float | None = Field(
        None,
        ge=0,
        description="regression: largest allowed candidate MAE minus FP32 MAE (in the labels' unit), judged on its 95% "
        "interval.",
    )
    max_rmse_increase: float | None = Field(
        None, ge=0, description="regression: largest allowed candidate RMSE minus FP32 RMSE."
    )
    min_cosine: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="embedding: smallest allowed mean cosine similarity to the FP32 embeddings (worst output), "
        "judged on its "
        "95% interval.",
    )
    min_retrieval_agreement: float | None = Field(
        None,
        ge=0,
        le=1,
        description="embedding: smallest allowed share of samples whose nearest neighbour is the FP32 embedding's.",
    )
    max_output_error: float | None = Field(
        None,
        ge=0,
        description="generic: largest allowed mean absolute difference to the FP32 outputs relative to their mean "
        "magnitude "
        "(worst output; 0.01 = 1%).",
    )
    inconclusive: Literal["fail", "warn"] = Field(
        "fail",
        description="When a budget lies inside a metric's 95% interval (accuracy drop, speedup, p95 latency): fail the "
        "candidate, or pass it with a warning.",
    )


class Target(_Model):
    name: str = Field(
        "cpu-x86",
        description="Label of the deployment target, recorded in the metrics (under "
        "`targets:` the key names the target instead).",
    )
    runtime: Literal["onnxruntime", "openvino", "executorch"] = Field(
        "onnxruntime",
        description="The runtime that loads and times the models: onnxruntime (with `providers`); openvino (`pip "
        "install "
        "openvino`; runs ONNX QDQ models as INT8 on `device`); executorch (`pip install executorch`; under "
        "`targets:` only: runs the .pte programs of recipes that end with the executorch step, against the "
        "PyTorch source lowered in FP32).",
    )
    backend: Literal["xnnpack"] = Field(
        "xnnpack", description="executorch: the backend the programs are lowered to (XNNPACK: ARM and x86 CPUs)."
    )
    device: str = Field("CPU", min_length=1, description="openvino: the device to compile for (CPU, GPU, NPU, AUTO).")
    optional: bool = Field(
        False,
        description="Under `targets:`: a target where no candidate passes (or whose "
        "runtime or device is not on this machine) warns instead of failing "
        "the gate.",
    )
    budgets: Budgets | None = Field(
        None,
        description="Under `targets:`: budgets of this target that replace the "
        "shared `budgets` of the same name (the others still apply), "
        "e.g. {max_latency_p95_ms: 5}.",
    )
    providers: tuple[str, ...] = Field(
        ("CPUExecutionProvider",), min_length=1, description="ONNX Runtime execution providers, in order of preference."
    )
    threads: int = Field(1, ge=1, le=256, description="Intra-op threads of the ONNX Runtime session.")
    batch_size: int = Field(1, ge=1, le=MAX_BATCH, description="Batch size of the latency measurement.")
    warmup: int = Field(
        20,
        ge=0,
        description="Untimed runs before the latency measurement (they stop once they "
        "have taken half of `max_seconds`).",
    )
    repeats: int = Field(
        200,
        ge=5,
        le=MAX_STEPS,
        description="Fewest timed runs per model; baseline and candidate "
        "alternate, in rounds of 20 (measuring stops at "
        "`max_seconds` even if fewer ran).",
    )
    ci_width: float = Field(
        0.1, gt=0, description="Measuring stops once the speedup's 95% interval is this narrow (high / low - 1) ..."
    )
    max_seconds: float = Field(
        30.0,
        gt=0,
        description="... or after this many seconds per candidate; the gate then judges the interval it has.",
    )


BUDGET_METRICS = {  # budget -> (metric key, bound kind)
    "max_accuracy_drop": ("accuracy_drop", "max"),
    "min_accuracy": ("accuracy", "min"),
    "max_latency_p95_ms": ("latency_p95_ms", "max"),
    "min_speedup": ("speedup", "min"),
    "max_size_mb": ("size_mb", "max"),
    "min_compression_ratio": ("compression_ratio", "min"),
    "max_class_accuracy_drop": ("class_accuracy_drop_max", "max"),
    "min_agreement": ("agreement", "min"),
    "max_mae_increase": ("mae_increase", "max"),
    "max_rmse_increase": ("rmse_increase", "max"),
    "min_cosine": ("cosine", "min"),
    "min_retrieval_agreement": ("retrieval_agreement", "min"),
    "max_output_error": ("mean_rel_error", "max"),
}
TASK_BUDGETS = {  # budgets that only one task's metrics can judge
    "max_accuracy_drop": "classification",
    "min_accuracy": "classification",
    "max_class_accuracy_drop": "classification",
    "min_agreement": "classification",
    "max_mae_increase": "regression",
    "max_rmse_increase": "regression",
    "min_cosine": "embedding",
    "min_retrieval_agreement": "embedding",
    "max_output_error": "generic",
}
TASK_METRICS = {
    "accuracy": "classification",
    "accuracy_drop": "classification",
    "agreement": "classification",
    "mae": "regression",
    "mae_increase": "regression",
    "rmse": "regression",
    "rmse_increase": "regression",
    "cosine": "embedding",
    "retrieval_agreement": "embedding",
    "max_abs_error": "generic",
    "mean_abs_error": "generic",
    "max_rel_error": "generic",
    "mean_rel_error": "generic",
}
BUDGET_INTERVALS = {  # metrics measured with a 95% interval: (low key, high key)
    "accuracy_drop": ("accuracy_drop_ci_low", "accuracy_drop_ci_high"),
    "speedup": ("speedup_ci_low", "speedup_ci_high"),
    "latency_p95_ms": ("latency_p95_ms_ci_low", "latency_p95_ms_ci_high"),
    "mae_increase": ("mae_increase_ci_low", "mae_increase_ci_high"),
    "cosine": ("cosine_ci_low", "cosine_ci_high"),
}


# the task's quality objective of a search
PRIMARY_DROP = {
    "classification": "accuracy_drop",
    "regression": "mae_increase",
    "embedding": "cosine",
    "generic": "mean_rel_error",
}


class Search(_Model):
    space: Literal["auto"] | list[Any] = Field(
        "auto",
        description="What the search may choose: `auto` (built from the model's operators and the data: dynamic or "
        "static "
        "INT8 with their options; "
        "structured pruning with fine-tuning when the source is PyTorch and "
        "data.train has labels), or a list of steps whose parameters are "
        "choices: "
        "a list is a categorical choice, {low, high} (optional `log`, `step`) a "
        "range, a scalar fixed, e.g. "
        "[{quantize: {mode: [static, dynamic], calibration: [minmax, "
        "entropy]}}, {prune: {method: structured, amount: {low: 0.1, high: "
        "0.6}, optional: true}}]; "
        "a step given as a list of such mappings chooses one of them; "
        "`optional: true` (or a group name shared by several steps) lets the "
        "search leave it out.",
    )
    objectives: tuple[Literal[tuple(METRIC_DIRECTIONS)], ...] | None = Field(
        None,
        min_length=1,
        max_length=3,
        description="Metrics the search optimizes (their direction is known); several: a Pareto front. "
        "Default: selection.objective and the "
        "task's quality metric (accuracy_drop, "
        "mae_increase, cosine or "
        "mean_rel_error). Budgets are "
        "constraints, not objectives.",
    )
    trials: int = Field(
        20,
        ge=1,
        le=10000,
        description="Trials to complete (pruned ones count; failed ones and "
        "repeats of a finished recipe do not). A finite space "
        "smaller than this is tried whole, once each.",
    )
    timeout_minutes: float = Field(
        60.0, gt=0, description="The search stops starting trials after this long (wall clock, this run)."
    )
    keep: int = Field(
        3,
        ge=1,
        le=50,
        description="The best trials written as recipes "
        "(artifacts/search/recipes.yaml): the Pareto front of the trials "
        "that meet the budgets, ranked by the first objective.",
    )
    executor: Literal["local", "ray"] = Field(
        "local",
        description="Where trials run: local (in this process, one at a time), or ray: Ray tasks on the cluster at "
        "RAY_ADDRESS (a local Ray when unset; `pip install squeezeflow[ray]`): recipes applied and scored in "
        "parallel, one CPU each; timings one at a time, each with every CPU of its node; a worker that dies has "
        "its task retried.",
    )
    storage: str | None = Field(
        None,
        min_length=1,
        description="Optuna storage URL of the study (default: sqlite "
        "in artifacts/search/study/study.db, kept between "
        "runs: a killed search resumes; postgresql://... "
        "to share a study).",
    )
    target: str | None = Field(
        None, description="Under `targets:`: the target trials are timed on (default the first ONNX one)."
    )
    holdout: int = Field(
        256,
        ge=16,
        le=MAX_STEPS,
        description="Samples held back (seeded, at random) from "
        "data.train (data.calibration when there is no "
        "train, or when a classification train file has no "
        "labels) to score trials; steps see the rest. Never "
        "data.eval.",
    )
    prune_samples: int = Field(
        64,
        ge=8,
        le=MAX_STEPS,
        description="A trial is first scored on this many held-back samples; one whose quality misses a budget "
        "even at its "
        "95% interval's optimistic end stops there (pruned).",
    )
    trial_epochs: int | None = Field(
        2,
        ge=1,
        le=MAX_EPOCHS,
        description="Trials train distill, finetune, qat and gradual prune steps for at most this many epochs: a "
        "short run "
        "ranks recipes and student architectures; the recipes written for compress keep the space's epochs (the "
        "full training). null: as the space says.",
    )
    latency_seconds: float = Field(
        10.0,
        gt=0,
        description="Timing budget of each trial (the target's max_seconds, "
        "capped): trial latencies rank recipes; the gate's "
        "measurement on data.eval decides.",
    )


class Selection(_Model):
    objective: Literal[tuple(METRIC_DIRECTIONS)] = Field(
        "speedup",
        description="Metric that ranks passing candidates; its direction is known. The default, speedup, is timed "
        "interleaved against the same baseline in each evaluate stage; latencies of different stages were "
        "measured at different times.",
    )
    tie_break: Literal[tuple(METRIC_DIRECTIONS)] = Field(
        "size_mb",
        description="Among candidates whose 95% intervals of the objective overlap the best one's (a tie the "
        "measurement "
        "cannot split), this metric chooses.",
    )


class Promote(_Model):
    registered_model: str = Field(min_length=1, description="Registered model that receives the selected candidate.")
    alias: str = Field(
        "candidate", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$", description="Alias moved to the promoted version."
    )
    experiment: str = Field("squeezeflow", min_length=1, description="MLflow experiment of promotion and audit runs.")
    from_experiments: bool = Field(
        False,
        description="Promote from `dvc exp run` too. By default an experiment's "
        "promote stage is a dry run: experiments do not ship.",
    )
    from_dirty: bool = Field(
        False,
        description="Promote from a working tree with uncommitted changes to tracked "
        "files (beyond dvc.lock, artifacts/, metrics/, reports/ and "
        "plots/, which `dvc repro` rewrites). By default that is a dry "
        "run; when allowed, the version is tagged "
        "`squeezeflow.git.dirty=true` with the files.",
    )
    branches: tuple[str, ...] = Field(
        ("main", "master"),
        description="Release branches: promotion from another branch (or a detached HEAD; in GitHub Actions, "
        "GITHUB_REF_NAME) is a dry run. Empty: any branch. Outside a git repository none of these checks apply.",
    )


class Demo(_Model):
    dataset: Literal["digits", "mnist", "tweets"] = Field(
        "digits", description="Dataset `squeezeflow demo` writes and trains the source model on."
    )
    model: Literal["cnn", "mlp", "transformer"] = Field("cnn", description="Model family of the demo source model.")
    epochs: int = Field(8, ge=1, le=MAX_EPOCHS, description="Training epochs of the demo source model.")
    lr: float = Field(1e-3, gt=0, lt=1, description="Adam learning rate of the demo source model.")
    pretrained: Literal["efficientnet-lite1", "resemblyzer", "easyocr-craft", "easyocr-crnn", "mtcnn-onet"] | None = (
        Field(
            None,
            description="Instead of training one: register this real pretrained model (weights from its package, "
            "in MLflow's "
            "default pt2 format) and write its real inputs (photo crops, synthesized speech, rendered text, face "
            "crops): the zoo pipelines under pipelines/.",
        )
    )


class Params(_Model):
    source: Source
    data: Data
    recipes: dict[str, list[SerializeAsAny[StepConfig]]] = Field(
        min_length=1,
        description="Candidates: name -> ordered list of steps, or, under `targets:`, "
        "{targets: [NAME, ...], steps: [...]} "
        "for a recipe meant for those targets "
        "only (the others show it as n/a).",
    )
    contracts: Contracts = Contracts()
    budgets: Budgets = Budgets()
    target: Target = Target()
    targets: dict[str, Target] | None = Field(
        None,
        description="Several deployment targets, name -> target: every "
        "candidate is measured on each, the gate gives a "
        "verdict per target, and promote moves the alias "
        "`<alias>-<name>` to each target's winner. "
        "Replaces `target`.",
    )
    search: Search | None = Field(
        None,
        description="Search for the best recipe under the budgets (the search "
        "stage, pipelines/digits-search); recipes `[{searched: {rank: "
        "K}}]` take its K-th best trial.",
    )
    selection: Selection = Selection()
    promote: Promote
    demo: Demo = Demo()
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of every random choice in the stages (0 to 2**32 - 1).")

    _recipe_targets: dict[str, tuple[str, ...]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _recipes_for_targets(cls, raw: Any, handler: Any) -> Params:
        """Take `recipes.NAME: {targets: [...], steps: [...]}` apart: the steps are the recipe, the targets its
        scope.
        """
        named: dict[str, tuple[str, ...]] = {}
        if isinstance(raw, dict) and isinstance(raw.get("recipes"), dict):
            recipes = {}
            for name, body in raw["recipes"].items():
                if isinstance(body, dict) and "steps" in body:
                    extra = sorted(set(body) - {"steps", "targets"})
                    if extra:
                        raise ValueError(
                            f"recipes.{name}: {extra[0]} is not a known key; a recipe mapping has steps and targets"
                        )
                    targets = body.get("targets", [])
                    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
                        raise ValueError(
                            f"recipes.{name}.targets must be a non-empty list of target names, e.g. [x86-edge]"
                        )
                    named[name] = tuple(targets)
                    body = body["steps"]
                recipes[name] = body
            raw = {**raw, "recipes": recipes}
        model = handler(raw)
        for name, targets in named.items():
            known = model.targets or {}
            if not known:
                raise ValueError(
                    f"recipes.{name}.targets names targets, but params.yaml has a single target; list "
                    f"several under targets:, or drop recipes.{name}.targets"
                )
            unknown = [t for t in targets if t not in known]
            if unknown:
                raise ValueError(f"recipes.{name}.targets: {unknown[0]!r} is not a target; targets: {', '.join(known)}")
        model._recipe_targets = named
        return model

    def recipe_targets(self, recipe: str) -> tuple[str, ...] | None:
        """The targets a recipe is for (None: every target whose runtime runs its format)."""
        return self._recipe_targets.get(recipe)

    @model_validator(mode="after")
    def _budgets_fit_the_task(self) -> Params:
        own = {f"targets.{n}.budgets": t.budgets for n, t in (self.targets or {}).items() if t.budgets is not None}
        for where, budgets in {"budgets": self.budgets, **own}.items():
            for budget, value in budgets.model_dump().items():
                task = TASK_BUDGETS.get(budget)
                if value is not None and task and task != self.data.task:
                    others = sorted(b for b, t in TASK_BUDGETS.items() if t == self.data.task)
                    raise ValueError(
                        f"{where}.{budget} judges task {task}, but data.task is {self.data.task}; its "
                        f"budgets are {', '.join(others)}"
                    )
        for key in ("objective", "tie_break"):
            metric = getattr(self.selection, key)
            if metric in TASK_METRICS and TASK_METRICS[metric] != self.data.task:
                raise ValueError(
                    f"selection.{key} {metric} is a metric of task {TASK_METRICS[metric]}, but "
                    f"data.task is {self.data.task}"
                )
        return self

    @model_validator(mode="after")
    def _targets_are_named_well(self) -> Params:
        if self.targets is None:
            # a single target's verdict is the gate's: these would be silently ignored
            for key in ("budgets", "optional"):
                if key in self.target.model_fields_set:
                    raise ValueError(
                        f"target.{key} applies under targets: only; with one target put budgets in "
                        f"budgets and drop target.{key}"
                    )
            if self.target.runtime == "executorch":
                raise ValueError(
                    "target.runtime executorch runs only the .pte candidates, so it goes under "
                    "targets: beside an ONNX target, e.g. targets: {x86: {}, mobile: {runtime: "
                    "executorch}}"
                )
            return self
        if "target" in self.model_fields_set:
            raise ValueError(
                "set either target (one) or targets (several), not both; move target into targets as one more entry"
            )
        if not self.targets:
            raise ValueError("targets is empty; name at least one target, or remove it to use target")
        for name in self.targets:
            if not TARGET_NAME.match(name):
                raise ValueError(
                    f"targets: name {name!r} is not allowed: it becomes part of file names and of the "
                    "alias <alias>-<name>, so use letters, digits, `_` and `-` (at most 40)"
                )
        return self

    @model_validator(mode="after")
    def _search_fits(self, info) -> Params:
        slots = {name: steps[0].rank for name, steps in self.recipes.items() if steps[0].kind == "searched"}
        if slots and self.search is None:
            raise ValueError(
                f"recipes.{next(iter(slots))} takes a searched recipe, but params.yaml has no search: "
                "block; add one (search: {space: auto}) or remove the recipe"
            )
        if self.search is None:
            return self
        for name, rank in slots.items():
            if rank > self.search.keep:
                raise ValueError(
                    f"recipes.{name}: searched rank {rank} is beyond search.keep {self.search.keep}; "
                    "raise search.keep or lower the rank"
                )
        for metric in self.search.objectives or ():
            if metric in TASK_METRICS and TASK_METRICS[metric] != self.data.task:
                raise ValueError(
                    f"search.objectives: {metric} is a metric of task {TASK_METRICS[metric]}, but "
                    f"data.task is {self.data.task}; use {PRIMARY_DROP[self.data.task]}"
                )
        if self.search.objectives and len(set(self.search.objectives)) != len(self.search.objectives):
            raise ValueError(f"search.objectives repeats a metric: {list(self.search.objectives)}")
        named = self.search.target
        if named is not None and named not in self.deployment_targets():
            raise ValueError(
                f"search.target {named!r} is not a target; targets: {', '.join(self.deployment_targets())}"
            )
        if isinstance(self.search.space, list):
            search_space.parse(self.search.space, (info.context or {}).get("file", "params.yaml"))
        return self

    def search_objectives(self) -> tuple[str, ...]:
        """search.objectives, or selection.objective and the task's quality metric."""
        assert self.search is not None
        return self.search.objectives or tuple(dict.fromkeys((self.selection.objective, PRIMARY_DROP[self.data.task])))

    def deployment_targets(self) -> dict[str, Target]:
        """name -> target: `targets`, or the one `target` under its name."""
        return dict(self.targets) if self.targets is not None else {self.target.name: self.target}

    def budgets_for(self, target: str) -> Budgets:
        """The shared budgets, with those the target sets replacing theirs."""
        own = self.deployment_targets()[target].budgets
        return self.budgets if own is None else self.budgets.model_copy(update=own.model_dump(exclude_unset=True))

    @field_validator("recipes", mode="before")
    @classmethod
    def _parse_recipes(cls, value: Any, info) -> Any:
        return parse_recipes(value, (info.context or {}).get("file", "params.yaml"))


def parse_recipes(raw: Any, file: str) -> dict[str, list[StepConfig]]:
    """Turn `{name: [{kind: {...}}, ...]}` into step configs, failing on the first bad entry."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: recipes must be a mapping of recipe name to a list of steps. Got {show(raw)}.")
    recipes = {}
    for name, steps in raw.items():
        if not isinstance(name, str) or not RECIPE_NAME.match(name):
            raise ConfigError(
                f"{file}: recipe name {show(name)} is not allowed: it becomes a folder name, so use "
                "letters, digits, `_`, `-` and `.` "
                "(starting with a letter or digit, at most 100 characters), such as int8-static."
            )
        if name in RESERVED_NAMES:
            raise ConfigError(
                f"{file}: recipe name {name!r} is reserved for the FP32 source model's own row. Rename the recipe."
            )
        if not isinstance(steps, list) or not steps:
            raise ConfigError(
                f"{file}: recipes.{name} must be a non-empty list of steps such as [{{quantize: "
                f"{{mode: static}}}}]. Got {show(steps)}."
            )
        parsed = []
        for i, step in enumerate(steps):
            where = f"recipes.{name}.{i}"
            if not isinstance(step, dict) or len(step) != 1:
                raise ConfigError(
                    f"{file}: {where} must be a mapping with exactly one step name, such as "
                    f"{{quantize: {{mode: dynamic}}}}. Got {show(step)}."
                )
            ((kind, body),) = step.items()
            try:
                step_cls = SearchedConfig if kind == SEARCHED else config_class(kind)
            except ConfigError as e:
                raise ConfigError(f"{file}: {where}: {e}") from None
            try:
                parsed.append(step_cls.model_validate(body or {}))
            except ValidationError as e:
                raise ConfigError(describe_validation_error(e, file, f"{where}.{kind}", step_cls)) from None
            if kind == SEARCHED and i > 0:
                raise ConfigError(
                    f"{file}: {where}: step 'searched' must come first in its recipe (the search's "
                    "steps replace it; later steps still apply)."
                )
            if step_cls.input_format == "torch" and any(type(p).input_format == "onnx" for p in parsed[:-1]):
                raise ConfigError(
                    f"{file}: {where}: step '{kind}' needs a PyTorch model but follows an ONNX step. "
                    "Put PyTorch steps before ONNX steps such as quantize."
                )
        recipes[name] = parsed
    return recipes


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate params.yaml.

    Args:
        path: the YAML file.

    Returns:
        The validated, frozen `Params`.

    Raises:
        ConfigError: missing file, invalid YAML, unknown key, wrong type or impossible value.

    Example:
        >>> load_params("params.yaml").promote.alias  # doctest: +SKIP
        'candidate'
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found. Run from the pipeline folder or pass --params PATH.")
    raw = safeyaml.load_file(path, ConfigError)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping with keys source, data, recipes, promote. Got {show(raw)}.")
    try:
        return Params.model_validate(raw, context={"file": str(path)})
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, str(path), "", Params)) from None


def step_params(config: StepConfig) -> dict[str, Any]:
    """The resolved parameters of a step (defaults filled in), as recorded in manifests."""
    return {"kind": config.kind, **config.model_dump(mode="json")}


def recipe_digest(steps: list[StepConfig]) -> str:
    """sha256 of the recipe's resolved steps: equal recipes have equal digests."""

    blob = json.dumps([step_params(s) for s in steps], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def registry_refs(params: Params) -> list[str]:
    """Every registered-model URI the recipes name besides the source (teachers, students), sorted."""
    return sorted({uri for steps in params.recipes.values() for step in steps for uri in step.registry_uris()})
