"""LensTransformer2DModel, RoPE and the timestep sinusoid against tensors from the official Lens code."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from lenslib.model.embeddings import timestep_sinusoid
from lenslib.model.rope import apply_rotary_emb, image_positions, rope_tables, text_positions

TOL = 1e-5  # golden README: a faithful float32 implementation matches within max-abs 1e-5
CASES = ["a", "b", "c", "c2", "d"]


@pytest.fixture(scope="module")
def tiny(load_golden_tiny):
    return load_golden_tiny()


@pytest.fixture(scope="module")
def cases(golden_dir):
    return load_file(str(golden_dir / "dit_cases.safetensors"))


def _inputs(cases, name):
    return dict(
        hidden_states=cases[f"{name}.hidden_states"],
        encoder_hidden_states=[cases[f"{name}.encoder_hidden_states.{i}"] for i in range(4)],
        encoder_hidden_states_mask=cases[f"{name}.encoder_hidden_states_mask"] != 0,
        timestep=cases[f"{name}.timestep"],
        img_shapes=[tuple(int(v) for v in cases[f"{name}.img_shapes"][0])],
    )


def test_tiny_checkpoint_loads_strictly_with_official_names(golden_dir, tiny):
    sd = load_file(str(golden_dir / "tiny_transformer.safetensors"))
    ours = tiny.state_dict()
    assert set(ours) == set(sd) and len(sd) == 68
    assert all(ours[k].shape == sd[k].shape for k in sd)


@pytest.mark.parametrize("name", CASES)
def test_forward_matches_official(tiny, cases, name):
    with torch.no_grad():
        out = tiny(**_inputs(cases, name))
    assert isinstance(out, torch.Tensor)
    assert out.shape == cases[f"{name}.output"].shape
    assert (out - cases[f"{name}.output"]).abs().max().item() <= TOL


def test_all_masked_text_equals_no_text_exactly(tiny, cases):
    with torch.no_grad():
        c = tiny(**_inputs(cases, "c"))
        c2 = tiny(**_inputs(cases, "c2"))
    assert torch.equal(c, c2)


def test_case_b_intermediates(tiny, cases):
    got = {}

    def save(name):
        return lambda module, args, out: got.__setitem__(name, out)

    hooks = [
        tiny.time_text_embed.register_forward_hook(save("temb")),
        tiny.img_in.register_forward_hook(save("img_in")),
        tiny.txt_in.register_forward_hook(save("txt_in")),
        tiny.transformer_blocks[0].attn.register_forward_hook(save("attn0")),
        tiny.transformer_blocks[0].register_forward_hook(save("block0")),
        tiny.transformer_blocks[1].register_forward_hook(save("block1")),
        tiny.norm_out.register_forward_hook(save("norm_out")),
    ]
    try:
        with torch.no_grad():
            tiny(**_inputs(cases, "b"))
    finally:
        for h in hooks:
            h.remove()
    expected = {
        "temb": got["temb"],
        "img_in": got["img_in"],
        "txt_in": got["txt_in"],
        "block0.attn_img": got["attn0"][0],
        "block0.attn_txt": got["attn0"][1],
        "block0.txt": got["block0"][0],  # blocks return (text, image)
        "block0.img": got["block0"][1],
        "block1.txt": got["block1"][0],
        "block1.img": got["block1"][1],
        "norm_out": got["norm_out"],
    }
    for key, value in expected.items():
        ref = cases[f"b.inter.{key}"]
        assert value.shape == ref.shape, key
        assert (value - ref).abs().max().item() <= TOL, key


def test_padded_text_values_are_ignored_bit_exactly(tiny, cases):
    inputs = _inputs(cases, "b")
    mask = inputs["encoder_hidden_states_mask"]
    assert (~mask).sum() == 2  # row 0 has two padded positions
    with torch.no_grad():
        clean = tiny(**inputs)
        g = torch.Generator().manual_seed(0)
        noisy = []
        for layer in inputs["encoder_hidden_states"]:
            layer = layer.clone()
            layer[~mask] = 1000 * torch.randn(layer[~mask].shape, generator=g)
            noisy.append(layer)
        dirty = tiny(**{**inputs, "encoder_hidden_states": noisy})
    assert torch.equal(clean, dirty)
    assert (dirty - cases["b.output"]).abs().max().item() <= TOL


def test_img_shapes_forms(tiny, cases):
    inputs = _inputs(cases, "b")
    with torch.no_grad():
        ref = tiny(**inputs)
        for form in ([[(1, 3, 5)]], cases["b.img_shapes"], [(1, 3, 5), (1, 9, 9)]):
            assert torch.equal(tiny(**{**inputs, "img_shapes": form}), ref)
        with pytest.raises(ValueError, match="triple"):
            tiny(**{**inputs, "img_shapes": [(3, 5)]})


def test_uint8_mask_is_read_as_nonzero_valid(tiny, cases):
    inputs = _inputs(cases, "b")
    with torch.no_grad():
        as_bool = tiny(**inputs)
        as_uint8 = tiny(**{**inputs, "encoder_hidden_states_mask": cases["b.encoder_hidden_states_mask"]})
    assert torch.equal(as_bool, as_uint8)


# ---- RoPE ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["full", "tiny"])
def test_rope_tables_bit_exact(golden_dir, which):
    g = load_file(str(golden_dir / "rope.safetensors"))
    axes = g[f"{which}.axes_dims"].tolist()
    f, h, w = g[f"{which}.grid"].tolist()
    n_txt = g[f"{which}.txt_pos"].numel()
    assert torch.equal(image_positions(f, h, w), g[f"{which}.img_pos"])
    assert torch.equal(text_positions(h, w, n_txt), g[f"{which}.txt_pos"])
    img, txt = rope_tables(axes, (f, h, w), n_txt)
    assert img.dtype == torch.complex64
    assert torch.equal(torch.view_as_real(img), g[f"{which}.img_freqs"])
    assert torch.equal(torch.view_as_real(txt), g[f"{which}.txt_freqs"])


def test_rope_positions_follow_the_spec_examples():
    # Reference §2.6: h = 5 gives rows -3..1; a 64×64 grid starts text at 32; 5×6 starts text at 3.
    rows = image_positions(1, 5, 1)[:, 1].tolist()
    assert rows == [-3, -2, -1, 0, 1]
    cols = image_positions(1, 1, 64)[:, 2]
    assert cols.min() == -32 and cols.max() == 31
    assert text_positions(64, 64, 1).tolist() == [32]
    assert text_positions(5, 6, 4).tolist() == [3, 4, 5, 6]
    assert text_positions(6, 4, 3).tolist() == [3, 4, 5]  # case d: tall grid


def test_apply_rotary_emb_matches_official(golden_dir):
    g = load_file(str(golden_dir / "rope.safetensors"))
    out = apply_rotary_emb(g["apply.x"], torch.view_as_complex(g["apply.freqs"].contiguous()))
    assert (out - g["apply.out"]).abs().max().item() <= 1e-6
    # Interleaved pairs: rotating pair (2m, 2m+1) by angle θ, checked by hand for one entry.
    x = g["apply.x"][0, 3, 1]
    fr = torch.view_as_complex(g["apply.freqs"].contiguous())[3]
    m = 5
    re = x[2 * m] * fr[m].real - x[2 * m + 1] * fr[m].imag
    im = x[2 * m] * fr[m].imag + x[2 * m + 1] * fr[m].real
    assert torch.allclose(out[0, 3, 1, 2 * m : 2 * m + 2], torch.stack([re, im]), atol=1e-6)


def test_apply_rotary_emb_keeps_dtype_and_rotates_in_float32():
    x = torch.randn(1, 3, 2, 8, dtype=torch.bfloat16)
    img, _ = rope_tables([2, 2, 4], (1, 1, 3), 0)
    out = apply_rotary_emb(x, img)
    assert out.dtype == torch.bfloat16
    ref = apply_rotary_emb(x.float(), img).to(torch.bfloat16)
    assert torch.equal(out, ref)


# ---- timestep sinusoid ----------------------------------------------------------------------------
def test_timestep_sinusoid_matches_official(golden_dir):
    g = load_file(str(golden_dir / "timestep_embedding.safetensors"))
    t, ref = g["t"], g["embedding"]
    ours = timestep_sinusoid(t)
    assert ours.shape == (7, 256) and ours.dtype == torch.float32
    # Values agree to the float32 rounding of the angles (≤ 1000·ulp(ω) ≈ 6e-5 rad, see below).
    assert (ours - ref).abs().max().item() <= 1e-4
    # Order of operations (§2.5): ω_k = exp(-ln(1e4)·k/128); a = (t·ω)·1000; [cos(a), sin(a)].
    # The libm/SLEEF exp used for ω may round a few ω_k one ulp differently between CPU instruction
    # sets, so for every k we require the golden column to be reproduced *bit for bit* by the spec's
    # formula with ω_k or one of its float32 neighbours. A wrong order (e.g. t·1000 first), the wrong
    # half first or a sin/cos swap fails this.
    k = torch.arange(128, dtype=torch.float32)
    omega = torch.exp((-math.log(10000) * k) / 128)
    up = torch.nextafter(omega, torch.full_like(omega, math.inf))
    down = torch.nextafter(omega, torch.full_like(omega, -math.inf))
    for j in range(128):
        ok = False
        for w in (omega[j], up[j], down[j]):
            a = (t * w) * 1000
            if torch.equal(torch.cos(a), ref[:, j]) and torch.equal(torch.sin(a), ref[:, 128 + j]):
                ok = True
                break
        assert ok, f"frequency {j} is not reproduced"
