"""generate_suite: model samples for suite lines, judged exactly; reproducible, honest, refuses bad sizes."""

import json

import numpy as np
import pytest
import torch

from lenslib.data.sources import TokenBatcher, WorldSource
from lenslib.eval.generate import generate_suite
from lenslib.eval.geneval import summarize
from lenslib.model.presets import get_config
from lenslib.model.transformer import LensTransformer2DModel
from lenslib.model.vae import PixelCodec
from lenslib.paths import REPO_ROOT
from lenslib.world.suites import detailed_prompt

LINES = [
    json.loads(x)
    for x in (REPO_ROOT / "data" / "suites" / "shapes_geneval.jsonl").read_text().splitlines()[::120]
]


@pytest.fixture(scope="module")
def batcher():
    from lenslib.model.text_encoders import get_text_encoder

    return TokenBatcher(
        WorldSource(0), PixelCodec(8), get_text_encoder("minilm", max_length=16), max_text_tokens=16
    )


def _model(zero: bool):
    torch.manual_seed(0)
    m = LensTransformer2DModel(**get_config("cpu-tiny", in_channels=192, patch_size=8, num_layers=1))
    return m.initialize_weights() if zero else m


def test_rows_follow_the_suite_and_samples_do_not_depend_on_batching(batcher):
    model = _model(zero=False)
    kw = dict(per_prompt=2, size=64, num_steps=2, guidance=2.0, prompt="suite", return_images=True)
    rows, images = generate_suite(model, batcher, LINES, batch_size=3, **kw)
    rows1, images1 = generate_suite(model, batcher, LINES, batch_size=1, **kw)
    assert [(r["index"], r["k"]) for r in rows] == [(i, k) for i in range(len(LINES)) for k in range(2)]
    assert [r["tag"] for r in rows] == [LINES[r["index"]]["tag"] for r in rows]
    assert [r["prompt"] for r in rows] == [LINES[r["index"]]["prompt"] for r in rows]
    assert images[0].shape == (64, 64, 3) and images[0].dtype == np.uint8
    for a, b in zip(images, images1):  # float reductions may differ by batch size: allow 1 level
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert not np.array_equal(images[0], images[1])  # each (line, k) has its own noise
    assert model.training  # the caller's mode is restored


def test_a_model_that_predicts_nothing_scores_zero(batcher):
    # adaLN-Zero init: the velocity is exactly 0, so every sample is its starting noise; no shapes.
    model = _model(zero=True)
    rows = generate_suite(model, batcher, LINES, per_prompt=1, size=64, num_steps=3, prompt="detailed")
    assert [r["prompt"] for r in rows] == [detailed_prompt(line, 0, "shapes") for line in LINES]
    assert not any(r["correct"] for r in rows)
    assert summarize(rows, n_boot=50)["overall"]["score"] == 0.0


def test_sizes_below_the_judges_limit_are_refused_before_sampling(batcher):
    with pytest.raises(ValueError, match="below the shapes judge's limit"):
        generate_suite(_model(zero=False), batcher, LINES, size=32)
    with pytest.raises(ValueError, match="prompt must be"):
        generate_suite(_model(zero=False), batcher, LINES, prompt="long")


