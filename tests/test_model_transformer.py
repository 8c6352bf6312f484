"""LensTransformer2DModel: official layout and parameter counts, input checks, checkpoints, training
features (gradient checkpointing, torch.compile, bf16) and the presets.

Expected numbers come from the reference specification (§1, §2), not from the code under test.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from lenslib.model.attention import LensJointAttention, joint_attention_mask
from lenslib.model.presets import PRESETS, build_model, cpu_config, get_config, spread_layers
from lenslib.model.transformer import LensTransformer2DModel

# Official transformer/config.json (official code: checkpoint folder).
OFFICIAL_CONFIG = {
    "attention_head_dim": 64,
    "axes_dims_rope": [8, 28, 28],
    "enc_hidden_dim": 2880,
    "gate_mlp": True,
    "in_channels": 128,
    "inner_dim": 1536,
    "multi_layer_encoder_feature": True,
    "num_attention_heads": 24,
    "num_layers": 48,
    "out_channels": 32,
    "patch_size": 2,
    "rms_norm": True,
    "selected_layer_index": [5, 11, 17, 23],
}

# A small config in the spirit of the golden tiny model (dim 64, SwiGLU 170, 4 text layers of 24).
SMALL = get_config("tiny")


@pytest.fixture(scope="module")
def official_meta():
    with torch.device("meta"):
        return LensTransformer2DModel()


def small_model(seed=0, **kw):
    torch.manual_seed(seed)
    return LensTransformer2DModel(**{**SMALL, **kw}).eval()


def small_inputs(batch=2, grid=(1, 3, 4), s_txt=5, n_layers=4, enc=24, in_ch=16, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    s_img = grid[0] * grid[1] * grid[2]
    mask = torch.ones(batch, s_txt, dtype=torch.bool)
    if s_txt > 1:
        mask[0, -2:] = False
    return dict(
        hidden_states=torch.randn(batch, s_img, in_ch, generator=g).to(dtype),
        encoder_hidden_states=[
            torch.randn(batch, s_txt, enc, generator=g).to(dtype) for _ in range(n_layers)
        ],
        encoder_hidden_states_mask=mask,
        timestep=torch.rand(batch, generator=g),
        img_shapes=[grid],
    )


# ---- official layout ------------------------------------------------------------------------------
def test_constructor_arguments_are_exactly_the_official_config_keys(official_meta):
    from lenslib.model.presets import OPTION_KEYS

    config = {k: v for k, v in official_meta.config.items() if not k.startswith("_")}
    # the official keys, plus the documented non-Lens options, which default to off
    assert set(config) == set(OFFICIAL_CONFIG) | set(OPTION_KEYS)
    assert all(config[k] == 0 for k in OPTION_KEYS)
    for key, value in OFFICIAL_CONFIG.items():
        assert (list(config[key]) if isinstance(value, list) else config[key]) == value, key


def test_official_parameter_count_and_keys(official_meta):
    sd = official_meta.state_dict()
    assert sum(p.numel() for p in official_meta.parameters()) == 4_104_225_152
    assert len(sd) == 1264
    assert list(official_meta.buffers()) == []  # RoPE tables are not buffers
    assert not any("pos_embed" in k or "rope" in k for k in sd)
    # 3.8B in the paper = binary billions
    assert round(4_104_225_152 / 2**30, 2) == 3.82


def test_official_non_block_shapes(official_meta):
    expected = {
        "time_text_embed.timestep_embedder.linear_1.weight": (1536, 256),
        "time_text_embed.timestep_embedder.linear_1.bias": (1536,),
        "time_text_embed.timestep_embedder.linear_2.weight": (1536, 1536),
        "time_text_embed.timestep_embedder.linear_2.bias": (1536,),
        "txt_norm.0.weight": (2880,),
        "txt_norm.1.weight": (2880,),
        "txt_norm.2.weight": (2880,),
        "txt_norm.3.weight": (2880,),
        "txt_in.weight": (1536, 11520),
        "txt_in.bias": (1536,),
        "img_in.weight": (1536, 128),
        "img_in.bias": (1536,),
        "norm_out.linear.weight": (3072, 1536),
        "norm_out.linear.bias": (3072,),
        "proj_out.weight": (128, 1536),
        "proj_out.bias": (128,),
    }
    sd = official_meta.state_dict()
    non_block = {k: tuple(v.shape) for k, v in sd.items() if not k.startswith("transformer_blocks.")}
    assert non_block == expected
    assert sum(v.numel() for k, v in sd.items() if k in expected) == 25_579_904


def test_official_block_shapes_and_split(official_meta):
    d, m = 1536, 4096
    expected = {
        "attn.norm_q.weight": (64,),
        "attn.norm_k.weight": (64,),
        "attn.norm_added_q.weight": (64,),
        "attn.norm_added_k.weight": (64,),
        "attn.img_qkv.weight": (4608, d),
        "attn.img_qkv.bias": (4608,),
        "attn.txt_qkv.weight": (4608, d),
        "attn.txt_qkv.bias": (4608,),
        "attn.to_out.0.weight": (d, d),
        "attn.to_out.0.bias": (d,),
        "attn.to_add_out.weight": (d, d),
        "attn.to_add_out.bias": (d,),
        "img_mod.1.weight": (9216, d),
        "img_mod.1.bias": (9216,),
        "img_norm1.weight": (d,),
        "img_norm2.weight": (d,),
        "img_mlp.w1.weight": (m, d),
        "img_mlp.w3.weight": (m, d),
        "img_mlp.w2.weight": (d, m),
        "txt_mod.1.weight": (9216, d),
        "txt_mod.1.bias": (9216,),
        "txt_norm1.weight": (d,),
        "txt_norm2.weight": (d,),
        "txt_mlp.w1.weight": (m, d),
        "txt_mlp.w3.weight": (m, d),
        "txt_mlp.w2.weight": (d, m),
    }
    sd = official_meta.state_dict()
    for i in (0, 47):
        prefix = f"transformer_blocks.{i}."
        block = {k[len(prefix) :]: tuple(v.shape) for k, v in sd.items() if k.startswith(prefix)}
        assert block == expected
    assert not any(k.startswith("transformer_blocks.48.") for k in sd)
    block = official_meta.transformer_blocks[0]
    assert sum(p.numel() for p in block.parameters()) == 84_971_776
    parts = {"modulation": 0, "qkv": 0, "out": 0, "mlp": 0, "norms": 0}
    for name, p in block.named_parameters():
        key = (
            "modulation"
            if "_mod." in name
            else "qkv"
            if "_qkv." in name
            else "out"
            if "to_out" in name or "to_add_out" in name
            else "mlp"
            if "_mlp." in name
            else "norms"
            if "norm" in name
            else name
        )
        parts[key] += p.numel()
    assert parts == {
        "modulation": 28_329_984,
        "qkv": 14_164_992,
        "out": 4_721_664,
        "mlp": 37_748_736,
        "norms": 6_400,
    }
    assert 48 * 84_971_776 == 4_078_645_248 == 4_104_225_152 - 25_579_904


def test_class_attributes():
    cls = LensTransformer2DModel
    assert cls._supports_gradient_checkpointing is True
    assert cls._no_split_modules == ["LensTransformerBlock"]
    assert cls._repeated_blocks == ["LensTransformerBlock"]
    assert cls._skip_layerwise_casting_patterns == ["pos_embed", "norm"]
    from diffusers.loaders import FromOriginalModelMixin, PeftAdapterMixin
    from diffusers.models.cache_utils import CacheMixin

    assert issubclass(cls, (PeftAdapterMixin)) and issubclass(cls, FromOriginalModelMixin)
    assert issubclass(cls, CacheMixin)


def test_variant_gelu_mlp_names():
    model = small_model(gate_mlp=False)
    sd = model.state_dict()
    d = 64
    assert tuple(sd["transformer_blocks.0.img_mlp.net.0.proj.weight"].shape) == (4 * d, d)
    assert tuple(sd["transformer_blocks.0.img_mlp.net.0.proj.bias"].shape) == (4 * d,)
    assert tuple(sd["transformer_blocks.0.txt_mlp.net.2.weight"].shape) == (d, 4 * d)
    assert tuple(sd["transformer_blocks.0.txt_mlp.net.2.bias"].shape) == (d,)
    assert not any(".w1." in k or ".w2." in k or ".w3." in k for k in sd)
    # tanh-approximate GELU
    assert model.transformer_blocks[0].img_mlp.net[0].approximate == "tanh"
    out = model(**small_inputs())
    assert out.shape == (2, 12, 16) and torch.isfinite(out).all()


def test_variant_layernorm_blocks_have_no_norm_parameters():
    model = small_model(rms_norm=False)
    sd = model.state_dict()
    for name in ("img_norm1", "img_norm2", "txt_norm1", "txt_norm2"):
        assert not any(f".{name}." in k for k in sd)
    # QK norms stay RMSNorm with gains
    assert "transformer_blocks.0.attn.norm_q.weight" in sd
    assert len(sd) == len(small_model().state_dict()) - 2 * 4


def test_variant_single_layer_text_input():
    model = small_model(multi_layer_encoder_feature=False)
    sd = model.state_dict()
    assert tuple(sd["txt_norm.weight"].shape) == (24,)
    assert tuple(sd["txt_in.weight"].shape) == (64, 24)
    assert not any(k.startswith("txt_norm.0") for k in sd)
    inputs = small_inputs(n_layers=1)
    inputs["encoder_hidden_states"] = inputs["encoder_hidden_states"][0]
    assert model(**inputs).shape == (2, 12, 16)


def test_inner_dim_is_ignored_and_patch_size_only_sizes_proj_out():
    model = small_model(inner_dim=999, patch_size=3)
    assert model.img_in.out_features == 64
    assert model.proj_out.out_features == 9 * 4
    assert small_model(out_channels=None).proj_out.out_features == 4 * 16  # None → in_channels


def test_text_layers_are_normed_per_layer_and_concatenated_in_order():
    model = small_model()
    with torch.no_grad():
        for i, norm in enumerate(model.txt_norm):
            norm.weight.fill_(float(i + 1))
        model.txt_in.weight.zero_()
        model.txt_in.bias.zero_()
        model.txt_in.weight[0, 24 * 2] = 1.0  # read channel 0 of layer 2
    layers = [torch.randn(1, 3, 24) * (i + 1) for i in range(4)]
    got = model.embed_text(layers)[0, :, 0]
    x = layers[2][0, :, 0]
    rms = layers[2][0].pow(2).mean(-1).add(1e-5).rsqrt()
    assert torch.allclose(got, x * rms * 3.0, atol=1e-6)


def test_no_text_tokens_and_scalar_timestep():
    model = small_model()
    inputs = small_inputs(s_txt=0)
    out = model(**inputs)
    assert out.shape == (2, 12, 16)
    a = model(**{**inputs, "timestep": 0.5})
    b = model(**{**inputs, "timestep": torch.tensor([0.5, 0.5])})
    assert torch.equal(a, b)


def test_batch_elements_are_independent():
    model = small_model()
    inputs = small_inputs(batch=2)
    with torch.no_grad():
        both = model(**inputs)
        one = model(
            hidden_states=inputs["hidden_states"][1:],
            encoder_hidden_states=[e[1:] for e in inputs["encoder_hidden_states"]],
            encoder_hidden_states_mask=inputs["encoder_hidden_states_mask"][1:],
            timestep=inputs["timestep"][1:],
            img_shapes=inputs["img_shapes"],
        )
    assert torch.allclose(both[1:], one, atol=1e-5)


# ---- errors ---------------------------------------------------------------------------------------
def _call(model, **changes):
    inputs = small_inputs()
    inputs.update(changes)
    return model(**inputs)


def test_value_errors_multi_layer_in_order():
    model = small_model()
    good = small_inputs()
    layers = good["encoder_hidden_states"]
    with pytest.raises(ValueError, match="must be a list"):
        _call(model, encoder_hidden_states=layers[0])
    with pytest.raises(ValueError, match="has 3 layers"):
        _call(model, encoder_hidden_states=layers[:3])
    with pytest.raises(ValueError, match=r"encoder_hidden_states\[2\] has batch size 1"):
        _call(model, encoder_hidden_states=[layers[0], layers[1], layers[2][:1], layers[3]])
    with pytest.raises(ValueError, match=r"encoder_hidden_states\[3\] has 4 tokens"):
        _call(model, encoder_hidden_states=[layers[0], layers[1], layers[2], layers[3][:, :4]])
    with pytest.raises(ValueError, match="encoder_hidden_states_mask has shape"):
        _call(model, encoder_hidden_states_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="image RoPE table has 6 rows but there are 12"):
        _call(model, img_shapes=[(1, 2, 3)])
    # Order: a wrong layer count is reported before a wrong mask, a wrong mask before a wrong grid.
    with pytest.raises(ValueError, match="has 3 layers"):
        _call(model, encoder_hidden_states=layers[:3], encoder_hidden_states_mask=torch.ones(1, 1))
    with pytest.raises(ValueError, match="encoder_hidden_states_mask has shape"):
        _call(model, encoder_hidden_states_mask=torch.ones(2, 4), img_shapes=[(1, 1, 1)])
    with pytest.raises(ValueError, match="img_shapes is required"):
        _call(model, img_shapes=None)
    with pytest.raises(ValueError, match="timestep is required"):
        _call(model, timestep=None)
    # A larger grid is silently truncated (as officially).
    assert _call(model, img_shapes=[(1, 4, 4)]).shape == (2, 12, 16)


def test_value_errors_single_layer():
    model = small_model(multi_layer_encoder_feature=False)
    layer = small_inputs(n_layers=1)["encoder_hidden_states"][0]
    with pytest.raises(ValueError, match="must be one tensor"):
        _call(model, encoder_hidden_states=[layer])
    with pytest.raises(ValueError, match="has batch size 1"):
        _call(model, encoder_hidden_states=layer[:1])


def test_value_errors_inside_attention():
    torch.manual_seed(0)
    attn = LensJointAttention(64, 4, 16)
    x, c = torch.randn(2, 6, 64), torch.randn(2, 3, 64)
    img = torch.ones(6, 8, dtype=torch.complex64)
    txt = torch.ones(3, 8, dtype=torch.complex64)
    mask = joint_attention_mask(torch.ones(2, 3, dtype=torch.bool), 6)
    assert attn(x, c, (img, txt), mask)[0].shape == (2, 6, 64)
    with pytest.raises(ValueError, match="text RoPE table has 2 rows"):
        attn(x, c, (img, txt[:2]), mask)
    with pytest.raises(ValueError, match="attention mask must have shape"):
        attn(x, c, (img, txt), mask[:, :, :, :8])
    with pytest.raises(ValueError, match="image RoPE table"):
        attn(x, c, (img[:5], txt[:2]), mask[:, :, :, :8])  # the image check comes first


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="axes_dims_rope"):
        LensTransformer2DModel(**{**SMALL, "axes_dims_rope": (4, 6, 8)})
    with pytest.raises(ValueError, match="axes_dims_rope"):
        LensTransformer2DModel(**{**SMALL, "axes_dims_rope": (3, 7, 6)})


# ---- attention details ----------------------------------------------------------------------------
def test_attention_mask_is_additive_keys_only():
    mask = joint_attention_mask(torch.tensor([[True, False], [True, True]]), 3)
    assert mask.shape == (2, 1, 1, 5) and mask.dtype == torch.float32
    assert mask[0, 0, 0].tolist() == [0.0, 0.0, 0.0, 0.0, float("-inf")]
    assert (mask[1] == 0).all()


def test_attention_probs_match_sdpa_output():
    model = small_model()
    inputs = small_inputs()
    cap = {}
    block = model.transformer_blocks[0]
    block.attn.register_forward_hook(lambda m, a, o: cap.update(args=a, out=o))
    with torch.no_grad():
        model(**inputs)
        x, c, rope, mask = cap["args"]
        probs = block.attn.attention_probs(x, c, rope, mask)
        _, _, v = block.attn._qkv(x, c, rope, mask)
        merged = (probs @ v).transpose(1, 2).flatten(2)
        img = block.attn.to_out[0](merged[:, : x.shape[1]])
    assert probs.shape == (2, 4, 17, 17)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 4, 17), atol=1e-5)
    assert (probs[0, :, :, -2:] == 0).all()  # padded text keys get exactly zero weight
    assert torch.allclose(img, cap["out"][0], atol=1e-5)


def test_rope_tables_are_cached_and_usable_after_inference_mode():
    model = small_model()
    inputs = small_inputs()
    with torch.inference_mode():
        model(**inputs)
    first = model.pos_embed((1, 3, 4), 5, device="cpu")
    assert model.pos_embed([(1, 3, 4)], [5], device="cpu")[0] is first[0]
    loss = model(**inputs).square().mean()  # tables built under inference mode, now in autograd
    loss.backward()
    assert model.img_in.weight.grad is not None


# ---- checkpoints ----------------------------------------------------------------------------------
def _assert_loaded_cleanly(info):
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert info["mismatched_keys"] == [] and info["error_msgs"] == []


def test_save_load_single_file(tmp_path):
    model = small_model()
    inputs = small_inputs()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "LensTransformer2DModel"
    loaded, info = LensTransformer2DModel.from_pretrained(tmp_path, output_loading_info=True)
    _assert_loaded_cleanly(info)
    with torch.no_grad():
        assert torch.equal(model(**inputs), loaded.eval()(**inputs))


def test_save_load_sharded(tmp_path):
    model = small_model()
    inputs = small_inputs()
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    shards = sorted(p.name for p in tmp_path.glob("diffusion_pytorch_model-*-of-*.safetensors"))
    assert len(shards) >= 2
    assert shards[0] == f"diffusion_pytorch_model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((tmp_path / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(model.state_dict())
    loaded, info = LensTransformer2DModel.from_pretrained(tmp_path, output_loading_info=True)
    _assert_loaded_cleanly(info)
    with torch.no_grad():
        assert torch.equal(model(**inputs), loaded.eval()(**inputs))


def test_load_official_style_folder(tmp_path):
    """A folder laid out like the released ``transformer/``: config.json with the official keys and
    diffusers 0.37.1 stamp, weights under the official names written by plain safetensors."""
    model = small_model()
    config = {
        "_class_name": "LensTransformer2DModel",
        "_diffusers_version": "0.37.1",
        **SMALL,
        "axes_dims_rope": list(SMALL["axes_dims_rope"]),
        "gate_mlp": True,
        "rms_norm": True,
        "multi_layer_encoder_feature": True,
        "selected_layer_index": [5, 11, 17, 23],
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(tmp_path / "diffusion_pytorch_model.safetensors"),
    )
    loaded, info = LensTransformer2DModel.from_pretrained(tmp_path, output_loading_info=True)
    _assert_loaded_cleanly(info)
    inputs = small_inputs()
    with torch.no_grad():
        assert torch.equal(model(**inputs), loaded.eval()(**inputs))


# ---- training features ----------------------------------------------------------------------------
def _grads(model, inputs):
    model.zero_grad(set_to_none=True)
    model(**inputs).square().mean().backward()
    # The last block's text MLP cannot influence the image output, so it gets no gradient.
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients(monkeypatch):
    model = small_model().train()
    inputs = small_inputs()
    plain = _grads(model, inputs)
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing
    ckpt = _grads(model, inputs)
    assert len(calls) == SMALL["num_layers"]  # one checkpointed call per block
    assert set(plain) == set(ckpt)
    assert "transformer_blocks.0.txt_mlp.w1.weight" in plain and "img_in.weight" in plain
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], atol=1e-6, rtol=1e-5), name
    calls.clear()
    with torch.no_grad():
        model(**inputs)
    assert calls == []  # no checkpointing without grad
    model.disable_gradient_checkpointing()
    _grads(model, inputs)
    assert calls == []


def test_block_compiles_fullgraph():
    """torch.compile(fullgraph=True) raises on any graph break; a tiny block keeps this fast."""
    torch._dynamo.reset()
    model = small_model(num_layers=1)
    block = model.transformer_blocks[0]
    inputs = small_inputs()
    with torch.no_grad():
        x = model.img_in(inputs["hidden_states"])
        c = model.embed_text(inputs["encoder_hidden_states"])
        temb = model.time_text_embed(inputs["timestep"], x)
        rope = model.pos_embed(inputs["img_shapes"], 5)
        mask = joint_attention_mask(inputs["encoder_hidden_states_mask"], x.shape[1])
        eager = block(x, c, temb, rope, mask)
        compiled = torch.compile(block, fullgraph=True, backend="aot_eager")(x, c, temb, rope, mask)
    for a, b in zip(eager, compiled):
        assert torch.allclose(a, b, atol=1e-5)


def test_bf16_forward_close_to_fp32():
    model = small_model()
    inputs = small_inputs()
    with torch.no_grad():
        ref = model(**inputs)
        model_bf16 = small_model().to(torch.bfloat16)
        out = model_bf16(**{**inputs, "hidden_states": inputs["hidden_states"].to(torch.bfloat16)})
    assert out.dtype == torch.bfloat16
    rel = (out.float() - ref).norm() / ref.norm()
    assert rel < 0.03, rel
    # §2.11: with bf16 gains the normalised value is cast to bf16 *before* the gain multiply.
    norm = model_bf16.txt_norm[0]
    x = inputs["encoder_hidden_states"][0].to(torch.bfloat16)
    expect = (x.float() * x.float().pow(2).mean(-1, keepdim=True).add(1e-5).rsqrt()).to(
        torch.bfloat16
    ) * norm.weight
    assert torch.equal(norm(x), expect)


# ---- presets --------------------------------------------------------------------------------------
def test_lens_preset_is_the_official_config():
    assert get_config("lens") == OFFICIAL_CONFIG


def test_preset_sizes():
    counts = {name: sum(p.numel() for p in build_model(name, device="meta").parameters()) for name in PRESETS}
    assert counts["lens"] == 4_104_225_152
    assert 1.1e9 <= counts["lens-toy"] <= 1.3e9  # the paper's "1.2B backbone"
    assert counts["cpu-tiny"] <= 3_000_000
    assert counts["cpu-tiny"] < counts["cpu-small"] < counts["lens-toy"]
    toy = get_config("lens-toy")
    assert toy["enc_hidden_dim"] == 1024 and len(toy["selected_layer_index"]) == 4
    assert max(toy["selected_layer_index"]) == 27  # Qwen3-0.6B has 28 layers


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_config("lens-xl")
    for name in PRESETS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="unknown config keys"):
        get_config("cpu-tiny", hidden=3)


def test_cpu_config_overrides():
    pixel = cpu_config("cpu-tiny", in_channels=48, patch_size=4)
    assert (pixel["in_channels"], pixel["out_channels"], pixel["patch_size"]) == (48, 3, 4)
    latent = cpu_config(
        "cpu-tiny",
        in_channels=16,
        patch_size=2,
        enc_hidden_dim=1024,
        num_text_layers=4,
        text_encoder_layers=28,
    )
    assert (latent["out_channels"], latent["enc_hidden_dim"]) == (4, 1024)
    assert latent["selected_layer_index"] == [6, 13, 20, 27]
    model = LensTransformer2DModel(**latent)
    out = model(**small_inputs(grid=(1, 2, 2), enc=1024, in_ch=16, s_txt=3))
    assert out.shape == (2, 4, 16)  # velocity has the input width
    with pytest.raises(ValueError, match="divisible"):
        cpu_config("cpu-tiny", in_channels=50, patch_size=4)
    assert get_config("cpu-tiny", num_text_layers=2)["selected_layer_index"] == [2, 5]  # of MiniLM's 6
    assert len(get_config("cpu-tiny", num_text_layers=8)["selected_layer_index"]) == 8
    with pytest.raises(ValueError, match="not both"):
        get_config("cpu-tiny", num_text_layers=2, selected_layer_index=[0, 1])
    assert (
        sum(
            p.numel()
            for p in build_model(
                "cpu-tiny", device="meta", enc_hidden_dim=1024, num_text_layers=4, text_encoder_layers=28
            ).parameters()
        )
        <= 3_000_000
    )


def test_spread_layers_reproduces_lens_taps():
    assert spread_layers(24, 4) == [5, 11, 17, 23]  # GPT-OSS-20B, official code: GPT-OSS encoder
    assert spread_layers(6, 3) == [1, 3, 5]
    with pytest.raises(ValueError):
        spread_layers(4, 5)


def test_cpu_tiny_runs_in_pixel_space():
    model = build_model("cpu-tiny")
    g = torch.Generator().manual_seed(0)
    # 32×32 RGB image in 4×4 patches → an 8×8 grid of 48-wide tokens
    x = torch.randn(2, 64, 48, generator=g)
    text = [torch.randn(2, 7, 384, generator=g) for _ in range(3)]
    out = model(x, text, torch.ones(2, 7, dtype=torch.bool), torch.tensor([0.3, 0.9]), [(1, 8, 8)])
    assert out.shape == (2, 64, 48)


# ---- parameter accounting and attention capture (chapter 2) ---------------------------------------
def test_parameter_breakdown_matches_reference_split(official_meta):
    from lenslib.model.params import parameter_breakdown, weight_bytes

    rows = {r["part"]: r["parameters"] for r in parameter_breakdown(official_meta)}
    assert sum(rows.values()) == 4_104_225_152
    # §2.2 per-block split × 48 blocks
    assert rows["adaLN modulation"] == 48 * 28_329_984
    assert rows["fused QKV"] == 48 * 14_164_992
    assert rows["attention output"] == 48 * 4_721_664
    assert rows["MLP"] == 48 * 37_748_736
    assert rows["norms"] == 48 * 6_400
    assert weight_bytes(4_104_225_152) == 8_208_450_304  # 8.21 GB in bf16 (§2.2)


def test_capture_attention_probs_leaves_the_forward_untouched():
    from lenslib.model.attention import capture_attention_probs

    model = small_model()
    inputs = small_inputs()
    with torch.no_grad():
        ref = model(**inputs)
    probs = capture_attention_probs(model, block_index=1, **inputs)
    assert probs.shape == (2, 4, 17, 17)
    assert not model.transformer_blocks[1].attn._forward_hooks
    with torch.no_grad():
        assert torch.equal(model(**inputs), ref)


def test_initialize_weights_adaln_zero():
    model = small_model().initialize_weights()
    inputs = small_inputs()
    with torch.no_grad():
        assert torch.equal(model(**inputs), torch.zeros(2, 12, 16))  # zero output
        x = torch.randn(2, 12, 64)
        c = torch.randn(2, 5, 64)
        temb = torch.randn(2, 64)
        rope = model.pos_embed((1, 3, 4), 5)
        mask = joint_attention_mask(inputs["encoder_hidden_states_mask"], 12)
        c_out, x_out = model.transformer_blocks[0](x, c, temb, rope, mask)
    assert torch.equal(x_out, x) and torch.equal(c_out, c)  # every block starts as the identity
    model.train()
    model(**inputs).square().mean().backward()
    assert model.proj_out.weight.grad is None or model.proj_out.weight.grad.abs().sum() == 0  # zero loss grad
    model.zero_grad()
    # against a non-zero target the output layer learns first
    (model(**inputs) - 1).square().mean().backward()
    assert model.proj_out.bias.grad.abs().sum() > 0
    # without zero_init the output is not zero
    assert small_model().initialize_weights(zero_init=False)(**inputs).abs().sum() > 0


def test_pixel_stem_and_head_are_options_off_by_default_and_mix_across_patch_borders():
    """Not Lens: the CPU recipe's conv stem and head. Off, the state dict is exactly the official layout."""
    from lenslib.model.presets import get_config

    base = get_config("cpu-tiny", in_channels=3 * 16, patch_size=4, num_layers=2)
    plain = LensTransformer2DModel(**base).initialize_weights()
    for name in ("lens", "lens-toy"):
        assert get_config(name).get("pixel_stem", 0) == 0 and get_config(name).get("pixel_head", 0) == 0
    assert not any(k.startswith(("img_stem", "img_head")) for k in plain.state_dict())
    torch.manual_seed(0)
    both = LensTransformer2DModel(**base, pixel_stem=8, pixel_head=16).initialize_weights()
    assert both.img_in.in_features == 8 * 16

    # the head starts as the identity: the same weights give the same output with and without it
    headed = LensTransformer2DModel(**base, pixel_head=16)
    missing = headed.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == [
        "img_head.conv1.bias",
        "img_head.conv1.weight",
        "img_head.conv2.bias",
        "img_head.conv2.weight",
    ]
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.05)
    headed.load_state_dict(plain.state_dict(), strict=False)
    x, txt = torch.randn(2, 16, 48), [torch.randn(2, 3, 384) for _ in range(3)]
    kw = dict(timestep=torch.tensor([0.3, 0.8]), img_shapes=[(1, 4, 4)])
    torch.testing.assert_close(headed(x, txt, **kw), plain(x, txt, **kw))

    # the stem lets a pixel at a patch's right edge reach the next patch's embedding
    def embedding(model, tokens):
        return model.img_in(model.img_stem(tokens, (4, 4), 4) if model.img_stem is not None else tokens)

    edge = torch.zeros(1, 16, 48)
    edge[0, 0, 3] = 1.0  # token 0, channel 0, row 0, column 3 (its right border)
    zero = torch.zeros(1, 16, 48)
    assert torch.equal(embedding(plain, edge)[0, 1], embedding(plain, zero)[0, 1])
    assert not torch.allclose(embedding(both, edge)[0, 1], embedding(both, zero)[0, 1])
    assert both(x, txt, **kw).shape == (2, 16, 48)


