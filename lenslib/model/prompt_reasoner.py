"""Optional prompt rewriting before encoding (the official ``PromptReasoner``).

Lens can rewrite a terse prompt into one concrete, detailed text-to-image prompt, matching the
long recaptions it was trained on. Backends, chosen as the official code chooses them:

1. an OpenAI-compatible chat API **whenever both an API key and a model name are set** (even if
   rewriting was not requested);
2. otherwise, if ``enable_reasoner=True``, the pipeline's own GPT-OSS (the text encoder folder is a
   full GPT-OSS-20B with its LM head): harmony chat, reasoning effort "low", sampling at
   temperature 0.7, at most 4096 new tokens, one prompt at a time;
3. otherwise the prompts pass through unchanged.

The official rewriter system prompt is not reproduced byte for byte (only its gist is documented),
so :data:`REWRITER_PROMPT` is this project's wording of the same rules; rewritten prompts will
differ from the official ones. Used in chapter 4 (sampling) and by ``lens sample --enable-reasoner``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from .text_encoders.gpt_oss import LensGptOssEncoder

__all__ = ["REWRITER_PROMPT", "PRIVACY_NOTE", "PromptReasoner", "clean_reasoner_output"]

REWRITER_PROMPT = (
    "Rewrite the user's input as one concrete, descriptive prompt for a text-to-image model. "
    "Do not explain, ask questions, offer options or hedge. "
    "Keep every object, attribute, action, relation and setting the user states; add only visual detail "
    "that is consistent with them and never add new important objects. "
    "When there are several subjects of one kind, describe each one separately: appearance, colour, size, "
    "shape, material, pose, expression and position. Describe the whole scene, background included. "
    "If the input is already detailed, leave it almost unchanged. "
    "Turn simple, unambiguous inferences into explicit visuals: 'the answer to 2+2 on a blackboard' becomes "
    "'a blackboard showing 2+2=4'. "
    "Answer in the input's language if it is not English, otherwise in English. "
    "Output exactly one prompt, without lists, markup or quotes."
)
PRIVACY_NOTE = (
    "Keep your reasoning private. Reply only with the rewritten prompt in the final answer, nothing else."
)

_SPECIAL = re.compile(r"<\|[^|<>]*\|>")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_FENCE = re.compile(r"^```[\w-]*\s*(.*?)\s*```$", re.DOTALL)


def clean_reasoner_output(text: str) -> str:
    """Official clean-up of a local generation (kept special tokens): final channel, no think blocks,
    no stray tokens, "" if it is still analysis, unwrap a code fence or quotes, collapse whitespace."""
    marker = "<|channel|>final<|message|>"
    if marker in text:
        text = text.rsplit(marker, 1)[1]
        text = re.split(r"<\|(?:return|end|call)\|>", text, maxsplit=1)[0]
    text = _THINK.sub(" ", text)
    text = _SPECIAL.sub(" ", text).strip()
    if text.lower().startswith("analysis"):
        return ""
    m = _FENCE.match(text)
    if m:
        text = m.group(1)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return " ".join(text.split())


class PromptReasoner:
    """Rewrites prompts with an API model or the local GPT-OSS; see the module docstring."""

    def __init__(
        self,
        text_encoder=None,
        tokenizer=None,
        api_url: str | None = None,
        api_key: str | None = None,
        api_model: str | None = None,
        max_new_tokens: int = 4096,
        temperature: float = 0.7,
    ):
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.api_url, self.api_key, self.api_model = api_url, api_key, api_model
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self._client = None  # lenslib.recaption.openai_api.ChatClient, made on first use

    @property
    def uses_api(self) -> bool:
        return bool(self.api_key) and bool(self.api_model)

    def backend(self, enable: bool) -> str:
        """ "api", "local" or "none" for this call."""
        if self.uses_api:
            return "api"
        return "local" if enable else "none"

    def check(self, enable: bool) -> None:
        """Raise ValueError if the chosen backend cannot run (before any compute)."""
        backend = self.backend(enable)
        if backend == "local":
            if not isinstance(self.text_encoder, LensGptOssEncoder) or self.tokenizer is None:
                raise ValueError(
                    "enable_reasoner=True needs the GPT-OSS text encoder and its tokenizer (the local "
                    "reasoner generates with them); or set api_key and api_model for an API reasoner."
                )

    def __call__(self, prompts: Sequence[str], enable: bool = False) -> list[str]:
        backend = self.backend(enable)
        if backend == "none":
            return list(prompts)
        self.check(enable)
        rewrite = self._api if backend == "api" else self._local
        return [rewrite(p) for p in prompts]

    def _api(self, prompt: str) -> str:
        if self._client is None:
            # lazy: importing lenslib.recaption.openai_api (the openai client) costs 0.58 s after the
            # pipeline (python -X importtime); only the API backend needs it
            from lenslib.recaption.openai_api import ChatClient  # noqa: PLC0415

            self._client = ChatClient(self.api_model, self.api_url, api_key=self.api_key)
        answer, _, _ = self._client.complete(
            [{"role": "system", "content": REWRITER_PROMPT}, {"role": "user", "content": prompt}],
            max_tokens=4096,
            allow_empty=True,
        )
        return answer or prompt

    @torch.no_grad()
    def _local(self, prompt: str) -> str:
        tok, model = self.tokenizer, self.text_encoder
        messages = [
            {"role": "system", "content": REWRITER_PROMPT + "\n\n" + PRIVACY_NOTE},
            {"role": "user", "content": prompt},
        ]
        text = tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, reasoning_effort="low"
        )
        batch = tok(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out = model.generate(
            **batch,
            max_new_tokens=self.max_new_tokens,
            do_sample=True,
            temperature=self.temperature,
            pad_token_id=pad,
        )
        new = tok.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=False)
        return clean_reasoner_output(new) or prompt
