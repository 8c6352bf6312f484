"""Latent codecs: images <-> normalised DiT token sequences.

A ``LatentCodec`` hides *which* autoencoder turns pixels into tokens, so the trainer,
the feature/latent caches and the pipeline only ever see ``[B, S, C]`` tokens on an
``h x w`` grid (official code: latent packing):

- :class:`Flux2Codec` wraps diffusers' ``AutoencoderKLFlux2``, the official Lens VAE
  (32 latent channels, 8x down-sampling, 2x2 packing -> 128 channels per 16x16 pixel
  token, BatchNorm statistics in ``vae.bn``). Use it for anything that must match the
  official checkpoint: loading ``<model>/vae`` at full scale on a GPU, or a tiny
  random-weight configuration on CPU to exercise the exact code path in tests.
- :class:`PixelCodec` is the identity autoencoder with the same packing: a ``p x p``
  pixel patch becomes one token of ``3*p*p`` channels. Use it in the CPU chapters,
  where training a VAE first would cost more than the lesson is worth; every other
  part of the model (flow matching, CFG, RoPE on the token grid) is unchanged.

Used in chapters 2 (architecture) and 4 (training), and by the pipeline.
"""

from __future__ import annotations

import os

import torch
from diffusers import AutoencoderKLFlux2
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .latents import (
    bn_denormalize,
    bn_normalize,
    check_divisible,
    pack,
    patchify,
    tokens_to_latent,
    unpack,
    unpatchify,
)

__all__ = ["LatentCodec", "Flux2Codec", "PixelCodec", "as_codec", "tiny_flux2_vae"]


class LatentCodec:
    """Interface: ``encode(images) -> (tokens, (h, w))`` and ``decode(tokens, h, w) -> images``.

    Attributes every codec provides:
      - ``name``: identity string for latent caches (changes when the latent space changes);
      - ``token_channels``: channels per token (what the DiT's ``in_channels`` must be);
      - ``downsample``: pixels per token side (16 for FLUX.2 VAE + 2x2 packing).

    Images are ``[B, 3, H, W]`` in ``[-1, 1]`` with ``H, W`` multiples of ``downsample``;
    tokens are normalised and packed row-major.
    """

    name: str
    token_channels: int
    downsample: int

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        raise NotImplementedError

    def decode(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        raise NotImplementedError

    def _check_images(self, images: torch.Tensor) -> tuple[int, int]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"{type(self).__name__}.encode expects images [B, 3, H, W], got {tuple(images.shape)}."
            )
        H, W = int(images.shape[-2]), int(images.shape[-1])
        check_divisible(H, W, self.downsample)
        return H // self.downsample, W // self.downsample

    def _check_tokens(self, tokens: torch.Tensor, h: int, w: int) -> None:
        if tokens.ndim != 3 or tokens.shape[1] != h * w or tokens.shape[2] != self.token_channels:
            raise ValueError(
                f"{type(self).__name__}.decode expects tokens [B, {h * w}, {self.token_channels}] "
                f"for a {h}x{w} grid, "
                f"got {tuple(tokens.shape)}."
            )


