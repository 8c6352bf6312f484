"""``LensPipeline``: text -> image with the Lens DiT, following the official ``__call__`` step by step.

Components (official names, reference §1/§8): ``scheduler`` (FlowMatchEulerDiscreteScheduler),
``vae`` (AutoencoderKLFlux2, or a lenslib :class:`~lenslib.model.vae.PixelCodec` on CPU),
``text_encoder`` (:class:`~lenslib.model.text_encoders.gpt_oss.LensGptOssEncoder`, or any lenslib
:class:`~lenslib.model.text_encoders.TextEncoder` such as MiniLM), ``tokenizer`` (the GPT-OSS
harmony tokenizer; unused by generic encoders) and ``transformer`` (LensTransformer2DModel).

The call runs, in order: resolve the resolution, check *every* input (before any model runs),
encode prompts and negatives, align their lengths, build the CFG batch, draw the noise in packed
token layout, compute μ and the sigmas, run the Euler loop with norm-rescaled CFG (always, even at
guidance 1.0), decode with the BatchNorm inverse, post-process (uint8 by truncation).

:meth:`LensPipeline.set_fast_path` (chapter 7) runs the same function faster: the conditional and
unconditional branches as two batches, each without the text columns that are padding in all of its
samples (the empty negative then has no text tokens at all), optionally replayed as CUDA graphs, and
the transformer's own fast path (:meth:`LensTransformer2DModel.set_fast_path`).

Importing this module registers ``LensTransformer2DModel`` and ``LensPipeline`` in the ``diffusers``
namespace and ``LensGptOssEncoder`` in ``transformers``, as the official package does, so an official
checkpoint folder loads unchanged with ``DiffusionPipeline.from_pretrained(local_dir)``.

Used in chapter 4 (sampling a trained model) and by ``lens sample``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable

import diffusers
import numpy as np
import PIL.Image
import torch
import transformers
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .cfg import norm_rescaled_cfg
from .fast import CUDAGraphStep, trim_text_padding
from .latents import check_divisible
from .reasoner import PromptReasoner
from .resolution import resolve_resolution
from .schedule import compute_empirical_mu, sigma_inputs, transformer_timesteps
from .text_encoders.base import TextEncoder
from .text_encoders.gpt_oss import (
    MAX_SEQUENCE_LENGTH,
    TXT_OFFSET,
    LensGptOssEncoder,
    encode_prompts,
    prefix_token_count,
)
from .transformer import LensTransformer2DModel
from .vae import LatentCodec, as_codec

__all__ = ["LensPipeline", "LensPipelineOutput", "align_text_features", "register_official_classes"]

OUTPUT_TYPES = ("pil", "np", "latent")
_SPEC_FILE = "lens_text_encoder.json"


@dataclass
class LensPipelineOutput(BaseOutput):
    """``images``: list of PIL images, a float32 numpy array [B, H, W, 3] in [0, 1], or packed latent tokens."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


def _is_blank(s: str | None) -> bool:
    return s is None or not str(s).strip()


def _negative_list(negative_prompt, n_prompts: int) -> list:
    """Broadcast a string or a 1-element list to ``n_prompts``; any other length mismatch is an error."""
    negs = (
        [negative_prompt]
        if negative_prompt is None or isinstance(negative_prompt, str)
        else list(negative_prompt)
    )
    if len(negs) == 1:
        return negs * n_prompts
    if len(negs) != n_prompts:
        raise ValueError(
            f"negative_prompt has {len(negs)} entries but there are {n_prompts} prompts; "
            "give one negative (broadcast) or one per prompt."
        )
    return negs


def _repeat_interleave(feats: list[torch.Tensor], mask: torch.Tensor, index: list[int]):
    idx = torch.tensor(index, device=mask.device, dtype=torch.long)
    return [f.index_select(0, idx.to(f.device)) for f in feats], mask.index_select(0, idx)


