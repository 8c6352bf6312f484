"""What a run costs: training FLOPs of a run config, and the paper's GPU-hours split over its two stages.

The paper reports one number for pre-training, **192K A100 GPU-hours** for stages 1 and 2 together on
128 A100s. How it splits between the stages is not stated; two estimates bracket it:

* *equal time per step* — the stage-2 per-GPU batches (24/10/6 by base area) were chosen so that every
  rank spends about the same time per step as at 512² (paper §2.2), and both stages run 400K steps, so
  each stage gets half;
* *equal utilisation* — split in proportion to the matmul FLOPs (:mod:`lenslib.model.flops`, ×3 for
  forward + backward) of each stage's steps; stage 2's long sequences cost more attention FLOPs per
  sample than the batches compensate for.

Used in chapter 7.
"""

from __future__ import annotations

from dataclasses import dataclass

from lenslib.model.flops import image_tokens, transformer_flops
from lenslib.model.presets import get_config
from lenslib.train.config import bucket_batch, bucket_table, load_config

__all__ = ["TRAIN_FLOPS_PER_FORWARD", "step_flops", "run_flops", "StageCost", "paper_stage_costs"]

#: A training step ≈ forward + backward ≈ 3 forwards.
TRAIN_FLOPS_PER_FORWARD = 3
#: Text tokens per caption: ~109 words plus the prompt suffix (the same assumption as chapter 2).
CAPTION_TOKENS = 160


def step_flops(cfg, world_size: int, txt_tokens: int = CAPTION_TOKENS) -> float:
    """Mean training FLOPs of one optimizer step over all ranks (buckets drawn uniformly in stage 2)."""
    model = get_config(cfg.model.preset, **cfg.model.kwargs)
    buckets = bucket_table(cfg)
    if cfg.data.buckets is None:  # one resolution: the global batch, however it is split
        b = buckets[0]
        per_sample = transformer_flops(model, image_tokens(b.height, b.width), txt_tokens)["total"]
        return TRAIN_FLOPS_PER_FORWARD * per_sample * cfg.optim.global_batch
    per_rank = [
        bucket_batch(cfg, b) * transformer_flops(model, image_tokens(b.height, b.width), txt_tokens)["total"]
        for b in buckets
    ]
    return TRAIN_FLOPS_PER_FORWARD * world_size * sum(per_rank) / len(per_rank)


def run_flops(cfg, world_size: int, txt_tokens: int = CAPTION_TOKENS) -> float:
    """Training FLOPs of the whole run: ``run.steps`` × :func:`step_flops`."""
    return cfg.run.steps * step_flops(cfg, world_size, txt_tokens)


@dataclass
class StageCost:
    stage: str
    steps: int
    flops: float
    gpu_hours_equal_time: float
    gpu_hours_equal_utilisation: float
    days_on_cluster: float  # wall-clock days on the paper's GPUs (equal-time estimate)


def paper_stage_costs(total_gpu_hours: float = 192_000, gpus: int = 128) -> list[StageCost]:
    """The paper's two pre-training stages: FLOPs and two estimates of their share of ``total_gpu_hours``."""
    stages = [
        ("stage 1", load_config("lens-stage1", world_size=gpus)),
        ("stage 2", load_config("lens-stage2", world_size=gpus)),
    ]
    flops = [run_flops(cfg, gpus) for _, cfg in stages]
    steps = [cfg.run.steps for _, cfg in stages]
    out = []
    for (name, cfg), f, s in zip(stages, flops, steps):
        equal_time = total_gpu_hours * s / sum(steps)
        out.append(
            StageCost(name, s, f, equal_time, total_gpu_hours * f / sum(flops), equal_time / gpus / 24)
        )
    return out
