"""A random-weight GPT-OSS and a small harmony tokenizer: the official text-encoder path, offline.

:func:`tiny_gpt_oss` has the real architecture (alternating sliding / full attention, YaRN RoPE, MoE) at
a few thousand parameters, and :func:`tiny_harmony_tokenizer` a byte-level BPE vocabulary of 512 tokens
with the harmony special tokens and chat template of :mod:`lenslib.model.text_encoders.gpt_oss`. Together
they run the exact Lens prompt and feature path on a CPU in milliseconds, without the 20B download.
Used in chapter 2, by the ``tiny-gpt-oss`` text encoder and in tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GptOssConfig, PreTrainedTokenizerFast

from .gpt_oss import (
    ASSISTANT_THINKING,
    HARMONY_CHAT_TEMPLATE,
    HARMONY_SPECIAL_TOKENS,
    SYSTEM_INSTRUCTION,
    LensGptOssEncoder,
)

__all__ = ["tiny_gpt_oss", "tiny_harmony_tokenizer"]

_TINY_CORPUS = [
    SYSTEM_INSTRUCTION,
    ASSISTANT_THINKING,
    (
        "You are ChatGPT, a large language model trained by OpenAI. "
        "Knowledge cutoff: 2024-06 Current date: 2026-01-01"
    ),
    (
        "Reasoning: medium low high # Valid channels: analysis, commentary, final. "
        "Channel must be included for every message."
    ),
    "# Instructions a red cube on a blue sphere, a cat sitting next to a dog in the park at sunset",
    "a photo of a small green bird on a wooden table with the text HELLO written in white letters",
    "two people walking along the beach under a cloudy sky, watercolor painting, 0123456789",
]


def tiny_harmony_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer with the harmony special tokens and chat template.

    Trained deterministically in milliseconds on a fixed corpus; any text is
    encodable (byte fallback). It stands in for the 201,088-token o200k_harmony
    tokenizer so tests can run the full prompt path offline.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = list(HARMONY_SPECIAL_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_TINY_CORPUS, trainer=trainer)
    named = dict(bos_token="<|startoftext|>", eos_token="<|return|>", pad_token="<|endoftext|>")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="right", **named)
    fast.chat_template = HARMONY_CHAT_TEMPLATE
    return fast


def tiny_gpt_oss(
    num_hidden_layers: int = 4,
    selected_layers: Sequence[int] = (1, 3),
    hidden_size: int = 32,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    head_dim: int = 8,
    num_local_experts: int = 4,
    num_experts_per_tok: int = 2,
    sliding_window: int = 16,
    seed: int = 0,
) -> tuple[LensGptOssEncoder, PreTrainedTokenizerFast]:
    """Random-weight GPT-OSS (alternating sliding/full layers, YaRN RoPE, MoE) + tiny harmony tokenizer.

    Exercises the exact Lens feature path on CPU in milliseconds. The small sliding
    window (16) makes the sliding layers differ from the full ones at prompt length.
    """
    tokenizer = tiny_harmony_tokenizer()
    config = GptOssConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        num_local_experts=num_local_experts,
        num_experts_per_tok=num_experts_per_tok,
        sliding_window=sliding_window,
        layer_types=[
            "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_hidden_layers)
        ],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        initializer_range=0.5,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = LensGptOssEncoder(config).eval()
    model.set_selected_layers(selected_layers)
    return model, tokenizer
