"""``LensTransformer2DModel``: the Lens DiT, loadable from the official ``transformer/`` folder.

A dual-stream MMDiT in the style of SD3/FLUX/Qwen-Image:

- image tokens (already patchified VAE latents, [B, S_img, in_channels]) go through ``img_in``;
- the text encoder's tapped hidden layers (four GPT-OSS layers at the official config) are each
  RMS-normalised with their own gain, concatenated on the channel axis and projected by ``txt_in``;
- σ is embedded by a sinusoid + MLP (``time_text_embed``) into ``temb``, the only modulation signal;
- ``num_layers`` blocks each keep separate weights for the two streams (adaLN modulation, norms, QKV,
  output projection, MLP) and mix them only in a joint attention with 3-axis RoPE;
- a final adaLN (``norm_out``: scale first, then shift) and ``proj_out`` give the velocity per token.

Constructor arguments are exactly the official ``config.json`` keys (official code: transformer config.json)
and the state-dict names and shapes are exactly the official ones, so
``LensTransformer2DModel.from_pretrained("<Lens>/transformer")`` loads the released weights with no
conversion. The forward pass follows the official forward operation by operation and matches the official
golden outputs in float32. The block is :class:`lenslib.model.block.LensTransformerBlock`; the optional
convolutions that Lens does not have (``pixel_stem``, ``token_conv``, ``pixel_head``) are in
:mod:`lenslib.model.locality`.

Used in chapters 2 and later (sampling, training) and by :mod:`lenslib.model.presets`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormContinuous, RMSNorm
from diffusers.utils import apply_lora_scale
from torch import nn

from .attention import ATTENTION_MODES, joint_attention_mask, joint_key_mask
from .block import LensTransformerBlock
from .embeddings import LensTimestepEmbedding
from .fast import checkpoint_function
from .latents import latent_to_tokens
from .locality import PixelHead, PixelStem, TokenConv
from .rope import LensEmbedRope

try:  # optional mixins; present in diffusers 0.42
    from diffusers.loaders import FromOriginalModelMixin, PeftAdapterMixin
except ImportError:  # pragma: no cover
    FromOriginalModelMixin = PeftAdapterMixin = object  # type: ignore[misc,assignment]
try:
    from diffusers.models.cache_utils import CacheMixin
except ImportError:  # pragma: no cover
    CacheMixin = object  # type: ignore[misc,assignment]

_OPTIONAL_MIXINS = tuple(m for m in (PeftAdapterMixin, FromOriginalModelMixin, CacheMixin) if m is not object)


class LensTransformer2DModel(ModelMixin, ConfigMixin, *_OPTIONAL_MIXINS):
    """The Lens DiT (4,104,225,152 parameters at the defaults; the paper's "3.8B" is 3.82·2^30).

    Args (the official ``config.json`` keys, official defaults):
        patch_size: only sizes ``proj_out`` (width patch_size²·out_channels); the model does not patchify.
        in_channels: width of an input token (32 VAE channels × 2×2 = 128).
        out_channels: channels per output pixel of a patch; None/0 means ``in_channels``.
        num_layers: number of dual-stream blocks.
        attention_head_dim: D. num_attention_heads: H. The model width is H·D.
        inner_dim: stored for compatibility and ignored (the width is always H·D).
        enc_hidden_dim: width of each text-encoder layer fed in.
        axes_dims_rope: RoPE dims for the frame, row and column axes; even, summing to D.
        gate_mlp: SwiGLU MLPs (True) or diffusers FeedForward with tanh-GELU (False).
        rms_norm: block norms are RMSNorm (True) or LayerNorm without affine (False).
        multi_layer_encoder_feature: the text input is a list of per-layer tensors (True) or one tensor.
        selected_layer_index: text-encoder layers the pipeline taps; the model uses only its length.

    Options that are *not* Lens (off by default and in every ``lens`` preset, where the state dict stays
    exactly the official one; the CPU recipe of chapter 4 turns them on):
        pixel_stem: channels of a :class:`PixelStem` before ``img_in`` (0: none, Lens). The input is read
            as ``in_channels / patch_size²`` channels per pixel on ``patch_size`` x ``patch_size`` patches.
        pixel_head: hidden channels of a residual :class:`PixelHead` after ``proj_out`` (0: none, Lens).
        pixel_skip: the head also reads the stem's full-resolution features of the input and the timestep
            (a U-Net long skip; needs ``pixel_stem`` and ``pixel_head``).
        token_conv: a residual depthwise 3x3 :class:`TokenConv` over the image-token grid before every block.
        pooled_text: the mean of the embedded caption tokens is added to the timestep embedding, so every
            block's modulation sees the caption (SD3's pooled-text path, DiT's adaLN class conditioning);
            Lens reads the caption only through joint attention. Zero-initialised by ``initialize_weights``.

    Speed settings (not config: they are never saved and leave weights and the function unchanged;
    chapter 7): :meth:`set_fast_path` (attention without a float mask, regional ``torch.compile``) and
    :meth:`enable_selective_checkpointing`. The blocks always receive RoPE as real (cos, sin) tables.

    Forward: see :meth:`forward`. Used in chapter 2 and by the pipeline and the trainer.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["LensTransformerBlock"]
    _repeated_blocks = ["LensTransformerBlock"]
    _skip_layerwise_casting_patterns = ["pos_embed", "norm"]

    @register_to_config
    def __init__(
        self,
        patch_size: int = 2,
        in_channels: int = 128,
        out_channels: int | None = 32,
        num_layers: int = 48,
        attention_head_dim: int = 64,
        num_attention_heads: int = 24,
        inner_dim: int = 1536,
        enc_hidden_dim: int = 2880,
        axes_dims_rope: Sequence[int] = (8, 28, 28),
        gate_mlp: bool = True,
        rms_norm: bool = True,
        multi_layer_encoder_feature: bool = True,
        selected_layer_index: Sequence[int] = (5, 11, 17, 23),
        pixel_stem: int = 0,
        pixel_head: int = 0,
        pixel_skip: bool = False,
        pooled_text: bool = False,
        token_conv: bool = False,
    ):
        super().__init__()
        axes = [int(a) for a in axes_dims_rope]
        if len(axes) != 3 or any(a % 2 for a in axes) or sum(axes) != attention_head_dim:
            raise ValueError(
                f"axes_dims_rope={tuple(axes)} must be three even numbers summing to attention_head_dim="
                f"{attention_head_dim} (the official model uses (8, 28, 28) with 64)"
            )
        if multi_layer_encoder_feature and len(selected_layer_index) == 0:
            raise ValueError("selected_layer_index must name at least one text-encoder layer")
        self.out_channels = out_channels or in_channels
        dim = num_attention_heads * attention_head_dim  # config["inner_dim"] is ignored, as officially
        self.inner_dim = dim
        self.num_text_layers = len(selected_layer_index) if multi_layer_encoder_feature else 1

        self.pos_embed = LensEmbedRope(theta=10000, axes_dim=axes, scale_rope=True)
        self.time_text_embed = LensTimestepEmbedding(dim)
        if multi_layer_encoder_feature:
            self.txt_norm = nn.ModuleList([RMSNorm(enc_hidden_dim, eps=1e-5) for _ in selected_layer_index])
        else:
            self.txt_norm = RMSNorm(enc_hidden_dim, eps=1e-5)
        self.txt_in = nn.Linear(enc_hidden_dim * self.num_text_layers, dim)
        self.pooled_in = nn.Linear(dim, dim) if pooled_text else None
        patch_in = patch_size * patch_size
        if pixel_skip and not (pixel_stem and pixel_head):
            raise ValueError(
                "pixel_skip feeds the pixel_stem features to the pixel_head: set both (e.g. 16 and 32)"
            )
        if pixel_stem and in_channels % patch_in:
            raise ValueError(
                f"pixel_stem needs in_channels ({in_channels}) to be a multiple of patch_size² ({patch_in})"
            )
        self.img_stem = PixelStem(in_channels // patch_in, pixel_stem) if pixel_stem else None
        self.img_in = nn.Linear(pixel_stem * patch_in if pixel_stem else in_channels, dim)
        self.transformer_blocks = nn.ModuleList(
            [
                LensTransformerBlock(
                    dim,
                    num_attention_heads,
                    attention_head_dim,
                    gate_mlp=gate_mlp,
                    rms_norm=rms_norm,
                    eps=1e-6,
                )
                for _ in range(num_layers)
            ]
        )
        self.token_convs = nn.ModuleList([TokenConv(dim) for _ in range(num_layers)]) if token_conv else None
        self.norm_out = AdaLayerNormContinuous(dim, dim, elementwise_affine=False, eps=1e-6)
        self.proj_out = nn.Linear(dim, patch_size * patch_size * self.out_channels, bias=True)
        self.img_head = (
            PixelHead(self.out_channels, pixel_head, pixel_stem if pixel_skip else 0, dim)
            if pixel_head
            else None
        )
        self.gradient_checkpointing = False
        self.attention_mode = "reference"

    # -- speed ------------------------------------------------------------------------------------
    def set_fast_path(
        self, attention: str = "sdpa", compile_blocks: bool = False, **compile_kwargs
    ) -> "LensTransformer2DModel":
        """Choose how padded text is hidden in attention and optionally compile each block; returns ``self``.

        ``attention``: one of :data:`lenslib.model.attention.ATTENTION_MODES`. ``"reference"`` is the
        official float mask; ``"sdpa"`` and ``"flex"`` compute the same function without it (plain SDPA
        when no text token is padded, so the flash/cuDNN kernels apply; for padded batches grouped
        mask-free SDPA, or FlexAttention, which needs ``compile_blocks`` to be fast). Outputs agree with
        the reference to float rounding (1e-5 in float32, tested).

        ``compile_blocks``: regional ``torch.compile``: every block is compiled with ``compile_kwargs``
        (default ``fullgraph=True``, so a graph break is an error); the blocks share one class and one
        forward, so the graph is compiled once and reused by all of them. Compiling cannot be undone on
        this object. Used in chapter 7 and ``benchmarks/bench_gpu.py``.
        """
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention={attention!r} is not a mode; choose one of {list(ATTENTION_MODES)}")
        self.attention_mode = attention
        if compile_blocks:
            self.compile_repeated_blocks(**{"fullgraph": True, **compile_kwargs})
        return self

    def enable_selective_checkpointing(self, policy: str = "matmuls") -> None:
        """Activation checkpointing of every block with a selective policy of
        :data:`lenslib.model.fast.CHECKPOINT_POLICIES` (``"full"`` is plain checkpointing).

        Same gradients as without checkpointing, less activation memory (chapter 7 reports how much).
        The checkpoint runs inside each block's forward, so with ``set_fast_path(compile_blocks=True)``
        it is compiled with the block and the policy decides what the compiled block saves (as
        torchtitan does). Replaces ``enable_gradient_checkpointing``; ``disable_gradient_checkpointing``
        turns both off.
        """
        fn = checkpoint_function(policy)
        if self.gradient_checkpointing:
            super().disable_gradient_checkpointing()
        for block in self.transformer_blocks:
            block.checkpoint_fn = fn

    def enable_gradient_checkpointing(self, gradient_checkpointing_func=None) -> None:
        """Plain checkpointing of every block (diffusers' switch); replaces a selective policy."""
        for block in self.transformer_blocks:
            block.checkpoint_fn = None
        super().enable_gradient_checkpointing(gradient_checkpointing_func)

    def disable_gradient_checkpointing(self) -> None:
        """Turn off activation checkpointing, plain or selective."""
        for block in self.transformer_blocks:
            block.checkpoint_fn = None
        super().disable_gradient_checkpointing()

    # -- initialisation ---------------------------------------------------------------------------
    @torch.no_grad()
    def initialize_weights(self, zero_init: bool = True) -> "LensTransformer2DModel":
        """Re-initialise for training from scratch, DiT-style (Peebles & Xie, 2023); returns ``self``.

        Linear weights get Xavier-uniform and zero biases, the timestep MLP N(0, 0.02), norm gains 1.
        With ``zero_init`` (adaLN-Zero) the modulation linears, ``norm_out.linear`` and ``proj_out`` start
        at zero, so every block starts as the identity (all gates 0) and the model predicts 0: DiT found
        this trains faster and more stably than the default PyTorch initialisation that the constructor
        leaves (released weights are loaded over whatever is here, so this only matters from scratch).
        Used by the trainer and chapter 4.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (RMSNorm, nn.LayerNorm)) and getattr(module, "weight", None) is not None:
                nn.init.ones_(module.weight)
        embedder = self.time_text_embed.timestep_embedder
        nn.init.normal_(embedder.linear_1.weight, std=0.02)
        nn.init.normal_(embedder.linear_2.weight, std=0.02)
        if zero_init:
            for block in self.transformer_blocks:
                for mod in (block.img_mod[1], block.txt_mod[1]):
                    nn.init.zeros_(mod.weight)
                    nn.init.zeros_(mod.bias)
            convs = [c.conv for c in self.token_convs] if self.token_convs is not None else []
            pooled = [self.pooled_in] if self.pooled_in is not None else []
            for linear in (self.norm_out.linear, self.proj_out, *pooled, *convs):
                nn.init.zeros_(linear.weight)
                nn.init.zeros_(linear.bias)
        if self.img_head is not None and self.img_head.film is not None:  # starts unmodulated
            nn.init.zeros_(self.img_head.film.weight)
            nn.init.zeros_(self.img_head.film.bias)
        return self

    # -- inputs -----------------------------------------------------------------------------------
    def _check_text(self, encoder_hidden_states, batch: int) -> tuple[int, list[torch.Tensor] | torch.Tensor]:
        """The official input checks 1-2, in order; returns S_txt."""
        if self.config.multi_layer_encoder_feature:
            n = len(self.config.selected_layer_index)
            if not isinstance(encoder_hidden_states, (list, tuple)):
                raise ValueError(
                    f"encoder_hidden_states must be a list of {n} tensors "
                    f"[B, S_txt, {self.config.enc_hidden_dim}] "
                    f"(one per selected text-encoder layer), got {type(encoder_hidden_states).__name__}"
                )
            if len(encoder_hidden_states) != n:
                raise ValueError(
                    f"encoder_hidden_states has {len(encoder_hidden_states)} layers "
                    "but the model was built for "
                    f"{n} (selected_layer_index={list(self.config.selected_layer_index)})"
                )
            for i, layer in enumerate(encoder_hidden_states):
                if layer.shape[0] != batch:
                    raise ValueError(
                        f"encoder_hidden_states[{i}] has batch size {layer.shape[0]} "
                        f"but hidden_states has {batch}"
                    )
            s_txt = encoder_hidden_states[0].shape[1]
            for i, layer in enumerate(encoder_hidden_states):
                if layer.shape[1] != s_txt:
                    raise ValueError(
                        f"encoder_hidden_states[{i}] has {layer.shape[1]} tokens but layer 0 has {s_txt}; "
                        "all text layers must share one sequence length"
                    )
            return s_txt
        if not isinstance(encoder_hidden_states, torch.Tensor):
            raise ValueError(
                "encoder_hidden_states must be one tensor [B, S_txt, enc_hidden_dim] when "
                f"multi_layer_encoder_feature=False, got {type(encoder_hidden_states).__name__}"
            )
        if encoder_hidden_states.shape[0] != batch:
            raise ValueError(
                f"encoder_hidden_states has batch size {encoder_hidden_states.shape[0]} "
                f"but hidden_states has {batch}"
            )
        return encoder_hidden_states.shape[1]

    def embed_text(self, encoder_hidden_states) -> torch.Tensor:
        """Text adapter: per-layer RMSNorm, concatenation on channels (layer 0 first), ``txt_in``."""
        if self.config.multi_layer_encoder_feature:
            normed = [norm(layer) for norm, layer in zip(self.txt_norm, encoder_hidden_states)]
            return self.txt_in(torch.cat(normed, dim=-1))
        return self.txt_in(self.txt_norm(encoder_hidden_states))

    # -- forward ----------------------------------------------------------------------------------
    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: Sequence[torch.Tensor] | torch.Tensor,
        encoder_hidden_states_mask: torch.Tensor | None = None,
        timestep: torch.Tensor | float | None = None,
        img_shapes: Sequence[Sequence[int]] | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Predict the flow velocity for every image token.

        Args:
            hidden_states: [B, S_img, in_channels] packed latent tokens.
            encoder_hidden_states: list of len(selected_layer_index) tensors [B, S_txt, enc_hidden_dim]
                (one tensor in single-layer mode). S_txt may be 0.
            encoder_hidden_states_mask: [B, S_txt], True/nonzero = valid. None means all valid.
            timestep: σ ∈ [0, 1], shape [B] (a scalar is broadcast to the batch).
            img_shapes: list whose first element is the (frames, h_tokens, w_tokens) grid of the whole batch.
            attention_kwargs: accepted for API compatibility; only a LoRA ``scale`` is read (with PEFT).

        Returns:
            [B, S_img, patch_size²·out_channels], a bare tensor.
        """
        batch, s_img = hidden_states.shape[:2]
        s_txt = self._check_text(encoder_hidden_states, batch)
        if encoder_hidden_states_mask is None and self.attention_mode == "reference":
            encoder_hidden_states_mask = torch.ones(
                batch, s_txt, dtype=torch.bool, device=hidden_states.device
            )
        if encoder_hidden_states_mask is not None and tuple(encoder_hidden_states_mask.shape) != (
            batch,
            s_txt,
        ):
            raise ValueError(
                f"encoder_hidden_states_mask has shape {tuple(encoder_hidden_states_mask.shape)}, expected "
                f"(B, S_txt) = {(batch, s_txt)}"
            )
        if img_shapes is None:
            raise ValueError(
                "img_shapes is required: pass [(1, h_tokens, w_tokens)] for the batch's token grid"
            )
        if timestep is None:
            raise ValueError("timestep is required: pass σ in [0, 1], one value per sample ([B])")

        if self.attention_mode == "reference":
            attention_mask = joint_attention_mask(encoder_hidden_states_mask, s_img)
        else:  # None when nothing is padded: plain SDPA
            attention_mask = joint_key_mask(encoder_hidden_states_mask, s_img, self.attention_mode)
        grid, patch = tuple(img_shapes[0][1:]), self.config.patch_size
        skip = None
        if self.img_stem is not None:
            features = self.img_stem.features(hidden_states, grid, patch)
            skip = features if self.config.pixel_skip else None
            hidden_states = latent_to_tokens(features, patch)
        hidden_states = self.img_in(hidden_states)
        if not isinstance(timestep, torch.Tensor):
            timestep = torch.tensor(float(timestep), device=hidden_states.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(batch)
        timestep = timestep.to(hidden_states.dtype)
        encoder_hidden_states = self.embed_text(encoder_hidden_states)
        temb = self.time_text_embed(timestep, hidden_states)
        if self.pooled_in is not None:  # masked mean: a dropped or empty caption adds nothing
            if encoder_hidden_states_mask is None:  # the fast path's "no text token is padded"
                pooled = encoder_hidden_states.sum(1) / max(s_txt, 1)
            else:
                valid = encoder_hidden_states_mask.to(encoder_hidden_states.dtype).unsqueeze(-1)
                pooled = (encoder_hidden_states * valid).sum(1) / valid.sum(1).clamp_min(1.0)
            temb = temb + self.pooled_in(pooled)
        image_rotary_emb = self.pos_embed(img_shapes, s_txt, device=hidden_states.device, real=True)

        for i, block in enumerate(self.transformer_blocks):
            if self.token_convs is not None:
                hidden_states = self.token_convs[i](hidden_states, grid)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                encoder_hidden_states, hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, encoder_hidden_states, temb, image_rotary_emb, attention_mask
                )
            else:
                encoder_hidden_states, hidden_states = block(
                    hidden_states, encoder_hidden_states, temb, image_rotary_emb, attention_mask
                )

        hidden_states = self.proj_out(self.norm_out(hidden_states, temb))
        if self.img_head is not None:
            hidden_states = self.img_head(hidden_states, grid, patch, skip, temb)
        return hidden_states
