"""Pruning: unstructured magnitude (one-shot or gradual) and structured channel pruning (Torch-Pruning)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from squeezeflow.errors import ModelError
from squeezeflow.steps import MAX_BATCH, MAX_EPOCHS, MAX_STEPS, StepConfig, StepContext, StepResult, register_step
from squeezeflow.steps.finetune import training_data
from squeezeflow.torch import rebuild, train
from squeezeflow.torch.train import weights

IMPORTANCE = {"magnitude": "MagnitudeImportance", "bn_scale": "BNScaleImportance", "taylor": "TaylorImportance"}


class PruneConfig(StepConfig):
    """Magnitude pruning of a PyTorch model: single weights (unstructured) or whole channels (structured)."""

    kind: ClassVar[str] = "prune"
    input_format: ClassVar[str] = "torch"
    method: Literal["unstructured", "structured"] = Field(
        "unstructured",
        description="unstructured: zero the smallest weights (shrinks only under compression); structured: remove "
        "whole "
        "channels/filters with Torch-Pruning, so the graph itself gets smaller and faster.",
    )
    amount: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="unstructured: final fraction of zero weights; structured: "
        "fraction of channels removed from each prunable layer.",
    )
    scope: Literal["global", "layer"] = Field(
        "global",
        description="unstructured: one magnitude threshold over all layers, or the same sparsity in each layer.",
    )
    importance: Literal["magnitude", "bn_scale", "taylor"] = Field(
        "magnitude",
        description="structured: how channels are ranked (L2 norm, BatchNorm scale, or first-order Taylor on a "
        "training "
        "batch).",
    )
    schedule: Literal["oneshot", "gradual"] = Field(
        "oneshot",
        description="unstructured: prune at once (follow with finetune), or prune while fine-tuning along the "
        "polynomial "
        "schedule of Zhu & Gupta (2017).",
    )
    initial_sparsity: float = Field(0.0, ge=0, lt=1, description="gradual: sparsity at the first mask update.")
    epochs: int = Field(
        3,
        ge=1,
        le=MAX_EPOCHS,
        description="gradual: fine-tuning epochs; sparsity ramps up over the first 80% of the steps.",
    )
    frequency: int = Field(
        10,
        ge=1,
        le=MAX_STEPS,
        description="gradual: optimizer steps between mask updates; "
        "each update re-chooses the masks by magnitude at "
        "the scheduled sparsity (pruned weights stay zero "
        "in between).",
    )
    lr: float = Field(1e-4, gt=0, lt=1, description="gradual: Adam learning rate.")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="gradual and taylor: training batch size.")

    def promise(self) -> str | None:
        return "params" if self.method == "structured" else "sparsity"


@register_step(PruneConfig)
def prune(model: Any, config: PruneConfig, ctx: StepContext) -> StepResult:
    """Prune `model`; statistics: parameters before/after, sparsity reached."""
    before = _count(model)
    if config.method == "structured":
        model = _structured(model, config, ctx)
    elif config.schedule == "gradual":
        _gradual(model, config, ctx)
    else:
        for name, mask in magnitude_masks(model, config.amount, config.scope).items():
            dict(model.named_parameters())[name].data.mul_(mask)
    return StepResult(
        model,
        {
            "method": config.method,
            "params_before": before,
            "params_after": _count(model),
            "sparsity": round(sparsity(model), 6),
        },
    )


def magnitude_masks(model: Any, amount: float, scope: str) -> dict[str, Any]:
    """Keep-masks zeroing the `amount` smallest-magnitude weights, globally or per layer."""
    import torch

    params = weights(model)
    if scope == "layer":
        return {n: p.abs() > _kth(p.abs().flatten(), amount) for n, p in params.items()}
    threshold = _kth(torch.cat([p.detach().abs().flatten() for p in params.values()]), amount)
    return {n: p.abs() > threshold for n, p in params.items()}


def _kth(values: Any, amount: float) -> Any:
    k = int(amount * values.numel())
    return values.kthvalue(k).values if k >= 1 else values.min() - 1


def sparsity(model: Any) -> float:
    """Fraction of exact zeros over the prunable weights."""

    params = weights(model).values()
    total = sum(p.numel() for p in params)
    return sum(int((p == 0).sum()) for p in params) / total if total else 0.0


def _count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _gradual(model: Any, config: PruneConfig, ctx: StepContext) -> None:
    """Prune while fine-tuning: s_t = s_f + (s_i - s_f)(1 - t/T)^3, masks re-chosen every `frequency` steps."""

    x, y, _ = training_data(ctx, "prune")
    params = dict(model.named_parameters())
    masks: dict[str, Any] = {}

    def after_step(m: Any, step: int, total: int) -> None:
        if step % config.frequency == 0 or step >= int(0.8 * total) or not masks:
            masks.update(
                magnitude_masks(m, schedule(step, total, config.initial_sparsity, config.amount), config.scope)
            )
        for name, mask in masks.items():
            params[name].mul_(mask)

    train.fit(
        model,
        x,
        y,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=ctx.seed,
        desc="gradual prune",
        after_step=after_step,
    )


def schedule(step: int, total: int, initial: float, final: float, ramp: float = 0.8) -> float:
    """Zhu & Gupta's sparsity at `step`: final + (initial - final)(1 - t)^3, t reaching 1 at ramp*total."""
    progress = min(step / max(1, int(ramp * total)), 1.0)
    return final + (initial - final) * (1 - progress) ** 3


def _structured(model: Any, config: PruneConfig, ctx: StepContext) -> Any:
    """Remove channels with Torch-Pruning's dependency graph (conv-bn-conv chains, residuals, concats)."""
    import torch
    import torch_pruning as tp

    model = rebuild.with_modules(model)  # an exported graph (pt2) gets its Conv/Linear/BatchNorm modules back
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear))]
    if not layers:
        found = sorted({type(m).__name__ for m in model.modules() if list(m.parameters(recurse=False))})
        raise ModelError(
            "structured pruning removes channels of nn.Conv1d, nn.Conv2d and nn.Linear layers, and this model has "
            f"none ({'its layers with weights: ' + ', '.join(found) if found else 'no layer holds weights'}). "
            "Use method: unstructured."
        )
    x, y, _ = training_data(ctx, "prune")
    example = tuple(torch.from_numpy(v[: config.batch_size]) for v in x.values())
    importance = getattr(tp.importance, IMPORTANCE[config.importance])()
    model.eval()
    pruner = tp.pruner.MetaPruner(
        model, example, importance=importance, pruning_ratio=config.amount, ignored_layers=[layers[-1]]
    )
    if config.importance == "taylor":
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(*example), torch.from_numpy(y[: config.batch_size])).backward()
    pruner.step()
    model.zero_grad()
    try:  # a pruner that breaks a shape must never pass silently
        with torch.no_grad():
            model(*example)
    except RuntimeError as e:
        raise ModelError(
            f"structured pruning left the model inconsistent ({str(e).splitlines()[0]}). "
            "Torch-Pruning could not follow a dependency of this architecture (e.g. a flatten after "
            "a concatenation); use method: unstructured for it."
        ) from None
    return model
