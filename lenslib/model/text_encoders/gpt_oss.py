"""The official Lens text encoder: GPT-OSS-20B hidden layers as DiT conditioning.

Three pieces, following the official encoder exactly:

1. :class:`LensGptOssEncoder`, a transformers ``GptOssForCausalLM`` subclass. After
   ``set_selected_layers((5, 11, 17, 23))`` a call with ``input_ids`` and
   ``attention_mask`` only runs the *Lens feature forward*: embeddings, positions
   0..S-1, causal / sliding-window masks per ``layer_types``, YaRN rotary embeddings,
   decoder layers in order, recording the **raw** output of each selected layer and
   stopping after the largest one. The final RMSNorm and LM head are never applied,
   so the last layer is the *pre-norm* state (not ``output_hidden_states[-1]``). Any
   other call falls through to the stock forward (``generate`` keeps working).
2. The prompt path (:func:`render_prompts`, :func:`encode_prompts`): a three-message
   harmony conversation rendered with the tokenizer's chat template, cut before the
   first ``<|return|>``, right-padded to the longest row, truncated at 512 tokens;
   the first 97 tokens (system header + developer block + ``<|start|>user<|message|>``)
   are dropped from features and mask. The header contains the calendar date, so the
   features depend on the day; pass ``date="YYYY-MM-DD"`` to pin it.
3. :class:`GptOssTextEncoder`, the :class:`~lenslib.model.text_encoders.TextEncoder`
   adapter used by the feature cache and the trainer.

:func:`lenslib.model.text_encoders.tiny_gpt_oss.tiny_gpt_oss` builds a random-weight GPT-OSS with a small
tokenizer carrying the harmony template, for tests and chapter 2.

Used in chapter 2 (architecture).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Sequence

import torch
from transformers import GptOssConfig, GptOssForCausalLM, Mxfp4Config, PreTrainedTokenizerFast
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from ..presets import spread_layers
from .base import TextEncoder

__all__ = [
    "SYSTEM_INSTRUCTION",
    "ASSISTANT_THINKING",
    "TXT_OFFSET",
    "MAX_SEQUENCE_LENGTH",
    "DEFAULT_SELECTED_LAYERS",
    "HARMONY_CHAT_TEMPLATE",
    "LensGptOssEncoder",
    "GptOssTextEncoder",
    "build_conversation",
    "render_prompts",
    "prefix_token_count",
    "encode_prompts",
]

# The two literal constants of the official pipeline (byte for byte, official code: prompt rendering).
SYSTEM_INSTRUCTION = (
    "Describe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background."
)
ASSISTANT_THINKING = "Need to generate one image according to the description."

TXT_OFFSET = 97  # tokens of system header + developer block + "<|start|>user<|message|>" (o200k_harmony)
MAX_SEQUENCE_LENGTH = 512
DEFAULT_SELECTED_LAYERS = (5, 11, 17, 23)
TEMPLATE_VERSION = "harmony-lens-v1"  # bump if the rendering below changes (feature cache key)

# Harmony special tokens of o200k_harmony (ids from the GPT-OSS vocabulary).
HARMONY_SPECIAL_TOKENS = {
    "<|startoftext|>": 199998,
    "<|endoftext|>": 199999,
    "<|return|>": 200002,
    "<|constrain|>": 200003,
    "<|channel|>": 200005,
    "<|start|>": 200006,
    "<|end|>": 200007,
    "<|message|>": 200008,
    "<|call|>": 200012,
}

# Harmony rendering for text-only conversations (system/developer, user, assistant with
# an optional ``thinking`` analysis message). It renders exactly what GPT-OSS's stock
# template renders for such conversations; real GPT-OSS tokenizer folders ship their
# own template, which is used whenever present.
HARMONY_CHAT_TEMPLATE = (
    "{%- set identity = model_identity if model_identity is defined else "
    "'You are ChatGPT, a large language model trained by OpenAI.' -%}"
    "{%- set effort = reasoning_effort if reasoning_effort is defined else 'medium' -%}"
    "{{- '<|start|>system<|message|>' + identity + '\\nKnowledge cutoff: 2024-06\\nCurrent date: ' "
    "+ strftime_now('%Y-%m-%d') + '\\n\\nReasoning: ' + effort + '\\n\\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>' -}}"
    "{%- if messages and messages[0]['role'] in ['system', 'developer'] -%}"
    "{%- if messages[0]['content'] -%}"
    "{{- '<|start|>developer<|message|># Instructions\\n\\n' + messages[0]['content'] + '\\n\\n<|end|>' -}}"
    "{%- endif -%}"
    "{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for m in turns -%}"
    "{%- if m['role'] == 'user' -%}"
    "{{- '<|start|>user<|message|>' + m['content'] + '<|end|>' -}}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{%- if loop.last and not add_generation_prompt -%}"
    "{%- if m['thinking'] is defined and m['thinking'] -%}"
    "{{- '<|start|>assistant<|channel|>analysis<|message|>' + m['thinking'] + '<|end|>' -}}"
    "{%- endif -%}"
    "{{- '<|start|>assistant<|channel|>final<|message|>' + m['content'] + '<|return|>' -}}"
    "{%- else -%}"
    "{{- '<|start|>assistant<|channel|>final<|message|>' + m['content'] + '<|end|>' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start|>assistant' -}}{%- endif -%}"
)


# --------------------------------------------------------------------------- model


class LensGptOssEncoder(GptOssForCausalLM):
    """``GptOssForCausalLM`` with the Lens multi-layer feature forward (official code: GPT-OSS encoder)."""

    def __init__(self, config: GptOssConfig):
        super().__init__(config)
        self.selected_layers: list[int] | None = None

    def set_selected_layers(self, selected_layer_index: Sequence[int]) -> None:
        """Choose the decoder layers whose raw outputs the feature forward returns (0-based)."""
        idx = [int(i) for i in selected_layer_index]
        n = self.config.num_hidden_layers
        if len(idx) == 0:
            raise ValueError("selected_layer_index is empty; pass at least one decoder layer index.")
        if len(set(idx)) != len(idx):
            raise ValueError(f"selected_layer_index {idx} has duplicates.")
        bad = [i for i in idx if i < 0 or i >= n]
        if bad:
            raise ValueError(
                f"selected_layer_index {bad} out of range: the encoder has {n} layers (0..{n - 1})."
            )
        self.selected_layers = idx

    def forward(self, *args, **kwargs):
        # Feature path only for exactly (input_ids, attention_mask) after set_selected_layers.
        if self.selected_layers is not None:
            names = ("input_ids", "attention_mask")
            if len(args) <= 2 and set(kwargs) <= set(names) and len(args) + len(kwargs) == 2:
                bound = dict(zip(names, args))
                if not (set(bound) & set(kwargs)):
                    bound.update(kwargs)
                    if bound.get("input_ids") is not None and bound.get("attention_mask") is not None:
                        return self._lens_forward(bound["input_ids"], bound["attention_mask"])
        return super().forward(*args, **kwargs)

    def encode_layers(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Alias of the feature forward. Raises RuntimeError before ``set_selected_layers``."""
        if self.selected_layers is None:
            raise RuntimeError("No layers selected: call set_selected_layers(...) before encode_layers.")
        return self._lens_forward(input_ids, attention_mask)

    @torch.no_grad()
    def _lens_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        model = self.model
        hidden = model.embed_tokens(input_ids)
        S = hidden.shape[1]
        position_ids = torch.arange(S, device=hidden.device).unsqueeze(0).expand(hidden.shape[0], -1)
        mask_kwargs = dict(
            config=self.config,
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            past_key_values=None,
            position_ids=position_ids,
        )
        last = max(self.selected_layers)
        types = self.config.layer_types[: last + 1]
        masks = {}
        if "full_attention" in types:
            masks["full_attention"] = create_causal_mask(**mask_kwargs)
        if "sliding_attention" in types:
            masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
        position_embeddings = model.rotary_emb(hidden, position_ids)
        recorded: dict[int, torch.Tensor] = {}
        for i in range(last + 1):  # early exit after the largest selected index
            hidden = model.layers[i](
                hidden,
                attention_mask=masks[types[i]],
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                past_key_values=None,
                use_cache=False,
            )
            if i in self.selected_layers:
                recorded[i] = hidden
        return [recorded[i] for i in self.selected_layers]


