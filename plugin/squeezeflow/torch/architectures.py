"""Model families squeezeflow knows how to build (and later shrink)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any


def seeded(seed: int, build: Callable[[], Any]) -> Any:
    """Build a model whose initial weights depend only on `seed` (the global RNG is left alone)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def small_cnn(side: int, classes: int = 10, width: float = 1.0, seed: int = 0) -> Any:
    """Two 3x3 conv blocks (three from 16x16 up) and a two-layer head, for 1-channel square images."""
    c1, c2, hidden = max(1, int(32 * width)), max(1, int(64 * width)), max(1, int(128 * width))
    return conv_net(1, side, (c1, c2, c2) if side >= 16 else (c1, c2), (hidden,), classes, seed=seed)


def conv_net(
    in_channels: int,
    side: int,
    channels: tuple[int, ...],
    hidden: tuple[int, ...],
    classes: int,
    kernel: int = 3,
    seed: int = 0,
) -> Any:
    """Conv-BN-ReLU blocks (2x2 max-pooling after the second block on, while the side is >= 8),
    then a Linear-ReLU head of `hidden` widths, for square images."""
    import torch.nn as nn

    def build():
        layers, c_in, s = [], in_channels, side
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, kernel, padding=kernel // 2), nn.BatchNorm2d(c), nn.ReLU()]
            if i >= 1 and s >= 8:
                layers.append(nn.MaxPool2d(2))
                s //= 2
            c_in = c
        layers.append(nn.Flatten())
        width = c_in * s * s
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, classes))

    return seeded(seed, build)


def mlp(in_features: int, hidden: tuple[int, ...] = (1024, 1024), classes: int = 10, seed: int = 0) -> Any:
    """A linear-heavy multilayer perceptron over flattened inputs."""
    import torch.nn as nn

    def build():
        layers, width = [nn.Flatten()], in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, classes))

    return seeded(seed, build)


def text_transformer(
    vocab: int,
    seq_len: int,
    classes: int,
    dim: int = 256,
    heads: int = 4,
    layers: int = 2,
    ff: int = 1024,
    seed: int = 0,
) -> Any:
    """A small pre-norm transformer encoder over (input_ids, attention_mask), mean-pooled.

    Attention is written with plain Linear/MatMul/Softmax so it exports to ONNX as MatMuls, which
    is what dynamic INT8 quantizes.
    """
    return seeded(seed, lambda: _transformer_class()(vocab, seq_len, classes, dim, heads, layers, ff))


@functools.cache
def _transformer_class() -> type:
    """The module classes, defined on first use so that importing zoo does not import torch."""
    import torch
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, dim: int, heads: int, ff: int):
            super().__init__()
            self.heads = heads
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.ff = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), nn.Linear(ff, dim))

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            b, t, d = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d // self.heads)) + bias
            y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
            x = x + self.proj(y)
            return x + self.ff(self.norm2(x))

    class TextTransformer(nn.Module):
        def __init__(self, vocab, seq_len, classes, dim, heads, layers, ff):
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.pos = nn.Parameter(torch.randn(seq_len, dim) * 0.02)
            self.blocks = nn.ModuleList(Block(dim, heads, ff) for _ in range(layers))
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, classes)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            x = self.embed(input_ids) + self.pos[: input_ids.shape[1]]
            mask = attention_mask.to(x.dtype)
            bias = (1.0 - mask[:, None, None, :]) * -1e4
            for block in self.blocks:
                x = block(x, bias)
            x = self.norm(x)
            pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
            return self.head(pooled)

    return TextTransformer
