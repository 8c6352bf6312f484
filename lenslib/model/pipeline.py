"""``LensPipeline``: text -> image with the Lens DiT, following the official ``__call__`` step by step.

Components (official names, official code: LensPipeline): ``scheduler`` (FlowMatchEulerDiscreteScheduler),
``vae`` (AutoencoderKLFlux2, or a lenslib :class:`~lenslib.model.vae.PixelCodec` on CPU),
``text_encoder`` (:class:`~lenslib.model.text_encoders.gpt_oss.LensGptOssEncoder`, or any lenslib
:class:`~lenslib.model.text_encoders.TextEncoder` such as MiniLM), ``tokenizer`` (the GPT-OSS
harmony tokenizer; unused by generic encoders) and ``transformer`` (LensTransformer2DModel).

The call runs, in order: resolve the resolution, check *every* input (before any model runs),
encode prompts and negatives, align their lengths, build the CFG batch, draw the noise in packed
token layout, compute μ and the sigmas, run the Euler loop with norm-rescaled CFG (always, even at
guidance 1.0), decode with the BatchNorm inverse, post-process (uint8 by truncation). The text side
lives in :mod:`lenslib.model.pipeline_text`, the input checks in :mod:`lenslib.model.pipeline_checks`
and the folder layout (checks before loading, the text-encoder spec file) in
:mod:`lenslib.model.pipeline_folder`.

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

import importlib
import os
from dataclasses import dataclass
from typing import Callable

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
from .pipeline_checks import InputChecksMixin
from .pipeline_folder import check_folder, read_text_encoder_spec, write_text_encoder_spec
from .pipeline_text import PromptEncodingMixin, align_text_features, is_blank, negative_list
from .prompt_reasoner import PromptReasoner
from .resolution import resolve_resolution
from .schedule import compute_empirical_mu, sigma_inputs, transformer_timesteps
from .text_encoders.base import TextEncoder
from .text_encoders.gpt_oss import MAX_SEQUENCE_LENGTH, LensGptOssEncoder
from .transformer import LensTransformer2DModel
from .vae import LatentCodec, as_codec

__all__ = ["LensPipeline", "LensPipelineOutput", "register_official_classes"]


@dataclass
class LensPipelineOutput(BaseOutput):
    """``images``: list of PIL images, a float32 numpy array [B, H, W, 3] in [0, 1], or packed latent
    tokens."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


class LensPipeline(PromptEncodingMixin, InputChecksMixin, DiffusionPipeline):
    """The Lens text-to-image pipeline (official call signature and defaults).

    ``pipe.reasoner`` (:class:`~lenslib.model.prompt_reasoner.PromptReasoner`) takes ``api_url``/``api_key``/
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
        text_modules = dict(text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_modules(scheduler=scheduler, vae=vae, transformer=transformer, **text_modules)
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
    def codec(self) -> LatentCodec:
        return as_codec(self.vae)

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

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
            prompt=prompt,
            negative_prompt=negative_prompt,
            height=height,
            width=width,
            prompt_embeds=prompt_embeds,
            prompt_mask=prompt_mask,
            negative_prompt_embeds=negative_prompt_embeds,
            negative_prompt_mask=negative_prompt_mask,
            output_type=output_type,
            num_inference_steps=num_inference_steps,
            num_images_per_prompt=num_images_per_prompt,
            latents=latents,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            enable_reasoner=enable_reasoner,
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
            negs = negative_list(negative_prompt, n_prompts)
            if all(is_blank(n) for n in negs):
                # empty negative: zero features, all-False mask, at the positive's length
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
            write_text_encoder_spec(save_directory, spec)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load a local folder (official layout). Missing component folders raise a clear error first."""
        register_official_classes()
        path = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(path):
            check_folder(path, kwargs)
            if "text_encoder" not in kwargs:
                encoder = read_text_encoder_spec(path)
                if encoder is not None:
                    kwargs["text_encoder"] = encoder
        elif not os.path.exists(path) and os.environ.get("HF_HUB_OFFLINE") == "1":
            raise FileNotFoundError(
                f"Model folder {path!r} not found (offline): pass a local LensPipeline folder."
            )
        return super().from_pretrained(path, **kwargs)


def register_official_classes() -> None:
    """Put the official class names into the ``diffusers`` / ``transformers`` namespaces.

    transformers swaps its lazy module object in ``sys.modules`` during some imports, so both the
    object imported here and the current ``sys.modules`` entry get the names.
    """
    for module in {id(m): m for m in (diffusers, importlib.import_module("diffusers"))}.values():
        setattr(module, "LensTransformer2DModel", LensTransformer2DModel)
        setattr(module, "LensPipeline", LensPipeline)
    for module in {id(m): m for m in (transformers, importlib.import_module("transformers"))}.values():
        setattr(module, "LensGptOssEncoder", LensGptOssEncoder)


register_official_classes()
