"""Evaluation during training: preview samples with the EMA weights, and judge scores of world samples.

Every ``eval.every`` steps all ranks sample held-out captions (FSDP needs every rank in the forward); rank 0
writes the grid to ``samples/step_XXXXXXX.png`` and a line to ``evals.jsonl``. The judge is handed in by the
caller (``lens train`` passes :func:`lenslib.eval.judge.score_scene_images`): evaluation sits above training.

Used by the trainer (chapter 4's preview grids).
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lenslib.atomic import atomic_file
from lenslib.data.batch import Batch
from lenslib.flow import euler_sample, predict_velocity

from .config import TrainConfig
from .distributed import autocast
from .logger import RunLogger

__all__ = ["sample_previews", "evaluate"]


@torch.no_grad()
def sample_previews(model, source, cfg: TrainConfig, info, size: tuple[int, int]):
    """Preview samples (the caller swaps in the EMA weights): Euler + CFG on held-out captions.

    Returns (images in [-1, 1], captions, the held-out batch). Every rank must call it under FSDP.
    """
    n = cfg.eval.num_images
    indices = [-(i + 1) for i in range(n)]  # negative indices: never used for training
    batch: Batch = source.batch(indices, size).to(info.device)
    if cfg.eval.prompts:
        prompts = list(cfg.eval.prompts)[:n]
        text, mask = source.encode_text(prompts)
        batch = Batch(
            batch.tokens[: len(prompts)],
            batch.grid,
            [t.to(info.device) for t in text],
            mask.to(info.device),
            prompts,
            batch.indices[: len(prompts)],
        )
    h, w = batch.grid
    empty_text = [torch.zeros_like(t) for t in batch.text]
    empty_mask = torch.zeros_like(batch.text_mask)

    def velocity(x, sigma, conditional):
        text, mask = (batch.text, batch.text_mask) if conditional else (empty_text, empty_mask)
        with autocast(info):
            return predict_velocity(
                model,
                x,
                sigma,
                cfg.flow.prediction,
                encoder_hidden_states=text,
                encoder_hidden_states_mask=mask,
                img_shapes=[(1, h, w)],
            ).float()

    g = torch.Generator(device=info.device).manual_seed(cfg.eval.seed)
    noise = torch.randn(batch.tokens.shape, generator=g, device=info.device)
    tokens = euler_sample(velocity, noise, cfg.eval.num_steps, cfg.eval.guidance, cfg.eval.sample_mu)
    images = source.codec.decode(tokens.float().cpu(), h, w).clamp(-1, 1)
    return images, batch.captions, batch


def _save_grid(images: torch.Tensor, path: Path) -> None:
    x = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    n, h, w, _ = x.shape
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = x[i]
    with atomic_file(path, keep_suffix=True) as tmp:
        Image.fromarray(grid).save(tmp)


def _judge(images: torch.Tensor, batch: Batch, source, judge) -> dict | None:
    """Scores of world samples by ``judge(images, scenes)`` (``lens train`` passes the exact judge of
    :mod:`lenslib.eval.judge`), or None without a judge or a world to read the scenes from."""
    world = getattr(getattr(source, "source", None), "scene", None)
    if judge is None or world is None:
        return None
    scenes = [world(i) for i in batch.indices]
    return judge(images, scenes)


def evaluate(
    model, ema, source, cfg, info, run_dir: Path, step: int, logger: RunLogger, bucket, judge=None
) -> None:
    """Preview samples with the EMA weights (all ranks take part: FSDP needs every rank in the forward)."""
    model.eval()
    ctx = ema.swapped_in(model) if ema is not None else nullcontext()
    with ctx:
        images, captions, batch = sample_previews(model, source, cfg, info, (bucket.height, bucket.width))
    model.train()
    if not info.is_main:
        return
    out = run_dir / "samples"
    out.mkdir(exist_ok=True)
    _save_grid(images, out / f"step_{step:07d}.png")
    rec = {"step": step, "kind": "eval", "captions": captions, "grid": str(out / f"step_{step:07d}.png")}
    scores = None if cfg.eval.prompts or not cfg.eval.judge else _judge(images, batch, source, judge)
    if scores is not None:
        rec["judge"] = scores
    with open(run_dir / "evals.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    if logger.on_log is not None:
        logger.on_log(rec)
    logger.event(
        f"step {step}: samples -> {out / f'step_{step:07d}.png'}" + (f", judge {scores}" if scores else "")
    )
