"""Input checks of :class:`~lenslib.model.pipeline.LensPipeline`: bad input fails before any model runs.

A wrong prompt type, size, embedding shape, output type or component pairing is reported as one
``ValueError`` naming the fix, before the text encoder, the transformer or the VAE is called (the
official pipeline finds some of these only after minutes of compute). Used in chapter 4 through the
pipeline and by ``lens sample``.
"""

from __future__ import annotations

from .latents import check_divisible
from .pipeline_text import is_blank, negative_list
from .text_encoders.gpt_oss import LensGptOssEncoder

__all__ = ["OUTPUT_TYPES", "InputChecksMixin"]

OUTPUT_TYPES = ("pil", "np", "latent")


class InputChecksMixin:
    """:meth:`check_inputs`, mixed into :class:`~lenslib.model.pipeline.LensPipeline` (it reads the
    pipeline's components, ``reasoner`` and ``_text_spec``)."""

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
                    f"callback_on_step_end_tensor_inputs {bad} unknown; "
                    f"allowed: {self._callback_tensor_inputs}."
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
            negs = negative_list(negative_prompt, n_prompts)
            if not all(is_blank(n) for n in negs):
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
                    f"{n_layers} of width {width_txt}; "
                    "pair the transformer with the encoder it was trained with."
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