def align_text_features(
    pos: list[torch.Tensor], pos_mask: torch.Tensor, neg: list[torch.Tensor], neg_mask: torch.Tensor
):
    """Right-pad positive and negative features (zeros) and masks (False) to a common length (§5.6)."""
    if not pos or not neg:
        raise ValueError("Text features are empty: need at least one feature layer for prompt and negative.")
    if len(pos) != len(neg):
        raise ValueError(f"Prompt features have {len(pos)} layers but negative features have {len(neg)}.")
    for name, feats, mask in (("prompt", pos, pos_mask), ("negative", neg, neg_mask)):
        for i, f in enumerate(feats):
            if f.ndim != 3 or tuple(f.shape[:2]) != tuple(mask.shape):
                raise ValueError(
                    f"{name} feature layer {i} has shape {tuple(f.shape)} but its mask is "
                    f"{tuple(mask.shape)}; they must agree on [B, S]."
                )
    if pos_mask.shape[0] != neg_mask.shape[0]:
        raise ValueError(
            f"Prompt batch ({pos_mask.shape[0]}) and negative batch ({neg_mask.shape[0]}) differ."
        )
    for i, (p, n) in enumerate(zip(pos, neg)):
        if p.shape[2] != n.shape[2]:
            raise ValueError(f"Feature layer {i}: prompt width {p.shape[2]} != negative width {n.shape[2]}.")
    S = max(pos_mask.shape[1], neg_mask.shape[1])

    def pad(feats, mask):
        extra = S - mask.shape[1]
        if extra == 0:
            return list(feats), mask.bool()
        feats = [torch.cat([f, f.new_zeros(f.shape[0], extra, f.shape[2])], dim=1) for f in feats]
        mask = torch.cat([mask.bool(), mask.new_zeros(mask.shape[0], extra, dtype=torch.bool)], dim=1)
        return feats, mask

    return (*pad(pos, pos_mask), *pad(neg, neg_mask))


