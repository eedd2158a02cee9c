"""The one training loop of the project: demo models, QAT, fine-tuning, gradual pruning, clustering."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

AfterStep = Callable[[Any, int, int], None]  # (model, step, total_steps) after each optimizer step
Loss = Callable[[Any, Any], Any]  # (model outputs, batch sample indices) -> scalar loss tensor


def fit(
    model: Any,
    x: np.ndarray | dict[str, np.ndarray],
    y: np.ndarray | None,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "cpu",
    desc: str = "train",
    set_mode: Callable[[Any, bool], None] | None = None,
    after_step: AfterStep | None = None,
    validation: tuple[Any, np.ndarray] | None = None,
    patience: int = 0,
    loss: Loss | None = None,
) -> Any:
    """Train a classifier with Adam and cross-entropy, seeded, with a progress bar.

    Args:
        x: the input array, or one array per model input (passed positionally, in order).
        y: integer labels for the default cross-entropy loss (None when `loss` is given).
        set_mode: switches the model between training (True) and eval (False); default
            `model.train(flag)`. Exported graphs (torch.export, PT2E) need their own.
        after_step: called after every optimizer step (masks, sparsity schedules, centroids).
        validation: (inputs, labels) scored after each epoch; the best epoch's weights are kept.
        patience: with `validation`, stop after this many epochs without improvement (0: never).
        loss: replaces cross-entropy on `y`; called with the outputs and the batch's indices
            into `x` (distillation looks up the teachers' soft targets with them).

    Returns:
        The model, in eval mode.
    """

    import torch
    from tqdm import tqdm

    set_mode = set_mode or switch_mode
    torch.manual_seed(seed)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xs = _tensors(x)
    samples = len(xs[0])
    gen = torch.Generator().manual_seed(seed)
    if loss is None:
        ys, cross_entropy = torch.from_numpy(y), torch.nn.CrossEntropyLoss()
        loss = lambda out, idx: cross_entropy(out, ys[idx].to(out.device))  # noqa: E731
    steps_per_epoch = -(-samples // batch_size)
    total, step = epochs * steps_per_epoch, 0
    best, best_state, stale = -1.0, None, 0
    bar = tqdm(range(epochs), desc=desc, unit="epoch")
    for _ in bar:
        set_mode(model, True)
        for idx in torch.randperm(samples, generator=gen).split(batch_size):
            opt.zero_grad()
            loss(model(*(a[idx].to(device) for a in xs)), idx).backward()
            opt.step()
            step += 1
            if after_step:
                with torch.no_grad():
                    after_step(model, step, total)
        if validation is not None:
            score = accuracy(model, *validation, device=device, set_mode=set_mode)
            bar.set_postfix(val_acc=f"{score:.4f}")
            if score > best:
                best, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if patience and stale >= patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    set_mode(model, False)
    return model


def soft_targets(logits: list[np.ndarray], weights: list[float], temperature: float) -> np.ndarray:
    """Weighted average of the teachers' softmax(logits / T), as float32 probabilities.

    Example:
        >>> soft_targets([np.array([[0.0, 0.0]])], [1.0], 2.0)  # doctest: +SKIP
        array([[0.5, 0.5]], dtype=float32)
    """
    import numpy as np

    total = sum(weights)
    probs = 0.0
    for z, w in zip(logits, weights):
        z = z.astype(np.float64) / temperature
        e = np.exp(z - z.max(axis=1, keepdims=True))
        probs = probs + (w / total) * e / e.sum(axis=1, keepdims=True)
    return np.asarray(probs, dtype=np.float32)


def distillation_loss(student_logits: Any, targets: Any, labels: Any | None, temperature: float, alpha: float) -> Any:
    """Hinton et al. (2015): alpha * T^2 * KL(targets || softmax(s / T)) + (1 - alpha) * CE(s, labels).

    The T^2 factor keeps the soft-label gradients on the scale of the hard-label ones. Without
    labels the loss is the soft-label term alone.
    """
    import torch.nn.functional as F

    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), targets, reduction="batchmean") * temperature**2
    if labels is None:
        return soft
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def accuracy(
    model: Any,
    x: Any,
    y: np.ndarray,
    device: str = "cpu",
    set_mode: Callable[[Any, bool], None] | None = None,
    batch_size: int = 512,
) -> float:
    """Accuracy of a torch classifier (eval mode, no gradients)."""
    return float((predict(model, x, device, set_mode, batch_size).argmax(1) == y).mean())


def predict(
    model: Any, x: Any, device: str = "cpu", set_mode: Callable[[Any, bool], None] | None = None, batch_size: int = 512
) -> np.ndarray:
    """The model's outputs over all samples, in batches (eval mode, no gradients)."""
    import torch

    (set_mode or switch_mode)(model, False)
    xs = _tensors(x)
    with torch.no_grad():
        return torch.cat(
            [
                model(*(a[start : start + batch_size].to(device) for a in xs)).cpu()
                for start in range(0, len(xs[0]), batch_size)
            ]
        ).numpy()


def switch_mode(model: Any, training: bool) -> None:
    """model.train(training); for exported graphs (MLflow's pt2 format) torchao's equivalent."""
    try:
        model.train(training)
    except NotImplementedError:
        import torchao.quantization.pt2e as pt2e

        (pt2e.move_exported_model_to_train if training else pt2e.move_exported_model_to_eval)(model)


def _tensors(x: Any) -> list:
    import torch

    return [torch.from_numpy(a) for a in (x.values() if isinstance(x, dict) else [x])]


def weights(model: Any) -> dict[str, Any]:
    """The prunable/clusterable weights: parameters of rank >= 2 (conv kernels, linear matrices)."""
    return {name: p for name, p in model.named_parameters() if p.dim() >= 2}


def keep_zeros(model: Any) -> AfterStep | None:
    """An after_step hook holding today's exact zeros at zero (fine-tuning keeps the sparsity)."""
    masks = {name: (p != 0) for name, p in weights(model).items() if bool((p == 0).any())}
    if not masks:
        return None
    params = dict(model.named_parameters())

    def hook(_model: Any, _step: int, _total: int) -> None:
        for name, mask in masks.items():
            params[name].mul_(mask)

    return hook
