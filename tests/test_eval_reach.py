"""attention_reach: how image queries spread their attention, checked against uniform attention."""

import pytest
import torch

from lenslib.data.batch import Batch
from lenslib.eval.reach import attention_reach
from lenslib.model.presets import get_config
from lenslib.model.transformer import LensTransformer2DModel

GRID = (4, 4)
VALID_TEXT = [6, 3]  # valid text tokens per sample (of 6 slots)


def _batch(cfg) -> Batch:
    g = torch.Generator().manual_seed(0)
    n, s_txt = len(VALID_TEXT), max(VALID_TEXT)
    tokens = torch.randn(n, GRID[0] * GRID[1], cfg["in_channels"], generator=g)
    text = [torch.randn(n, s_txt, cfg["enc_hidden_dim"], generator=g) for _ in cfg["selected_layer_index"]]
    mask = torch.arange(s_txt)[None, :] < torch.tensor(VALID_TEXT)[:, None]
    return Batch(tokens, GRID, text, mask, ["a", "b"], [0, 1])


def _blind_model():
    """A model whose queries and keys are all zero: every softmax row is uniform over the valid keys."""
    cfg = get_config("cpu-tiny", num_layers=2)
    model = LensTransformer2DModel(**cfg)
    dim = model.inner_dim
    with torch.no_grad():
        for block in model.transformer_blocks:
            for qkv in (block.attn.img_qkv, block.attn.txt_qkv):
                qkv.weight[: 2 * dim].zero_()
                qkv.bias[: 2 * dim].zero_()
    return model, cfg


def test_uniform_attention_reaches_every_valid_key():
    model, cfg = _blind_model()
    model.train()
    rows = attention_reach(model, _batch(cfg), t=0.5)
    assert model.training, "the model's mode is restored"
    assert [r["block"] for r in rows] == [0, 1]
    keys = [16 + v for v in VALID_TEXT]  # 16 image keys + the valid text keys: 22 and 19
    # On a 4x4 grid, 4 corners have 3 neighbours, 8 edge cells 5 and 4 inner cells 8: 84 / 16 = 5.25 on
    # average.
    for r in rows:
        assert r["effective_keys"] == pytest.approx(sum(keys) / 2, rel=1e-4)
        assert r["uniform_keys"] == pytest.approx(sum(keys) / 2)
        assert r["self"] == pytest.approx((1 / 22 + 1 / 19) / 2, rel=1e-4)
        assert r["neighbours"] == pytest.approx(5.25 * (1 / 22 + 1 / 19) / 2, rel=1e-4)
        assert r["neighbours"] == pytest.approx(r["uniform_neighbours"], rel=1e-4)
        assert r["text"] == pytest.approx((6 / 22 + 3 / 19) / 2, rel=1e-4)


def test_a_random_model_is_not_uniform():
    cfg = get_config("cpu-tiny", num_layers=1)
    torch.manual_seed(0)
    rows = attention_reach(LensTransformer2DModel(**cfg), _batch(cfg), t=0.5)
    assert rows[0]["effective_keys"] < rows[0]["uniform_keys"] - 0.1


@pytest.mark.parametrize("t", [-0.1, 1.5])
def test_a_noise_level_outside_0_1_is_refused(t):
    model, cfg = _blind_model()
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        attention_reach(model, _batch(cfg), t=t)