class LensPipeline(DiffusionPipeline):
    """The Lens text-to-image pipeline (official call signature and defaults).

    ``pipe.reasoner`` (:class:`~lenslib.model.reasoner.PromptReasoner`) takes ``api_url``/``api_key``/
    ``api_model`` attributes for an API rewriter. Extras over the official pipeline: every bad input
    (including ``output_type``) is rejected
    before any model runs; ``prompt_embeds`` works with ``prompt=None``; generic lenslib text
    encoders and ``PixelCodec`` are accepted so a tiny pipeline runs end to end on CPU; a pinned
    prompt date (``pipe.prompt_date = "YYYY-MM-DD"``) makes GPT-OSS features reproducible across days.
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    _optional_components = ["text_encoder", "tokenizer"]

    def __init__(
        self,
        scheduler: FlowMatchEulerDiscreteScheduler,
        vae,
        text_encoder,
        tokenizer,
        transformer: LensTransformer2DModel,
    ):
        super().__init__()
        self.register_modules(
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            transformer=transformer,
        )
        # model_index.json names the official libraries for the official classes.
        for name, obj in (("transformer", transformer), ("text_encoder", text_encoder)):
            if type(obj) in (LensTransformer2DModel, LensGptOssEncoder):
                lib = "diffusers" if name == "transformer" else "transformers"
                self.register_to_config(**{name: (lib, type(obj).__name__)})
        if isinstance(tokenizer, transformers.PreTrainedTokenizerFast):
            self.register_to_config(tokenizer=("transformers", "PreTrainedTokenizerFast"))
        if tokenizer is not None:
            tokenizer.padding_side = "right"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
        self.vae_scale_factor = as_codec(vae).downsample if vae is not None else 16
        self.latent_channels = transformer.config.in_channels if transformer is not None else None
        self.default_sample_size = 1024
        self.prompt_date: str | None = None  # None: today's date in the harmony header, as officially
        self._txt_offset: int | None = None
        self._last_refined_prompts: list[str] | None = None
        self.split_cfg = False
        self.cuda_graphs = False
        self._graph_steps: dict = {}  # captured transformer calls, by branch and shapes
        self.reasoner = PromptReasoner(text_encoder, tokenizer)
        if (
            isinstance(text_encoder, LensGptOssEncoder)
            and text_encoder.selected_layers is None
            and transformer is not None
        ):
            text_encoder.set_selected_layers(transformer.config.selected_layer_index)

    # ------------------------------------------------------------------ speed

    def set_fast_path(
        self, split_cfg: bool = True, cuda_graphs: bool = False, **transformer_fast_path
    ) -> "LensPipeline":
        """Sampling settings that keep the function and cut the time; returns ``self``. Chapter 7.

        ``split_cfg``: run the conditional and unconditional branches as two batches, each trimmed of
        text columns padded in all its samples (:func:`lenslib.model.fast.trim_text_padding`): with the
        empty negative the unconditional branch has zero text tokens instead of the conditional length
        of masked zeros, and a batch without padding runs attention with no mask. Same images up to
        float rounding (the default, ``False``, is the official single batch of 2B).
        ``cuda_graphs``: capture each branch's transformer call once and replay it every step (CUDA
        only; needs ``split_cfg`` and prompts without padding, e.g. one prompt).
        Other keyword arguments go to the transformer's ``set_fast_path`` (``attention``, ``compile_blocks``).
        """
        if cuda_graphs and not split_cfg:
            raise ValueError(
                "cuda_graphs needs split_cfg=True: the official CFG batch pads the empty negative, "
                "and a padded batch cannot be captured"
            )
        self.split_cfg, self.cuda_graphs = bool(split_cfg), bool(cuda_graphs)
        self._graph_steps.clear()
        if transformer_fast_path:
            self.transformer.set_fast_path(**transformer_fast_path)
        return self

    def _split_cfg_velocity(self, branches, latents, tau, img_shapes):
        """(v_cond, v_uncond) from one transformer call per branch, replayed from CUDA graphs if enabled.

        A branch's graph is captured on its first call at a shape and replayed by every later step and
        call at that shape (the text is copied into it like the latents)."""
        outs = []
        for i, (text, mask) in enumerate(branches):
            dynamic = dict(hidden_states=latents, timestep=tau, encoder_hidden_states=text)
            static = dict(encoder_hidden_states_mask=mask, img_shapes=img_shapes)
            if not self.cuda_graphs:
                outs.append(self.transformer(**dynamic, **static))
                continue
            key = (
                i,
                tuple(img_shapes[0]),
                latents.dtype,
                tuple(tuple(t.shape) for t in ([text] if isinstance(text, torch.Tensor) else text)),
                tuple(latents.shape),
            )
            if key not in self._graph_steps:
                self._graph_steps[key] = CUDAGraphStep(self.transformer, static, dynamic)
            outs.append(self._graph_steps[key](**dynamic))
        return outs

    # ------------------------------------------------------------------ properties

    @property
    def txt_offset(self) -> int:
        """Tokens dropped before the prompt: 97 for GPT-OSS (derived from the tokenizer when it has a chat template)."""
        if self._txt_offset is not None:
            return self._txt_offset
        if self.tokenizer is not None and getattr(self.tokenizer, "chat_template", None):
            return prefix_token_count(self.tokenizer, self.prompt_date)
        return TXT_OFFSET

    @txt_offset.setter
    def txt_offset(self, value: int | None) -> None:
        self._txt_offset = None if value is None else int(value)

    @property
    def codec(self) -> LatentCodec:
        return as_codec(self.vae)

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    # ------------------------------------------------------------------ text

    def _text_spec(self) -> tuple[int, int] | None:
        """(num_layers, hidden_size) of the text encoder, or None if there is none."""
        te = self.text_encoder
        if isinstance(te, LensGptOssEncoder):
            layers = te.selected_layers or list(self.transformer.config.selected_layer_index)
            return len(layers), int(te.config.hidden_size)
        if isinstance(te, TextEncoder):
            return te.num_layers, te.hidden_size
        return None

    def _encode_texts(self, texts: list[str], device, max_sequence_length: int):
        te = self.text_encoder
        if isinstance(te, LensGptOssEncoder):
            feats, mask = encode_prompts(
                te,
                self.tokenizer,
                texts,
                max_sequence_length=max_sequence_length,
                txt_offset=self.txt_offset,
                date=self.prompt_date,
            )
        else:
            feats, mask = te.encode(list(texts))
        return [f.to(device) for f in feats], mask.to(device).bool()

    def encode_prompt(
        self,
        prompt: list[str],
        device=None,
        num_images_per_prompt: int = 1,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
    ):
        """Encode each unique prompt once, then repeat ``num_images_per_prompt`` times, interleaved."""
        device = device or self._execution_device
        unique = list(dict.fromkeys(prompt))
        feats, mask = self._encode_texts(unique, device, max_sequence_length)
        index = [unique.index(p) for p in prompt for _ in range(num_images_per_prompt)]
        return _repeat_interleave(feats, mask, index)

    # ------------------------------------------------------------------ checks

    def check_inputs(
        self,
        prompt,
        negative_prompt,
        height,
        width,
        prompt_embeds,
        prompt_mask,
        negative_prompt_embeds,
        negative_prompt_mask,
        output_type,
        num_inference_steps,
        num_images_per_prompt,
        latents,
        callback_on_step_end_tensor_inputs,
        enable_reasoner,
    ):
        """Reject bad input with a ValueError naming the fix, before any model runs."""
        if self.transformer is None or self.scheduler is None:
            raise ValueError(
                "LensPipeline needs a transformer and a scheduler; load a complete model folder "
                "or pass both components."
            )
        if height is None or width is None:
            raise ValueError("height and width are required (or give base_resolution and aspect_ratio).")
        check_divisible(int(height), int(width), self.vae_scale_factor)
        if prompt is None and prompt_embeds is None:
            raise ValueError(
                "Provide a prompt (string or list of strings) or prompt_embeds with prompt_mask."
            )
        if prompt is not None:
            if isinstance(prompt, str):
                prompt = [prompt]
            if not isinstance(prompt, (list, tuple)) or not all(isinstance(p, str) for p in prompt):
                raise ValueError(
                    f"prompt must be a string or a list of strings, got {type(prompt).__name__}."
                )
            if len(prompt) == 0:
                raise ValueError("prompt is an empty list; give at least one prompt.")
        if callback_on_step_end_tensor_inputs is not None:
            bad = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
            if bad:
                raise ValueError(
                    f"callback_on_step_end_tensor_inputs {bad} unknown; allowed: {self._callback_tensor_inputs}."
                )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(
                f"output_type {output_type!r} is not supported; use one of {list(OUTPUT_TYPES)}."
            )
        if int(num_inference_steps) < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}.")
        if int(num_images_per_prompt) < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}.")
        if prompt is not None:
            self.reasoner.text_encoder, self.reasoner.tokenizer = self.text_encoder, self.tokenizer
            self.reasoner.check(enable_reasoner)
        if prompt_embeds is not None and prompt_mask is None:
            raise ValueError("prompt_embeds requires prompt_mask ([B, S] bool, True = valid).")
        if negative_prompt_embeds is not None and negative_prompt_mask is None:
            raise ValueError("negative_prompt_embeds requires negative_prompt_mask.")

        n_layers = (
            len(self.transformer.config.selected_layer_index)
            if self.transformer.config.multi_layer_encoder_feature
            else 1
        )
        width_txt = self.transformer.config.enc_hidden_dim
        for name, emb, mask in (
            ("prompt_embeds", prompt_embeds, prompt_mask),
            ("negative_prompt_embeds", negative_prompt_embeds, negative_prompt_mask),
        ):
            if emb is None:
                continue
            if not isinstance(emb, (list, tuple)) or len(emb) != n_layers:
                raise ValueError(
                    f"{name} must be a list of {n_layers} tensors [B, S, {width_txt}] (one per tapped layer)."
                )
            for i, f in enumerate(emb):
                if f.ndim != 3 or tuple(f.shape[:2]) != tuple(mask.shape) or f.shape[2] != width_txt:
                    raise ValueError(
                        f"{name}[{i}] has shape {tuple(f.shape)}; expected [B, S, {width_txt}] with "
                        f"[B, S] = mask shape {tuple(mask.shape)}."
                    )

        # batch sizes and which texts must be encoded
        n_prompts = len(prompt) if prompt_embeds is None else prompt_embeds[0].shape[0]
        total = n_prompts * (num_images_per_prompt if prompt_embeds is None else 1)
        needs_encoder = prompt_embeds is None
        if negative_prompt_embeds is None:
            negs = _negative_list(negative_prompt, n_prompts)
            if not all(_is_blank(n) for n in negs):
                needs_encoder = True
        elif negative_prompt_embeds[0].shape[0] != total:
            raise ValueError(
                f"negative_prompt_embeds batch {negative_prompt_embeds[0].shape[0]} does not match the "
                f"prompt batch {total}."
            )
        if needs_encoder:
            spec = self._text_spec()
            if spec is None:
                raise ValueError(
                    "This pipeline has no text encoder: pass prompt_embeds/prompt_mask (and a blank "
                    "negative or negative_prompt_embeds), or load a text_encoder."
                )
            if isinstance(self.text_encoder, LensGptOssEncoder) and self.tokenizer is None:
                raise ValueError(
                    "The GPT-OSS text encoder needs its tokenizer component (the harmony tokenizer folder)."
                )
            if spec != (n_layers, width_txt):
                raise ValueError(
                    f"Text encoder gives {spec[0]} layers of width {spec[1]} but the transformer expects "
                    f"{n_layers} of width {width_txt}; pair the transformer with the encoder it was trained with."
                )
        if output_type != "latent":
            if self.vae is None:
                raise ValueError("output_type needs a vae to decode; load one or use output_type='latent'.")
            if self.codec.token_channels != self.transformer.config.in_channels:
                raise ValueError(
                    f"vae tokens have {self.codec.token_channels} channels but the transformer takes "
                    f"{self.transformer.config.in_channels}."
                )
        if latents is not None:
            h, w = int(height) // self.vae_scale_factor, int(width) // self.vae_scale_factor
            expect = (total, h * w, self.transformer.config.in_channels)
            if tuple(latents.shape) != expect:
                raise ValueError(
                    f"latents have shape {tuple(latents.shape)}; expected packed tokens {expect}."
                )

    # ------------------------------------------------------------------ decode

    def _postprocess(self, image: torch.Tensor, output_type: str):
        if output_type == "np":
            return ((image.clamp(-1, 1) + 1) * 0.5).float().permute(0, 2, 3, 1).cpu().numpy()
        x = (image.clamp(-1, 1) + 1) * (255 / 2)
        x = x.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()  # truncation, as officially
        return [PIL.Image.fromarray(a) for a in x]

    # ------------------------------------------------------------------ call

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = "",
        height: int | None = None,
        width: int | None = None,
        base_resolution: int | None = None,
        aspect_ratio: str | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: list[torch.Tensor] | None = None,
        prompt_mask: torch.Tensor | None = None,
        negative_prompt_embeds: list[torch.Tensor] | None = None,
        negative_prompt_mask: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 - official default
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
        enable_reasoner: bool = False,
    ):
        """Generate images. Defaults are the official ones: 50 steps, CFG 4.0, 1024x1024.

        The README recommends 20 steps / CFG 5.0 for Lens, 4 / 1.0 for Lens-Turbo, 50 / 5.0 for Lens-Base.
        ``base_resolution`` + ``aspect_ratio`` (W:H, e.g. "16:9") pick an official bucket and override
        ``height``/``width``; otherwise a missing height or width defaults to 1024.
        """
        # 1. resolution
        if base_resolution is not None and aspect_ratio is not None:
            height, width = resolve_resolution(base_resolution, aspect_ratio)
        elif (base_resolution is None) != (aspect_ratio is None):
            raise ValueError(
                "base_resolution and aspect_ratio go together (e.g. 1024 and '1:1'); "
                "or pass explicit height and width."
            )
        else:
            height = height or self.default_sample_size
            width = width or self.default_sample_size

        # 2. checks (all of them, before any compute)
        self.check_inputs(
            prompt,
            negative_prompt,
            height,
            width,
            prompt_embeds,
            prompt_mask,
            negative_prompt_embeds,
            negative_prompt_mask,
            output_type,
            num_inference_steps,
            num_images_per_prompt,
            latents,
            callback_on_step_end_tensor_inputs,
            enable_reasoner,
        )
        self._guidance_scale = guidance_scale
        device = self._execution_device
        dtype = self.transformer.dtype
        h, w = int(height) // self.vae_scale_factor, int(width) // self.vae_scale_factor

        # 3. reasoner (API if configured, local GPT-OSS if enabled, else unchanged)
        prompts = None if prompt is None else ([prompt] if isinstance(prompt, str) else list(prompt))
        if prompts is not None:
            prompts = self.reasoner(prompts, enable_reasoner)
        self._last_refined_prompts = prompts

        # 4. encode prompts and negatives (supplied embeddings are used as they are, no repetition)
        embeds_given = prompt_embeds is not None
        if not embeds_given:
            prompt_embeds, prompt_mask = self.encode_prompt(
                prompts, device, num_images_per_prompt, max_sequence_length
            )
        else:
            prompt_embeds = [f.to(device) for f in prompt_embeds]
            prompt_mask = prompt_mask.to(device).bool()
        batch = prompt_mask.shape[0]
        if negative_prompt_embeds is None:
            n_prompts = batch if embeds_given else len(prompts)
            negs = _negative_list(negative_prompt, n_prompts)
            if all(_is_blank(n) for n in negs):
                # empty negative: zero features, all-False mask, at the positive's length (§5.6)
                negative_prompt_embeds = [torch.zeros_like(f) for f in prompt_embeds]
                negative_prompt_mask = torch.zeros_like(prompt_mask, dtype=torch.bool)
            else:
                reps = 1 if embeds_given else num_images_per_prompt
                negs = ["" if n is None else n for n in negs]
                negative_prompt_embeds, negative_prompt_mask = self.encode_prompt(
                    negs, device, reps, max_sequence_length
                )
        else:
            negative_prompt_embeds = [f.to(device) for f in negative_prompt_embeds]
            negative_prompt_mask = negative_prompt_mask.to(device).bool()

        # 5. align lengths; 6. CFG batch [positive; negative] in the transformer dtype
        prompt_embeds, prompt_mask, negative_prompt_embeds, negative_prompt_mask = align_text_features(
            prompt_embeds, prompt_mask, negative_prompt_embeds, negative_prompt_mask
        )
        text = [torch.cat([p, n], dim=0).to(dtype) for p, n in zip(prompt_embeds, negative_prompt_embeds)]
        text_mask = torch.cat([prompt_mask, negative_prompt_mask], dim=0)
        if not self.transformer.config.multi_layer_encoder_feature:
            text = text[0]
        branches = None
        if self.split_cfg:  # two batches, each without its all-padded text columns
            single = not self.transformer.config.multi_layer_encoder_feature
            branches = [
                trim_text_padding(feats[0] if single else feats, mask)
                for feats, mask in (
                    ([f.to(dtype) for f in prompt_embeds], prompt_mask),
                    ([f.to(dtype) for f in negative_prompt_embeds], negative_prompt_mask),
                )
            ]
            if self.cuda_graphs and any(mask is not None for _, mask in branches):
                raise ValueError(
                    "cuda_graphs needs text without padding in each CFG branch (prompts of one token "
                    "length, e.g. a single prompt); sample these prompts without cuda_graphs"
                )

        # 7. noise, drawn directly in packed token layout [B, S_img, C]
        shape = (batch, h * w, self.transformer.config.in_channels)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device=device, dtype=dtype)

        # 8. μ and sigmas
        mu = compute_empirical_mu(h * w, num_inference_steps)
        self.scheduler.set_timesteps(sigmas=sigma_inputs(num_inference_steps), device=device, mu=mu)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)

        # 9. denoising loop (CFG always runs)
        img_shapes = [(1, h, w)]
        with self.progress_bar(total=len(timesteps)) as progress:
            for i, t in enumerate(timesteps):
                tau = transformer_timesteps(t, latents.dtype)  # t in the latent dtype, then /1000
                if branches is not None:
                    v_cond, v_uncond = self._split_cfg_velocity(
                        branches, latents, tau.expand(batch), img_shapes
                    )
                else:
                    out = self.transformer(
                        hidden_states=torch.cat([latents, latents], dim=0),
                        encoder_hidden_states=text,
                        encoder_hidden_states_mask=text_mask,
                        timestep=tau.expand(2 * batch),
                        img_shapes=img_shapes,
                    )
                    v_cond, v_uncond = out.chunk(2, dim=0)
                noise_pred = norm_rescaled_cfg(v_cond, v_uncond, guidance_scale)
                latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
                if callback_on_step_end is not None:
                    local = {
                        "latents": latents,
                        "prompt_embeds": prompt_embeds,
                        "negative_prompt_embeds": negative_prompt_embeds,
                    }
                    cb_out = callback_on_step_end(
                        self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs}
                    )
                    if cb_out:
                        latents = cb_out.pop("latents", latents)
                progress.update()

        # 10. decode
        if output_type == "latent":
            images = latents
        else:
            images = self._postprocess(self.codec.decode(latents, h, w), output_type)

        # 11. offload hooks
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return LensPipelineOutput(images=images)

    # ------------------------------------------------------------------ save / load

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """Save in the official folder layout; a generic lenslib text encoder is saved as a registry spec."""
        te = self.text_encoder
        spec = None
        if isinstance(te, TextEncoder):
            if not hasattr(te, "registry_spec"):
                raise ValueError(
                    f"Text encoder {type(te).__name__} cannot be saved; save the pipeline with "
                    "text_encoder=None and pass it to from_pretrained(..., text_encoder=...)."
                )
            spec = te.registry_spec()
            self.register_modules(text_encoder=None)
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if spec is not None:
                self.register_modules(text_encoder=te)
        if spec is not None:
            path = os.path.join(os.fspath(save_directory), _SPEC_FILE)
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(spec, f, indent=2)
            os.replace(tmp, path)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load a local folder (official layout). Missing component folders raise a clear error first."""
        register_official_classes()
        path = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(path):
            _check_folder(path, kwargs)
            spec_path = os.path.join(path, _SPEC_FILE)
            if "text_encoder" not in kwargs and os.path.isfile(spec_path):
                from .text_encoders import get_text_encoder

                with open(spec_path) as f:
                    spec = json.load(f)
                kwargs["text_encoder"] = get_text_encoder(spec["name"], **spec.get("kwargs", {}))
        elif not os.path.exists(path) and os.environ.get("HF_HUB_OFFLINE") == "1":
            raise FileNotFoundError(
                f"Model folder {path!r} not found (offline): pass a local LensPipeline folder."
            )
        return super().from_pretrained(path, **kwargs)


