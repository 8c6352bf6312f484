"""A small OpenAI-compatible chat-completions server on 127.0.0.1, for tests and the book.

It implements ``POST /v1/chat/completions`` (and ``GET /v1/models``) with the real status codes:
401 for a wrong key, 400 for a request without an image, 429/5xx when scripted. Its captions are
computed from the image it receives (size, dominant colour, brightness), so a client that sends the
wrong image gets a visibly wrong caption. ``script`` queues responses for the next requests — an HTTP
status (``429``, ``500`` …), ``None`` (answer normally), ``"malformed"`` (valid JSON without
``choices``), ``"not_json"`` or ``"empty"`` — which is how the retry and error paths of
:class:`~lenslib.recaption.openai_api.OpenAICaptioner` are tested against real HTTP. The server is the
standard library's ``http.server`` in a thread. Used in chapter 1 and in ``tests/test_recaption_openai.py``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

NAMED_COLOURS = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
    "red": (200, 30, 30),
    "green": (40, 160, 60),
    "blue": (30, 70, 200),
    "yellow": (230, 210, 40),
    "orange": (240, 140, 20),
    "purple": (130, 50, 170),
    "brown": (120, 70, 30),
    "pink": (240, 150, 200),
}


def describe(image) -> str:
    """A deterministic, true (if plain) caption of the image's size and colours."""
    a = np.asarray(image.convert("RGB"), dtype=np.float64)
    mean = a.reshape(-1, 3).mean(0)
    colour = min(NAMED_COLOURS, key=lambda k: float(((np.array(NAMED_COLOURS[k]) - mean) ** 2).sum()))
    v = a.max(-1).mean() / 255
    light = "dark" if v < 0.3 else "bright" if v > 0.75 else "moderately lit"
    h, w = a.shape[:2]
    shape = "square" if abs(w - h) <= 0.05 * max(w, h) else "landscape" if w > h else "portrait"
    return (
        f"A {light} {shape} image, {w} by {h} pixels, whose overall colour is closest to {colour}. "
        f"The average red, green and blue levels are {mean[0]:.0f}, {mean[1]:.0f} and {mean[2]:.0f}."
    )


def image_tokens(w: int, h: int) -> int:
    """OpenAI's published high-detail image token formula: fit in 2048², short side to 768, then
    85 + 170 per 512² tile."""
    s = min(1.0, 2048 / max(w, h))
    w, h = w * s, h * s
    s = min(1.0, 768 / min(w, h))
    w, h = w * s, h * s
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


class _Handler(BaseHTTPRequestHandler):
    server_version = "LensLocalChat/1.0"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _send(self, code: int, body, headers: dict | None = None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code, message, kind="invalid_request_error", headers=None):
        self._send(code, {"error": {"message": message, "type": kind, "code": code}}, headers)

    def do_GET(self):
        srv: LocalChatServer = self.server.owner
        if self.path.rstrip("/") == "/v1/models":
            return self._send(200, {"object": "list", "data": [{"id": srv.model, "object": "model"}]})
        self._error(404, f"no route {self.path}")

    def do_POST(self):
        srv: LocalChatServer = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        with srv.lock:
            srv.n_requests += 1
            srv.in_flight += 1
            srv.peak_in_flight = max(srv.peak_in_flight, srv.in_flight)
            action = srv.script.popleft() if srv.script else None
        try:
            if srv.delay_s:
                time.sleep(srv.delay_s)
            self._handle(srv, raw, action)
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _handle(self, srv, raw, action):
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(404, f"no route {self.path}")
        if srv.api_key is not None and self.headers.get("Authorization") != f"Bearer {srv.api_key}":
            return self._error(401, "Incorrect API key provided.", "authentication_error")
        if isinstance(action, int):
            kind = "rate_limit_error" if action == 429 else "server_error"
            return self._error(action, f"scripted HTTP {action}", kind, {"Retry-After": str(srv.retry_after)})
        if action == "malformed":
            return self._send(200, {"id": "x", "object": "chat.completion", "result": "no choices here"})
        if action == "not_json":
            return self._send(200, b"<html>gateway says hello</html>")
        try:
            body = json.loads(raw)
            messages = body["messages"]
        except (ValueError, KeyError, TypeError):
            return self._error(400, "request body must be JSON with a 'messages' list")
        texts, images = [], []
        for m in messages:
            content = m.get("content")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else (content or [])
            for p in parts:
                if p.get("type") == "text":
                    texts.append(p.get("text", ""))
                elif p.get("type") == "image_url":
                    url = (p.get("image_url") or {}).get("url", "")
                    if not url.startswith("data:image/") or ";base64," not in url:
                        return self._error(400, "image_url must be a base64 data URL")
                    try:
                        images.append(
                            Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
                        )
                    except Exception:
                        return self._error(400, "image_url does not decode to an image")
        if not images and len(messages) < 2:
            return self._error(400, "no image in the request")
        srv.received.append({"model": body.get("model"), "texts": texts, "sizes": [im.size for im in images]})
        if images:
            caption = "" if action == "empty" else " ".join(describe(im) for im in images)
        else:  # a text-only chat (system + user), e.g. the prompt reasoner: answer with an expanded prompt
            caption = (
                ""
                if action == "empty"
                else (
                    f"A detailed, evenly lit picture of {texts[-1].strip()}, centred on a plain background."
                )
            )
        tin = sum(len(t) for t in texts) // 4 + sum(image_tokens(*im.size) for im in images)
        tout = max(1, len(caption) // 4)
        self._send(
            200,
            {
                "id": f"chatcmpl-{srv.n_requests}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", srv.model),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": caption},
                    }
                ],
                "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout},
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):  # client gave up
            super().handle_error(request, client_address)


class LocalChatServer:
    """``with LocalChatServer(api_key="k") as srv: srv.base_url`` → ``http://127.0.0.1:PORT/v1``.

    Attributes you can set while it runs: ``script`` (deque of scripted answers), ``delay_s`` (seconds
    each request takes), ``retry_after`` (value of the Retry-After header on scripted errors).
    Counters: ``n_requests``, ``peak_in_flight``, ``received`` (texts and image sizes, never the key).
    """

    def __init__(
        self,
        api_key: str | None = "test-key",
        model: str = "local-captioner",
        delay_s: float = 0.0,
        retry_after: float = 0.0,
    ):
        self.api_key, self.model, self.delay_s, self.retry_after = api_key, model, delay_s, retry_after
        self.script: deque = deque()
        self.lock = threading.Lock()
        self.n_requests = self.in_flight = self.peak_in_flight = 0
        self.received: list = []
        self._httpd = None
        self._thread = None

    def start(self) -> "LocalChatServer":
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
