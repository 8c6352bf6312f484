"""LensPipeline: the official denoising loop (golden), folder loading, CPU generation, input checks."""

from __future__ import annotations

import importlib
import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors import safe_open
from safetensors.torch import load_file

from lenslib.model.pipeline import LensPipeline, LensPipelineOutput
from lenslib.model.pipeline_text import align_text_features
from lenslib.model.presets import cpu_config
from lenslib.model.schedule import compute_empirical_mu, make_scheduler
from lenslib.model.text_encoders import get_text_encoder
from lenslib.model.text_encoders.gpt_oss import LensGptOssEncoder
from lenslib.model.text_encoders.tiny_gpt_oss import tiny_gpt_oss
from lenslib.model.transformer import LensTransformer2DModel
from lenslib.model.vae import Flux2Codec, PixelCodec, tiny_flux2_vae

DATE = "2026-05-23"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def loop(golden_dir):
    return load_file(golden_dir / "pipeline_loop.safetensors")


@pytest.fixture(scope="module")
def golden_transformer(golden_dir):
    path = golden_dir / "tiny_transformer.safetensors"
    with safe_open(path, "pt") as f:
        config = json.loads(f.metadata()["config"])
    model = LensTransformer2DModel(**config)
    model.load_state_dict(load_file(path), strict=True)
    return model.eval()


def _golden_pipe(transformer, loop):
    vae = tiny_flux2_vae(latent_channels=4)
    vae.bn.running_mean.copy_(loop["vae.bn.running_mean"])
    vae.bn.running_var.copy_(loop["vae.bn.running_var"])
    assert vae.config.batch_norm_eps == loop["vae.batch_norm_eps"].item()
    pipe = LensPipeline(
        scheduler=make_scheduler(), vae=vae, text_encoder=None, tokenizer=None, transformer=transformer
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Recorder:
    """Spy on transformer inputs/outputs and on scheduler.step (as the golden capture did)."""

    def __init__(self, pipe):
        self.inputs, self.outputs, self.steps = [], [], []
        tr = pipe.transformer
        self.handles = [
            tr.register_forward_pre_hook(lambda m, a, k: self.inputs.append(k), with_kwargs=True),
            tr.register_forward_hook(lambda m, a, o: self.outputs.append(o)),
        ]
        sched = pipe.scheduler
        original = sched.step

        def step(model_output, timestep, sample, **kw):
            out = original(model_output, timestep, sample, **kw)
            self.steps.append((model_output.clone(), timestep.clone(), out[0].clone()))
            return out

        sched.step = step

    def close(self):
        for h in self.handles:
            h.remove()


def _close(a, b, tol=1e-5):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a.float() - b.float()).abs().max().item() <= tol


RUNS = {
    "p1": dict(
        prompt="p", negative_prompt="", height=48, width=80, num_inference_steps=3, guidance_scale=5.0
    ),
    "p2": dict(prompt=["p", "q"], height=64, width=64, num_inference_steps=2, guidance_scale=4.0),
    "p3": dict(
        prompt="p", negative_prompt="", height=64, width=64, num_inference_steps=4, guidance_scale=1.0
    ),
}


def _run_kwargs(name, loop):
    kw = dict(RUNS[name])
    kw["prompt_embeds"] = [loop[f"{name}.prompt_embeds.{i}"] for i in range(4)]
    kw["prompt_mask"] = loop[f"{name}.prompt_mask"] != 0
    if name == "p2":
        kw["negative_prompt_embeds"] = [loop[f"p2.negative_prompt_embeds.{i}"] for i in range(4)]
        kw["negative_prompt_mask"] = loop["p2.negative_prompt_mask"] != 0
        kw["generator"] = torch.Generator().manual_seed(7)
    else:
        kw["latents"] = loop[f"{name}.latents_init"]
    return kw


# --------------------------------------------------------------------------- golden loop


