"""Analytic FLOPs of a LensTransformer2DModel forward pass, counted from its config.

Convention: only matrix multiplications are counted, at 2 FLOPs per multiply-add (2·m·n·k for an
[m, k] × [k, n] product), which is what dominates a transformer and what accelerator peak numbers
refer to. Norms, activations, RoPE, softmax and residual adds are a few percent at most and are left
out. Attention counts the full (S_img + S_txt)² score and value products for every head: the
official forward computes padded text positions too (they are masked, not skipped).

Per sample, with S = S_img + S_txt, width d and MLP hidden width h:

=====================  ========================================================
part                   FLOPs
=====================  ========================================================
``img_in``             2·S_img·in_channels·d
``txt_in``             2·S_txt·(L·enc_hidden_dim)·d
timestep MLP           2·(256·d + d²)
per block: modulation  2 streams × 2·d·6d            (once per sample, not per token)
per block: QKV         2·S·d·3d
per block: attention   2·S²·d (QKᵀ) + 2·S²·d (weights·V)
per block: out proj    2·S·d²
per block: MLP         SwiGLU 3 × 2·S·d·h (h = ⌊8d/3⌋); GELU 2 × 2·S·d·4d
final                  2·d·2d (adaLN) + 2·S_img·d·(p²·out_channels)
=====================  ========================================================

A training step costs about 3× the forward (the backward is ~2×). Classifier-free guidance runs
the model on a doubled batch, so a guided denoising step costs 2× an unguided one.

Used in chapter 2 (FLOPs per step at 512²/1024²/1440²) and ``benchmarks/bench_model.py``.
"""

from __future__ import annotations

from typing import Any, Mapping

from .transformer import swiglu_hidden_dim

#: Pixels per token side for the official model: 8× VAE downsampling then 2×2 patches.
LENS_PIXELS_PER_TOKEN = 16


def _cfg(config: Any) -> Mapping[str, Any]:
    return config if isinstance(config, Mapping) else dict(config.config if hasattr(config, "config") else config)


def transformer_flops(config: Any, img_tokens: int, txt_tokens: int, batch: int = 1) -> dict[str, int]:
    """Matmul FLOPs of one forward pass, broken down by part; ``"total"`` is the sum.

    ``config`` is a constructor dict (e.g. from :func:`lenslib.model.presets.get_config`) or a model.
    """
    c = _cfg(config)
    d = c["num_attention_heads"] * c["attention_head_dim"]
    layers = c["num_layers"]
    n_text = len(c["selected_layer_index"]) if c.get("multi_layer_encoder_feature", True) else 1
    out_ch = c.get("out_channels") or c["in_channels"]
    s_img, s_txt = int(img_tokens), int(txt_tokens)
    s = s_img + s_txt
    mlp_per_token = 3 * 2 * d * swiglu_hidden_dim(d) if c.get("gate_mlp", True) else 2 * 2 * d * 4 * d

    parts = {
        "img_in": 2 * s_img * c["in_channels"] * d,
        "txt_in": 2 * s_txt * n_text * c["enc_hidden_dim"] * d,
        "timestep_mlp": 2 * (256 * d + d * d),
        "modulation": layers * 2 * (2 * d * 6 * d),
        "qkv": layers * 2 * s * d * 3 * d,
        "attention": layers * 2 * (2 * s * s * d),
        "out_proj": layers * 2 * s * d * d,
        "mlp": layers * s * mlp_per_token,
        "final": 2 * d * 2 * d + 2 * s_img * d * c["patch_size"] ** 2 * out_ch,
    }
    parts = {k: v * int(batch) for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def image_tokens(height: int, width: int, pixels_per_token: int = LENS_PIXELS_PER_TOKEN) -> int:
    """Number of image tokens for an H×W image (4096 for 1024² with the official VAE and patching)."""
    if height % pixels_per_token or width % pixels_per_token:
        raise ValueError(f"{height}×{width} is not a multiple of {pixels_per_token} pixels per token")
    return (height // pixels_per_token) * (width // pixels_per_token)


def denoising_step_flops(config: Any, height: int, width: int, txt_tokens: int, batch: int = 1,
                         cfg: bool = True, pixels_per_token: int = LENS_PIXELS_PER_TOKEN) -> int:
    """Transformer FLOPs of one sampling step; with ``cfg`` the batch is doubled (cond + uncond)."""
    n_img = image_tokens(height, width, pixels_per_token)
    return transformer_flops(config, n_img, txt_tokens, batch * (2 if cfg else 1))["total"]
