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

:func:`block_roofline` adds the other half of a roofline model for one block: the bytes each
operation must move at least (every input read once, every output written once), so that with an
accelerator's peak FLOP/s and memory bandwidth (:func:`roofline_times`) each part gets a lower bound
on its time, set either by compute or by memory. It counts the elementwise work the FLOP totals
leave out (norms, modulation, RoPE, activations, gated residuals), one kernel per operation as in
eager PyTorch; a compiled block fuses neighbours and moves less.

Used in chapter 2 (FLOPs per step at 512²/1024²/1440²), chapter 7 (where the time goes),
``benchmarks/bench_model.py`` and ``benchmarks/bench_gpu.py``.
"""

from __future__ import annotations

from typing import Any, Mapping

from .block import swiglu_hidden_dim

#: Pixels per token side for the official model: 8× VAE downsampling then 2×2 patches.
LENS_PIXELS_PER_TOKEN = 16


def _cfg(config: Any) -> Mapping[str, Any]:
    return (
        config
        if isinstance(config, Mapping)
        else dict(config.config if hasattr(config, "config") else config)
    )


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


def denoising_step_flops(
    config: Any,
    height: int,
    width: int,
    txt_tokens: int,
    batch: int = 1,
    cfg: bool = True,
    pixels_per_token: int = LENS_PIXELS_PER_TOKEN,
) -> int:
    """Transformer FLOPs of one sampling step; with ``cfg`` the batch is doubled (cond + uncond)."""
    n_img = image_tokens(height, width, pixels_per_token)
    return transformer_flops(config, n_img, txt_tokens, batch * (2 if cfg else 1))["total"]


#: Parts of a block in :func:`block_roofline`, in the order chapter 7 shows them.
ROOFLINE_PARTS = ("matmuls", "attention", "norms/modulation")


def block_roofline(
    config: Any, img_tokens: int, txt_tokens: int, batch: int = 1, bytes_per_value: int = 2
) -> list[dict]:
    """FLOPs and minimum bytes moved by every operation of one dual-stream block, both streams.

    Returns rows ``{"op", "part", "flops", "bytes"}`` with ``part`` in :data:`ROOFLINE_PARTS`.
    Matmuls: 2·m·k·n FLOPs, (m·k + k·n + m·n) values moved (input, weight, output). Attention: a fused
    kernel (flash/cuDNN) reads Q, K, V and writes the output, 4·S·d values per sample, and never
    stores the S×S scores; the row ``"attention scores (unfused)"`` adds what the unfused math path
    moves (scores written, softmax read and written, probabilities read: 4·H·S² values per sample),
    the worst case of the official float mask, which rules out the flash and cuDNN kernels. Elementwise
    operations: one read of every input and one write of every output each, FLOPs per element as
    noted. ``bytes_per_value`` is 2 for bf16 activations and weights.
    """
    c = _cfg(config)
    d = c["num_attention_heads"] * c["attention_head_dim"]
    heads = c["num_attention_heads"]
    gate = c.get("gate_mlp", True)
    hidden = swiglu_hidden_dim(d) if gate else 4 * d
    b, v = int(batch), int(bytes_per_value)
    rows: list[dict] = []

    def matmul(op, m, k, n):
        rows.append(
            {"op": op, "part": "matmuls", "flops": 2 * m * k * n, "bytes": v * (m * k + k * n + m * n)}
        )

    def elementwise(op, reads, writes, flops):
        rows.append({"op": op, "part": "norms/modulation", "flops": flops, "bytes": v * (reads + writes)})

    for stream, s_x in (("img", int(img_tokens)), ("txt", int(txt_tokens))):
        m = b * s_x  # tokens of this stream in the batch
        matmul(f"{stream} modulation", b, d, 6 * d)
        matmul(f"{stream} QKV", m, d, 3 * d)
        matmul(f"{stream} attention out", m, d, d)
        if gate:
            matmul(f"{stream} MLP gate+up", m, d, 2 * hidden)
        else:
            matmul(f"{stream} MLP up", m, d, hidden)
        matmul(f"{stream} MLP down", m, hidden, d)
        for i in (1, 2):
            elementwise(f"{stream} norm{i}", m * d, m * d, 4 * m * d)  # square, sum, rsqrt-scale, gain
            elementwise(f"{stream} modulate{i}", m * d, m * d, 2 * m * d)  # x·(1+scale)+shift
            elementwise(f"{stream} gated residual{i}", 2 * m * d, m * d, 2 * m * d)  # x + gate·y
        elementwise(f"{stream} QK norm", 2 * m * d, 2 * m * d, 4 * 2 * m * d)
        elementwise(f"{stream} RoPE", 2 * m * d, 2 * m * d, 3 * 2 * m * d)  # 6 FLOPs per channel pair
        if gate:
            elementwise(f"{stream} SiLU·up", 2 * m * hidden, m * hidden, 5 * m * hidden)
        else:
            elementwise(f"{stream} GELU", m * hidden, m * hidden, 8 * m * hidden)
    s = int(img_tokens) + int(txt_tokens)
    rows.append(
        {
            "op": "attention (fused kernel)",
            "part": "attention",
            "flops": b * 4 * s * s * d,
            "bytes": v * b * 4 * s * d,
        }
    )
    rows.append(
        {
            "op": "attention scores (unfused)",
            "part": "attention unfused extra",
            "flops": 0,
            "bytes": v * b * 4 * heads * s * s,
        }
    )
    return rows


def roofline_times(
    rows: list[dict], peak_flops: float, bandwidth: float, unfused_attention: bool = False
) -> dict:
    """Per part of :func:`block_roofline`: FLOPs, bytes, arithmetic intensity (FLOP/byte), the lower bound
    max(FLOPs/peak, bytes/bandwidth) in seconds, and which of the two sets it.

    ``peak_flops`` in FLOP/s and ``bandwidth`` in bytes/s are the accelerator's (e.g. a datasheet's or
    measured). With ``unfused_attention`` the attention part also moves the S×S scores.
    """
    out = {}
    for part in ROOFLINE_PARTS:
        sel = [
            r
            for r in rows
            if r["part"] == part
            or (unfused_attention and part == "attention" and r["part"] == "attention unfused extra")
        ]
        flops, moved = sum(r["flops"] for r in sel), sum(r["bytes"] for r in sel)
        compute, memory = flops / peak_flops, moved / bandwidth
        out[part] = {
            "flops": flops,
            "bytes": moved,
            "intensity": flops / moved if moved else float("inf"),
            "seconds": max(compute, memory),
            "bound": "compute" if compute >= memory else "memory",
        }
    return out
