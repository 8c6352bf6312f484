"""What one forward pass of the trainer consumes: a :class:`Batch`, and the protocols of what makes one.

A :class:`Batch` holds clean image tokens ``[B, S, C]`` on an ``h × w`` grid plus the frozen text encoder's
per-layer features and mask; how it was made (rendered on the fly, read from a world cache or a feature
cache, decoded from shards) is the source's business (:mod:`lenslib.data.sources`). Used by the trainer,
evaluation and chapter 4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch

__all__ = ["Batch", "BatchSource", "Example", "ExampleSource"]


@dataclass
class Example:
    """One training example: an RGB image (uint8 ``[H, W, 3]`` numpy array) and its caption."""

    image: np.ndarray
    caption: str
    meta: dict = field(default_factory=dict)


@dataclass
class Batch:
    """What one forward pass consumes."""

    tokens: torch.Tensor  # [B, S, C] clean tokens (x0)
    grid: tuple[int, int]  # (h, w) token grid
    text: list[torch.Tensor]  # per tapped layer [B, T, H]
    text_mask: torch.Tensor  # [B, T] bool, True = valid
    captions: list[str]
    indices: list[int]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """The batch on ``device``; ``non_blocking`` overlaps the copy with compute when the batch is
        pinned."""

        def move(t):
            return t.to(device, non_blocking=non_blocking)

        return self.map_tensors(move)

    def map_tensors(self, fn) -> "Batch":
        """The same batch with ``fn`` applied to every tensor (tokens, text features, text mask)."""
        text = [fn(t) for t in self.text]
        return Batch(fn(self.tokens), self.grid, text, fn(self.text_mask), self.captions, self.indices)

    def pin_memory(self) -> "Batch":
        """The batch's host tensors in page-locked memory, so a CUDA copy of them can run asynchronously
        (features a text encoder made on the GPU are already there and stay)."""

        def pin(t):
            return t.pin_memory() if t.device.type == "cpu" else t

        return self.map_tensors(pin)


@runtime_checkable
class BatchSource(Protocol):
    """Anything that turns sample indices at a resolution into a :class:`Batch` (e.g. a feature cache)."""

    def batch(self, indices: Sequence[int], size: tuple[int, int]) -> Batch: ...


class ExampleSource(Protocol):
    """Anything that returns examples by global index at a given (height, width)."""

    def examples(self, indices: Sequence[int], size: tuple[int, int]) -> list[Example]: ...
