"""Captions from any OpenAI-compatible chat-completions endpoint (paper §3.3: GPT-4.1).

The same client talks to the OpenAI API, Azure-style gateways, or a local vLLM / SGLang server: the image
goes in the user message as a base64 data URL, the captioning instruction as the system message. The API
key is read from an environment variable and never logged or put in an error message. Requests run
with a concurrency limit; the ``openai`` package sends them and retries 408/409/429/5xx answers, timeouts
and dropped connections (honouring ``Retry-After``); other 4xx answers fail at once. Token usage and cost
are accounted per caption and in total (:class:`lenslib.recaption.cost.Usage`). Used in chapter 1 and by
``lens recaption``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import openai

from .base import Caption, Captioner, CaptionError
from .cost import Usage
from .instruction import instruction

__all__ = ["ChatAPIError", "ChatClient", "OpenAICaptioner", "Usage", "image_data_url"]


def image_data_url(image, max_side: int = 1024, quality: int = 90) -> str:
    """JPEG data URL of a PIL image, downscaled so its longer side is at most ``max_side``."""
    im = image.convert("RGB")
    if max(im.size) > max_side:
        im = im.copy()
        im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


class ChatAPIError(CaptionError):
    """An OpenAI-compatible endpoint failed for good (after retries) or answered something unusable."""


class _RetryingOpenAI(openai.OpenAI):
    """``openai.OpenAI`` that counts every attempt in ``usage`` and waits ``backoff_s`` × 2^retry
    (with jitter, at most ``max_backoff_s``) before a retry, or what the server's ``Retry-After`` says."""

    def __init__(self, usage: Usage, backoff_s: float, max_backoff_s: float, rng: random.Random, **kw):
        super().__init__(**kw)
        self.usage, self.backoff_s, self.max_backoff_s, self.rng = usage, backoff_s, max_backoff_s, rng

    def _prepare_request(self, request) -> None:  # openai's hook, called once per attempt
        self.usage.add(requests=1, retries=int(_retries_taken(request) > 0))

    def _calculate_retry_timeout(self, remaining_retries, options, response_headers=None) -> float:
        after = self._parse_retry_after_header(response_headers)
        if after is not None and after >= 0:
            return min(self.max_backoff_s, after)
        retry = options.get_max_retries(self.max_retries) - remaining_retries
        return min(self.max_backoff_s, self.backoff_s * 2**retry) * (0.5 + 0.5 * self.rng.random())


def _retries_taken(request) -> int:
    return int(request.headers.get("x-stainless-retry-count") or 0)