@pytest.mark.parametrize("name", ["p1", "p2", "p3"])
def test_official_denoising_loop(name, loop, golden_transformer):
    pipe = _golden_pipe(golden_transformer, loop)
    rec = Recorder(pipe)
    try:
        out = pipe(**_run_kwargs(name, loop), output_type="latent")
    finally:
        rec.close()
    g = {k[len(name) + 1 :]: v for k, v in loop.items() if k.startswith(name + ".")}
    T = g["scheduler_t"].shape[0]
    assert isinstance(out, LensPipelineOutput) and len(rec.inputs) == T == pipe.num_timesteps
    B = g["latents_init"].shape[0]
    first = rec.inputs[0]["hidden_states"]
    _close(first[:B], g["latents_init"], 0)  # p2: noise drawn by the pipeline in packed token layout
    _close(first[B:], g["latents_init"], 0)  # CFG batch = [latents; latents]
    for step, kw in enumerate(rec.inputs):
        for i in range(4):
            _close(kw["encoder_hidden_states"][i], g[f"transformer_in.encoder_hidden_states.{i}"], 0)
        assert torch.equal(kw["encoder_hidden_states_mask"], g["transformer_in.mask"] != 0)
        _close(kw["timestep"], g["transformer_in.timestep"][step], 0)
        assert list(kw["img_shapes"][0]) == [1, RUNS[name]["height"] // 16, RUNS[name]["width"] // 16]
    _close(torch.stack(rec.outputs), g["transformer_out"])
    _close(torch.stack([s[0] for s in rec.steps]), g["noise_pred"])
    _close(torch.stack([s[1] for s in rec.steps]), g["scheduler_t"], 0)
    _close(torch.stack([s[2] for s in rec.steps]), g["latents_after_step"])
    _close(pipe.scheduler.sigmas, g["sigmas"], 1e-6)
    _close(out.images, g["latents_final"])
    h, w = RUNS[name]["height"] // 16, RUNS[name]["width"] // 16
    _close(Flux2Codec(pipe.vae).decode_input(g["latents_final"], h, w), g["vae_decode_input"])


def test_decode_path_feeds_official_vae_input(loop, golden_transformer):
    pipe = _golden_pipe(golden_transformer, loop)
    seen = []
    original = pipe.vae.decode
    pipe.vae.decode = lambda z, *a, **k: (seen.append(z.clone()), original(z, *a, **k))[1]
    out = pipe(**_run_kwargs("p1", loop), output_type="np")
    _close(seen[0], loop["p1.vae_decode_input"])
    img = out.images
    assert img.dtype == np.float32 and img.shape == (1, 48, 80, 3) and img.min() >= 0 and img.max() <= 1


def test_bf16_timesteps_are_rounded_before_division(golden_dir, loop, golden_transformer):
    sched = load_file(golden_dir / "schedule.safetensors")
    pipe = _golden_pipe(golden_transformer, loop).to(torch.bfloat16)
    rec = Recorder(pipe)
    kw = _run_kwargs("p1", loop)
    try:
        out = pipe(**kw, output_type="latent")
    finally:
        rec.close()
    assert out.images.dtype == torch.bfloat16
    got = torch.stack([k["timestep"][0] for k in rec.inputs]).float()
    assert torch.equal(got, sched["sched.15x3.transformer_t_bf16"])
    assert not torch.equal(got, sched["sched.15x3.transformer_t_fp32"])


def test_align_text_features():
    p = [torch.ones(2, 5, 3)]
    n = [torch.ones(2, 3, 3)]
    pf, pm, nf, nm = align_text_features(
        p, torch.ones(2, 5, dtype=torch.bool), n, torch.ones(2, 3, dtype=torch.bool)
    )
    assert nf[0].shape == (2, 5, 3) and torch.equal(nf[0][:, 3:], torch.zeros(2, 2, 3))
    assert nm[:, :3].all() and not nm[:, 3:].any() and pm.all()
    with pytest.raises(ValueError, match="layers"):
        align_text_features(p, torch.ones(2, 5), n * 2, torch.ones(2, 3))
    with pytest.raises(ValueError, match="batch"):
        align_text_features(p, torch.ones(2, 5), [torch.ones(1, 3, 3)], torch.ones(1, 3))
    with pytest.raises(ValueError, match="mask"):
        align_text_features(p, torch.ones(2, 4), n, torch.ones(2, 3))
    with pytest.raises(ValueError, match="width"):
        align_text_features(p, torch.ones(2, 5), [torch.ones(2, 3, 4)], torch.ones(2, 3))
    with pytest.raises(ValueError, match="empty"):
        align_text_features([], torch.ones(2, 5), n, torch.ones(2, 3))


# --------------------------------------------------------------------------- tiny official-layout pipeline


def _tiny_official_pipe(seed=0):
    encoder, tokenizer = tiny_gpt_oss(num_hidden_layers=4, selected_layers=(1, 3))
    encoder.selected_layers = None  # the pipeline selects from the transformer config, as officially
    torch.manual_seed(seed)
    transformer = LensTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        inner_dim=32,
        enc_hidden_dim=encoder.config.hidden_size,
        axes_dims_rope=(4, 6, 6),
        selected_layer_index=(1, 3),
    )
    pipe = LensPipeline(
        scheduler=make_scheduler(),
        vae=tiny_flux2_vae(latent_channels=4),
        text_encoder=encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.prompt_date = DATE
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_constructor_selects_layers_and_sets_official_attributes():
    pipe = _tiny_official_pipe()
    assert pipe.text_encoder.selected_layers == [1, 3]
    assert pipe.vae_scale_factor == 16 and pipe.latent_channels == 16 and pipe.default_sample_size == 1024
    assert pipe.tokenizer.padding_side == "right"
    assert pipe.model_cpu_offload_seq == "text_encoder->transformer->vae"
    # the namespaces diffusers resolves model_index.json names in
    assert getattr(importlib.import_module("diffusers"), "LensTransformer2DModel") is LensTransformer2DModel
    assert getattr(importlib.import_module("diffusers"), "LensPipeline") is LensPipeline
    assert getattr(importlib.import_module("transformers"), "LensGptOssEncoder") is LensGptOssEncoder


def test_prompt_encoding_interleaving_and_negatives():
    pipe = _tiny_official_pipe()
    rec = Recorder(pipe)
    try:
        pipe(
            prompt=["a cat", "a red cube on a table"],
            num_images_per_prompt=2,
            height=32,
            width=32,
            num_inference_steps=1,
            output_type="latent",
            generator=torch.Generator().manual_seed(0),
        )
        pipe(
            prompt=["a cat", "a red cube on a table"],
            negative_prompt=["blurry", ""],
            height=32,
            width=32,
            num_inference_steps=1,
            output_type="latent",
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        rec.close()
    # run 1: rows p0, p0, p1, p1 (interleaved), then four zero negatives with all-False masks
    kw = rec.inputs[0]
    feats, mask = kw["encoder_hidden_states"], kw["encoder_hidden_states_mask"]
    assert feats[0].shape[0] == 8 and len(feats) == 2
    expected, exp_mask = pipe.encode_prompt(["a cat", "a red cube on a table"])
    for f, e in zip(feats, expected):
        torch.testing.assert_close(f[[0, 1]], e[[0, 0]])
        torch.testing.assert_close(f[[2, 3]], e[[1, 1]])
        assert torch.equal(f[4:], torch.zeros_like(f[4:]))  # empty negative: zeros at the positive's length
    assert torch.equal(mask[:4], exp_mask[[0, 0, 1, 1]]) and not mask[4:].any()
    # run 2: a non-blank negative makes every negative go through the template, "" included (suffix tokens)
    kw = rec.inputs[1]
    mask = kw["encoder_hidden_states_mask"]
    neg_feats, neg_mask = pipe.encode_prompt(["blurry", ""])
    assert neg_mask[1].sum() > 0  # the encoded "" still carries the assistant suffix
    S = mask.shape[1]
    assert torch.equal(mask[2:, : neg_mask.shape[1]], neg_mask) and not mask[2:, neg_mask.shape[1] :].any()
    torch.testing.assert_close(kw["encoder_hidden_states"][1][2:, : neg_mask.shape[1]], neg_feats[1])
    assert S == max(neg_mask.shape[1], exp_mask.shape[1])


def test_official_layout_folder_loads_unchanged(tmp_path):
    pipe = _tiny_official_pipe()
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    ref = pipe(
        prompt="a cat", height=32, width=48, num_inference_steps=2, output_type="latent", generator=gen()
    ).images
    # write components in the official layout and a hand-written official model_index.json
    pipe.scheduler.save_pretrained(tmp_path / "scheduler")
    pipe.vae.save_pretrained(tmp_path / "vae")
    pipe.text_encoder.save_pretrained(tmp_path / "text_encoder")
    pipe.tokenizer.save_pretrained(tmp_path / "tokenizer")
    pipe.transformer.save_pretrained(tmp_path / "transformer")
    index = {
        "_class_name": "LensPipeline",
        "_diffusers_version": "0.37.1",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "LensGptOssEncoder"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "transformer": ["diffusers", "LensTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLFlux2"],
    }
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    for loader in (DiffusionPipeline, LensPipeline):
        loaded = loader.from_pretrained(tmp_path)
        assert type(loaded) is LensPipeline and type(loaded.text_encoder) is LensGptOssEncoder
        assert loaded.text_encoder.selected_layers == [1, 3]
        loaded.prompt_date = DATE
        loaded.set_progress_bar_config(disable=True)
        out = loaded(
            prompt="a cat", height=32, width=48, num_inference_steps=2, output_type="latent", generator=gen()
        ).images
        torch.testing.assert_close(out, ref)


def test_save_load_round_trip_and_missing_components(tmp_path):
    pipe = _tiny_official_pipe()
    pipe.save_pretrained(tmp_path / "p")
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    assert index["_class_name"] == "LensPipeline"
    assert index["transformer"] == ["diffusers", "LensTransformer2DModel"]
    assert index["text_encoder"] == ["transformers", "LensGptOssEncoder"]
    assert index["vae"] == ["diffusers", "AutoencoderKLFlux2"]
    assert index["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "p")
    for a, b in zip(pipe.transformer.state_dict().values(), loaded.transformer.state_dict().values()):
        assert torch.equal(a, b)
    import shutil

    (tmp_path / "p" / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"\['vae'\].*no weights"):
        LensPipeline.from_pretrained(tmp_path / "p")
    shutil.rmtree(tmp_path / "p" / "transformer")
    with pytest.raises(FileNotFoundError, match="transformer"):
        LensPipeline.from_pretrained(tmp_path / "p")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        LensPipeline.from_pretrained(tmp_path)


# --------------------------------------------------------------------------- CPU end to end


@pytest.fixture(scope="module")
def cpu_pipe():
    encoder = get_text_encoder("minilm")
    torch.manual_seed(0)
    config = cpu_config(
        "cpu-tiny",
        in_channels=48,
        patch_size=4,
        enc_hidden_dim=encoder.hidden_size,
        num_text_layers=encoder.num_layers,
        text_encoder_layers=6,
    )
    transformer = LensTransformer2DModel(**config)
    pipe = LensPipeline(
        scheduler=make_scheduler(),
        vae=PixelCodec(patch_size=4),
        text_encoder=encoder,
        tokenizer=None,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_tiny_cpu_pipeline_generates_pil_images(cpu_pipe):
    call = dict(prompt=["a red circle", "a blue square"], height=32, width=48, num_inference_steps=2)
    out = cpu_pipe(**call, guidance_scale=5.0, generator=torch.Generator().manual_seed(0))
    assert len(out.images) == 2 and all(isinstance(im, PIL.Image.Image) for im in out.images)
    assert out.images[0].size == (48, 32) and out.images[0].mode == "RGB"
    # pil = uint8 by truncation of (clamp(x) + 1) * 255/2, x = decoded latents
    lat = cpu_pipe(
        **call, guidance_scale=5.0, generator=torch.Generator().manual_seed(0), output_type="latent"
    ).images
    x = cpu_pipe.vae.decode(lat, 8, 12)
    expect = torch.floor((x.clamp(-1, 1) + 1) * (255 / 2)).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    assert np.array_equal(np.stack([np.asarray(im) for im in out.images]), expect)
    (img,) = cpu_pipe(
        prompt="a red circle", height=32, width=32, num_inference_steps=1, output_type="np", return_dict=False
    )
    assert img.shape == (1, 32, 32, 3)


def test_callback_can_replace_latents(cpu_pipe):
    seen = []

    def cb(pipe, i, t, kw):
        seen.append((i, float(t), sorted(kw)))
        return {"latents": torch.zeros_like(kw["latents"])}

    out = cpu_pipe(
        prompt="x",
        height=16,
        width=16,
        num_inference_steps=2,
        output_type="latent",
        callback_on_step_end=cb,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
    )
    assert (
        [s[0] for s in seen] == [0, 1] and seen[0][2] == ["latents", "prompt_embeds"] and seen[0][1] == 1000.0
    )
    assert torch.equal(out.images, torch.zeros_like(out.images))


def test_generic_pipeline_save_load_with_registry_spec(cpu_pipe, tmp_path):
    cpu_pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "lens_text_encoder.json").read_text())["name"] == "minilm"
    assert cpu_pipe.text_encoder is not None
    loaded = LensPipeline.from_pretrained(tmp_path)
    assert type(loaded.vae) is PixelCodec and loaded.vae.patch == 4
    assert loaded.text_encoder.name == cpu_pipe.text_encoder.name
    loaded.set_progress_bar_config(disable=True)
    kw = dict(prompt="a red circle", height=16, width=16, num_inference_steps=2, output_type="latent")
    torch.testing.assert_close(
        loaded(**kw, generator=torch.Generator().manual_seed(1)).images,
        cpu_pipe(**kw, generator=torch.Generator().manual_seed(1)).images,
    )


# --------------------------------------------------------------------------- input checks


BAD_INPUTS = [
    (dict(prompt="x", height=40, width=32), "multiples of 16"),
    (dict(prompt="x", base_resolution=1024, aspect_ratio="5:4"), "aspect_ratio"),
    (dict(prompt="x", base_resolution=800, aspect_ratio="1:1"), "base_resolution"),
    (dict(prompt="x", base_resolution=1024), "go together"),
    (dict(prompt=[], height=32, width=32), "empty list"),
    (dict(height=32, width=32), "Provide a prompt"),
    (
        dict(prompt=["a", "b"], negative_prompt=["n1", "n2", "n3"], height=32, width=32),
        "negative_prompt has 3",
    ),
    (dict(prompt="x", height=32, width=32, output_type="tensor"), "output_type"),
    (dict(prompt="x", height=32, width=32, num_inference_steps=0), "num_inference_steps"),
    (dict(prompt="x", height=32, width=32, callback_on_step_end_tensor_inputs=["noise"]), "callback"),
    (dict(prompt="x", height=32, width=32, latents=torch.zeros(1, 5, 16)), "latents"),
    (dict(prompt="x", height=32, width=32, prompt_embeds=[torch.zeros(1, 3, 32)] * 2), "prompt_mask"),
    (
        dict(
            prompt="x",
            height=32,
            width=32,
            prompt_embeds=[torch.zeros(1, 3, 32)] * 2,
            prompt_mask=torch.ones(1, 3, dtype=torch.bool),
            negative_prompt_embeds=[torch.zeros(2, 3, 32)] * 2,
            negative_prompt_mask=torch.ones(2, 3, dtype=torch.bool),
        ),
        "negative_prompt_embeds batch",
    ),
    (
        dict(
            prompt="x",
            height=32,
            width=32,
            prompt_embeds=[torch.zeros(1, 3, 7)] * 2,
            prompt_mask=torch.ones(1, 3, dtype=torch.bool),
        ),
        r"prompt_embeds\[0\]",
    ),
]


@pytest.fixture(scope="module")
def spied_pipe():
    pipe = _tiny_official_pipe()
    calls = {"transformer": 0, "text_encoder": 0, "vae": 0}
    pipe.transformer.register_forward_pre_hook(
        lambda *a: calls.__setitem__("transformer", calls["transformer"] + 1)
    )
    pipe.text_encoder.register_forward_pre_hook(
        lambda *a: calls.__setitem__("text_encoder", calls["text_encoder"] + 1)
    )
    pipe.vae.register_forward_pre_hook(lambda *a: calls.__setitem__("vae", calls["vae"] + 1))
    return pipe, calls


@pytest.mark.parametrize("kwargs,match", BAD_INPUTS)
def test_bad_input_raises_before_any_compute(spied_pipe, kwargs, match):
    pipe, calls = spied_pipe
    with pytest.raises(ValueError, match=match):
        pipe(**kwargs)
    assert calls == {"transformer": 0, "text_encoder": 0, "vae": 0}


def test_missing_and_mismatched_components_raise_before_compute(loop, golden_transformer, cpu_pipe):
    calls = []
    h = golden_transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    h2 = cpu_pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(2))
    try:
        no_vae = LensPipeline(make_scheduler(), None, None, None, golden_transformer)
        with pytest.raises(ValueError, match="no text encoder"):
            no_vae(prompt="x", height=32, width=32, output_type="latent")
        emb = dict(prompt_embeds=[torch.zeros(1, 2, 24)] * 4, prompt_mask=torch.ones(1, 2, dtype=torch.bool))
        with pytest.raises(ValueError, match="needs a vae"):
            no_vae(**emb, height=32, width=32, output_type="pil")
        with pytest.raises(ValueError, match="no text encoder"):
            no_vae(**emb, negative_prompt="blurry", height=32, width=32, output_type="latent")
        mismatched = LensPipeline(
            make_scheduler(), PixelCodec(4), cpu_pipe.text_encoder, None, golden_transformer
        )
        with pytest.raises(ValueError, match="3 layers of width 384"):
            mismatched(prompt="x", height=32, width=32, output_type="latent")
        with pytest.raises(ValueError, match="48 channels"):
            mismatched(**emb, height=32, width=32, output_type="pil")
        # the local reasoner generates with GPT-OSS: a MiniLM pipeline cannot enable it
        with pytest.raises(ValueError, match="GPT-OSS text encoder"):
            cpu_pipe(prompt="x", height=16, width=16, enable_reasoner=True)
    finally:
        h.remove()
        h2.remove()
    assert calls == []


def test_mu_follows_the_token_count(cpu_pipe):
    cpu_pipe(prompt="x", height=16, width=32, num_inference_steps=3, output_type="latent")
    # 16x32 pixels with 4x4 pixel tokens -> 4x8 = 32 tokens
    s = cpu_pipe.scheduler.sigmas[1].item()
    mu = compute_empirical_mu(32, 3)
    e = np.exp(np.float32(mu))
    assert s == pytest.approx(float(e / (e + (1 / (1 - 1 / 3) - 1))), abs=1e-6)