def _check_folder(path: str, passed: dict[str, Any]) -> None:
    index = os.path.join(path, "model_index.json")
    if not os.path.isfile(index):
        raise FileNotFoundError(
            f"{path!r} has no model_index.json; it is not a pipeline folder "
            "(expected scheduler/, vae/, text_encoder/, tokenizer/, transformer/)."
        )
    with open(index) as f:
        entries = json.load(f)
    missing, no_weights = [], []
    for name, value in entries.items():
        if name.startswith("_") or name in passed or not isinstance(value, list) or value[0] is None:
            continue
        folder = os.path.join(path, name)
        if not os.path.isdir(folder) or not os.listdir(folder):
            missing.append(name)
            continue
        is_model = not any(k in str(value[1]) for k in ("Scheduler", "Tokenizer"))
        if is_model and not any(
            f.endswith((".safetensors", ".bin", ".index.json")) for f in os.listdir(folder)
        ):
            no_weights.append(name)
    if missing:
        raise FileNotFoundError(
            f"Pipeline folder {path!r} lacks component folder(s) {missing} named in model_index.json; "
            "copy them from the checkpoint or pass those components to from_pretrained."
        )
    if no_weights:
        raise FileNotFoundError(
            f"Component folder(s) {no_weights} in {path!r} have no weights file "
            "(*.safetensors / *.bin); the checkpoint copy is incomplete."
        )


def register_official_classes() -> None:
    """Put the official class names into the ``diffusers`` / ``transformers`` namespaces.

    transformers swaps its lazy module object in ``sys.modules`` during some imports, so both the
    object imported here and the current ``sys.modules`` entry get the names.
    """
    import importlib

    for module in {id(m): m for m in (diffusers, importlib.import_module("diffusers"))}.values():
        setattr(module, "LensTransformer2DModel", LensTransformer2DModel)
        setattr(module, "LensPipeline", LensPipeline)
    for module in {id(m): m for m in (transformers, importlib.import_module("transformers"))}.values():
        setattr(module, "LensGptOssEncoder", LensGptOssEncoder)


register_official_classes()
