"""Latent layout, BatchNorm normalisation and the latent codecs (official code: latent packing)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from lenslib.model import latents as L
from lenslib.model.vae import Flux2Codec, PixelCodec, as_codec, tiny_flux2_vae


@pytest.fixture(scope="module")
def golden(golden_dir):
    return load_file(golden_dir / "latents.safetensors")


def test_patchify_matches_official(golden):
    out = L.patchify(golden["patchify.in"])
    assert torch.equal(out, golden["patchify.out"])
    assert torch.equal(L.unpatchify(out), golden["unpatchify.out"])


def test_channel_layout_from_spec():
    # Token n = y*w + x, channel k = 4*ch + 2*r + s holds Z[b, ch, 2y + r, 2x + s] (spec, not code).
    g = torch.Generator().manual_seed(0)
    B, C, h, w = 2, 3, 4, 5
    Z = torch.randn(B, C, 2 * h, 2 * w, generator=g)
    tok = L.latent_to_tokens(Z)
    assert tok.shape == (B, h * w, 4 * C)
    for b in range(B):
        for y in range(h):
            for x in range(w):
                for ch in range(C):
                    for r in range(2):
                        for s in range(2):
                            assert tok[b, y * w + x, 4 * ch + 2 * r + s] == Z[b, ch, 2 * y + r, 2 * x + s]
    assert torch.equal(L.tokens_to_latent(tok, h, w), Z)


def test_tokens_to_latent_matches_official(golden):
    tokens = golden["tokens_to_latent.tokens"]
    assert torch.equal(L.tokens_to_latent(tokens, 2, 3), golden["tokens_to_latent.latent"])


def test_bn_inverse_matches_official(golden):
    vae = tiny_flux2_vae(latent_channels=2)
    vae.register_to_config(batch_norm_eps=float(golden["denorm.eps"].item()))
    vae.bn.running_mean.copy_(golden["denorm.running_mean"])
    vae.bn.running_var.copy_(golden["denorm.running_var"])
    codec = Flux2Codec(vae)
    got = codec.decode_input(golden["denorm.tokens"], 2, 3)
    assert (got - golden["denorm.vae_input"]).abs().max().item() <= 1e-6


def test_bn_normalize_inverts_denormalize():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 8, 4, 4, generator=g)
    mean, var = torch.randn(8, generator=g), torch.rand(8, generator=g) + 0.1
    back = L.bn_normalize(L.bn_denormalize(z, mean, var, 1e-4), mean, var, 1e-4)
    torch.testing.assert_close(back, z, atol=1e-5, rtol=1e-5)
    # the inverse is z*std + mean
    std = torch.sqrt(var + 1e-4).view(1, -1, 1, 1)
    torch.testing.assert_close(L.bn_denormalize(z, mean, var, 1e-4), z * std + mean.view(1, -1, 1, 1))


def test_token_grid_and_divisibility():
    assert L.token_grid(1024, 1024) == (64, 64)
    assert L.image_seq_len(1440, 1440) == 8100
    assert L.image_seq_len(512, 512) == 1024
    with pytest.raises(ValueError, match="multiples of 16"):
        L.token_grid(1000, 1024)
    with pytest.raises(ValueError, match="unpack"):
        L.unpack(torch.zeros(1, 7, 4), 2, 3)


def test_pixel_codec_is_exact_identity():
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    codec = PixelCodec(patch_size=4)
    tok, (h, w) = codec.encode(x)
    assert (
        (h, w) == (8, 12)
        and tok.shape == (2, 96, 48)
        and codec.token_channels == 48
        and codec.downsample == 4
    )
    assert torch.equal(codec.decode(tok, h, w), x)
    # token (y, x) holds the 4x4 pixel patch at rows 4y.., cols 4x.. , channel-major
    assert torch.equal(tok[0, 1 * 12 + 2].view(3, 4, 4), x[0, :, 4:8, 8:12])
    with pytest.raises(ValueError, match="multiples of 4"):
        codec.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match="decode expects tokens"):
        codec.decode(tok[:, :5], h, w)


def test_flux2_codec_roundtrip_shapes_and_normalisation():
    vae = tiny_flux2_vae(latent_channels=4)
    codec = as_codec(vae)
    assert isinstance(codec, Flux2Codec) and codec.downsample == 16 and codec.token_channels == 16
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    tok, (h, w) = codec.encode(x)
    assert tok.shape == (2, 6, 16) and (h, w) == (2, 3)
    # encode = posterior mean -> patchify -> (z - mean)/std with the bn stats
    vae.bn.running_mean.copy_(torch.linspace(-1, 1, 16))
    vae.bn.running_var.copy_(torch.linspace(0.5, 2, 16))
    tok2, _ = codec.encode(x)
    with torch.no_grad():
        z = L.patchify(vae.encode(x).latent_dist.mean)
    std = torch.sqrt(vae.bn.running_var + vae.config.batch_norm_eps).view(1, -1, 1, 1)
    expect = L.pack((z - vae.bn.running_mean.view(1, -1, 1, 1)) / std)
    torch.testing.assert_close(tok2, expect)
    # decode_input undoes the normalisation: back to the raw posterior mean
    torch.testing.assert_close(codec.decode_input(tok2, h, w), L.unpatchify(z), atol=1e-5, rtol=1e-5)
    assert codec.decode(tok2, h, w).shape == (2, 3, 32, 48)
    with pytest.raises(ValueError, match="Unsupported vae"):
        as_codec(torch.nn.Linear(2, 2))


def test_official_vae_config_gives_16px_tokens_of_128_channels():
    from diffusers import AutoencoderKLFlux2

    with torch.device("meta"):
        vae = AutoencoderKLFlux2()  # official config: 32 latent channels, 4 blocks, patch (2, 2), bn eps 1e-4
    codec = Flux2Codec(vae)
    assert codec.downsample == 16 and codec.token_channels == 128 and codec.eps == 1e-4
    assert vae.bn.num_features == 128 and vae.bn.affine is False


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 2), c=st.integers(1, 4), h=st.integers(1, 5), w=st.integers(1, 5), p=st.integers(1, 4)
)
def test_layout_round_trips(b, c, h, w, p):
    z = torch.randn(b, c, p * h, p * w)
    tok = L.latent_to_tokens(z, p)
    assert tok.shape == (b, h * w, c * p * p)
    assert torch.equal(L.tokens_to_latent(tok, h, w, p), z)
    assert torch.equal(L.unpatchify(L.patchify(z, p), p), z)
    # each token is exactly one p x p patch, channel-major
    y, x = h - 1, w - 1
    assert torch.equal(tok[:, y * w + x].view(b, c, p, p), z[:, :, p * y : p * y + p, p * x : p * x + p])
