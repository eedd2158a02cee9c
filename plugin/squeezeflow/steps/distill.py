"""Knowledge distillation: a smaller student learns the softened outputs of one or more teachers.

The teachers' logits on data.train come from the soft-labels stage (computed once, shared by every
recipe); the student is either a registered model or a shrunken copy of the incoming model's
architecture (CNN channel width and depth, MLP width and depth).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from squeezeflow import data
from squeezeflow.data import artifacts
from squeezeflow.errors import ConfigError, ModelError
from squeezeflow.onnx import sessions
from squeezeflow.steps import MAX_EPOCHS, StepContext, StepResult, register_step
from squeezeflow.steps.finetune import EarlyStoppingConfig, training_data
from squeezeflow.torch import architectures, convert, train

if TYPE_CHECKING:
    import numpy as np

SOURCE = "source"
MODEL_URI = r"models:/[^/@]+(@[^/@]+|/(\d+|latest))"
SOFT_LABELS_INDEX = "index.json"


class Teacher(BaseModel):
    """One teacher: `source` (the pipeline's source model) or a registered model URI, and its weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    uri: str = Field(
        pattern=rf"^({SOURCE}|{MODEL_URI})$",
        description="`source`, or models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/latest.",
    )
    weight: float = Field(1.0, gt=0, description="Weight of this teacher's softened outputs in the average.")


class Shrink(BaseModel):
    """A student built as a smaller copy of the incoming model's architecture (CNN or MLP)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    width: float = Field(
        0.5, gt=0, le=1, description="Multiplier of every conv's channels and every hidden layer's width."
    )
    depth: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Multiplier of the number of conv blocks (CNN) or hidden layers (MLP); the first ones are kept.",
    )


class DistillConfig(EarlyStoppingConfig):
    """Train a smaller student on the teachers' softened outputs (and the hard labels when data.train has them)."""

    kind: ClassVar[str] = "distill"
    student: Shrink | str = Field(
        Shrink(),
        description="A registered model URI (models:/...), or {width, depth} "
        "for a shrunken copy of the incoming model.",
    )
    teachers: tuple[Teacher, ...] = Field(
        (Teacher(uri=SOURCE),),
        min_length=1,
        description="Teachers whose weighted average of softened outputs is the soft target; default the source model.",
    )
    temperature: float = Field(
        4.0, gt=0, description="Softmax temperature of teachers and student in the soft-label loss."
    )
    alpha: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Weight of the soft-label loss; 1 - alpha weighs "
        "cross-entropy on the hard labels (unlabelled data: soft "
        "labels only).",
    )
    epochs: int = Field(15, ge=1, le=MAX_EPOCHS, description="Most epochs of training.")
    lr: float = Field(
        1e-3, gt=0, lt=1, description="Adam learning rate (the student starts from scratch unless registered)."
    )
    patience: int = Field(
        3,
        ge=0,
        le=MAX_EPOCHS,
        description="Stop after this many epochs without a better "
        "accuracy on data.calibration (0: run every epoch); "
        "the best epoch's weights are kept.",
    )

    @field_validator("student")
    @classmethod
    def _student_uri(cls, value: Any) -> Any:

        if isinstance(value, str) and not re.fullmatch(MODEL_URI, value):
            raise ValueError(
                "Value error, must be a registered model URI such as models:/NAME/3, or a mapping "
                "{width: 0.5, depth: 1.0}"
            )
        return value

    @field_validator("teachers")
    @classmethod
    def _unique(cls, value: tuple[Teacher, ...]) -> tuple[Teacher, ...]:
        uris = [t.uri for t in value]
        if len(set(uris)) != len(uris):
            raise ValueError(f"Value error, must name each teacher once; {uris} repeats one")
        return value

    def registry_uris(self) -> tuple[str, ...]:
        """The registered teachers and the registered student: the pull stage fetches them."""
        return tuple(t.uri for t in self.teachers if t.uri != SOURCE) + (
            (self.student,) if isinstance(self.student, str) else ()
        )

    def promise(self) -> str | None:
        return "params"


