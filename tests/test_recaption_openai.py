"""OpenAI-compatible captioner against a real HTTP server on 127.0.0.1 (incl. its error codes)."""

import logging
import time

import pytest
from PIL import Image

from lenslib.recaption.base import CaptionError
from lenslib.recaption.local_server import LocalChatServer, image_tokens
from lenslib.recaption.openai_api import OpenAICaptioner

KEY = "sk-test-secret-123"


@pytest.fixture
def server():
    with LocalChatServer(api_key=KEY) as srv:
        yield srv


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("LENS_TEST_KEY", KEY)


def cap(server, **kw):
    kw = {
        "model": "gpt-4.1",
        "base_url": server.base_url,
        "api_key_env": "LENS_TEST_KEY",
        "backoff_s": 0.01,
        "max_retries": 3,
        "timeout_s": 5,
        **kw,
    }
    return OpenAICaptioner(**kw)


def red(w=64, h=48):
    return Image.new("RGB", (w, h), (210, 25, 25))


def test_captions_end_to_end_with_accounting(server, key_env, caplog):
    c = cap(server, price_in_per_m=2.0, price_out_per_m=8.0)
    blue = Image.new("RGB", (40, 40), (20, 60, 210))
    with caplog.at_level(logging.DEBUG):
        out = c.caption([red(), blue])
    assert "red" in out[0].text and "64 by 48" in out[0].text
    assert "blue" in out[1].text
    assert out[0].source == "openai:gpt-4.1" and out[0].prompt_version == "lens-detailed-v1"
    assert out[0].kind == "detailed" and out[0].latency_s > 0
    # the server received our instruction as the system message and the image as a data URL
    assert any("redraw it" in t for t in server.received[0]["texts"])
    assert sorted(r["sizes"][0] for r in server.received) == [(40, 40), (64, 48)]
    assert out[0].input_tokens > image_tokens(64, 48)
    tin = sum(o.input_tokens for o in out)
    tout = sum(o.output_tokens for o in out)
    assert (c.usage.input_tokens, c.usage.output_tokens, c.usage.requests) == (tin, tout, 2)
    assert c.usage.cost_usd == pytest.approx((tin * 2.0 + tout * 8.0) / 1e6)
    assert KEY not in caplog.text and KEY not in repr(c)


def test_429_then_success(server, key_env):
    server.script.extend([429, 503])
    c = cap(server)
    out = c.caption([red()])
    assert "red" in out[0].text
    assert c.usage.retries == 2 and c.usage.requests == 3 and server.n_requests == 3


def test_500_retry_budget_exhausted(server, key_env):
    server.script.extend([500] * 10)
    c = cap(server, max_retries=2)
    with pytest.raises(CaptionError, match=r"gave up .* after 3 attempts.*HTTP 500"):
        c.caption([red()])
    assert server.n_requests == 3


@pytest.mark.parametrize(
    "action,match", [("malformed", "malformed.*choices"), ("not_json", "not JSON"), ("empty", "empty answer")]
)
def test_malformed_response(server, key_env, action, match):
    server.script.append(action)
    with pytest.raises(CaptionError, match=match):
        cap(server).caption([red()])
    assert server.n_requests == 1  # malformed is not retried


def test_no_key_fails_before_any_request(server, monkeypatch):
    monkeypatch.delenv("LENS_TEST_KEY", raising=False)
    with pytest.raises(CaptionError, match="LENS_TEST_KEY is not set"):
        cap(server)
    assert server.n_requests == 0


def test_wrong_key_is_not_retried_and_not_echoed(server, monkeypatch):
    monkeypatch.setenv("LENS_TEST_KEY", "sk-wrong-999")
    with pytest.raises(CaptionError, match="401.*check the API key") as e:
        cap(server).caption([red()])
    assert "sk-wrong-999" not in str(e.value) and server.n_requests == 1


def test_concurrency_limit_and_per_sample_failures(server, key_env):
    server.delay_s = 0.15
    c = cap(server, max_concurrency=2, max_retries=0)
    t0 = time.perf_counter()
    out = c.caption([red(10 + i, 10) for i in range(6)])
    assert len(out) == 6 and server.peak_in_flight == 2
    assert time.perf_counter() - t0 >= 3 * 0.15 * 0.9
    server.delay_s = 0
    server.script.append(500)  # one request fails, no retries left: the others still get captions
    c1 = cap(server, max_concurrency=1, max_retries=0)
    res = c1.caption_each([red(), red(), red()])
    assert isinstance(res[0], CaptionError) and all(not isinstance(r, Exception) for r in res[1:])
    assert c1.usage.failures == 1


def test_timeout_is_retried_then_reported(key_env):
    with LocalChatServer(api_key=KEY, delay_s=1.0) as slow:
        c = cap(slow, timeout_s=0.2, max_retries=1)
        with pytest.raises(CaptionError, match="gave up.*Timeout"):
            c.caption([red()])