class ChatClient:
    """``POST {base_url}/chat/completions`` through ``openai.OpenAI``, with token accounting.

    Shared by the captioner below and the prompt reasoner (:mod:`lenslib.model.prompt_reasoner`). The key
    comes from ``api_key`` or the environment variable ``api_key_env``; it is checked before any request
    and never logged, printed or put in an error message. ``openai`` retries 408/409/429/5xx answers,
    timeouts and dropped connections up to ``max_retries`` times; other 4xx answers fail at once.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_concurrency: int = 8,
        price_in_per_m: float = 0.0,
        price_out_per_m: float = 0.0,
        seed: int = 0,
    ):
        self.api_key_env = api_key_env
        key = api_key or os.environ.get(api_key_env, "")
        if not key:
            raise ChatAPIError(
                f"no API key: the environment variable {api_key_env} is not set. Export it "
                f"(for a keyless local server set it to any value, e.g. EMPTY)."
            )
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip(
            "/"
        )
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.max_concurrency = max(1, int(max_concurrency))
        self.usage = Usage(price_in_per_m=price_in_per_m, price_out_per_m=price_out_per_m)
        self._openai = _RetryingOpenAI(  # holds the key; never logged, never in repr or errors
            self.usage,
            backoff_s,
            max_backoff_s,
            random.Random(seed),
            api_key=key,
            base_url=self.base_url,
            timeout=timeout_s,
            max_retries=max_retries,
        )

    def __repr__(self):
        return f"ChatClient(model={self.model!r}, base_url={self.base_url!r}, key=${self.api_key_env})"

    def close(self):
        self._openai.close()

    def post(self, body: dict) -> dict:
        """One chat-completions request (retried as described above); the response JSON."""
        url = f"{self.base_url}/chat/completions"
        try:
            raw = self._openai.chat.completions.with_raw_response.create(**body).http_response
        except openai.APIStatusError as e:
            code, detail = e.status_code, e.response.text[:300]
            if code not in (408, 409, 429) and code < 500:  # answers openai does not retry
                hint = " (check the API key)" if code in (401, 403) else ""
                raise ChatAPIError(f"{url} answered HTTP {code}{hint}: {detail}") from None
            last, request = f"HTTP {code}: {detail}", e.request
        except openai.APIConnectionError as e:  # timeouts included
            last, request = f"{type(e.__cause__ or e).__name__} talking to {self.base_url}", e.request
        else:
            try:
                return raw.json()
            except ValueError:
                raise ChatAPIError(
                    f"malformed response from {url}: body is not JSON ({raw.text[:200]!r})"
                ) from None
        n = _retries_taken(request)
        raise ChatAPIError(f"gave up on {url} after {n + 1} attempts ({n} retries); last error: {last}")

    @staticmethod
    def parse(resp: dict, allow_empty: bool = False) -> tuple[str, dict, str | None]:
        """(text, usage, finish_reason) from a chat-completions response; ChatAPIError if malformed."""
        try:
            choice = resp["choices"][0]
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise ChatAPIError(
                f"malformed chat-completions response: missing {e} in {json.dumps(resp)[:200]}"
            ) from None
        if isinstance(text, list):  # some servers return content parts
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        if text is None and allow_empty:
            text = ""
        if not isinstance(text, str) or (not text.strip() and not allow_empty):
            raise ChatAPIError("malformed chat-completions response: empty answer text")
        return text.strip(), resp.get("usage") or {}, choice.get("finish_reason")

    def complete(
        self, messages: list[dict], allow_empty: bool = False, **params
    ) -> tuple[str, dict, str | None]:
        """Send ``messages`` (plus e.g. ``max_tokens``); return (text, usage, finish_reason), tokens
        counted."""
        text, usage, finish = self.parse(
            self.post({"model": self.model, "messages": messages, **params}), allow_empty=allow_empty
        )
        self.usage.add(
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
        )
        return text, usage, finish


class OpenAICaptioner(Captioner):
    """Captioner over ``POST {base_url}/chat/completions``.

    Args:
        model: model name sent to the server (e.g. ``"gpt-4.1"``).
        base_url: default ``$OPENAI_BASE_URL`` or ``https://api.openai.com/v1``.
        api_key_env: environment variable holding the key (a keyless local server still needs it set,
            to any value, e.g. ``EMPTY`` as vLLM documents). Checked before any request.
        kind: ``"detailed"`` or ``"brief"`` (selects the instruction unless ``instruction_text`` is given).
        timeout_s, max_retries, backoff_s, max_backoff_s: per request; retries only on 429/5xx/timeouts.
        max_concurrency: requests in flight at once.
        price_in_per_m, price_out_per_m: USD per million input/output tokens, for cost accounting.
        alt_text_hint: if a sample's meta has ``alt_text``, include it as a hint (PixArt-style prompt).
    """

    def __init__(
        self,
        model: str = "gpt-4.1",
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        kind: str = "detailed",
        instruction_text: str | None = None,
        prompt_version: str | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.2,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_concurrency: int = 8,
        max_side: int = 1024,
        price_in_per_m: float = 0.0,
        price_out_per_m: float = 0.0,
        alt_text_hint: bool = False,
        seed: int = 0,
    ):
        self.client = ChatClient(
            model,
            base_url,
            api_key_env=api_key_env,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            max_concurrency=max_concurrency,
            price_in_per_m=price_in_per_m,
            price_out_per_m=price_out_per_m,
            seed=seed,
        )
        self.model, self.base_url, self.usage = model, self.client.base_url, self.client.usage
        self.api_key_env, self.max_concurrency = api_key_env, self.client.max_concurrency
        text, version = instruction(kind) if instruction_text is None else (instruction_text, "custom")
        self.kind, self.instruction_text = kind, text
        self.prompt_version = prompt_version or version
        self.max_tokens, self.temperature, self.max_side = max_tokens, temperature, max_side
        self.alt_text_hint = alt_text_hint
        self.name = f"openai:{model}"

    def __repr__(self):
        return f"OpenAICaptioner(model={self.model!r}, base_url={self.base_url!r}, key=${self.api_key_env})"

    def identity(self):
        return super().identity() | {"model": self.model, "base_url": self.base_url}

    def close(self):
        self.client.close()

    # one request -----------------------------------------------------------------------------------
    def request_body(self, image, meta: dict | None = None) -> dict:
        user_text = "Caption this image."
        if self.alt_text_hint and meta and meta.get("alt_text"):
            user_text = (
                f'The image was published with the text "{meta["alt_text"]}". Use it only where the '
                "image confirms it. Caption this image."
            )
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "messages": [
                {"role": "system", "content": self.instruction_text},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": user_text},
                        {"type": "image_url", "image_url": {"url": image_data_url(image, self.max_side)}},
                    ],
                },
            ],
        }

    def _one(self, image, meta) -> Caption:
        t0 = time.perf_counter()
        body = self.request_body(image, meta)
        try:
            text, usage, finish = self.client.complete(
                body["messages"], max_tokens=self.max_tokens, temperature=self.temperature
            )
        except CaptionError:
            self.usage.add(failures=1)
            raise
        tin, tout = usage.get("prompt_tokens"), usage.get("completion_tokens")
        seconds = time.perf_counter() - t0
        return self._made(text, (tin, tout), seconds, finish_reason=finish, truncated=finish == "length")

    def _caption_batch(self, images, metas):
        return [self._one(im, m) for im, m in zip(images, metas)]

    def caption_each(self, images, metas=None):
        metas = list(metas) if metas is not None else [{} for _ in images]

        def safe(args):
            try:
                return self._one(*args)
            except CaptionError as e:
                return e

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(safe, zip(images, metas)))
