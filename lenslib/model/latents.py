"""Latent layout: patchify, token packing and the BatchNorm latent normalisation.

Lens never patchifies inside the transformer. The pipeline turns a VAE latent
``Z [B, C, 2h, 2w]`` into a token sequence ``[B, h*w, 4C]`` with an exact channel
layout (official code: latent packing): token ``n = y*w + x``, channel ``k = 4*ch + 2*r + s`` holds
``Z[b, ch, 2y + r, 2x + s]``. Everything here is a pure permutation or an affine map,
so it is exact and cheap. The same functions with ``patch=p`` serve the pixel-space
codec used in the CPU chapters (``PixelCodec``).

Used in chapters 2 (architecture) and 4 (training), and by the pipeline.
"""

from __future__ import annotations

import torch

__all__ = [
    "patchify",
    "unpatchify",
    "pack",
    "unpack",
    "latent_to_tokens",
    "tokens_to_latent",
    "bn_normalize",
    "bn_denormalize",
    "token_grid",
    "image_seq_len",
    "check_divisible",
]


def patchify(z: torch.Tensor, patch: int = 2) -> torch.Tensor:
    """``[B, C, p*h, p*w] -> [B, C*p*p, h, w]`` with channel ``k = c*p*p + r*p + s``.

    Same view/permute as the official ``_patchify_latents`` (and diffusers FLUX.2) for p=2.
    """
    b, c, hh, ww = z.shape
    if hh % patch or ww % patch:
        raise ValueError(f"patchify: spatial size {hh}x{ww} is not divisible by patch={patch}.")
    z = z.view(b, c, hh // patch, patch, ww // patch, patch)
    z = z.permute(0, 1, 3, 5, 2, 4)
    return z.reshape(b, c * patch * patch, hh // patch, ww // patch)


def unpatchify(z: torch.Tensor, patch: int = 2) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, C*p*p, h, w] -> [B, C, p*h, p*w]``."""
    b, cp, h, w = z.shape
    if cp % (patch * patch):
        raise ValueError(f"unpatchify: {cp} channels is not a multiple of patch²={patch * patch}.")
    z = z.reshape(b, cp // (patch * patch), patch, patch, h, w)
    z = z.permute(0, 1, 4, 2, 5, 3)
    return z.reshape(b, cp // (patch * patch), h * patch, w * patch)


def pack(z: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w] -> [B, h*w, C]``: flatten the grid row-major, channels last."""
    b, c, h, w = z.shape
    return z.reshape(b, c, h * w).permute(0, 2, 1)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``[B, h*w, C] -> [B, C, h, w]``, the inverse of :func:`pack`."""
    b, s, c = tokens.shape
    if s != h * w:
        raise ValueError(f"unpack: {s} tokens do not fill a {h}x{w} grid ({h * w} tokens).")
    return tokens.permute(0, 2, 1).reshape(b, c, h, w)


def latent_to_tokens(z: torch.Tensor, patch: int = 2) -> torch.Tensor:
    """VAE latent ``[B, C, p*h, p*w]`` -> DiT tokens ``[B, h*w, C*p*p]``."""
    return pack(patchify(z, patch))


def tokens_to_latent(tokens: torch.Tensor, h: int, w: int, patch: int = 2) -> torch.Tensor:
    """DiT tokens ``[B, h*w, C*p*p]`` -> VAE latent ``[B, C, p*h, p*w]``."""
    return unpatchify(unpack(tokens, h, w), patch)


def _bn_view(stat: torch.Tensor) -> torch.Tensor:
    return stat.reshape(1, -1, 1, 1)


def bn_normalize(
    z: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, eps: float
) -> torch.Tensor:
    """Training direction: ``(z - mean) / sqrt(var + eps)`` on a *patchified* latent ``[B, K, h, w]``.

    This is the FLUX.2 convention (the official Lens code is inference-only and only
    has the inverse). Used by the codec's ``encode`` and hence by the trainer.
    """
    mean = _bn_view(running_mean).to(z.device, z.dtype)
    std = torch.sqrt(_bn_view(running_var) + eps).to(z.device, z.dtype)
    return (z - mean) / std


def bn_denormalize(
    z: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, eps: float
) -> torch.Tensor:
    """Official inverse on a patchified latent: ``z / (1/std) - (-mean)``.

    ``std`` is computed in the statistics' dtype, then ``1/std`` and ``-mean`` are cast
    to the latent dtype; the division-then-subtraction order is kept for
    bit-compatibility with the official ``_decode``.
    """
    std = torch.sqrt(_bn_view(running_var) + eps)
    scale = (1.0 / std).to(z.device, z.dtype)
    shift = (-_bn_view(running_mean)).to(z.device, z.dtype)
    return z / scale - shift


def check_divisible(height: int, width: int, multiple: int = 16) -> None:
    """Raise ValueError unless ``height`` and ``width`` are positive multiples of ``multiple``."""
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}.")
    if height % multiple or width % multiple:
        raise ValueError(
            f"height and width must be multiples of {multiple} "
            f"(one token covers {multiple}x{multiple} pixels); "
            f"got {height}x{width}. Try {max(multiple, height // multiple * multiple)}x"
            f"{max(multiple, width // multiple * multiple)}."
        )


def token_grid(height: int, width: int, downsample: int = 16) -> tuple[int, int]:
    """Token grid ``(h, w)`` of an image: ``(H/16, W/16)`` for the FLUX.2 VAE + 2x2 packing."""
    check_divisible(height, width, downsample)
    return height // downsample, width // downsample


def image_seq_len(height: int, width: int, downsample: int = 16) -> int:
    """Number of image tokens, the ``L`` of the empirical μ (official code: empirical μ)."""
    h, w = token_grid(height, width, downsample)
    return h * w