@register_step(DistillConfig)
def distill(model: Any, config: DistillConfig, ctx: StepContext) -> StepResult:
    """Build or load the student, check it against the teachers, then train it on soft targets."""
    import numpy as np
    import torch

    x, labels, val = training_data(ctx, "distill", labels_required=False)
    teachers = [teacher_logits(ctx, t.uri) for t in config.teachers]
    classes = {t["logits"].shape[1] for t in teachers}
    if len(classes) != 1:
        shapes = ", ".join(f"{t['uri']}: {t['logits'].shape[1]}" for t in teachers)
        raise ModelError(
            f"step distill: the teachers disagree on the number of outputs ({shapes}); give teachers of the same task."
        )
    (num_classes,) = classes
    student, student_info = _student(model, config, ctx, x, num_classes)
    targets = torch.from_numpy(
        train.soft_targets([t["logits"] for t in teachers], [t.weight for t in config.teachers], config.temperature)
    )
    hard = torch.from_numpy(labels) if labels is not None else None
    alpha = config.alpha if hard is not None else 1.0

    def loss(out: Any, idx: Any) -> Any:
        return train.distillation_loss(
            out,
            targets[idx].to(out.device),
            None if hard is None else hard[idx].to(out.device),
            config.temperature,
            alpha,
        )

    student = train.fit(
        student,
        x,
        None,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=ctx.seed,
        device=config.device,
        desc="distill",
        validation=val,
        patience=config.patience,
        loss=loss,
    )
    student.to("cpu")
    input_params, student_params = count_params(model), count_params(student)
    stats = {
        "student": student_info,
        "student_params": student_params,
        "input_params": input_params,
        "param_ratio": round(student_params / input_params, 6) if input_params else None,
        "teachers": [
            {k: v for k, v in t.items() if k != "logits"} | {"weight": c.weight}
            for t, c in zip(teachers, config.teachers)
        ],
        "temperature": config.temperature,
        "alpha": alpha,
        "epochs": config.epochs,
        "train_samples": int(len(targets)),
        "hard_labels": hard is not None,
        "agreement_with_soft_targets": round(
            float(np.mean(train.predict(student, x).argmax(1) == targets.numpy().argmax(1))), 6
        ),
    }
    if val:
        stats["val_accuracy"] = round(train.accuracy(student, *val), 6)
    return StepResult(student, stats)


def run_teacher(
    uri: str, model_dir: Path, inputs: dict[str, np.ndarray], train: Path
) -> tuple[dict[str, Any], np.ndarray]:
    """A teacher's logits on the training inputs and its index entry (what `teacher_logits` reads back).

    Raises:
        ConfigError: the teacher does not give (samples, classes) logits.
    """

    manifest = artifacts.read_manifest(model_dir)
    root = manifest["root"]
    sess = sessions.session(artifacts.model_path(model_dir))
    data.check_inputs(inputs, sess.get_inputs(), train)
    logits = sessions.run(sess, inputs).astype("float32")
    if logits.ndim != 2:
        raise ConfigError(
            f"teacher {uri} gives outputs of shape {list(logits.shape)}; distillation needs (samples, classes) logits."
        )
    entry = {
        "file": f"{root['name']}-v{root['version']}.npy",
        "name": root["name"],
        "version": root["version"],
        "model_id": root.get("model_id") or "",
        "sha256": manifest["sha256"],
        "train_sha256": data.digest(train),
        "shape": list(logits.shape),
    }
    return entry, logits


