"""Sampler schedule, norm-rescaled CFG and resolution buckets against the official fixtures (§4, §6)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lenslib.model.cfg import norm_rescaled_cfg
from lenslib.model.resolution import RESOLUTION_BUCKETS, resolve_resolution
from lenslib.model.schedule import (
    OFFICIAL_SCHEDULER_CONFIG,
    compute_empirical_mu,
    make_scheduler,
    official_sigmas,
    transformer_timesteps,
)


@pytest.fixture(scope="module")
def sched(golden_dir):
    return load_file(golden_dir / "schedule.safetensors")


def test_scheduler_config_is_official(golden_dir):
    with safe_open(golden_dir / "schedule.safetensors", "pt") as f:
        captured = json.loads(f.metadata()["scheduler_config"])
    assert captured == OFFICIAL_SCHEDULER_CONFIG
    cfg = make_scheduler().config
    for k, v in captured.items():
        assert cfg[k] == v, k


def test_mu_grid(sched):
    Ls, Ns, vals = sched["mu.image_seq_len"], sched["mu.num_steps"], sched["mu.values"]
    for i, L in enumerate(Ls.tolist()):
        for j, N in enumerate(Ns.tolist()):
            assert compute_empirical_mu(L, N) == pytest.approx(vals[i, j].item(), abs=1e-12)


def test_mu_reference_table_and_jump():
    # the official empirical μ table and its 4300/4301 discontinuity
    assert compute_empirical_mu(4096, 20) == pytest.approx(2.198022, abs=1e-6)
    assert compute_empirical_mu(1024, 50) == pytest.approx(1.701956, abs=1e-6)
    assert (
        compute_empirical_mu(8100, 4) == compute_empirical_mu(8100, 50) == pytest.approx(1.827754, abs=1e-6)
    )
    assert compute_empirical_mu(4300, 20) == pytest.approx(2.2167, abs=1e-4)
    assert compute_empirical_mu(4301, 20) == pytest.approx(1.1847, abs=1e-4)


@pytest.mark.parametrize(
    "case", ["4096x20", "4096x4", "4096x50", "8100x20", "8100x50", "15x3", "16x2", "16x4"]
)
def test_sigmas_timesteps_and_transformer_t(sched, case):
    L, N = map(int, case.split("x"))
    sigmas, timesteps, mu = official_sigmas(N, L)
    g = {k.split(".", 2)[2]: v for k, v in sched.items() if k.startswith(f"sched.{case}.")}
    assert mu == g["mu"].item()
    assert sigmas.dtype == torch.float32 and sigmas.shape == (N + 1,)
    assert (sigmas - g["sigmas"]).abs().max().item() <= 1e-6
    assert (timesteps - g["timesteps"]).abs().max().item() <= 1e-4
    assert sigmas[0].item() == 1.0 and sigmas[-1].item() == 0.0
    assert torch.equal(transformer_timesteps(timesteps, torch.float32), g["transformer_t_fp32"])
    assert torch.equal(transformer_timesteps(timesteps, torch.bfloat16).float(), g["transformer_t_bf16"])


def test_sigma_shift_formula_independently():
    # σ = e^μ / (e^μ + 1/σ_in − 1), in float32, on linspace(1, 1/N, N)
    N, L = 20, 4096
    mu = compute_empirical_mu(L, N)
    s_in = torch.from_numpy(np.linspace(1.0, 1.0 / N, N)).float()
    e = torch.tensor(np.exp(mu), dtype=torch.float32)
    expect = e / (e + (1 / s_in - 1))
    sigmas, _, _ = official_sigmas(N, L)
    torch.testing.assert_close(sigmas[:-1], expect, atol=1e-6, rtol=0)
    assert sigmas[1].item() == pytest.approx(0.99419069, abs=1e-7)


def test_cfg_matches_official(golden_dir):
    g = load_file(golden_dir / "cfg.safetensors")
    for s, key in ((5.0, "result_g5"), (1.0, "result_g1"), (4.0, "result_g4")):
        out = norm_rescaled_cfg(g["cond"], g["uncond"], s)
        assert (out - g[key]).abs().max().item() <= 1e-6, key
    assert torch.equal(norm_rescaled_cfg(g["cond"], g["uncond"], 5.0)[0, 2], torch.zeros(8))


def test_cfg_properties():
    gen = torch.Generator().manual_seed(0)
    c, u = torch.randn(3, 7, 16, generator=gen), torch.randn(3, 7, 16, generator=gen)
    out = norm_rescaled_cfg(c, u, 4.0)
    # per-token norm equals the conditional norm; direction is that of u + s(c - u)
    torch.testing.assert_close(out.norm(dim=-1), c.norm(dim=-1))
    comb = u + 4.0 * (c - u)
    cos = torch.nn.functional.cosine_similarity(out, comb, dim=-1)
    torch.testing.assert_close(cos, torch.ones_like(cos))
    torch.testing.assert_close(norm_rescaled_cfg(c, u, 1.0), c)


def test_resolution_table():
    expected_tokens_1024 = {"1:2": 4232, "9:16": 4128, "2:3": 4056, "3:4": 3888, "1:1": 4096}
    for r, n in expected_tokens_1024.items():
        h, w = resolve_resolution(1024, r)
        assert (h // 16) * (w // 16) == n
    assert resolve_resolution(1024, "9:16") == (1376, 768)  # W:H keys: 9:16 is portrait
    assert resolve_resolution(1440, "1:2") == (2080, 1040)  # not round16(1472*1.40625) = 2064
    assert resolve_resolution(1440, "16:9") == (1088, 1936)
    for base, table in RESOLUTION_BUCKETS.items():
        assert len(table) == 9
        for r, (h, w) in table.items():
            assert h % 16 == 0 and w % 16 == 0
            assert table[":".join(reversed(r.split(":")))] == (w, h)  # transposed ratio swaps H and W
    with pytest.raises(ValueError, match="base_resolution"):
        resolve_resolution(768, "1:1")
    with pytest.raises(ValueError, match="aspect_ratio"):
        resolve_resolution(1024, "5:4")
