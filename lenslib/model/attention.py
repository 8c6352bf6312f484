"""Joint (MMDiT) attention of Lens: image and text tokens attend to each other in one softmax.

Each stream has its own fused QKV projection, its own QK RMSNorms (eps 1e-6) and its own output
projection; only the attention itself is shared. The sequence is ordered image first, then text.
Text padding is hidden with an additive key mask (0 for valid keys, -inf for padded ones), so image
tokens never read padded text, whatever values those positions hold (reference §2.7-§2.8).

The main path is ``torch.nn.functional.scaled_dot_product_attention``. :meth:`LensJointAttention.
attention_probs` recomputes the softmax weights explicitly for inspection (chapter 2 draws an
attention map with it); it is not used in the forward pass.

Used in chapter 2 and by :class:`lenslib.model.transformer.LensTransformerBlock`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.normalization import RMSNorm
from torch import nn

from .rope import apply_rotary_emb


def joint_attention_mask(encoder_hidden_states_mask: torch.Tensor, num_image_tokens: int) -> torch.Tensor:
    """Additive float32 key mask [B, 1, 1, S_img + S_txt]: 0 where valid, -inf where padded.

    Image keys are always valid, so no softmax row is ever fully masked (no NaN).
    """
    batch = encoder_hidden_states_mask.shape[0]
    valid = torch.cat(
        [
            torch.ones(batch, num_image_tokens, dtype=torch.bool, device=encoder_hidden_states_mask.device),
            encoder_hidden_states_mask.to(torch.bool),
        ],
        dim=1,
    )
    mask = torch.zeros(valid.shape, dtype=torch.float32, device=valid.device)
    mask = mask.masked_fill(~valid, float("-inf"))
    return mask[:, None, None, :]


class LensJointAttention(nn.Module):
    """Dual-stream attention with fused QKV. Parameter names match the official checkpoint:
    ``img_qkv``, ``txt_qkv``, ``norm_q``, ``norm_k``, ``norm_added_q``, ``norm_added_k``, ``to_out.0``,
    ``to_add_out``."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.norm_q = RMSNorm(head_dim, eps=eps)
        self.norm_k = RMSNorm(head_dim, eps=eps)
        self.norm_added_q = RMSNorm(head_dim, eps=eps)
        self.norm_added_k = RMSNorm(head_dim, eps=eps)
        self.img_qkv = nn.Linear(dim, 3 * dim)
        self.txt_qkv = nn.Linear(dim, 3 * dim)
        # A (Linear, Identity) pair, hence the official name ``to_out.0``.
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Identity()])
        self.to_add_out = nn.Linear(dim, dim)

    def _split_qkv(self, qkv: torch.Tensor):
        # Output feature j = s·dim + h·D + e (s = Q/K/V, h = head, e = channel): layout [3, H, D].
        batch, seq = qkv.shape[:2]
        return qkv.view(batch, seq, 3, self.num_heads, self.head_dim).unbind(2)

    def _qkv(self, hidden_states, encoder_hidden_states, image_rotary_emb, attention_mask):
        """Q, K, V [B, H, S_img + S_txt, D] (image first) after QK norm and RoPE; validates inputs."""
        img_freqs, txt_freqs = image_rotary_emb
        s_img, s_txt = hidden_states.shape[1], encoder_hidden_states.shape[1]
        if img_freqs.shape[0] < s_img:
            raise ValueError(
                f"the image RoPE table has {img_freqs.shape[0]} rows but there are {s_img} image tokens; "
                "img_shapes must describe a grid with f·h·w >= the number of image tokens"
            )
        if txt_freqs.shape[0] < s_txt:
            raise ValueError(
                f"the text RoPE table has {txt_freqs.shape[0]} rows but there are {s_txt} text tokens"
            )
        expected = (hidden_states.shape[0], 1, 1, s_img + s_txt)
        if attention_mask is None or tuple(attention_mask.shape) != expected:
            got = None if attention_mask is None else tuple(attention_mask.shape)
            raise ValueError(f"the attention mask must have shape {expected} (B, 1, 1, S_img + S_txt), got {got}")

        img_q, img_k, img_v = self._split_qkv(self.img_qkv(hidden_states))
        txt_q, txt_k, txt_v = self._split_qkv(self.txt_qkv(encoder_hidden_states))
        img_q, img_k = self.norm_q(img_q), self.norm_k(img_k)
        txt_q, txt_k = self.norm_added_q(txt_q), self.norm_added_k(txt_k)

        img_freqs = img_freqs[:s_img]  # a larger grid is silently truncated, as in the official code
        img_q = apply_rotary_emb(img_q, img_freqs)
        img_k = apply_rotary_emb(img_k, img_freqs)
        if s_txt > 0:
            txt_freqs = txt_freqs[:s_txt]
            txt_q = apply_rotary_emb(txt_q, txt_freqs)
            txt_k = apply_rotary_emb(txt_k, txt_freqs)

        q = torch.cat([img_q, txt_q], dim=1).transpose(1, 2)
        k = torch.cat([img_k, txt_k], dim=1).transpose(1, 2)
        v = torch.cat([img_v, txt_v], dim=1).transpose(1, 2)
        return q, k, v

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image [B, S_img, dim], text [B, S_txt, dim]) → (image_out, text_out)."""
        q, k, v = self._qkv(hidden_states, encoder_hidden_states, image_rotary_emb, attention_mask)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask.to(q.dtype), dropout_p=0.0,
                                             is_causal=False)
        out = out.transpose(1, 2).flatten(2)  # [B, S, dim], head-major
        s_img = hidden_states.shape[1]
        img_out = self.to_out[1](self.to_out[0](out[:, :s_img]))
        txt_out = self.to_add_out(out[:, s_img:])
        return img_out, txt_out

    @torch.no_grad()
    def attention_probs(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """The softmax weights [B, H, S, S] (queries × keys, image tokens first) that the forward uses.

        Computed explicitly in float32 for inspection; the forward itself uses fused SDPA.
        """
        q, k, _ = self._qkv(hidden_states, encoder_hidden_states, image_rotary_emb, attention_mask)
        scores = (q.float() @ k.float().transpose(-1, -2)) / self.head_dim**0.5
        return torch.softmax(scores + attention_mask.float(), dim=-1)


@torch.no_grad()
def capture_attention_probs(model: nn.Module, block_index: int = 0, **forward_kwargs) -> torch.Tensor:
    """Run ``model(**forward_kwargs)`` and return block ``block_index``'s softmax weights [B, H, S, S].

    A forward hook records the modulated inputs the block's attention receives; the weights are then
    recomputed with :meth:`LensJointAttention.attention_probs`, so the forward itself stays on SDPA.
    Keys and queries are ordered image tokens first, then text tokens. Used in chapter 2.
    """
    attn = model.transformer_blocks[block_index].attn
    captured: dict = {}

    def record(module, args, output):  # returns None, so the output is left untouched
        captured["args"] = args

    handle = attn.register_forward_hook(record)
    try:
        model(**forward_kwargs)
    finally:
        handle.remove()
    return attn.attention_probs(*captured["args"])
