"""Text encoders: the Lens GPT-OSS feature forward and prompt path (§5), MiniLM, the registry."""

from __future__ import annotations

import datetime as dt

import pytest
import torch

from lenslib.model.text_encoders import TextEncoder, check_features, get_text_encoder
from lenslib.model.text_encoders.gpt_oss import (
    ASSISTANT_THINKING,
    SYSTEM_INSTRUCTION,
    TXT_OFFSET,
    GptOssTextEncoder,
    LensGptOssEncoder,
    encode_prompts,
    prefix_token_count,
    render_prompts,
)
from lenslib.model.text_encoders.tiny_gpt_oss import tiny_gpt_oss

DATE = "2026-05-23"


@pytest.fixture(scope="module")
def tiny():
    return tiny_gpt_oss(num_hidden_layers=4, selected_layers=(1, 3))


def _ids(tok, texts):
    tok.padding_side = "right"
    b = tok(texts, padding="longest", return_tensors="pt")
    return b["input_ids"], b["attention_mask"]


def test_literal_constants():
    assert SYSTEM_INSTRUCTION == (
        "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial "
        "relationships of the objects and background."
    )
    assert ASSISTANT_THINKING == "Need to generate one image according to the description."


def test_rendering_matches_reference_text(tiny):
    _, tok = tiny
    text = render_prompts(tok, ["a red cube"], date=DATE)[0]
    expected = (
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
        "Knowledge cutoff: 2024-06\nCurrent date: 2026-05-23\n\nReasoning: medium\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
        "<|start|>developer<|message|># Instructions\n\n" + SYSTEM_INSTRUCTION + "\n\n<|end|>"
        "<|start|>user<|message|>a red cube<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>" + ASSISTANT_THINKING + "<|end|>"
        "<|start|>assistant<|channel|>final<|message|>"
    )
    assert text == expected
    # default date is today's date; a literal <|return|> in a prompt cuts the rendering
    today = render_prompts(tok, ["x"])[0]
    assert f"Current date: {dt.date.today().isoformat()}\n" in today
    cut = render_prompts(tok, ["before<|return|>after"], date=DATE)[0]
    assert cut.endswith("<|start|>user<|message|>before")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        render_prompts(tok, ["x"], date="23/05/2026")


def test_prefix_is_97_and_suffix_22_with_real_o200k_harmony(tiny):
    quicktok = pytest.importorskip("quicktok")
    enc = quicktok.get_encoding("o200k_harmony")
    assert enc.n_vocab == 201088
    _, tok = tiny
    for date in (DATE, "1999-12-31", None):
        text = render_prompts(tok, ["a small green bird on a wooden table"], date=date)[0]
        cut = text.index("a small green bird")
        head, tail = text[:cut], text[cut + len("a small green bird on a wooden table") :]
        assert len(enc.encode_with_special_tokens(head)) == TXT_OFFSET == 97
        assert len(enc.encode_with_special_tokens(tail)) == 22
        assert enc.encode_with_special_tokens(head)[-1] == enc.encode_single_token("<|message|>")


def test_set_selected_layers_errors(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="empty"):
        model.set_selected_layers([])
    with pytest.raises(ValueError, match="duplicates"):
        model.set_selected_layers([1, 1])
    with pytest.raises(ValueError, match="out of range"):
        model.set_selected_layers([4])
    with pytest.raises(ValueError, match="out of range"):
        model.set_selected_layers([-1])
    model.set_selected_layers((1, 3))


def test_layer_semantics_against_output_hidden_states(tiny):
    model, tok = tiny
    ids, mask = _ids(
        tok, render_prompts(tok, ["a cat next to a dog", "a red cube on a blue sphere in the park"], DATE)
    )
    assert ids.shape[1] > model.config.sliding_window  # sliding layers really slide
    feats = model(input_ids=ids, attention_mask=mask)
    assert isinstance(feats, list) and len(feats) == 2 and not feats[0].requires_grad
    with torch.no_grad():
        ref = model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(ref) == 5
    valid = mask.bool()
    torch.testing.assert_close(feats[0][valid], ref[2][valid], atol=1e-5, rtol=1e-5)  # layer 1 == hs[2]
    # the last layer is the pre-norm output: not hs[4], but norm(layer 3) == hs[4]
    assert not torch.allclose(feats[1][valid], ref[4][valid], atol=1e-3)
    torch.testing.assert_close(model.model.norm(feats[1])[valid], ref[4][valid], atol=1e-5, rtol=1e-5)
    # and equals the raw output of decoder layer 3 (hook)
    seen = {}
    h = model.model.layers[3].register_forward_hook(lambda m, a, o: seen.setdefault("o", o))
    with torch.no_grad():
        model.model(input_ids=ids, attention_mask=mask)
    h.remove()
    torch.testing.assert_close(feats[1][valid], seen["o"][valid], atol=1e-6, rtol=1e-6)


