"""Model families squeezeflow knows how to build (and later shrink)."""

from __future__ import annotations

from typing import Any


def small_cnn(side: int, classes: int = 10, width: float = 1.0, seed: int = 0) -> Any:
    """Two 3x3 conv blocks (three from 16x16 up) and a two-layer head, for 1-channel square images.

    The initial weights depend only on `seed` (the global torch RNG is left untouched).
    """
    import torch
    import torch.nn as nn

    c1, c2, hidden = max(1, int(32 * width)), max(1, int(64 * width)), max(1, int(128 * width))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(nn, side, classes, c1, c2, hidden)


def _build(nn: Any, side: int, classes: int, c1: int, c2: int, hidden: int) -> Any:
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
        *([nn.Conv2d(c2, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2)] if side >= 16 else []),
        nn.Flatten(),
        nn.Linear(c2 * (side // (4 if side >= 16 else 2)) ** 2, hidden), nn.ReLU(),
        nn.Linear(hidden, classes),
    )
