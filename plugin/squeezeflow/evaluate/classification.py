"""Classification metrics on logits."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


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
