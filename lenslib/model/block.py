"""``LensTransformerBlock``: one dual-stream block of the Lens DiT, and its SwiGLU MLP (paper §2).

Each block keeps separate weights for the image and the text stream (adaLN modulation, norms, MLP) and
mixes the two only in the joint attention of :mod:`lenslib.model.attention`. Module and parameter names
are the official ones (official code: transformer block), so the official state dict loads unchanged.
Used in chapter 2, by :class:`lenslib.model.transformer.LensTransformer2DModel` (48 of these at the
official size) and by :mod:`lenslib.model.flops` (the MLP width).
"""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.normalization import RMSNorm
from diffusers.utils.torch_utils import maybe_allow_in_graph
from torch import nn

from .attention import LensJointAttention

__all__ = ["LensSwiGLU", "LensTransformerBlock", "swiglu_hidden_dim"]


def swiglu_hidden_dim(dim: int) -> int:
    """Hidden width of the SwiGLU MLP: int(dim / 3 · 8), i.e. 4096 for dim 1536 and 170 for dim 64."""
    return int(dim / 3 * 8)


class LensSwiGLU(nn.Module):
    """MLP(u) = w2(SiLU(w1·u) ⊙ w3·u), no biases: w1 is the gate, w3 the up and w2 the down projection.

    SwiGLU with a hidden width of 8/3·dim costs the same as a 4·dim GELU MLP (three matrices instead
    of two) and trains better (Shazeer, 2020)."""

    def __init__(self, dim: int, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or swiglu_hidden_dim(dim)
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))


def _block_norm(dim: int, rms_norm: bool, eps: float) -> nn.Module:
    # rms_norm=False: LayerNorm without affine parameters (no state-dict entries).
    return RMSNorm(dim, eps=eps) if rms_norm else nn.LayerNorm(dim, eps=eps, elementwise_affine=False)


@maybe_allow_in_graph
class LensTransformerBlock(nn.Module):
    """One dual-stream block. Returns ``(text, image)``, text first, as the official block does.

    Per stream: adaLN modulation from temb (shift, scale, gate for attention, then for the MLP),
    x ← x + gate₁·Attn(norm1(x)·(1+scale₁)+shift₁) and x ← x + gate₂·MLP(norm2(x)·(1+scale₂)+shift₂).
    Gates are raw (no tanh/sigmoid). The streams meet only inside the joint attention.
    """

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        gate_mlp: bool = True,
        rms_norm: bool = True,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.dim = dim
        # Module creation order = official state-dict order.
        self.attn = LensJointAttention(dim, num_attention_heads, attention_head_dim, eps=eps)
        self.img_mod = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.img_norm1 = _block_norm(dim, rms_norm, eps)
        self.img_norm2 = _block_norm(dim, rms_norm, eps)
        self.img_mlp = (
            LensSwiGLU(dim) if gate_mlp else FeedForward(dim, dim_out=dim, activation_fn="gelu-approximate")
        )
        self.txt_mod = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.txt_norm1 = _block_norm(dim, rms_norm, eps)
        self.txt_norm2 = _block_norm(dim, rms_norm, eps)
        self.txt_mlp = (
            LensSwiGLU(dim) if gate_mlp else FeedForward(dim, dim_out=dim, activation_fn="gelu-approximate")
        )
        # A selective checkpoint of the whole block (lenslib.model.fast.checkpoint_function), applied inside
        # forward so that a compiled block compiles the checkpoint and its policy with it.
        self.checkpoint_fn = None

    @staticmethod
    def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return x * (1 + scale[:, None]) + shift[:, None]

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        args = (hidden_states, encoder_hidden_states, temb, image_rotary_emb, attention_mask)
        if self.checkpoint_fn is not None and torch.is_grad_enabled():
            return self.checkpoint_fn(self._forward, *args)
        return self._forward(*args)

    def _forward(self, hidden_states, encoder_hidden_states, temb, image_rotary_emb, attention_mask):
        img_shift1, img_scale1, img_gate1, img_shift2, img_scale2, img_gate2 = self.img_mod(temb).chunk(
            6, dim=-1
        )
        txt_shift1, txt_scale1, txt_gate1, txt_shift2, txt_scale2, txt_gate2 = self.txt_mod(temb).chunk(
            6, dim=-1
        )

        x_mod = self._modulate(self.img_norm1(hidden_states), img_shift1, img_scale1)
        c_mod = self._modulate(self.txt_norm1(encoder_hidden_states), txt_shift1, txt_scale1)
        img_attn, txt_attn = self.attn(x_mod, c_mod, image_rotary_emb, attention_mask)
        hidden_states = hidden_states + img_gate1[:, None] * img_attn
        encoder_hidden_states = encoder_hidden_states + txt_gate1[:, None] * txt_attn

        x_mod = self._modulate(self.img_norm2(hidden_states), img_shift2, img_scale2)
        hidden_states = hidden_states + img_gate2[:, None] * self.img_mlp(x_mod)
        c_mod = self._modulate(self.txt_norm2(encoder_hidden_states), txt_shift2, txt_scale2)
        encoder_hidden_states = encoder_hidden_states + txt_gate2[:, None] * self.txt_mlp(c_mod)
        return encoder_hidden_states, hidden_states