def test_early_exit_and_order(tiny):
    model, tok = tiny
    ids, mask = _ids(tok, ["hello world"])
    calls = []
    hooks = [
        layer.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
        for i, layer in enumerate(model.model.layers)
    ]
    try:
        model.set_selected_layers((1, 0))
        feats = model.encode_layers(ids, mask)
    finally:
        for h in hooks:
            h.remove()
        model.set_selected_layers((1, 3))
    assert calls == [0, 1]  # layers 2 and 3 never ran
    assert not torch.equal(feats[0], feats[1])
    model.set_selected_layers((1,))
    torch.testing.assert_close(model.encode_layers(ids, mask)[0], feats[0])  # list follows the given order
    model.set_selected_layers((1, 3))


def test_padding_does_not_change_valid_positions(tiny):
    model, tok = tiny
    short = render_prompts(tok, ["a cat"], DATE)
    ids1, m1 = _ids(tok, short)
    ids2, m2 = _ids(
        tok, short + render_prompts(tok, ["a much longer prompt about a dog sitting in the park"], DATE)
    )
    f1 = model(input_ids=ids1, attention_mask=m1)
    f2 = model(input_ids=ids2, attention_mask=m2)
    n = ids1.shape[1]
    assert m2[0, n:].sum() == 0 and ids2.shape[1] > n
    for a, b in zip(f1, f2):
        torch.testing.assert_close(a[0], b[0, :n], atol=1e-4, rtol=1e-4)


def test_fall_through_to_stock_forward(tiny):
    model, tok = tiny
    ids, mask = _ids(tok, ["hello"])
    out = model(input_ids=ids)  # no mask: stock forward
    assert out.logits.shape == (1, ids.shape[1], model.config.vocab_size)
    out = model(input_ids=ids, attention_mask=mask, use_cache=False)  # extra kwarg: stock forward
    assert hasattr(out, "logits")
    fresh = LensGptOssEncoder(model.config)
    assert hasattr(fresh(input_ids=ids, attention_mask=mask), "logits")  # not configured: stock forward
    with pytest.raises(RuntimeError, match="set_selected_layers"):
        fresh.encode_layers(ids, mask)


def test_encode_prompts_drops_offset(tiny):
    model, tok = tiny
    prompts = ["a cat", "two people walking along the beach under a cloudy sky"]
    offset = prefix_token_count(tok, DATE)
    feats, mask = encode_prompts(model, tok, prompts, txt_offset=offset, date=DATE)
    ids, full_mask = _ids(tok, render_prompts(tok, prompts, DATE))
    full = model(input_ids=ids, attention_mask=full_mask)
    assert mask.dtype == torch.bool and mask.shape == (2, ids.shape[1] - offset)
    assert torch.equal(mask, full_mask[:, offset:].bool())
    for f, g in zip(feats, full):
        assert torch.equal(f, g[:, offset:])
    # what remains: prompt tokens + assistant suffix (decoded text starts with the prompt)
    kept = tok.decode(ids[0, offset:][full_mask[0, offset:].bool()])
    assert kept.startswith("a cat<|end|><|start|>assistant<|channel|>analysis")
    # truncation at max_sequence_length, and the "<= offset" case gives [B, 0, H]
    f_tr, m_tr = encode_prompts(
        model, tok, prompts, max_sequence_length=offset + 3, txt_offset=offset, date=DATE
    )
    assert m_tr.shape == (2, 3) and m_tr.all()
    f0, m0 = encode_prompts(model, tok, prompts, max_sequence_length=offset, txt_offset=offset, date=DATE)
    assert m0.shape == (2, 0) and all(f.shape == (2, 0, model.config.hidden_size) for f in f0)


