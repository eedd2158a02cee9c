"""The one training loop of the project (demo models, and fine-tuning steps later)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def fit(model: Any, x: np.ndarray, y: np.ndarray, epochs: int, lr: float = 1e-3, batch_size: int = 64, seed: int = 0, device: str = "cpu", desc: str = "train") -> Any:
    """Train a classifier with Adam and cross-entropy, seeded, with a progress bar.

    Returns:
        The model, in eval mode.
    """
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in tqdm(range(epochs), desc=desc, unit="epoch"):
        for idx in torch.randperm(len(xs), generator=gen).split(batch_size):
            opt.zero_grad()
            loss = loss_fn(model(xs[idx].to(device)), ys[idx].to(device))
            loss.backward()
            opt.step()
    return model.eval()
