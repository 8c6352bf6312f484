"""Prompt reasoner (§7): backend choice, output clean-up, local GPT-OSS generation, pipeline wiring."""

from __future__ import annotations

import pytest
import torch

from lenslib.model.prompt_reasoner import PromptReasoner, clean_reasoner_output
from lenslib.model.text_encoders.tiny_gpt_oss import tiny_gpt_oss
from lenslib.recaption.local_server import LocalChatServer


@pytest.mark.parametrize(
    "raw,expected",
    [
        (
            "<|channel|>analysis<|message|>think...<|end|><|start|>assistant"
            "<|channel|>final<|message|>A red fox in snow.<|return|>",
            "A red fox in snow.",
        ),
        ("<|channel|>final<|message|>```text\nA  blue\n\ncar```<|end|>", "A blue car"),
        ('<|channel|>final<|message|>"A cat on a mat."', "A cat on a mat."),
        ("<think>hidden</think> A tall   tree <|end|>", "A tall tree"),
        ("analysis: the user wants a dog", ""),
        ("<|channel|>analysis<|message|>still thinking", ""),  # generation cut before the final channel
    ],
)
def test_clean_reasoner_output(raw, expected):
    assert clean_reasoner_output(raw) == expected


def test_backend_selection():
    r = PromptReasoner()
    assert r.backend(False) == "none" and r.backend(True) == "local"
    assert r(["a cat"], enable=False) == ["a cat"]
    api = PromptReasoner(api_key="k", api_model="m")
    assert api.backend(False) == "api" and api.backend(True) == "api"  # API wins even when not enabled
    assert PromptReasoner(api_key="k").backend(False) == "none"
    with pytest.raises(ValueError, match="GPT-OSS text encoder"):
        r.check(True)


def test_api_backend_rewrites_through_an_openai_compatible_server():
    with LocalChatServer(api_key="k") as server:
        server.script.extend([429, "ok", "empty"])
        r = PromptReasoner(api_url=server.base_url, api_key="k", api_model="rewriter")
        out = r(["a red cube", "a blue ball"])
        assert out[0].startswith("A detailed") and "a red cube" in out[0]  # retried after the 429
        assert out[1] == "a blue ball"  # an empty answer falls back to the prompt, as the official code does
        assert server.received[0]["texts"][0].startswith("Rewrite the user's input")
        assert r._client.usage.retries == 1 and r._client.usage.requests == 3


def test_api_backend_wrong_key_is_a_clear_error():
    with LocalChatServer(api_key="right") as server:
        r = PromptReasoner(api_url=server.base_url, api_key="wrong", api_model="rewriter")
        with pytest.raises(RuntimeError, match="HTTP 401.*check the API key"):
            r(["a cat"])


def test_local_generation_uses_harmony_low_effort_and_falls_back():
    model, tok = tiny_gpt_oss()
    calls = []
    original = model.generate

    def spy(**kw):
        calls.append(kw)
        return original(**kw)

    model.generate = spy
    r = PromptReasoner(model, tok, max_new_tokens=6)
    torch.manual_seed(0)
    out = r(["a cat", "a dog"], enable=True)
    assert len(calls) == 2 and all(isinstance(o, str) and o for o in out)  # one prompt at a time
    kw = calls[0]
    assert kw["do_sample"] is True and kw["temperature"] == 0.7 and kw["max_new_tokens"] == 6
    prompt_text = tok.decode(kw["input_ids"][0])
    assert "Reasoning: low" in prompt_text and prompt_text.endswith("<|start|>assistant")
    assert "<|start|>user<|message|>a cat<|end|>" in prompt_text


def test_pipeline_runs_reasoner_before_encoding():
    from lenslib.model.pipeline import LensPipeline
    from lenslib.model.schedule import make_scheduler
    from lenslib.model.transformer import LensTransformer2DModel
    from lenslib.model.vae import tiny_flux2_vae

    encoder, tokenizer = tiny_gpt_oss()
    transformer = LensTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        enc_hidden_dim=32,
        axes_dims_rope=(4, 6, 6),
        selected_layer_index=(1, 3),
    )
    pipe = LensPipeline(make_scheduler(), tiny_flux2_vae(4), encoder, tokenizer, transformer)
    pipe.set_progress_bar_config(disable=True)
    pipe.reasoner.max_new_tokens = 4
    pipe(prompt="a cat", height=32, width=32, num_inference_steps=1, output_type="latent")
    assert pipe._last_refined_prompts == ["a cat"]
    seen = []
    pipe.reasoner._local = lambda p: (seen.append(p), p.upper())[1]
    pipe(
        prompt=["a cat", "a dog"],
        height=32,
        width=32,
        num_inference_steps=1,
        output_type="latent",
        enable_reasoner=True,
    )
    assert seen == ["a cat", "a dog"] and pipe._last_refined_prompts == ["A CAT", "A DOG"]
