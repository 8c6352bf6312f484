"""Generate images for GenEval-format suite lines with a training-size model and judge them exactly.

``generate_suite`` is the in-memory twin of "write a GenEval folder, then ``evaluate_folder``": it
samples ``per_prompt`` images per suite line (Euler + CFG, the trainer's sampler), judges each with
the exact judge (``lenslib.eval.judge``) and returns GenEval result rows, so
``lenslib.eval.geneval.summarize`` gives the overall score with bootstrap intervals. Prompts are the
suite's own short prompts (``prompt="suite"``) or the Lens-style detailed rewrite of each line
(``prompt="detailed"``, ``lenslib.world.suites.detailed_prompt``). Images are judged exactly as the
model drew them (no post-processing); the judge refuses sizes below its limits. Sampling runs where the
model is (:func:`score_checkpoint` puts it on the accelerator when there is one); noise is drawn on the CPU
per image, so a score does not depend on the device's random generator. Used by the trainer's evaluation,
``benchmarks/bench_learning.py`` and chapter 4.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

from lenslib.data.sources import TokenBatcher, build_source
from lenslib.eval.judge import judge
from lenslib.flow import euler_sample, euler_sigmas, predict_velocity
from lenslib.train.build import load_model
from lenslib.world.spec import within_limits
from lenslib.world.suites import detailed_prompt

__all__ = [
    "checkpoint_model",
    "decode_uint8",
    "default_device",
    "generate_suite",
    "guess_path",
    "model_device",
    "sample_images",
    "score_checkpoint",
    "suite_noise",
]


@torch.no_grad()
def sample_images(
    model,
    text,
    mask,
    codec,
    size: tuple[int, int],
    noise: torch.Tensor,
    num_steps: int = 20,
    guidance: float = 3.0,
    mu: float | None = None,
    prediction: str = "velocity",
    return_guesses: bool = False,
):
    """Images (uint8, N x H x W x 3) from ``noise`` (N x tokens x channels) for text features
    ``text``/``mask``.

    The unconditional branch uses zeroed features and an all-false mask, as caption dropout trains it; one
    such token does, since masked text never reaches the image (official code: attention mask), so CFG costs
    less than two conditional passes. ``prediction`` is what the model outputs (its run's ``flow.prediction``,
    see ``lenslib.flow``). With ``return_guesses`` also the sampler's clean-image estimate before every step,
    ``x̂ = x_σ - σ v`` with the guided velocity ``v`` (``num_steps`` arrays like the images): where a sample's
    layout and shapes are decided (chapter 4).
    """
    h, w = size[0] // codec.patch, size[1] // codec.patch
    empty_text = [t.new_zeros(t.shape[0], 1, t.shape[2]) for t in text]
    empty_mask = mask.new_zeros(mask.shape[0], 1)

    def velocity(x, sigma, conditional):
        tx, m = (text, mask) if conditional else (empty_text, empty_mask)
        return predict_velocity(
            model,
            x,
            sigma,
            prediction,
            encoder_hidden_states=tx,
            encoder_hidden_states_mask=m,
            img_shapes=[(1, h, w)],
        ).float()

    if not return_guesses:
        return decode_uint8(codec, euler_sample(velocity, noise, num_steps, guidance, mu), h, w)
    x, path = euler_sample(velocity, noise, num_steps, guidance, mu, return_path=True)
    sig = euler_sigmas(num_steps, mu).tolist()
    guesses = [
        decode_uint8(codec, a - sig[i] * (b - a) / (sig[i + 1] - sig[i]), h, w)  # Euler: b = a + dσ·v
        for i, (a, b) in enumerate(zip(path[:-1], path[1:]))
    ]
    return decode_uint8(codec, x, h, w), guesses


def suite_noise(seed: int, index: int, k: int, tokens: int, channels: int) -> torch.Tensor:
    """The starting noise of image ``k`` of suite line ``index``: one generator per image, so neither the
    batch size nor the device changes a sample."""
    rng = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index, k]).generate_state(1)[0]))
    return torch.randn((tokens, channels), generator=rng)


@torch.no_grad()
def guess_path(
    model, batcher, prompts, *, size=64, num_steps=20, guidance=3.0, mu=None, prediction="velocity", seed=0
):
    """``(sigmas, images, guesses)`` for one sample per prompt: the noise levels σ of the steps, the final
    images and the sampler's clean-image estimate at each step (see :func:`sample_images`). Prompt ``i``
    starts from the noise of suite line ``i`` (:func:`suite_noise`). Chapter 4 shows these to locate where
    samples go wrong.
    """
    codec, device = batcher.codec, model_device(model)
    h, w = size // codec.patch, size // codec.patch
    text, mask = batcher.encode_text(list(prompts))
    noise = torch.stack(
        [suite_noise(seed, i, 0, h * w, model.config.in_channels) for i in range(len(prompts))]
    )
    was_training = model.training
    model.eval()
    try:
        images, guesses = sample_images(
            model,
            [t.to(device) for t in text],
            mask.to(device),
            codec,
            (size, size),
            noise.to(device),
            num_steps,
            guidance,
            mu,
            prediction,
            return_guesses=True,
        )
    finally:
        model.train(was_training)
    return euler_sigmas(num_steps, mu)[:-1].tolist(), images, guesses


def decode_uint8(codec, tokens: torch.Tensor, h: int, w: int) -> np.ndarray:
    """Tokens on an ``h × w`` grid → images as the judge reads them (uint8, N x H x W x 3, no
    post-processing)."""
    images = codec.decode(tokens.float().cpu(), h, w).clamp(-1, 1)
    return np.clip(np.rint((images.numpy() + 1) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


@torch.no_grad()
def generate_suite(
    model,
    batcher,
    lines: list[dict],
    *,
    per_prompt: int = 1,
    size: int = 64,
    num_steps: int = 20,
    guidance: float = 3.0,
    mu: float | None = None,
    prompt: str = "detailed",
    vocab: str = "shapes",
    seed: int = 0,
    batch_size: int = 64,
    return_images: bool = False,
    prediction: str = "velocity",
):
    """GenEval result rows (``index, k, tag, prompt, correct, reason``) for model samples of ``lines``.

    ``batcher`` turns captions into padded text features (a :class:`lenslib.data.sources.TokenBatcher`:
    its ``encode_text`` and ``codec``); ``prediction`` is the model's ``flow.prediction``. Image ``k`` of line
    ``index`` starts from noise seeded by ``(seed, index, k)``, so a score is reproducible and independent of
    ``batch_size``. Sampling runs on the model's device.
    """
    if prompt not in ("suite", "detailed"):
        raise ValueError(f"prompt must be 'suite' or 'detailed', got {prompt!r}")
    if not within_limits(vocab, size, size):
        raise ValueError(
            f"size {size} px is below the {vocab} judge's limit; sample at a larger size "
            "(the judge is exact only inside lenslib.world.spec's limits)"
        )
    codec = batcher.codec
    if size % codec.patch:
        raise ValueError(f"size {size} is not a multiple of the codec's patch {codec.patch}")
    h, w = size // codec.patch, size // codec.patch
    texts = {
        i: (detailed_prompt(line, seed, vocab) if prompt == "detailed" else line["prompt"])
        for i, line in enumerate(lines)
    }
    # similar lengths share a batch, so short prompts are not padded to long ones; rows come back in line
    # order
    jobs = sorted(
        ((i, k) for i in range(len(lines)) for k in range(per_prompt)), key=lambda j: len(texts[j[0]])
    )
    device = model_device(model)
    was_training = model.training
    model.eval()
    rows, images = [], []
    try:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            text, mask = batcher.encode_text([texts[i] for i, _ in chunk])
            text, mask = [t.to(device, non_blocking=True) for t in text], mask.to(device, non_blocking=True)
            noise = torch.stack(
                [suite_noise(seed, i, k, h * w, model.config.in_channels) for i, k in chunk]
            ).to(device)
            batch_imgs = sample_images(
                model, text, mask, codec, (size, size), noise, num_steps, guidance, mu, prediction
            )
            for (i, k), im in zip(chunk, batch_imgs):
                line = lines[i]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    verdict = judge(im, line, vocab)
                rows.append(
                    {
                        "index": i,
                        "k": k,
                        "tag": line["tag"],
                        "prompt": texts[i],
                        "correct": bool(verdict.correct),
                        "reason": verdict.reason,
                    }
                )
                if return_images:
                    images.append(im)
    finally:
        model.train(was_training)
    order = sorted(range(len(rows)), key=lambda j: (rows[j]["index"], rows[j]["k"]))
    rows = [rows[j] for j in order]
    images = [images[j] for j in order] if return_images else images
    return (rows, images) if return_images else rows


def model_device(model) -> torch.device:
    """Where ``model`` runs (its parameters' device; the CPU for a model without parameters): evaluation
    samples there."""
    param = next(iter(model.parameters()), None)
    return torch.device("cpu") if param is None else param.device


def default_device() -> torch.device:
    """Where evaluation samples: the accelerator when there is one (as the trainer trains), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def checkpoint_model(
    cfg, checkpoint, *, batcher: TokenBatcher | None = None, weights: str = "ema", device=None
):
    """Yield ``(model, batcher)``: the model of ``cfg`` (a ``TrainConfig``) holding a checkpoint's weights.

    ``checkpoint=None`` gives the untrained model of the same config (the trainer's initialisation, seeded
    by ``run.seed``): the floor a run is compared with. ``weights`` is "ema" (what gets exported) or
    "model". Pass the run's ``batcher`` to reuse its text encoder. Loading refuses a checkpoint without the
    EMA. The model is on ``device`` (default :func:`default_device`). Built by
    :func:`lenslib.train.build.load_model`; used by :func:`score_checkpoint` and chapter 4
    (``lenslib.eval.denoise``).
    """
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    device = default_device() if device is None else torch.device(device)
    if batcher is None:
        batcher, codec, text_encoder = build_source(cfg, device=device)
    else:
        codec, text_encoder = batcher.codec, batcher.text_encoder
    yield load_model(cfg, checkpoint, codec, text_encoder, weights=weights, device=device), batcher


def score_checkpoint(
    cfg, checkpoint, lines: list[dict], *, batcher=None, weights: str = "ema", device=None, **kwargs
) -> list[dict]:
    """GenEval result rows for a training checkpoint of ``cfg`` (a ``TrainConfig``) on suite ``lines``.

    ``checkpoint``, ``batcher``, ``weights`` and ``device`` are as in :func:`checkpoint_model` (``None``: the
    untrained model; the accelerator when there is one). Size, vocabulary and the model's ``flow.prediction``
    come from the config; ``kwargs`` go to :func:`generate_suite` (``per_prompt``, ``num_steps``,
    ``guidance``, ``prompt``, ``seed``, ``size`` to sample at another size, ...); the sampler's shift ``mu``
    defaults to the run's ``eval.sample_mu``. Used in chapters 4 and 6
    (``lenslib.experiments.caption_runs``) and ``benchmarks/bench_learning.py``.
    """
    with checkpoint_model(cfg, checkpoint, batcher=batcher, weights=weights, device=device) as (
        model,
        batcher,
    ):
        return generate_suite(
            model,
            batcher,
            lines,
            **{"size": cfg.data.image_size, "mu": cfg.eval.sample_mu, **kwargs},
            vocab=cfg.data.vocab,
            prediction=cfg.flow.prediction,
        )