def test_gpt_oss_text_encoder_interface(tiny, tmp_path):
    model, tok = tiny
    enc = GptOssTextEncoder(model, tok, date=DATE)
    assert isinstance(enc, TextEncoder)
    assert enc.num_layers == 2 and enc.hidden_size == model.config.hidden_size
    assert enc.txt_offset == prefix_token_count(tok, DATE)
    assert "layers=1,3" in enc.name and DATE in enc.name
    feats, mask = enc.encode(["a cat", "a dog on a table"])
    check_features(feats, mask, enc.num_layers, enc.hidden_size)
    # deterministic with a pinned date; features differ when the header date differs
    feats2, _ = enc.encode(["a cat", "a dog on a table"])
    assert torch.equal(feats[0], feats2[0])
    other = GptOssTextEncoder(model, tok, date="2001-01-01")
    f3, m3 = other.encode(["a cat", "a dog on a table"])
    assert other.name != enc.name
    k = int(min(m3[0].sum(), mask[0].sum()))
    assert not torch.allclose(f3[1][0, :k], feats[1][0, :k])  # the header date reaches the prompt tokens
    # load from a local folder (official layout: text_encoder/ + tokenizer/)
    model.save_pretrained(tmp_path / "text_encoder")
    tok.save_pretrained(tmp_path / "tokenizer")
    loaded = get_text_encoder(
        "gpt-oss",
        path=tmp_path / "text_encoder",
        torch_dtype=torch.float32,
        selected_layers=(1, 3),
        date=DATE,
    )
    lf, lm = loaded.encode(["a cat", "a dog on a table"])
    assert torch.equal(lm, mask)
    for a, b in zip(lf, feats):
        torch.testing.assert_close(a, b)
    with pytest.raises(FileNotFoundError, match="config.json"):
        get_text_encoder("gpt-oss", path=tmp_path / "nope")


def test_minilm_encoder():
    enc = get_text_encoder("minilm")
    assert enc.num_layers == 3 and enc.hidden_size == 384 and enc.layers == [1, 3, 5]
    feats, mask = enc.encode(["a red cube", "a photo of a cat sitting next to a dog"])
    check_features(feats, mask, 3, 384)
    assert mask[0].sum() < mask[1].sum() and mask[:, 0].all()
    with torch.no_grad():
        b = enc.tokenizer(["a red cube"], return_tensors="pt")
        hs = enc.model(**b, output_hidden_states=True).hidden_states
    n = int(mask[0].sum())
    torch.testing.assert_close(feats[2][0, :n], hs[6][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats[0][0, :n], hs[2][0], atol=1e-5, rtol=1e-5)
    # pretrained, not random: mean-pooled last layer ranks a paraphrase above an unrelated prompt
    f, m = enc.encode(["a cat sitting on a mat", "a kitten resting on a rug", "a stock market report"])
    pooled = (f[2] * m[..., None]).sum(1) / m.sum(1, keepdim=True)
    sim = torch.nn.functional.cosine_similarity(pooled[0:1], pooled[1:], dim=-1)
    assert sim[0] > sim[1] + 0.2
    with pytest.raises(ValueError, match="layers"):
        get_text_encoder("minilm", layers=(6,))


def test_minilm_groups_by_length_like_one_padded_pass():
    # prompts of very different lengths, out of order, in groups of 2: each group is padded to its own longest
    prompts = [
        "a cube",
        "a large red cube to the left of a small blue sphere, both resting on a grey floor",
        "a cat",
        "two green triangles",
        "an orange cylinder behind a purple cone",
        "a dog",
    ]
    grouped = get_text_encoder("minilm", group_size=2)
    assert grouped.group_size == 2
    feats, mask = grouped.encode(prompts)
    grouped.group_size = 0  # the same weights, one padded pass
    one_feats, one_mask = grouped.encode(prompts)
    assert torch.equal(mask, one_mask) and feats[0].shape == one_feats[0].shape
    with torch.no_grad():
        for j, prompt in enumerate(prompts):  # each prompt alone, no padding at all
            hs = grouped.model(
                **grouped.tokenizer([prompt], return_tensors="pt"), output_hidden_states=True
            ).hidden_states
            n = int(mask[j].sum())
            for f, i in zip(feats, grouped.layers):
                torch.testing.assert_close(f[j, :n], hs[i + 1][0], atol=1e-5, rtol=1e-5)
                assert (f[j, n:] == 0).all()  # padding is zeros, not the encoder's output for [PAD]
    for a, b in zip(feats, one_feats):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="group_size"):
        get_text_encoder("minilm", group_size=-1)


def test_registry():
    with pytest.raises(ValueError, match="Unknown text encoder"):
        get_text_encoder("clip")
    with pytest.raises(ValueError, match="path"):
        get_text_encoder("gpt-oss")
    enc = get_text_encoder("tiny-gpt-oss", date=DATE)
    assert enc.num_layers == 2 and enc.hidden_size == 32
