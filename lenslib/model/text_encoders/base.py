"""The text-encoder interface every conditioning path in lenslib uses.

Lens conditions its DiT on *several* hidden layers of a frozen language model
(GPT-OSS-20B layers 5/11/17/23, width 2880). The trainer, the feature cache and the
pipeline only rely on this small interface, so a CPU stand-in (MiniLM) and the real
GPT-OSS are interchangeable. The number of tapped layers and their width come from
the encoder itself, never from constants: a DiT is built with
``enc_hidden_dim=encoder.hidden_size`` and ``len(selected_layer_index)=encoder.num_layers``.

Used in chapters 2 (architecture) and 4 (feature cache, training).
"""

from __future__ import annotations

import torch

__all__ = ["TextEncoder", "check_features"]


class TextEncoder:
    """Frozen multi-layer text encoder.

    Attributes:
      - ``name``: identity string used as a cache key. It must change whenever the
        features change: model, tapped layers, template version, pinned date.
      - ``num_layers``: number of tapped layers (length of the list ``encode`` returns).
      - ``hidden_size``: width of each tapped layer.

    ``encode(prompts)`` returns ``(features, mask)``: a list of ``num_layers`` tensors
    ``[B, S, hidden_size]`` and a bool mask ``[B, S]`` (True = valid token).
    Padding positions hold finite values (the DiT multiplies them by an exact zero).
    """

    name: str
    num_layers: int
    hidden_size: int

    def encode(self, prompts: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def __call__(self, prompts: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self.encode(prompts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, num_layers={self.num_layers}, "
            f"hidden_size={self.hidden_size})"
        )


def check_features(features, mask, num_layers: int | None = None, hidden_size: int | None = None) -> None:
    """Validate the ``(features, mask)`` contract; raises ValueError naming the mismatch."""
    if not isinstance(features, (list, tuple)) or len(features) == 0:
        raise ValueError("text features must be a non-empty list of [B, S, H] tensors, one per tapped layer.")
    if num_layers is not None and len(features) != num_layers:
        raise ValueError(f"expected {num_layers} feature layers, got {len(features)}.")
    B, S = features[0].shape[:2]
    for i, f in enumerate(features):
        if f.ndim != 3 or f.shape[0] != B or f.shape[1] != S:
            raise ValueError(
                f"feature layer {i} has shape {tuple(f.shape)}; expected [{B}, {S}, H] like layer 0."
            )
        if hidden_size is not None and f.shape[2] != hidden_size:
            raise ValueError(f"feature layer {i} has width {f.shape[2]}; the consumer expects {hidden_size}.")
    if mask is None or tuple(mask.shape) != (B, S):
        raise ValueError(
            f"text mask must be [{B}, {S}] to match the features, "
            f"got {None if mask is None else tuple(mask.shape)}."
        )


def fit_length(
    features, mask: torch.Tensor, length: int, multiple: int = 0
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Truncate or right-pad per-layer features [B, S, H] and mask [B, S] to ``length`` tokens.

    Training batches need one text length; padding is zeros with a False mask, which the DiT ignores
    exactly (official code: attention mask). With ``multiple`` > 0 the batch is instead cut to its longest
    caption, rounded up to that multiple (at most ``length``): a batch of 10-token brief captions then costs
    the DiT 16 text tokens, not 160, for the same result. 0 keeps every batch at ``length`` (one shape, as
    CUDA graphs want). Used by the trainer's text path, the feature cache and the caption ablation.
    """
    if multiple > 0:
        longest = int(mask.sum(dim=1).max()) if mask.numel() else 0
        length = min(length, max(multiple, -(-longest // multiple) * multiple))
    if features[0].shape[1] >= length:
        return [f[:, :length] for f in features], mask[:, :length]
    pad = length - features[0].shape[1]
    return (
        [torch.nn.functional.pad(f, (0, 0, 0, pad)) for f in features],
        torch.nn.functional.pad(mask, (0, pad), value=False),
    )
