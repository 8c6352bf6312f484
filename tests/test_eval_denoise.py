"""denoise_scores: one-step clean-image estimates of held-out scenes, judged exactly at each noise level."""

import numpy as np
import pytest
import torch

from lenslib.data.sources import TokenBatcher, WorldSource
from lenslib.eval.denoise import denoise_scores
from lenslib.model.presets import get_config
from lenslib.model.transformer import LensTransformer2DModel
from lenslib.model.vae import PixelCodec

INDICES = list(range(-1, -9, -1))
LEVELS = (0.3, 0.95)


@pytest.fixture(scope="module")
def batcher():
    from lenslib.model.text_encoders import get_text_encoder

    world = WorldSource(0, text_prob=0.0, texture_prob=0.0)
    return TokenBatcher(world, PixelCodec(8), get_text_encoder("minilm", max_length=16), max_text_tokens=16)


class Oracle(torch.nn.Module):
    """Knows the clean tokens of the batch: outputs them (x) or the exact velocity (x_t - x0) / t."""

    def __init__(self, x0, prediction):
        super().__init__()
        self.x0, self.prediction = x0, prediction

    def forward(self, x_t, timestep=None, **kw):
        if self.prediction == "x":
            return self.x0
        return (x_t - self.x0) / timestep.reshape(-1, 1, 1)


@pytest.mark.parametrize("prediction", ["x", "velocity"])
def test_a_model_that_knows_the_image_is_judged_exact_at_every_level(batcher, prediction):
    x0 = batcher.batch(INDICES, (64, 64)).tokens.float()
    rows = denoise_scores(
        Oracle(x0, prediction), batcher, INDICES, 64, levels=LEVELS, prediction=prediction, return_images=True
    )
    assert [r["t"] for r in rows] == list(LEVELS)
    truth = [e.image for e in batcher.source.examples(INDICES, (64, 64))]
    for im, true in zip(rows[-1]["images"], truth):  # the estimate is the render, up to float rounding
        assert im.shape == (64, 64, 3) and np.abs(im.astype(int) - true.astype(int)).max() <= 1
    for r in rows:
        assert r["n"] == len(INDICES)
        assert r["scene_exact"] == 1.0 and r["ci95"] == (1.0, 1.0)
        assert r["object_recall"] == 1.0 and r["object_precision"] == 1.0


def test_an_untrained_model_reads_nothing_at_high_noise(batcher):
    torch.manual_seed(0)
    model = LensTransformer2DModel(**get_config("cpu-tiny", in_channels=192, patch_size=8, num_layers=1))
    model.initialize_weights()  # adaLN-Zero: velocity 0, so the estimate is the noisy input itself
    model.train()
    rows = denoise_scores(model, batcher, INDICES, 64, levels=(0.95,), prediction="velocity")
    assert rows[0]["scene_exact"] == 0.0 and rows[0]["object_recall"] == 0.0
    assert model.training  # the caller's mode is restored


def test_bad_input_is_refused_before_any_work(batcher):
    x0 = torch.zeros(1)
    with pytest.raises(ValueError, match="at least one scene"):
        denoise_scores(Oracle(x0, "x"), batcher, [], 64)
    with pytest.raises(ValueError, match=r"noise levels must lie in \(0, 1\]"):
        denoise_scores(Oracle(x0, "x"), batcher, INDICES, 64, levels=(0.0, 0.5))
