"""Convolutions over the image grid that the Lens DiT does not have (off in every ``lens`` preset).

A patch-token transformer has no notion of which tokens are neighbours until it learns one from data.
The small models of chapter 4, trained for minutes on a CPU, learn faster with that prior built in:
:class:`PixelStem` before the patch embedding, :class:`TokenConv` before each block and
:class:`PixelHead` after the output projection. Switched on by the ``pixel_stem``, ``token_conv``,
``pixel_head`` and ``pixel_skip`` options of :class:`lenslib.model.transformer.LensTransformer2DModel`;
with them off the state dict is exactly the official one. Used in chapter 4.
"""

from __future__ import annotations

import torch
from torch import nn

from .latents import latent_to_tokens, tokens_to_latent

__all__ = ["PixelHead", "PixelStem", "TokenConv"]


class PixelStem(nn.Module):
    """Not in Lens: two 3x3 convolutions over the unpatchified input before the patch embedding.

    A linear patch embedding sees each p x p patch alone, so a shape cut by a patch border starts as
    unrelated tokens; the convolutions mix each pixel with its neighbours across the border first (the
    convolutional stem of minRF's DiT). ``channels`` features per pixel are then patchified for ``img_in``.
    """

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def features(self, tokens: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
        """The [B, channels, H, W] feature map of the input, before patchifying."""
        x = tokens_to_latent(tokens, *grid, patch)
        return self.conv2(nn.functional.silu(self.conv1(x)))

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
        return latent_to_tokens(self.features(tokens, grid, patch), patch)


class TokenConv(nn.Module):
    """Not in Lens: a residual depthwise 3x3 convolution over the image-token grid before a block.

    Attention must learn from data that neighbouring tokens belong together; a small model trained for
    minutes sees too few images to learn it. A depthwise convolution gives every token its eight neighbours
    for free (the locality prior of CvT and SegFormer's Mix-FFN), and its zero padding tells border tokens
    where they are. The weights start at zero, so a new model is the plain one.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, s, d = tokens.shape
        x = tokens.transpose(1, 2).reshape(b, d, *grid)
        return tokens + self.conv(x).reshape(b, d, s).transpose(1, 2)


class PixelHead(nn.Module):
    """Not in Lens: a residual 3x3 convolution over the unpatchified output (minRF's DiT ends the same way).

    The last linear layer writes each patch independently; this lets neighbouring pixels across a patch
    border agree. Its last convolution starts at zero, so a new model's output is the linear one.

    With ``skip_channels`` (``pixel_skip``) the head also reads the :class:`PixelStem` features of the noisy
    input at full resolution, a U-Net's long skip, and its hidden channels are scaled and shifted by the
    timestep embedding: near t = 0 the clean image is mostly in the input, and a 3x3 convolution that sees
    it redraws sharp edges that a p x p token, written by one linear layer, blurs.
    """

    def __init__(self, channels: int, hidden: int, skip_channels: int = 0, temb_dim: int = 0):
        super().__init__()
        self.conv1 = nn.Conv2d(channels + skip_channels, hidden, 3, padding=1)
        if skip_channels:
            self.film = nn.Linear(temb_dim, 2 * hidden)
            self.conv_mid = nn.Conv2d(hidden, hidden, 3, padding=1)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        else:
            self.film = self.conv_mid = None
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(
        self,
        tokens: torch.Tensor,
        grid: tuple[int, int],
        patch: int,
        skip: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = tokens_to_latent(tokens, *grid, patch)
        if self.film is None:
            h = nn.functional.silu(self.conv1(x))
        else:
            scale, shift = self.film(nn.functional.silu(temb)).chunk(2, dim=-1)
            h = (
                self.conv1(torch.cat([x, skip.to(x.dtype)], dim=1)) * (1 + scale[..., None, None])
                + shift[..., None, None]
            )
            h = nn.functional.silu(self.conv_mid(nn.functional.silu(h)))
        x = x + self.conv2(h)
        return latent_to_tokens(x, patch)