def write_soft_labels(folder: Path, teachers: dict[str, tuple[dict[str, Any], np.ndarray]]) -> dict[str, Any]:
    """Write each teacher's logits and the index into `folder`; returns the index."""

    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for entry, logits in teachers.values():
        np.save(folder / entry["file"], logits)
    index = {uri: entry for uri, (entry, _) in teachers.items()}
    (folder / SOFT_LABELS_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


def teacher_logits(ctx: StepContext, uri: str) -> dict[str, Any]:
    """One teacher's logits on data.train and its resolved coordinates, from the soft-labels stage."""

    import numpy as np

    folder = ctx.soft_labels
    index_file = folder / SOFT_LABELS_INDEX if folder else None
    index = json.loads(index_file.read_text()) if index_file and index_file.is_file() else {}
    if uri not in index:
        raise ConfigError(
            f"step distill: no soft labels for teacher {uri} in {folder}. Run the soft-labels stage "
            "first (`dvc repro soft-labels`, or `squeezeflow soft-labels`)."
        )
    entry = index[uri]
    if entry["train_sha256"] != data.digest(ctx.train):
        raise ConfigError(
            f"step distill: the soft labels of {uri} were computed on another {ctx.train}. Re-run "
            "the soft-labels stage (`dvc repro`)."
        )
    return {
        "uri": uri,
        **{k: entry[k] for k in ("name", "version", "model_id", "sha256")},
        "logits": np.load(folder / entry["file"]),
    }


def _student(
    model: Any, config: DistillConfig, ctx: StepContext, x: dict[str, np.ndarray], classes: int
) -> tuple[Any, dict[str, Any]]:
    """The student module and what describes it in the manifest; its output must match the teachers'."""

    if isinstance(config.student, str):
        student, where = _registered_student(ctx, config.student), config.student
        info = {"uri": config.student}
    else:
        student, info = shrink(model, config.student.width, config.student.depth, x, classes, ctx.seed)
        where = f"the width {config.student.width} / depth {config.student.depth} copy of the source"
    try:
        out = train.predict(student, {k: v[:2] for k, v in x.items()})
    except Exception as e:  # noqa: BLE001 - any failure here means the student does not fit the data
        raise ModelError(
            f"step distill: student {where} does not run on the training inputs {sorted(x)} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})."
        ) from None
    if out.ndim != 2 or out.shape[1] != classes:
        raise ModelError(
            f"step distill: student {where} has outputs of shape {list(out.shape[1:])} but the "
            f"teachers have [{classes}]. Give a student with {classes} outputs."
        )
    return student, info


def _registered_student(ctx: StepContext, uri: str) -> Any:
    """The registered student's PyTorch module, from the models the pull stage fetched."""

    entry = artifacts.read_index(ctx.registered).get(uri) if ctx.registered else None
    if entry is None:
        raise ConfigError(
            f"step distill: student {uri} has not been pulled. Run the pull stage first (`dvc repro pull`)."
        )
    model_dir = Path(ctx.registered) / entry["dir"]
    torch_dir = artifacts.read_manifest(model_dir)["files"].get("torch")
    if not torch_dir:
        raise ModelError(
            f"step distill: student {uri} is registered as ONNX and cannot be trained. Register it with mlflow.pytorch."
        )
    return convert.load_torch(model_dir / torch_dir)


def shrink(
    model: Any, width: float, depth: float, x: dict[str, np.ndarray], classes: int, seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """A freshly initialised, smaller model of the same family as `model`, read from its weights.

    Conv kernels (rank 4) followed by linear layers make a CNN; linear layers alone over flattened
    inputs make an MLP. Other architectures need a registered student.

    Raises:
        ConfigError: the architecture is neither.
    """
    import numpy as np

    shapes = [tuple(p.shape) for p in model.parameters()]
    convs = [s for s in shapes if len(s) == 4]
    linears = [s for s in shapes if len(s) == 2]
    first = next(iter(x.values())) if len(x) == 1 else None

    def scaled(sizes: tuple[int, ...]) -> tuple[int, ...]:
        kept = sizes[: max(1, round(len(sizes) * depth))]
        return tuple(max(1, round(n * width)) for n in kept)

    hidden = scaled(tuple(s[0] for s in linears[:-1]))
    info = {"width": width, "depth": depth, "hidden": list(hidden)}
    if (
        convs
        and linears
        and first is not None
        and first.ndim == 4
        and first.shape[2] == first.shape[3]
        and convs[0][1] == first.shape[1]
    ):
        channels = scaled(tuple(s[0] for s in convs))
        student = architectures.conv_net(
            first.shape[1], first.shape[2], channels, hidden, classes, kernel=convs[0][2], seed=seed
        )
        return student, {"family": "cnn", "channels": list(channels), **info}
    if (
        linears
        and not convs
        and first is not None
        and first.dtype.kind == "f"
        and linears[0][1] == int(np.prod(first.shape[1:]))
    ):
        return architectures.mlp(linears[0][1], hidden, classes, seed=seed), {"family": "mlp", **info}
    raise ModelError(
        "step distill: a {width, depth} student is built for CNN (conv layers, then linear) and MLP "
        "teachers on one float input; "
        "for this model give student: models:/NAME/VERSION (a registered PyTorch model)."
    )


def count_params(model: Any) -> int:
    """Number of parameters of a torch module."""
    return int(sum(p.numel() for p in model.parameters()))