def test_score_checkpoint_reads_the_runs_ema_weights_and_its_parameterisation(tmp_path):
    from lenslib.data.sources import build_source
    from lenslib.eval.generate import score_checkpoint
    from lenslib.train import train
    from lenslib.train.build import build_model
    from lenslib.train.checkpoint import latest_checkpoint, load_checkpoint
    from lenslib.train.config import load_config
    from lenslib.train.ema import EMA

    cfg = load_config(
        "cpu-tiny",
        [
            f"run.out_dir={tmp_path}",
            "run.steps=2",
            "run.save_every=0",
            "run.progress=log",
            "eval.every=0",
            "optim.global_batch=2",
            "optim.micro_batch=2",
            "optim.warmup_steps=1",
            "optim.lr=0.05",
            "data.max_text_tokens=8",
            "data.text_encoder_kwargs.max_length=8",
            "model.preset=cpu-small",
            "model.kwargs={num_layers: 1}",
            "eval.sample_mu=null",
            "flow.prediction=x",
            "ema.decay=0.5",
        ],
    )
    train(cfg)
    ckpt = latest_checkpoint(tmp_path)
    batcher, codec, text_encoder = build_source(cfg)
    kw = dict(per_prompt=1, num_steps=2, guidance=1.0, prompt="suite", return_images=True)
    rows, images = score_checkpoint(cfg, ckpt, LINES, batcher=batcher, **kw)
    assert [r["index"] for r in rows] == list(range(len(LINES)))

    # the same samples by hand: EMA weights, x-prediction
    model = build_model(cfg, codec, text_encoder)
    ema = EMA(model, cfg.ema.decay, cfg.ema.warmup)
    load_checkpoint(ckpt, model, ema=ema, restore_rng=False)
    with ema.swapped_in(model):
        _, by_hand = generate_suite(model, batcher, LINES, size=64, prediction="x", **kw)
    _, raw = generate_suite(model, batcher, LINES, size=64, prediction="x", **kw)
    _, raw_scored = score_checkpoint(cfg, ckpt, LINES, batcher=batcher, weights="model", **kw)
    assert all(np.array_equal(a, b) for a, b in zip(images, by_hand))
    assert all(np.array_equal(a, b) for a, b in zip(raw_scored, raw))
    assert not all(np.array_equal(a, b) for a, b in zip(images, raw))  # EMA != raw weights after 2 steps

    # no checkpoint: the untrained x-predictor outputs 0, so Euler shrinks the noise to a flat grey image
    _, floor = score_checkpoint(cfg, None, LINES, batcher=batcher, **kw)
    assert all(np.ptp(im) == 0 for im in floor)
    with pytest.raises(ValueError, match="weights must be"):
        score_checkpoint(cfg, ckpt, LINES, batcher=batcher, weights="best")


def test_the_unconditional_branch_needs_one_masked_text_token(batcher):
    # sample_images runs CFG's empty prompt as a single masked token: it must equal the padded empty prompt
    model = _model(zero=False).eval()
    text, mask = batcher.encode_text(["a photo of a red circle"] * 2)
    x, t = torch.randn(2, 64, 192, generator=torch.Generator().manual_seed(0)), torch.full((2,), 0.7)
    with torch.no_grad():

        def run(length, m=None):
            feats = [torch.zeros(2, length, f.shape[2]) for f in text]
            m = torch.zeros(2, length, dtype=torch.bool) if m is None else m
            return model(
                hidden_states=x,
                encoder_hidden_states=feats,
                encoder_hidden_states_mask=m,
                timestep=t,
                img_shapes=[(1, 8, 8)],
            )

        padded, single = run(text[0].shape[1]), run(1)
        conditional = model(
            hidden_states=x,
            encoder_hidden_states=text,
            encoder_hidden_states_mask=mask,
            timestep=t,
            img_shapes=[(1, 8, 8)],
        )
    assert (padded - single).abs().max() < 1e-5
    assert (padded - conditional).abs().max() > 1e-3  # so the text does change the prediction


def test_guess_path_shows_the_estimates_the_sampler_steps_towards(batcher):
    """The estimate before the last Euler step is the sample itself (that step goes to σ = 0: x - σv = x̂), the
    images are generate_suite's for the same lines and seed, and early estimates differ from the sample."""
    from lenslib.eval.generate import guess_path

    model = _model(zero=False)
    for p in model.proj_out.parameters():  # a model whose velocity is far from 0
        torch.nn.init.normal_(p, std=0.1)
    sigmas, images, guesses = guess_path(
        model, batcher, [line["prompt"] for line in LINES], num_steps=4, guidance=2.0, mu=1.0
    )
    assert len(sigmas) == len(guesses) == 4 and sigmas[0] == 1.0 and sigmas == sorted(sigmas, reverse=True)
    assert all(g.shape == images.shape and g.dtype == np.uint8 for g in guesses)
    assert np.abs(guesses[-1].astype(int) - images.astype(int)).max() <= 1
    assert np.abs(guesses[0].astype(int) - images.astype(int)).max() > 10
    _, suite_images = generate_suite(
        model,
        batcher,
        LINES,
        per_prompt=1,
        size=64,
        num_steps=4,
        guidance=2.0,
        mu=1.0,
        prompt="suite",
        return_images=True,
    )
    assert np.abs(np.stack(suite_images).astype(int) - images.astype(int)).max() <= 1
    assert model.training