def test_pixel_skip_gives_the_head_the_input_at_full_resolution_and_the_timestep():
    """Not Lens: with pixel_skip the head sees the stem's features of the noisy input, so a pixel of the input
    reaches the output at that pixel without passing through a token; with all transformer outputs at zero
    (a fresh model) the output then depends on the input only through the skip."""
    from lenslib.model.presets import get_config

    base = get_config("cpu-tiny", in_channels=3 * 16, patch_size=4, num_layers=1)
    with pytest.raises(ValueError, match="pixel_skip feeds the pixel_stem features"):
        LensTransformer2DModel(**base, pixel_head=16, pixel_skip=True)
    torch.manual_seed(0)
    model = LensTransformer2DModel(**base, pixel_stem=8, pixel_head=16, pixel_skip=True).initialize_weights()
    torch.nn.init.normal_(model.img_head.conv2.weight, std=0.05)  # a trained head
    x, txt = torch.randn(2, 16, 48), [torch.randn(2, 3, 384) for _ in range(3)]
    kw = dict(timestep=torch.tensor([0.3, 0.3]), img_shapes=[(1, 4, 4)])
    x2 = x.clone()
    x2[1, 5, 7] += 1.0  # one input pixel of the second sample
    out, out2 = model(x, txt, **kw), model(x2, txt, **kw)
    assert torch.equal(out[0], out2[0]) and not torch.allclose(out[1], out2[1])
    plain = LensTransformer2DModel(**base, pixel_stem=8, pixel_head=16).initialize_weights()
    torch.nn.init.normal_(plain.img_head.conv2.weight, std=0.05)
    assert torch.equal(
        plain(x, txt, **kw), plain(x2, txt, **kw)
    )  # without the skip the fresh model ignores x
    # the head is modulated by the timestep once its FiLM has learned something
    torch.nn.init.normal_(model.img_head.film.weight, std=0.5)
    later = dict(kw, timestep=torch.tensor([0.9, 0.9]))
    assert not torch.allclose(model(x, txt, **kw), model(x, txt, **later))


