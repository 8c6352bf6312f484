"""What recaptioning a dataset costs: tokens per image × price per million tokens.

The paper leaves the one-off recaptioning cost out of its compute comparison (§2.3). This calculator
makes it explicit. Per image, the input is the instruction (system prompt) + a short user message + the
image's tokens; the output is the caption (Lens: ~109 words ≈ 145 tokens at ~1.33 tokens per English
word). Prices are inputs, not facts: set them to your provider's current price list (batch APIs are
often discounted). :class:`Usage` counts what a run actually spent, from the token usage the endpoint
reports (:mod:`lenslib.recaption.openai_api`). Used in chapter 1.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import quicktok

from .local_server import image_tokens as _high_detail_tokens

TOKENS_PER_WORD = 1.33  # typical for English prose with GPT-4-family BPE tokenizers


def text_tokens(text: str, encoding: str = "o200k_base") -> int:
    """Token count with the GPT-4o/4.1 family tokenizer (``quicktok`` ships it offline)."""
    return len(quicktok.get_encoding(encoding).encode(text))


def image_tokens(width: int, height: int, detail: str = "high") -> int:
    """OpenAI's published image-token formula for GPT-4o/4.1-class models: 85 tokens at low detail; at high
    detail, fit into 2048², scale the short side to 768, then 85 + 170 per 512² tile."""
    if detail == "low":
        return 85
    return _high_detail_tokens(width, height)


@dataclass
class RecaptionCost:
    n_images: float
    input_tokens_per_image: float
    output_tokens_per_image: float
    price_in_per_m: float
    price_out_per_m: float
    discount: float = 0.0  # e.g. 0.5 for a 50% batch discount

    @property
    def input_tokens(self) -> float:
        return self.n_images * self.input_tokens_per_image

    @property
    def output_tokens(self) -> float:
        return self.n_images * self.output_tokens_per_image

    @property
    def usd(self) -> float:
        raw = (self.input_tokens * self.price_in_per_m + self.output_tokens * self.price_out_per_m) / 1e6
        return raw * (1 - self.discount)

    @property
    def usd_per_1k_images(self) -> float:
        return self.usd / self.n_images * 1000

    def table(self) -> dict:
        return {
            "images": self.n_images,
            "input tokens": self.input_tokens,
            "output tokens": self.output_tokens,
            "USD": self.usd,
            "USD per 1k images": self.usd_per_1k_images,
        }


def recaption_cost(
    n_images: float,
    instruction_tokens: int,
    image_tokens_per_image: int,
    caption_words: float = 109,
    price_in_per_m: float = 2.0,
    price_out_per_m: float = 8.0,
    user_tokens: int = 10,
    discount: float = 0.0,
) -> RecaptionCost:
    """Cost of captioning ``n_images``. Defaults: Lens's mean caption length (109 words) and GPT-4.1's
    list prices at its April 2025 launch (USD 2 / 8 per million input / output tokens) — check current
    prices before relying on the result."""
    return RecaptionCost(
        n_images,
        instruction_tokens + user_tokens + image_tokens_per_image,
        caption_words * TOKENS_PER_WORD,
        price_in_per_m,
        price_out_per_m,
        discount,
    )


@dataclass
class Usage:
    """Running totals; ``cost_usd`` uses the prices given to the captioner (USD per million tokens)."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    price_in_per_m: float = 0.0
    price_out_per_m: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **kw):
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    @property
    def cost_usd(self) -> float:
        return (self.input_tokens * self.price_in_per_m + self.output_tokens * self.price_out_per_m) / 1e6

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "requests",
                "retries",
                "failures",
                "input_tokens",
                "output_tokens",
                "price_in_per_m",
                "price_out_per_m",
            )
        } | {"cost_usd": self.cost_usd}
