"""The transformer's fast path computes the faithful function: every setting against the reference path.

Reference = the official float key mask and complex RoPE (the golden fixtures pin it to the official
code). Every fast setting must give the same outputs within 1e-5 in float32 on random small configs,
masks and text lengths (0 text tokens included), and the golden fixtures themselves.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from lenslib.model.attention import JointKeyMask, joint_attention_mask, joint_key_mask
from lenslib.model.fast import CHECKPOINT_POLICIES, CUDAGraphStep, trim_text_padding
from lenslib.model.pipeline import LensPipeline
from lenslib.model.presets import get_config
from lenslib.model.rope import apply_rotary_emb, real_rope_table, rope_tables
from lenslib.model.schedule import make_scheduler
from lenslib.model.transformer import LensTransformer2DModel
from lenslib.model.vae import tiny_flux2_vae

TOL = 1e-5
FAST_MODES = ["sdpa", "flex"]

# Random small configs: widths, heads, MLP kind, norm kind, one or several text layers, the options of the
# CPU recipe (pixel stem and head, pooled text).
CONFIGS = {
    "swiglu": get_config("tiny"),
    "gelu-layernorm": dict(
        patch_size=1,
        in_channels=8,
        out_channels=None,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=3,
        inner_dim=24,
        enc_hidden_dim=10,
        axes_dims_rope=(2, 2, 4),
        gate_mlp=False,
        rms_norm=False,
        selected_layer_index=(1, 3),
    ),
    "pixel-options-pooled-text": dict(
        patch_size=2,
        in_channels=12,
        out_channels=3,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        inner_dim=32,
        enc_hidden_dim=16,
        axes_dims_rope=(2, 2, 4),
        pixel_stem=4,
        pixel_head=8,
        pixel_skip=True,
        pooled_text=True,
        token_conv=True,
    ),
    "single-text-layer": dict(
        patch_size=2,
        in_channels=12,
        out_channels=3,
        num_layers=2,
        attention_head_dim=12,
        num_attention_heads=2,
        inner_dim=24,
        enc_hidden_dim=16,
        axes_dims_rope=(4, 4, 4),
        multi_layer_encoder_feature=False,
    ),
}

# Text masks over a batch of 3 with 6 text slots (True = valid); "none" has no text tokens at all.
MASKS = {
    "all-valid": [[1] * 6] * 3,
    "right-padded": [[1, 1, 1, 1, 0, 0], [1] * 6, [1, 0, 0, 0, 0, 0]],
    "one-sample-empty": [[1] * 6, [0] * 6, [1, 1, 1, 0, 0, 0]],
    "holes": [[1, 0, 1, 0, 1, 1], [0, 1, 1, 1, 1, 0], [1] * 6],
    "all-padded": [[0] * 6] * 3,
    "none": [[], [], []],
}


def _model(name, seed=0):
    torch.manual_seed(seed)
    return LensTransformer2DModel(**CONFIGS[name]).eval()  # PyTorch's default init: no zero gates


def _inputs(model, mask_rows, grid=(1, 3, 4), seed=1):
    c = model.config
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor(mask_rows, dtype=torch.bool).reshape(3, -1)
    s_txt, s_img = mask.shape[1], grid[0] * grid[1] * grid[2]
    layers = len(c.selected_layer_index) if c.multi_layer_encoder_feature else 1
    text = [torch.randn(3, s_txt, c.enc_hidden_dim, generator=g) for _ in range(layers)]
    return dict(
        hidden_states=torch.randn(3, s_img, c.in_channels, generator=g),
        encoder_hidden_states=text if c.multi_layer_encoder_feature else text[0],
        encoder_hidden_states_mask=mask,
        timestep=torch.rand(3, generator=g),
        img_shapes=[grid],
    )


def _run(model, mode, inputs):
    model.attention_mode = mode
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FlexAttention warns that eager mode is its slow reference
            return model(**inputs)
    finally:
        model.attention_mode = "reference"


# ---- RoPE ----------------------------------------------------------------------------------------
def test_real_rope_table_rotates_exactly_like_the_complex_one():
    img, txt = rope_tables([4, 6, 6], (1, 3, 5), 7)
    for table in (img, txt):
        real = real_rope_table(table)
        assert real.dtype == torch.float32 and real.shape == (*table.shape, 2) and not real.is_complex()
        assert torch.equal(real[..., 0], table.real) and torch.equal(real[..., 1], table.imag)
        assert real.untyped_storage().data_ptr() != table.untyped_storage().data_ptr()  # its own tensor
    x = torch.randn(2, img.shape[0], 3, 16)
    rotated = apply_rotary_emb(x, real_rope_table(img))
    assert torch.equal(rotated, apply_rotary_emb(x, img))
    # and both are the complex product of interleaved pairs with the table
    pairs = torch.view_as_complex(x.reshape(2, img.shape[0], 3, 8, 2))
    expect = torch.view_as_real(pairs * img[None, :, None]).flatten(3)
    assert (rotated - expect).abs().max() <= 1e-6
    with pytest.raises(ValueError, match="complex"):
        real_rope_table(real_rope_table(img))


def test_the_model_hands_its_blocks_real_tables():
    model = _model("swiglu")
    seen = {}
    model.transformer_blocks[0].register_forward_pre_hook(lambda m, a: seen.update(rope=a[3]))
    with torch.no_grad():
        model(**_inputs(model, MASKS["right-padded"]))
    img, txt = seen["rope"]
    assert not img.is_complex() and not txt.is_complex() and img.shape[-1] == 2 and txt.shape == (6, 8, 2)


# ---- attention modes against the reference -------------------------------------------------------
# Eager FlexAttention is its slow reference implementation: one config covers it, with every mask.
@pytest.mark.parametrize(
    "config,mask,mode",
    [(c, m, "sdpa") for c in CONFIGS for m in MASKS] + [("swiglu", m, "flex") for m in MASKS],
)
def test_fast_attention_matches_the_reference(config, mask, mode):
    model = _model(config)
    inputs = _inputs(model, MASKS[mask], grid=(1, 3, 5) if config == "gelu-layernorm" else (1, 3, 4))
    ref = _run(model, "reference", inputs)
    out = _run(model, mode, inputs)
    assert out.shape == ref.shape and ref.abs().mean() > 0.05  # outputs of order 1, as the golden ones
    assert (out - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("mask", ["all-valid", "none"])
def test_no_mask_means_every_text_token_is_valid(mask):
    """The fast path passes None for "nothing padded" (e.g. a trimmed CFG branch); the pooled-text option
    must then pool every token, exactly as with an all-True mask."""
    model = _model("pixel-options-pooled-text")
    inputs = _inputs(model, MASKS[mask])
    ref = _run(model, "reference", inputs)
    out = _run(model, "sdpa", dict(inputs, encoder_hidden_states_mask=None))
    assert (out - ref).abs().max().item() <= TOL


def test_key_mask_forms():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    km = joint_key_mask(mask, 3, "sdpa")
    assert isinstance(km, JointKeyMask) and km.valid.shape == (4, 7)
    groups = {(None if rows is None else tuple(rows.tolist())): keys for rows, keys in km.groups}
    assert groups[(0, 3)] == 5  # right-padded: the first 5 keys, a slice
    assert groups[(1,)] == 7
    assert groups[(2,)].tolist() == [[0, 1, 2, 4, 5, 6]]  # a hole: the valid positions, in order
    assert torch.equal(km.float_mask(), joint_attention_mask(mask, 3))
    assert joint_key_mask(torch.ones(2, 3, dtype=torch.bool), 4, "sdpa") is None  # nothing padded: no mask
    assert joint_key_mask(None, 4, "flex") is None
    assert joint_key_mask(torch.ones(2, 0, dtype=torch.bool), 4, "sdpa") is None  # no text tokens
    with pytest.raises(ValueError, match="reference path"):
        joint_key_mask(mask, 3, "reference")


def test_fast_path_gradients_match_the_reference():
    model = _model("swiglu").train()
    inputs = _inputs(model, MASKS["one-sample-empty"])
    grads = {}
    for mode in ("reference", "sdpa"):
        model.attention_mode = mode
        model.zero_grad(set_to_none=True)
        model(**inputs).square().mean().backward()
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.attention_mode = "reference"
    assert set(grads["sdpa"]) == set(grads["reference"])
    for name, ref in grads["reference"].items():
        assert torch.allclose(grads["sdpa"][name], ref, atol=1e-5, rtol=1e-4), name


def test_set_fast_path_validates_and_attention_probs_still_work():
    model = _model("swiglu")
    with pytest.raises(ValueError, match="choose one of"):
        model.set_fast_path("flash")
    assert model.set_fast_path("sdpa") is model and model.attention_mode == "sdpa"
    cap = {}
    model.transformer_blocks[1].attn.register_forward_hook(lambda m, a, o: cap.update(args=a))
    with torch.no_grad():
        model(**_inputs(model, MASKS["right-padded"]))
        probs = model.transformer_blocks[1].attn.attention_probs(*cap["args"])
    assert (probs[0, :, :, -2:] == 0).all() and torch.allclose(probs.sum(-1), torch.ones_like(probs[..., 0]))


# ---- golden fixtures through the fast path --------------------------------------------------------
@pytest.fixture(scope="module")
def golden(golden_dir, load_golden_tiny):
    return load_golden_tiny(), load_file(str(golden_dir / "dit_cases.safetensors"))


@pytest.mark.parametrize("mode", FAST_MODES)
@pytest.mark.parametrize("name", ["a", "b", "c", "c2", "d"])
def test_golden_cases_through_the_fast_path(golden, name, mode):
    model, cases = golden
    inputs = dict(
        hidden_states=cases[f"{name}.hidden_states"],
        encoder_hidden_states=[cases[f"{name}.encoder_hidden_states.{i}"] for i in range(4)],
        encoder_hidden_states_mask=cases[f"{name}.encoder_hidden_states_mask"] != 0,
        timestep=cases[f"{name}.timestep"],
        img_shapes=[tuple(int(v) for v in cases[f"{name}.img_shapes"][0])],
    )
    out = _run(model, mode, inputs)
    assert (out - cases[f"{name}.output"]).abs().max().item() <= TOL


# ---- CFG without the padded unconditional text ----------------------------------------------------
def test_trim_text_padding():
    feats = [torch.arange(24.0).reshape(2, 4, 3)]
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    out, m = trim_text_padding(feats, mask)
    assert out[0].shape == (2, 3, 3) and torch.equal(out[0], feats[0][:, :3]) and m.shape == (2, 3)
    out, m = trim_text_padding(feats[0], torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool))
    assert out.shape == (2, 2, 3) and m is None  # nothing padded is left
    out, m = trim_text_padding(feats, torch.zeros(2, 4, dtype=torch.bool))
    assert out[0].shape == (2, 0, 3) and m is None  # the empty negative: no text tokens


@pytest.fixture(scope="module")
def loop(golden_dir):
    return load_file(golden_dir / "pipeline_loop.safetensors")


def _golden_pipe(model, loop):
    vae = tiny_flux2_vae(latent_channels=4)
    vae.bn.running_mean.copy_(loop["vae.bn.running_mean"])
    vae.bn.running_var.copy_(loop["vae.bn.running_var"])
    pipe = LensPipeline(
        scheduler=make_scheduler(), vae=vae, text_encoder=None, tokenizer=None, transformer=model
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("attention", ["reference", "sdpa"])
@pytest.mark.parametrize("name", ["p1", "p2", "p3"])
def test_split_cfg_reproduces_the_official_loop(golden, loop, name, attention):
    """p1/p3: one prompt, empty negative (the unconditional branch runs with 0 text tokens); p2: two
    prompts with explicit negatives. The golden final latents come from the official pipeline."""
    model, _ = golden
    pipe = _golden_pipe(model, loop)
    runs = {
        "p1": dict(height=48, width=80, num_inference_steps=3, guidance_scale=5.0),
        "p2": dict(height=64, width=64, num_inference_steps=2, guidance_scale=4.0),
        "p3": dict(height=64, width=64, num_inference_steps=4, guidance_scale=1.0),
    }
    kw = dict(
        runs[name],
        prompt_embeds=[loop[f"{name}.prompt_embeds.{i}"] for i in range(4)],
        prompt_mask=loop[f"{name}.prompt_mask"] != 0,
        output_type="latent",
    )
    if name == "p2":
        kw["negative_prompt_embeds"] = [loop[f"p2.negative_prompt_embeds.{i}"] for i in range(4)]
        kw["negative_prompt_mask"] = loop["p2.negative_prompt_mask"] != 0
        kw["generator"] = torch.Generator().manual_seed(7)
    else:
        kw["negative_prompt"] = ""
        kw["latents"] = loop[f"{name}.latents_init"]
    lengths = []
    hook = model.register_forward_pre_hook(
        lambda m, a, k: lengths.append(k["encoder_hidden_states"][0].shape[:2]), with_kwargs=True
    )
    try:
        pipe.set_fast_path(split_cfg=True, attention=attention)
        out = pipe(**kw).images
    finally:
        hook.remove()
        model.attention_mode = "reference"
    assert (out - loop[f"{name}.latents_final"]).abs().max().item() <= TOL
    batch = kw["prompt_mask"].shape[0]
    assert len(lengths) == 2 * pipe.num_timesteps and all(b == batch for b, _ in lengths)  # two batches of B
    if name != "p2":
        assert lengths[1][1] == 0  # the empty negative: zero text tokens, not padded to the prompt's length


def test_cuda_graph_settings_are_guarded():
    with pytest.raises(ValueError, match="split_cfg"):
        LensPipeline(
            scheduler=make_scheduler(),
            vae=None,
            text_encoder=None,
            tokenizer=None,
            transformer=_model("swiglu"),
        ).set_fast_path(split_cfg=False, cuda_graphs=True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA device"):
            CUDAGraphStep(lambda x: x * 2, {}, {"x": torch.ones(2)})


# ---- regional compile: one graph per block class, no graph break ----------------------------------
def _block_inputs(model, mask_rows):
    inputs = _inputs(model, mask_rows)
    with torch.no_grad():
        x = model.img_in(inputs["hidden_states"])
        c = model.embed_text(inputs["encoder_hidden_states"])
        temb = model.time_text_embed(inputs["timestep"], x)
    rope = model.pos_embed(inputs["img_shapes"], c.shape[1], real=True)
    return x, c, temb, rope, inputs["encoder_hidden_states_mask"]


# The grouped SDPA of padded batches is an eager path (its groups depend on the data); compiled blocks
# take padded batches through FlexAttention.
@pytest.mark.parametrize("mode", ["reference", "sdpa", "flex"])
def test_one_block_traces_without_a_graph_break(mode):
    torch._dynamo.reset()
    model = _model("swiglu")
    x, c, temb, rope, mask = _block_inputs(model, MASKS["right-padded"])
    attn_mask = (
        joint_attention_mask(mask, x.shape[1])
        if mode == "reference"
        else joint_key_mask(mask, x.shape[1], mode)
    )
    if mode == "sdpa":
        attn_mask = None  # nothing padded: the plain SDPA call
    with torch.no_grad():
        explained = torch._dynamo.explain(model.transformer_blocks[0])(x, c, temb, rope, attn_mask)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


def test_regional_compile_compiles_one_block_graph_for_all_blocks():
    torch._dynamo.reset()
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    model = _model("gelu-layernorm")  # 3 blocks
    inputs = _inputs(model, MASKS["all-valid"], grid=(1, 3, 5))
    eager = _run(model, "sdpa", inputs)
    model.set_fast_path("sdpa", compile_blocks=True, backend=counting_backend)
    with torch.no_grad():
        compiled = model(**inputs)
    model.attention_mode = "reference"
    assert len(graphs) == 1  # compiled once, reused by the other blocks
    assert (compiled - eager).abs().max().item() <= TOL
    torch._dynamo.reset()


# ---- selective activation checkpointing ---------------------------------------------------------
_MATMULS = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default)


class _CountOps(TorchDispatchMode):
    """Counts matmuls and forward attention kernels run in its context (i.e. recomputed in backward)."""

    supports_higher_order_operators = True  # a compiled backward replays random ops via run_with_rng_state

    def __init__(self):
        super().__init__()
        self.counts = {"matmuls": 0, "attention": 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        op = args[1] if func is torch.ops.higher_order.run_with_rng_state else func
        if op in _MATMULS:
            self.counts["matmuls"] += 1
        elif "scaled_dot_product" in op.name() and "backward" not in op.name():
            self.counts["attention"] += 1
        return func(*args, **(kwargs or {}))


def _backward_ops(model, inputs):
    model.zero_grad(set_to_none=True)
    loss = model(**inputs).square().mean()
    with _CountOps() as counter:
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return counter.counts, grads


def test_selective_checkpointing_policies_keep_gradients_and_save_what_they_say():
    model = _model("swiglu").train()
    inputs = _inputs(model, MASKS["right-padded"])
    base, plain = _backward_ops(model, inputs)
    counts = {}
    for policy in CHECKPOINT_POLICIES:
        model.enable_selective_checkpointing(policy)
        assert not model.gradient_checkpointing  # the block checkpoints itself, once
        counts[policy], grads = _backward_ops(model, inputs)
        assert set(grads) == set(plain), policy
        for name in plain:
            assert torch.allclose(grads[name], plain[name], atol=1e-6, rtol=1e-5), (policy, name)
    # What a policy saves is not recomputed in the backward pass; the rest is.
    assert base["attention"] == 0
    assert counts["matmuls"] == base
    assert (
        counts["attention"]["attention"] == 0 and counts["attention"]["matmuls"] == counts["full"]["matmuls"]
    )
    assert counts["full"]["matmuls"] > base["matmuls"]
    assert counts["full"]["attention"] == CONFIGS["swiglu"]["num_layers"]
    model.enable_gradient_checkpointing()  # diffusers' plain switch replaces the selective one
    assert model.gradient_checkpointing and all(b.checkpoint_fn is None for b in model.transformer_blocks)
    model.enable_selective_checkpointing("matmuls")
    model.disable_gradient_checkpointing()
    assert not model.gradient_checkpointing and all(b.checkpoint_fn is None for b in model.transformer_blocks)
    with pytest.raises(ValueError, match="choose one of"):
        model.enable_selective_checkpointing("some")


def test_a_compiled_block_keeps_its_checkpointing_policy():
    """The checkpoint is traced inside the compiled block. With aot_eager (AOTAutograd's forward/backward
    split, no code generation) the compiled backward runs aten ops one by one, so the counter sees what
    it recomputes: under the "matmuls" policy no attention, and fewer matmuls than full recomputation
    needs even in eager (AOTAutograd splits the linears' backward into a few more matmuls than eager)."""
    model = _model("swiglu").train()
    inputs = _inputs(model, MASKS["all-valid"])
    _, plain = _backward_ops(model, inputs)
    model.enable_selective_checkpointing("full")
    full, _ = _backward_ops(model, inputs)
    torch._dynamo.reset()
    model.set_fast_path("sdpa", compile_blocks=True, backend="aot_eager")
    model.enable_selective_checkpointing("matmuls")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _backward_ops(model, inputs)  # compiles
        counts, grads = _backward_ops(model, inputs)
    torch._dynamo.reset()
    assert full["attention"] == CONFIGS["swiglu"]["num_layers"] and counts["attention"] == 0
    assert counts["matmuls"] < full["matmuls"]
    for name in plain:
        assert torch.allclose(grads[name], plain[name], atol=1e-6, rtol=1e-5), name
