"""Cost calculator: OpenAI's documented image-token examples and plain arithmetic."""

import pytest

from lenslib.recaption.cost import image_tokens, recaption_cost, text_tokens


def test_image_tokens_match_documented_examples():
    # OpenAI vision docs: 1024x1024 high detail -> 4 tiles -> 765; 2048x4096 -> 768x1536 -> 6 tiles -> 1105
    assert image_tokens(1024, 1024) == 765
    assert image_tokens(2048, 4096) == 1105
    assert image_tokens(4096, 4096, detail="low") == 85
    assert image_tokens(512, 512) == 85 + 170  # one tile


def test_cost_arithmetic():
    c = recaption_cost(
        1_000_000,
        instruction_tokens=200,
        image_tokens_per_image=765,
        caption_words=100,
        price_in_per_m=2.0,
        price_out_per_m=8.0,
        user_tokens=10,
    )
    assert c.input_tokens_per_image == 975
    assert c.output_tokens_per_image == pytest.approx(133.0)
    assert c.usd == pytest.approx(975 * 2.0 + 133.0 * 8.0)  # per million images: tokens x USD/M
    assert recaption_cost(1_000_000, 200, 765, 100, discount=0.5).usd == pytest.approx(c.usd / 2)
    assert text_tokens("hello world") == 2