# --------------------------------------------------------------------------- prompts


def build_conversation(prompt: str) -> list[dict]:
    """The official three-message conversation for one prompt."""
    return [
        {"role": "system", "content": SYSTEM_INSTRUCTION},
        {"role": "user", "content": prompt},
        {"role": "assistant", "thinking": ASSISTANT_THINKING, "content": ""},
    ]


_DATE_RE = re.compile(r"Current date: \d{4}-\d{2}-\d{2}")


def _check_date(date: str | None) -> str | None:
    if date is None:
        return None
    try:
        _dt.date.fromisoformat(date)
    except (TypeError, ValueError):
        raise ValueError(f"date must be 'YYYY-MM-DD', got {date!r}.") from None
    return date


def render_prompts(tokenizer, prompts: Sequence[str], date: str | None = None) -> list[str]:
    """Render prompts through the tokenizer's chat template, cut before the first ``<|return|>``.

    ``date=None`` keeps the template's own ``strftime_now`` (today's local date, as the
    official code does); a ``"YYYY-MM-DD"`` string pins the header date for reproducible features.
    """
    date = _check_date(date)
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            "The tokenizer has no chat template; GPT-OSS needs the harmony template "
            "(tokenizer_config / chat_template.jinja)."
        )
    out = []
    for p in prompts:
        text = tokenizer.apply_chat_template(
            build_conversation(p), tokenize=False, add_generation_prompt=False
        )
        if date is not None:
            text = _DATE_RE.sub(f"Current date: {date}", text, count=1)
        cut = text.find("<|return|>")
        out.append(text if cut < 0 else text[:cut])
    return out