def _trained_tiny(num_layers: int):
    """The config of a 4x4-patch pixel model without options, and such a model with random (trained-like)
    weights."""
    from lenslib.model.presets import get_config

    base = get_config("cpu-tiny", in_channels=3 * 16, patch_size=4, num_layers=num_layers)
    torch.manual_seed(0)
    plain = LensTransformer2DModel(**base)
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return base, plain


def test_pooled_text_modulates_every_block_with_the_mean_of_the_valid_caption_tokens():
    """Not Lens: ``pooled_text`` adds the masked mean of the embedded caption to the timestep embedding. It
    starts at zero (the model is then the plain one), padding tokens do not move it, and a dropped caption
    adds nothing."""
    base, plain = _trained_tiny(num_layers=1)
    pooled = LensTransformer2DModel(**base, pooled_text=True).initialize_weights()
    assert pooled.load_state_dict(plain.state_dict(), strict=False).missing_keys == [
        "pooled_in.weight",
        "pooled_in.bias",
    ]
    assert torch.count_nonzero(pooled.pooled_in.weight) == 0
    x, txt = torch.randn(2, 16, 48), [torch.randn(2, 5, 384) for _ in range(3)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    kw = dict(timestep=torch.tensor([0.3, 0.8]), img_shapes=[(1, 4, 4)])
    torch.testing.assert_close(pooled(x, txt, mask, **kw), plain(x, txt, mask, **kw))

    torch.nn.init.normal_(pooled.pooled_in.weight, std=0.5)  # a trained path
    out = pooled(x, txt, mask, **kw)
    assert not torch.allclose(out, plain(x, txt, mask, **kw), atol=1e-4)
    # sample 0's padding (positions 3-4) changes neither the pooled vector nor the output
    txt2 = [t.clone() for t in txt]
    for t in txt2:
        t[0, 3:] = torch.randn(2, 384)
    torch.testing.assert_close(pooled(x, txt2, mask, **kw)[0], out[0])
    # a dropped caption (all tokens masked, the trainer's caption dropout) leaves only the timestep embedding
    dropped = torch.zeros_like(mask)
    pooled_out = pooled(x, txt, dropped, **kw)
    pooled.pooled_in.weight.data.zero_()
    pooled.pooled_in.bias.data.zero_()
    torch.testing.assert_close(pooled_out, pooled(x, txt, dropped, **kw))


def test_token_conv_starts_as_the_identity_and_mixes_only_neighbouring_tokens():
    """Not Lens: ``token_conv`` adds a residual depthwise 3x3 convolution over the token grid before each
    block. A new model equals the plain one; trained, a token's update depends on its 3x3 neighbourhood
    only."""
    from lenslib.model.locality import TokenConv

    base, plain = _trained_tiny(num_layers=2)
    conv = LensTransformer2DModel(**base, token_conv=True).initialize_weights()
    missing = conv.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == [f"token_convs.{i}.conv.{k}" for i in range(2) for k in ("bias", "weight")]
    x, txt = torch.randn(2, 16, 48), [torch.randn(2, 3, 384) for _ in range(3)]
    kw = dict(timestep=torch.tensor([0.3, 0.8]), img_shapes=[(1, 4, 4)])
    torch.testing.assert_close(conv(x, txt, **kw), plain(x, txt, **kw))

    layer = TokenConv(8)
    torch.nn.init.normal_(layer.conv.weight)
    tokens = torch.zeros(1, 16, 8)
    tokens[0, 5] = 1.0  # row 1, column 1 of a 4x4 grid
    moved = (layer(tokens, (4, 4)) - layer(torch.zeros(1, 16, 8), (4, 4)) - tokens).abs().sum(-1)[0]
    neighbours = {r * 4 + c for r in range(3) for c in range(3)}
    assert all((moved[i] > 0) == (i in neighbours) for i in range(16))
