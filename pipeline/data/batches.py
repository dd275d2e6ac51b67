"""What the training loop iterates: a ``Batches`` is anything that yields tuples of tensors.

Two kinds exist: ``InMemoryBatches`` (below, and ``PhrasingBatches`` built on it) for data
that fits on the device, and ``pipeline.data.pairs.ShardCaptionPairs``, streamed from
WebDataset shards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch


class Batches(Protocol):
    """Batches of a dataset: shuffled by the loop's generator (training), in order without."""

    batch_size: int

    def __len__(self) -> int:
        """Samples per epoch (across ranks for streamed data)."""

    def batches(self, generator: torch.Generator | None = None) -> Iterator[tuple]:
        """One epoch of tuples of tensors, the arguments of the model's ``batch_losses``."""


class InMemoryBatches:
    """Batches sliced from tensors that live on the device: no per-sample Python work.

    For data that fits in memory (Fashion-MNIST is 188 MB as float32) this is several times
    faster than a DataLoader that collates one sample at a time (benchmarks/train_epoch.py).
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int):
        if len({len(t) for t in tensors}) != 1:
            raise ValueError("all tensors need the same first dimension")
        self.tensors, self.batch_size = tensors, batch_size

    def __len__(self) -> int:
        return len(self.tensors[0])

    def batches(self, generator: torch.Generator | None = None) -> Iterator[tuple]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else None
        for start in range(0, n, self.batch_size):
            if order is None:
                yield tuple(t[start : start + self.batch_size] for t in self.tensors)
            else:
                index = order[start : start + self.batch_size].to(self.tensors[0].device)
                yield tuple(t[index] for t in self.tensors)