def prefix_token_count(tokenizer, date: str | None = None) -> int:
    """Tokens before the prompt text (system header + developer block + user header).

    97 for GPT-OSS's o200k_harmony tokenizer on any date: the official ``txt_offset``.
    Smaller tokenizers (the tiny test one) give their own count.
    """
    marker = "\x00lens-prompt\x00"
    text = render_prompts(tokenizer, [marker], date=date)[0]
    head = text[: text.index(marker)]
    return len(tokenizer(head, add_special_tokens=True)["input_ids"])


def _prepare_tokenizer(tokenizer):
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode_prompts(
    encoder: LensGptOssEncoder,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_sequence_length: int = MAX_SEQUENCE_LENGTH,
    txt_offset: int = TXT_OFFSET,
    date: str | None = None,
    device: torch.device | str | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Official prompt -> (per-layer features [B, S-97, H], bool mask [B, S-97])."""
    if encoder.selected_layers is None:
        raise RuntimeError("No layers selected: call encoder.set_selected_layers(...) first.")
    _prepare_tokenizer(tokenizer)
    texts = render_prompts(tokenizer, prompts, date=date)
    batch = tokenizer(
        texts,
        padding="longest",
        truncation=True,
        max_length=max_sequence_length,
        add_special_tokens=True,
        return_tensors="pt",
    )
    device = device if device is not None else encoder.device
    ids = batch["input_ids"].to(device)
    attn = batch["attention_mask"].to(device)
    feats = encoder(input_ids=ids, attention_mask=attn)
    B, S = ids.shape
    if S <= txt_offset:
        H = encoder.config.hidden_size
        zeros = [torch.zeros(B, 0, H, dtype=f.dtype, device=f.device) for f in feats]
        return zeros, torch.zeros(B, 0, dtype=torch.bool, device=device)
    return [f[:, txt_offset:] for f in feats], attn[:, txt_offset:].bool()


# --------------------------------------------------------------------------- TextEncoder adapter


class GptOssTextEncoder(TextEncoder):
    """:class:`TextEncoder` over a :class:`LensGptOssEncoder` + harmony tokenizer.

    ``txt_offset=None`` derives the prefix length from the tokenizer
    (:func:`prefix_token_count`; 97 for the real GPT-OSS tokenizer).
    """

    def __init__(
        self,
        model: LensGptOssEncoder,
        tokenizer,
        *,
        selected_layers: Sequence[int] | None = None,
        date: str | None = None,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
        txt_offset: int | None = None,
        device: torch.device | str | None = None,
    ):
        if not isinstance(model, LensGptOssEncoder):
            raise ValueError(f"GptOssTextEncoder needs a LensGptOssEncoder, got {type(model).__name__}.")
        if selected_layers is not None:
            model.set_selected_layers(selected_layers)
        elif model.selected_layers is None:
            # Lens's rule: the end of each quarter of the depth (5/11/17/23 of 24 layers)
            n = model.config.num_hidden_layers
            model.set_selected_layers(spread_layers(n, min(len(DEFAULT_SELECTED_LAYERS), n)))
        self.model = model.eval().requires_grad_(False)
        if device is not None:
            self.model.to(device)
        self.tokenizer = _prepare_tokenizer(tokenizer)
        self.date = _check_date(date)
        self.max_sequence_length = int(max_sequence_length)
        self.txt_offset = prefix_token_count(tokenizer, self.date) if txt_offset is None else int(txt_offset)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        tokenizer_path: str | os.PathLike | None = None,
        torch_dtype: torch.dtype = torch.bfloat16,
        dequantize: bool | None = None,
        **kw,
    ):
        """Load from local folders: ``path`` = GPT-OSS weights, ``tokenizer_path`` defaults to a sibling
        ``tokenizer/`` folder (official layout) or ``path`` itself. ``dequantize`` maps to ``Mxfp4Config``."""
        path = os.fspath(path)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(
                f"No GPT-OSS config.json in {path!r}; pass a local folder such as <lens>/text_encoder."
            )
        if tokenizer_path is None:
            sibling = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer")
            tokenizer_path = sibling if os.path.isdir(sibling) else path
        load_kw = {"dtype": torch_dtype}
        if dequantize is not None:
            load_kw["quantization_config"] = Mxfp4Config(dequantize=dequantize)
        model = LensGptOssEncoder.from_pretrained(path, **load_kw)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(os.fspath(tokenizer_path))
        return cls(model, tokenizer, **kw)

    @property
    def num_layers(self) -> int:
        return len(self.model.selected_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def name(self) -> str:
        date = self.date or _dt.date.today().isoformat()
        src = (
            getattr(self.model.config, "_name_or_path", "")
            or f"gpt-oss-{self.model.config.num_hidden_layers}l"
        )
        layers = ",".join(map(str, self.model.selected_layers))
        return (
            f"gpt-oss:{src}:layers={layers}:{TEMPLATE_VERSION}:offset={self.txt_offset}"
            f":max={self.max_sequence_length}:date={date}"
        )

    def encode(self, prompts: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
        if isinstance(prompts, str):
            prompts = [prompts]
        return encode_prompts(
            self.model,
            self.tokenizer,
            list(prompts),
            max_sequence_length=self.max_sequence_length,
            txt_offset=self.txt_offset,
            date=self.date,
        )
