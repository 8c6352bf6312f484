"""Analytic FLOPs (lenslib.model.flops) against torch's FLOP counter and the reference's parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lenslib.model.flops import (
    block_roofline,
    denoising_step_flops,
    image_tokens,
    roofline_times,
    transformer_flops,
)
from lenslib.model.presets import get_config
from lenslib.model.transformer import LensTransformer2DModel


@pytest.mark.parametrize("overrides", [{}, {"gate_mlp": False}, {"multi_layer_encoder_feature": False}])
def test_matches_torch_flop_counter(overrides):
    config = get_config("cpu-tiny", num_layers=2, **overrides)
    torch.manual_seed(0)
    model = LensTransformer2DModel(**config).eval()
    n_layers = len(config["selected_layer_index"]) if config["multi_layer_encoder_feature"] else 1
    text = [torch.randn(3, 5, 384) for _ in range(n_layers)]
    counter = FlopCounterMode(display=False)
    # The math SDPA backend runs attention as bmm's, which the counter sees.
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(
            torch.randn(3, 12, 48),
            text if n_layers > 1 else text[0],
            torch.ones(3, 5, dtype=torch.bool),
            torch.rand(3),
            [(1, 3, 4)],
        )
    assert transformer_flops(config, 12, 5, batch=3)["total"] == counter.get_total_flops()


def test_official_model_at_1024_from_reference_parameter_counts():
    # Per token, a block multiplies by all its weight matrices except the modulation (per sample):
    # 84,971,776 - 28,329,984 (modulation) - 6,400 (norms) - 2·4608 - 2·1536 (QKV and output biases)
    # (official code: transformer block); a bias add is not a matmul FLOP. Each token passes through one
    # stream's weights only (image or text), i.e. half of those.
    s_img, s_txt, dim = 4096, 128, 1536
    s = s_img + s_txt
    per_token_block = 84_971_776 - 28_329_984 - 6_400 - 2 * 4608 - 2 * 1536
    expected = (
        48 * (2 * s * per_token_block // 2 + 4 * s * s * dim + 2 * (9216 * 1536) * 2)  # blocks
        + 2 * s_img * 128 * dim
        + 2 * s_txt * 11520 * dim  # img_in, txt_in
        + 2 * (256 * dim + dim * dim)
        + 2 * dim * 3072
        + 2 * s_img * dim * 128  # temb MLP, norm_out, proj_out
    )
    got = transformer_flops(get_config("lens"), s_img, s_txt)
    assert got["total"] == expected
    assert got["attention"] == 48 * 4 * s * s * dim


def test_denoising_step_and_cfg():
    lens = get_config("lens")
    assert (
        image_tokens(1024, 1024) == 4096
        and image_tokens(1440, 1440) == 8100
        and image_tokens(512, 512) == 1024
    )
    one = denoising_step_flops(lens, 1024, 1024, 128, cfg=False)
    assert denoising_step_flops(lens, 1024, 1024, 128, cfg=True) == 2 * one
    assert one == transformer_flops(lens, 4096, 128)["total"]
    # attention grows quadratically: the 1440² step costs more than (8100/4096)× the 1024² step
    assert denoising_step_flops(lens, 1440, 1440, 128, cfg=False) > one * 8100 / 4096
    with pytest.raises(ValueError, match="multiple of 16"):
        image_tokens(1000, 1024)


def test_block_roofline_agrees_with_the_flop_count_and_is_bound_where_expected():
    lens = get_config("lens")
    rows = block_roofline(lens, 1024, 160, batch=8)
    total = transformer_flops(lens, 1024, 160, batch=8)
    matmuls = sum(r["flops"] for r in rows if r["part"] == "matmuls")
    assert 48 * matmuls == total["qkv"] + total["out_proj"] + total["mlp"] + total["modulation"]
    assert 48 * sum(r["flops"] for r in rows if r["part"] == "attention") == total["attention"]
    # image QKV at batch 8 in bf16: [8192, 1536] x [1536, 4608] -> [8192, 4608], each value read or
    # written once
    qkv = next(r for r in rows if r["op"] == "img QKV")
    assert qkv["bytes"] == 2 * (8192 * 1536 + 1536 * 4608 + 8192 * 4608)
    # fused attention reads Q, K, V and writes O: 4 x 8 x 1184 x 1536 bf16 values
    assert next(r for r in rows if r["part"] == "attention")["bytes"] == 2 * 4 * 8 * 1184 * 1536
    # At a datasheet H100 ratio (989 TFLOP/s, 3.35 TB/s) matmuls are compute-bound, elementwise work
    # memory-bound.
    times = roofline_times(rows, 989e12, 3.35e12)
    assert times["matmuls"]["bound"] == "compute" and times["norms/modulation"]["bound"] == "memory"
    assert times["norms/modulation"]["intensity"] < 5 < 500 < times["matmuls"]["intensity"]
    unfused = roofline_times(rows, 989e12, 3.35e12, unfused_attention=True)
    assert unfused["attention"]["bytes"] == times["attention"]["bytes"] + 2 * 8 * 4 * 24 * 1184**2
    assert unfused["attention"]["seconds"] > times["attention"]["seconds"]
    gelu = block_roofline(get_config("lens", gate_mlp=False), 16, 4)
    assert any(r["op"] == "img GELU" for r in gelu) and not any("SiLU" in r["op"] for r in gelu)
