"""What a model knows at each noise level: judge its one-step denoising of held-out world scenes.

A text-to-image model is judged on images it samples from pure noise, and for a small model early in
training that score stays at zero for a long time. Sampling hides *where* the model stands: the 20
Euler steps start at σ = 1, where only the caption says what goes where, and end at σ ≈ 0, where the
image itself says almost everything. This diagnostic asks the model one step at a time instead: noise
a held-out scene to level ``t`` (``x_t = (1 - t) x0 + t ε``), take the model's clean-image estimate
``x̂0 = x_t - t v`` in one step, and let the exact judge compare it with the scene (every object, its
class and colour, boxes within 2 px: ``lenslib.eval.judge.match_scene``).

At low noise the estimate is mostly copied from the noisy image and a trained model gets it right
early; at high noise the caption must supply the layout, and that is what a run learns last. The
untrained model, compared at the same ``t`` on the same noise, is the floor. Used in chapter 4.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

from lenslib.eval.generate import decode_uint8, model_device
from lenslib.eval.judge import match_scene
from lenslib.eval.parse import parse
from lenslib.eval.stats import share_interval
from lenslib.flow import interpolate, predict_velocity

__all__ = ["denoise_scores", "NOISE_LEVELS"]

#: The noise levels chapter 4 reports, from "mostly image" to "mostly caption".
NOISE_LEVELS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 0.95)


@torch.no_grad()
def denoise_scores(
    model,
    batcher,
    indices: Sequence[int],
    size: int,
    *,
    levels: Sequence[float] = NOISE_LEVELS,
    prediction: str = "velocity",
    seed: int = 0,
    n_boot: int = 1000,
    return_images: bool = False,
):
    """Exact-judge scores of one-step clean-image estimates of world scenes ``indices``, per noise level.

    ``batcher`` is the run's :class:`lenslib.data.sources.TokenBatcher` over a ``WorldSource`` (each example
    carries its scene); ``prediction`` is the run's ``flow.prediction``. The noise is seeded by ``seed``
    alone, so two models compared on the same ``indices`` see the same noisy inputs. Returns one row per
    level: ``t``, ``n``, ``scene_exact`` (fraction of estimates whose parse equals the scene) with its 95 %
    bootstrap interval ``ci95``, and the mean ``object_recall`` / ``object_precision``. With
    ``return_images`` each row also holds ``images``, the estimates as uint8 arrays (H x W x 3).
    """
    if not indices:
        raise ValueError("denoise_scores needs at least one scene index")
    bad = [t for t in levels if not 0.0 < float(t) <= 1.0]
    if bad:
        raise ValueError(f"noise levels must lie in (0, 1], got {bad}")
    examples = batcher.source.examples(list(indices), (size, size))
    if any("scene" not in e.meta for e in examples):
        raise ValueError(
            "denoise_scores needs world scenes (a WorldSource batcher): the judge compares with each "
            "example's scene"
        )
    batch = batcher.from_examples(examples, list(indices))
    h, w = batch.grid
    noise = torch.randn(
        batch.tokens.shape, generator=torch.Generator().manual_seed(int(seed))
    )  # CPU: any device
    device = model_device(model)
    batch, noise = batch.to(device), noise.to(device)
    x0 = batch.tokens.float()
    was_training = model.training
    model.eval()
    rows = []
    try:
        for level in levels:
            t = torch.full((x0.shape[0],), float(level), device=device)
            x_t = interpolate(x0, noise, t)
            v = predict_velocity(
                model,
                x_t,
                t,
                prediction,
                encoder_hidden_states=batch.text,
                encoder_hidden_states_mask=batch.text_mask,
                img_shapes=[(1, h, w)],
            ).float()
            x0_hat = x_t - t.reshape(-1, 1, 1) * v
            arrs = decode_uint8(batcher.codec, x0_hat, h, w)
            matches = []
            for arr, ex in zip(arrs, examples):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    matches.append(
                        match_scene(parse(arr, ex.meta["scene"].vocab), ex.meta["scene"], size, size)
                    )
            hits = np.array([m.exact for m in matches], dtype=float)
            rows.append(
                {
                    "t": float(level),
                    "n": len(matches),
                    "scene_exact": float(hits.mean()),
                    "ci95": share_interval(hits, n_boot, seed),
                    "object_recall": float(np.mean([m.recall for m in matches])),
                    "object_precision": float(np.mean([m.precision for m in matches])),
                    **({"images": list(arrs)} if return_images else {}),
                }
            )
    finally:
        model.train(was_training)
    return rows
