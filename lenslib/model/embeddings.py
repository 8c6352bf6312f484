"""Timestep embedding of Lens: a 256-channel sinusoid of σ·1000, then a two-layer MLP.

The official model uses diffusers' ``Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0,
scale=1000)`` and ``TimestepEmbedding(256, dim)``, and so do we: diffusers computes, in float32,
ω_k = exp(-ln(10000)·k / 128), then (t·ω_k)·1000, then [cos, sin] (cosine half first), which is the
exact order of rounding of the official timestep embedding, so the result is bit-identical (tests compare it
with the golden sinusoid).

Why σ ∈ [0, 1] goes in and ×1000 happens inside: the pipeline hands the transformer σ, while the
sinusoid frequencies were designed for integer timesteps 0…1000.

Nothing else conditions the modulation: no pooled text vector and no guidance embedding.

Used in chapter 2 and by :class:`lenslib.model.transformer.LensTransformer2DModel`.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

#: Width of the sinusoid fed to the MLP.
TIMESTEP_CHANNELS = 256


def timestep_sinusoid(timestep: torch.Tensor) -> torch.Tensor:
    """The 256-channel float32 sinusoid of ``timestep`` [B] (σ in [0, 1]); cosine half first."""
    return Timesteps(TIMESTEP_CHANNELS, flip_sin_to_cos=True, downscale_freq_shift=0, scale=1000)(timestep)


class LensTimestepEmbedding(nn.Module):
    """``time_text_embed``: σ [B] → temb [B, dim]. Submodule names match the official checkpoint
    (``time_text_embed.timestep_embedder.linear_1`` …)."""

    def __init__(self, embedding_dim: int):
        super().__init__()
        self.time_proj = Timesteps(
            TIMESTEP_CHANNELS, flip_sin_to_cos=True, downscale_freq_shift=0, scale=1000
        )
        self.timestep_embedder = TimestepEmbedding(
            in_channels=TIMESTEP_CHANNELS, time_embed_dim=embedding_dim
        )

    def forward(self, timestep: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        # The sinusoid is always float32; it is cast to the model dtype before the MLP, as in the official
        # code.
        proj = self.time_proj(timestep)
        return self.timestep_embedder(proj.to(dtype=hidden_states.dtype))
