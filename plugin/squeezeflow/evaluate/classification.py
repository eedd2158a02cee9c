"""Classification metrics on logits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from squeezeflow.errors import ModelError

if TYPE_CHECKING:
    import numpy as np


def check_logits(logits: np.ndarray, samples: int, what: str) -> np.ndarray:
    """The model's first output, checked to be [samples, classes] logits with at least 2 classes.

    Any other shape cannot be scored (an [N, C, 1] output would argmax over the wrong axis and
    score baseline and candidate alike, voiding the accuracy budgets), so it is refused.

    Raises:
        ModelError: the output is not [samples, classes].
    """

    shape = list(logits.shape)
    if logits.ndim != 2 or shape[0] != samples or shape[1] < 2:
        raise ModelError(
            f"{what}: its first output has shape {shape} for {samples} samples; task classification "
            f"needs [{samples}, classes] "
            "logits with at least 2 classes. Squeeze or reshape the output in the model (or export "
            "the logits as its first output)."
        )
    return logits


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose argmax equals the label."""
    return float((logits.argmax(axis=1) == labels).mean())


def agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of samples where two models predict the same class."""
    return float((logits.argmax(axis=1) == reference.argmax(axis=1)).mean())


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy of each class present in `labels`, keyed by class index."""
    import numpy as np

    preds = logits.argmax(axis=1)
    return {str(int(c)): float((preds[labels == c] == c).mean()) for c in np.unique(labels)}
