"""Recovery fine-tuning after pruning or clustering, on the project's one training loop."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from squeezeflow import data
from squeezeflow.errors import ConfigError
from squeezeflow.steps import MAX_BATCH, MAX_EPOCHS, StepConfig, StepContext, StepResult, register_step
from squeezeflow.torch import train


class TrainingConfig(StepConfig):
    """Base of steps that train a PyTorch model on data.train with the project's training loop."""

    input_format: ClassVar[str] = "torch"
    epochs: int = Field(3, ge=1, le=MAX_EPOCHS, description="Most epochs of training.")
    lr: float = Field(1e-4, gt=0, lt=1, description="Adam learning rate (small: the model is already trained).")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="Training batch size.")


class EarlyStoppingConfig(TrainingConfig):
    """Training with early stopping on the labelled data.calibration, on a chosen device."""

    patience: int = Field(
        2,
        ge=0,
        le=MAX_EPOCHS,
        description="Stop after this many epochs without a better "
        "accuracy on data.calibration (0: run every epoch); "
        "the best epoch's weights are kept.",
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where to train; the model comes back on the CPU.")


class FinetuneConfig(EarlyStoppingConfig):
    """Fine-tune on data.train, keeping pruned weights at zero; early stopping on data.calibration."""

    kind: ClassVar[str] = "finetune"


@register_step(FinetuneConfig)
def finetune(model: Any, config: FinetuneConfig, ctx: StepContext) -> StepResult:
    """Train with hard labels; zeros stay zero; statistics: epochs, accuracies before and after."""

    x, y, val = training_data(ctx, "finetune")
    before = train.accuracy(model, *val) if val else None
    model = train.fit(
        model,
        x,
        y,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=ctx.seed,
        device=config.device,
        desc="finetune",
        after_step=train.keep_zeros(model),
        validation=val,
        patience=config.patience,
    )
    model.to("cpu")
    stats = {"epochs": config.epochs, "train_samples": int(len(y))}
    if val:
        stats.update(val_accuracy_before=round(before, 6), val_accuracy_after=round(train.accuracy(model, *val), 6))
    return StepResult(model, stats)


def training_data(ctx: StepContext, step: str, labels_required: bool = True) -> tuple[Any, Any, tuple | None]:
    """(inputs, labels, validation) for a training step: data.train, and data.calibration when labelled.

    With `labels_required=False` an unlabelled data.train gives labels None.
    """

    if ctx.train is None:
        raise ConfigError(f"step {step} trains: set data.train in params.yaml to an npz with inputs and `labels`.")
    arrays = data.load(ctx.train, "train")
    if data.LABELS not in arrays and labels_required:
        raise ConfigError(f"{ctx.train}: step {step} needs a `labels` array in the training data.")
    val = None
    if ctx.calibration is not None:
        cal = data.load(ctx.calibration, "calibration")
        if data.LABELS in cal:
            val = (data.inputs_of(cal), cal[data.LABELS])
    return data.inputs_of(arrays), arrays.get(data.LABELS), val