class Flux2Codec(nn.Module, LatentCodec):
    """The official latent space: ``AutoencoderKLFlux2`` + 2x2 patchify + BatchNorm statistics.

    ``encode`` takes the posterior *mean* (FLUX.2's "argmax" mode), patchifies and
    normalises with ``vae.bn`` (``(z - mean)/std``); ``decode`` applies the official
    inverse ``z / (1/std) - (-mean)`` in patchified space and runs the decoder in the
    VAE's own dtype (the official pipeline ignores ``force_upcast``).
    """

    def __init__(self, vae: AutoencoderKLFlux2):
        super().__init__()
        if not hasattr(vae, "bn"):
            raise ValueError("Flux2Codec needs an AutoencoderKLFlux2 (it carries the latent BatchNorm `bn`).")
        self.vae = vae
        cfg = vae.config
        self.patch = int(tuple(cfg.patch_size)[0]) if cfg.patch_size is not None else 2
        self.latent_channels = int(cfg.latent_channels)
        self.token_channels = self.latent_channels * self.patch * self.patch
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1) * self.patch
        self.name = (
            f"flux2-vae:{getattr(cfg, '_name_or_path', '') or 'custom'}"
            f":c{self.latent_channels}:d{self.downsample}"
        )

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, torch_dtype: torch.dtype = torch.float32
    ) -> "Flux2Codec":
        """Load ``AutoencoderKLFlux2`` from a local folder (e.g. ``<lens>/vae``)."""
        path = os.fspath(path)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(
                f"No AutoencoderKLFlux2 config.json in {path!r}; pass the VAE folder (e.g. <model>/vae)."
            )
        return cls(AutoencoderKLFlux2.from_pretrained(path, dtype=torch_dtype))

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    @property
    def eps(self) -> float:
        return float(self.vae.config.batch_norm_eps)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        h, w = self._check_images(images)
        x = images.to(self.vae.device, self.vae.dtype)
        z = self.vae.encode(x).latent_dist.mode()  # posterior mean
        z = patchify(z, self.patch)
        z = bn_normalize(z, self.vae.bn.running_mean, self.vae.bn.running_var, self.eps)
        return pack(z), (h, w)

    def decode_input(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The latent the official ``_decode`` hands to ``vae.decode`` (golden ``vae_decode_input``)."""
        self._check_tokens(tokens, h, w)
        z = tokens_to_latent(tokens, h, w, self.patch).to(self.vae.dtype)
        z = patchify(z, self.patch)
        z = bn_denormalize(z, self.vae.bn.running_mean, self.vae.bn.running_var, self.eps)
        return unpatchify(z, self.patch)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        z = self.decode_input(tokens, h, w).to(self.vae.device)
        return self.vae.decode(z).sample


class PixelCodec(ModelMixin, ConfigMixin, LatentCodec):
    """Identity autoencoder with the Lens packing: a ``p x p`` RGB patch is one token of ``3*p*p`` channels.

    No learned weights and no normalisation (pixels already live in ``[-1, 1]``), so
    ``decode(encode(x)) == x`` exactly. It is a diffusers ``ModelMixin`` so a pipeline
    that uses it can be saved and loaded like any other. Use it for CPU-sized chapters;
    use :class:`Flux2Codec` for the real model.
    """

    @register_to_config
    def __init__(self, patch_size: int = 2):
        super().__init__()
        if int(patch_size) < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}.")
        self.patch = int(patch_size)
        self.token_channels = 3 * self.patch * self.patch
        self.downsample = self.patch
        self.name = f"pixel:p{self.patch}"
        # ModelMixin derives device/dtype from tensors, and save/load needs a weights file:
        # a scalar buffer provides both.
        self.register_buffer("anchor", torch.zeros(()))

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        h, w = self._check_images(images)
        return pack(patchify(images, self.patch)), (h, w)

    def decode(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        self._check_tokens(tokens, h, w)
        return unpatchify(unpack(tokens, h, w), self.patch)


def as_codec(vae) -> LatentCodec:
    """Wrap a pipeline's ``vae`` component: ``AutoencoderKLFlux2`` -> :class:`Flux2Codec`; codecs pass
    through."""
    if isinstance(vae, LatentCodec):
        return vae
    if isinstance(vae, AutoencoderKLFlux2):
        return Flux2Codec(vae)
    raise ValueError(
        f"Unsupported vae component {type(vae).__name__}: use diffusers AutoencoderKLFlux2 (official) "
        "or a lenslib LatentCodec such as PixelCodec."
    )


def tiny_flux2_vae(
    latent_channels: int = 4, block_out_channels=(8, 8, 8, 8), norm_num_groups: int = 4, seed: int = 0
) -> AutoencoderKLFlux2:
    """A random-weight ``AutoencoderKLFlux2`` with the official *structure* (4 blocks -> 16 px per token).

    Small enough for CPU tests; the BatchNorm running statistics stay at their
    initial values (mean 0, var 1) unless the caller sets them.
    """
    torch.manual_seed(seed)
    n = len(block_out_channels)
    return AutoencoderKLFlux2(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=64,
    )
