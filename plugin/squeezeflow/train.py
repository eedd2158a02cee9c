"""The one training loop of the project (demo models, and fine-tuning steps later)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def fit(model: Any, x: np.ndarray | dict[str, np.ndarray], y: np.ndarray, epochs: int, lr: float = 1e-3, batch_size: int = 64, seed: int = 0, device: str = "cpu", desc: str = "train", set_mode: Callable[[Any, bool], None] | None = None) -> Any:
    """Train a classifier with Adam and cross-entropy, seeded, with a progress bar.

    Args:
        x: the input array, or one array per model input (passed positionally, in order).
        set_mode: switches the model between training (True) and eval (False); default
            `model.train(flag)`. Exported graphs (torch.export, PT2E) need their own.

    Returns:
        The model, in eval mode.
    """
    import torch
    from tqdm import tqdm

    set_mode = set_mode or (lambda m, training: m.train(training))
    torch.manual_seed(seed)
    model.to(device)
    set_mode(model, True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xs = [torch.from_numpy(a) for a in (x.values() if isinstance(x, dict) else [x])]
    ys = torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in tqdm(range(epochs), desc=desc, unit="epoch"):
        for idx in torch.randperm(len(ys), generator=gen).split(batch_size):
            opt.zero_grad()
            loss = loss_fn(model(*(a[idx].to(device) for a in xs)), ys[idx].to(device))
            loss.backward()
            opt.step()
    set_mode(model, False)
    return model
