"""Prompts to text features for :class:`~lenslib.model.pipeline.LensPipeline` (official code: prompt
encoding).

Each unique prompt is encoded once by the pipeline's text encoder (GPT-OSS through the harmony
template, or any lenslib :class:`~lenslib.model.text_encoders.TextEncoder`) and repeated per image;
negatives are broadcast to the prompts; positive and negative features are right-padded to one length
(as the official pipeline does) before they form the CFG batch. Used in chapter 4 (sampling) through the
pipeline.
"""

from __future__ import annotations

import torch

from .text_encoders.base import TextEncoder
from .text_encoders.gpt_oss import (
    MAX_SEQUENCE_LENGTH,
    TXT_OFFSET,
    LensGptOssEncoder,
    encode_prompts,
    prefix_token_count,
)

__all__ = ["PromptEncodingMixin", "align_text_features", "is_blank", "negative_list"]


def is_blank(s: str | None) -> bool:
    return s is None or not str(s).strip()


def negative_list(negative_prompt, n_prompts: int) -> list:
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


def repeat_interleave(feats: list[torch.Tensor], mask: torch.Tensor, index: list[int]):
    idx = torch.tensor(index, device=mask.device, dtype=torch.long)
    return [f.index_select(0, idx.to(f.device)) for f in feats], mask.index_select(0, idx)


def align_text_features(
    pos: list[torch.Tensor], pos_mask: torch.Tensor, neg: list[torch.Tensor], neg_mask: torch.Tensor
):
    """Right-pad positive and negative features (zeros) and masks (False) to a common length."""
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


class PromptEncodingMixin:
    """The pipeline's text side: ``txt_offset``, the encoder's layer spec and :meth:`encode_prompt`.

    Mixed into :class:`~lenslib.model.pipeline.LensPipeline`, which provides ``text_encoder``,
    ``tokenizer``, ``transformer``, ``prompt_date`` and ``_txt_offset``."""

    @property
    def txt_offset(self) -> int:
        """Tokens dropped before the prompt: 97 for GPT-OSS (derived from the tokenizer when it has a chat
        template)."""
        if self._txt_offset is not None:
            return self._txt_offset
        if self.tokenizer is not None and getattr(self.tokenizer, "chat_template", None):
            return prefix_token_count(self.tokenizer, self.prompt_date)
        return TXT_OFFSET

    @txt_offset.setter
    def txt_offset(self, value: int | None) -> None:
        self._txt_offset = None if value is None else int(value)

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
        return repeat_interleave(feats, mask, index)
