"""Joint (MMDiT) attention of Lens: image and text tokens attend to each other in one softmax.

Each stream has its own fused QKV projection, its own QK RMSNorms (eps 1e-6) and its own output
projection; only the attention itself is shared. The sequence is ordered image first, then text.
Text padding is hidden with an additive key mask (0 for valid keys, -inf for padded ones), so image
tokens never read padded text, whatever values those positions hold (official code: joint attention and mask).

The main path is ``torch.nn.functional.scaled_dot_product_attention``. :meth:`LensJointAttention.
attention_probs` recomputes the softmax weights explicitly for inspection (chapter 2 draws an
attention map with it); it is not used in the forward pass.

The fast paths compute the same function without the float mask, which keeps SDPA off its fused
flash/cuDNN kernels (chapter 7). :func:`joint_key_mask` prepares, once per forward, which keys each
sample may read; the attention then runs one of (:data:`ATTENTION_MODES`):

- ``"reference"``: the additive float mask above, as the official code does (the default);
- ``"sdpa"``: no mask at all when no text token is padded; otherwise the samples are grouped by their
  number of valid keys and each group attends over exactly its valid keys (a slice when the text is
  right-padded, a gather otherwise), with plain mask-free SDPA;
- ``"flex"``: no mask when nothing is padded; otherwise FlexAttention with a block mask that skips
  padded keys (fast inside a compiled block, where it becomes one fused kernel; eager it is a slow
  reference implementation).

Padded keys get weight exactly 0 in every mode, so the three agree to float rounding. Padded text
*queries* still attend to the valid keys in every mode; their outputs never reach an image token.

Used in chapters 2 and 7 and by :class:`lenslib.model.block.LensTransformerBlock`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.normalization import RMSNorm
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from .rope import apply_rotary_emb

#: How the joint attention hides padded text keys (see the module docstring).
ATTENTION_MODES = ("reference", "sdpa", "flex")


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


@dataclass
class JointKeyMask:
    """Valid keys per sample for the fast attention paths, prepared once per forward by
    :func:`joint_key_mask`.

    ``valid`` [B, S_img + S_txt] bool. ``groups`` (mode ``"sdpa"``): one ``(rows, keys)`` per distinct
    count of valid keys, where ``rows`` is a LongTensor of samples (None: the whole batch) and ``keys``
    is either an int n (the valid keys are the first n) or a LongTensor [len(rows), n] of key positions.
    ``block_mask`` (mode ``"flex"``): the FlexAttention block mask.
    """

    valid: torch.Tensor
    groups: list | None = None
    block_mask: BlockMask | None = None

    def float_mask(self) -> torch.Tensor:
        """The reference additive mask [B, 1, 1, S] that this stands for (for inspection, not the forward)."""
        mask = torch.zeros(self.valid.shape, dtype=torch.float32, device=self.valid.device)
        return mask.masked_fill(~self.valid, float("-inf"))[:, None, None, :]


def _key_groups(valid: torch.Tensor) -> list:
    counts = valid.sum(dim=1).tolist()  # one host sync per forward, not per block
    batch = valid.shape[0]
    groups = []
    for n in sorted(set(counts)):
        rows = [i for i, c in enumerate(counts) if c == n]
        sub = valid[rows]
        if bool(sub[:, :n].all()):
            keys = n  # right-padded (the pipeline's and the trainer's layout): a slice
        else:  # stable sort puts each row's valid positions first, in their order
            keys = torch.argsort((~sub).to(torch.uint8), dim=1, stable=True)[:, :n]
        index = None if len(rows) == batch else torch.tensor(rows, device=valid.device)
        groups.append((index, keys))
    return groups


def joint_key_mask(
    encoder_hidden_states_mask: torch.Tensor | None, num_image_tokens: int, mode: str = "sdpa"
) -> JointKeyMask | None:
    """What the fast attention modes need to hide padded text keys, or None when no text token is padded.

    ``mode`` is ``"sdpa"`` (key groups) or ``"flex"`` (a FlexAttention block mask); see the module
    docstring. Image keys are always valid. Called once per forward, outside the blocks.
    """
    if mode not in ("sdpa", "flex"):
        raise ValueError(
            f"joint_key_mask builds the fast paths 'sdpa' or 'flex', got {mode!r}; "
            "the reference path uses joint_attention_mask"
        )
    if encoder_hidden_states_mask is None:
        return None
    text_valid = encoder_hidden_states_mask.to(torch.bool)
    if bool(text_valid.all()):
        return None
    batch = text_valid.shape[0]
    valid = torch.cat(
        [torch.ones(batch, num_image_tokens, dtype=torch.bool, device=text_valid.device), text_valid], dim=1
    )
    if mode == "sdpa":
        return JointKeyMask(valid, groups=_key_groups(valid))
    length = valid.shape[1]

    def keys_only(b, h, q_idx, kv_idx):
        return valid[b, kv_idx]

    block_mask = create_block_mask(keys_only, batch, None, length, length, device=valid.device)
    return JointKeyMask(valid, block_mask=block_mask)


def _grouped_sdpa(q, k, v, groups) -> torch.Tensor:
    """Mask-free SDPA per group of samples over exactly their valid keys (see :class:`JointKeyMask`)."""
    out = None
    for rows, keys in groups:
        qg, kg, vg = (q, k, v) if rows is None else (q[rows], k[rows], v[rows])
        if isinstance(keys, int):
            kg, vg = kg[:, :, :keys], vg[:, :, :keys]
        else:
            index = keys[:, None, :, None].expand(-1, kg.shape[1], -1, kg.shape[3])
            kg, vg = kg.gather(2, index), vg.gather(2, index)
        og = F.scaled_dot_product_attention(qg, kg, vg)
        if rows is None:
            return og
        out = (og.new_zeros(q.shape) if out is None else out).index_copy(
            0, rows, og
        )  # og: the autocast dtype
    return out


def joint_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor | JointKeyMask | None
) -> torch.Tensor:
    """SDPA over q, k, v [B, H, S, D] with padded keys hidden by whichever form ``attention_mask`` has:
    a reference float mask [B, 1, 1, S], a :class:`JointKeyMask`, or None (nothing padded)."""
    if attention_mask is None:
        return F.scaled_dot_product_attention(q, k, v)
    if isinstance(attention_mask, torch.Tensor):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask.to(q.dtype))
    if attention_mask.block_mask is not None:
        return flex_attention(q, k, v, block_mask=attention_mask.block_mask)
    return _grouped_sdpa(q, k, v, attention_mask.groups)


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
        if isinstance(attention_mask, JointKeyMask):
            expected = (hidden_states.shape[0], s_img + s_txt)
            if tuple(attention_mask.valid.shape) != expected:
                raise ValueError(
                    f"the key mask covers {tuple(attention_mask.valid.shape)} keys but the batch has "
                    f"{expected} (B, S_img + S_txt); build it with joint_key_mask for these inputs"
                )
        elif attention_mask is not None:
            expected = (hidden_states.shape[0], 1, 1, s_img + s_txt)
            if tuple(attention_mask.shape) != expected:
                raise ValueError(
                    f"the attention mask must have shape {expected} (B, 1, 1, S_img + S_txt), "
                    f"got {tuple(attention_mask.shape)}"
                )

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
        attention_mask: torch.Tensor | JointKeyMask | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image [B, S_img, dim], text [B, S_txt, dim]) → (image_out, text_out).

        ``attention_mask``: the reference float mask, a :class:`JointKeyMask`, or None (nothing padded).
        """
        q, k, v = self._qkv(hidden_states, encoder_hidden_states, image_rotary_emb, attention_mask)
        out = joint_attention(q, k, v, attention_mask)
        out = out.transpose(1, 2).flatten(2)  # [B, S, dim], head-major
        s_img = hidden_states.shape[1]
        img_out = self.to_out[1](self.to_out[0](out[:, :s_img]))
        txt_out = self.to_add_out(out[:, s_img:])
        return img_out, txt_out

    @torch.no_grad()
    def attention_probs(self, hidden_states, encoder_hidden_states, image_rotary_emb, attention_mask):
        """The softmax weights [B, H, S, S] (queries × keys, image tokens first) that the forward uses, for
        the forward's inputs.

        Computed explicitly in float32 for inspection; the forward itself uses fused SDPA.
        """
        q, k, _ = self._qkv(hidden_states, encoder_hidden_states, image_rotary_emb, attention_mask)
        scores = (q.float() @ k.float().transpose(-1, -2)) / self.head_dim**0.5
        if isinstance(attention_mask, JointKeyMask):
            attention_mask = attention_mask.float_mask()
        return torch.softmax(scores if attention_mask is None else scores + attention_mask.float(), dim=-1)


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
