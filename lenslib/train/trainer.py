"""The training loop: ``train(config) -> summary``, the same on a laptop, under torchrun DDP, and FSDP2.

Read top to bottom (nanoGPT style):

1. join the job (``torchrun`` env or one process), pick device, strategy and precision;
2. build data (a batch source of :mod:`lenslib.data`), the model from its preset (:mod:`lenslib.train.build`:
   sized to the codec's token width and the text encoder's layers), wrap it (AC, DDP/FSDP2), EMA, AdamW
   (one fused kernel on CUDA);
3. resume from the run's newest intact checkpoint if there is one: verified against its checksums (a
   damaged one is reported and moved aside) and refused unless its config differs from this run's only in
   :data:`~lenslib.train.config.RESUMABLE_KEYS` (checked before the model and encoders are built);
4. ``for step in stream``: the :class:`~lenslib.data.stream.BatchStream` starts at the resumed step and hands
   over each step's micro-batches (planned by :func:`lenslib.data.order.plan`, prefetched, on the device).
   Per micro-batch, draw t (logit-normal), noise and caption dropout from a generator seeded by (seed, step,
   rank, micro), take the flow-matching loss, backprop (gradient sync on the last micro-batch only); clip;
   AdamW; EMA; log; maybe evaluate; maybe save;
5. on SIGTERM/SIGUSR1/SIGINT: every rank saves at the step boundary and the run returns
   ``preempted=True`` (the CLI exits with the requeue code).

All randomness of a step is a function of (seed, step, rank), so a resumed run repeats the
uninterrupted one bit for bit on the same hardware and world size; the checkpoint also carries every
global RNG state (python, numpy, torch, CUDA).

The loop's helpers have their own modules: :mod:`~lenslib.train.resume` (step 3),
:mod:`~lenslib.train.logger` and :mod:`~lenslib.train.previews` (logging and evaluation in step 4),
:mod:`~lenslib.train.checkpoint` (saving) and :mod:`~lenslib.train.run_folder` (the run's folder).

Used in chapter 4, by ``lens train`` and ``torchrun -m lenslib.train``.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from lenslib.atomic import write_json_atomic, write_text_atomic
from lenslib.data.buckets import training_buckets
from lenslib.data.order import mix_seed
from lenslib.data.sources import build_source
from lenslib.data.stream import BatchStream
from lenslib.flow import drop_captions, flow_matching_loss, sample_timesteps, training_mu

from . import checkpoint as ckpt
from .build import build_model
from .config import TrainConfig, check_paths, load_config, to_dict, to_yaml, validate
from .distributed import all_reduce_mean, autocast, barrier, init_distributed, shutdown, wrap_model
from .ema import EMA
from .logger import RunLogger
from .previews import evaluate
from .resume import check_model_config, init_defaults, preflight_resume, resume_point
from .run_folder import PREEMPTED_FILE, run_dir_of, run_totals
from .signals import REQUEUE_EXIT_CODE, PreemptionHandler, die_with_parent

__all__ = ["train", "lr_at", "T_BIN_EDGES"]

# Edges of the t-bins the loss is logged in (``loss_by_t``, this rank's samples): where in the noise range a
# model
# still errs. Layout is decided near t = 1 and fine detail near t = 0 (minRF logs its loss the same way).
T_BIN_EDGES = torch.tensor([0.25, 0.5, 0.75, 0.9])


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Warmup-stable-decay (torchtitan's schedule): linear warmup over ``optim.warmup_steps``, constant (the
    paper's LR), then over the last ``optim.decay_ratio`` of ``run.steps`` (never before the warmup ends) a
    decay to ``optim.min_lr_factor`` times the LR. A short run ends at a low LR, where the weights settle
    instead of circling a minimum (chapter 4's recipe; ``benchmarks/learning_ablation.py`` measures it)."""
    o = cfg.optim
    if o.warmup_steps > 0 and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    # a short run: after warmup
    start = max(o.warmup_steps, cfg.run.steps - round(o.decay_ratio * cfg.run.steps))
    if o.decay_ratio == 0 or step < start or start >= cfg.run.steps:
        return o.lr
    progress = (step - start + 1) / (cfg.run.steps - start)  # 1 at the last step
    if o.decay_type == "linear":
        keep = 1.0 - progress
    elif o.decay_type == "sqrt":
        keep = 1.0 - math.sqrt(progress)
    else:
        keep = 0.5 * (1.0 + math.cos(math.pi * progress))
    return o.lr * (o.min_lr_factor + (1.0 - o.min_lr_factor) * keep)


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def train(cfg: TrainConfig | str | Path, overrides: list[str] | None = None, on_log=None, judge=None) -> dict:
    """Run (or resume) training as configured; returns a summary dict.

    ``on_log(record)`` (optional, rank 0) receives every metrics record and every evaluation record
    (``kind == "eval"``, with the sample grid's path): chapter 4 draws live curves with it. ``judge(images,
    scenes)`` (optional) scores the preview samples of a world run when ``eval.judge`` is on: ``lens train``
    passes :func:`lenslib.eval.judge.score_scene_images` (evaluation sits above training, so the trainer is
    handed its judge rather than importing it).

    Summary keys: ``run_dir``, ``start_step``, ``step``, ``final_loss``, ``checkpoint``, ``preempted``,
    ``seconds``, ``params``, ``world_size``, ``damaged_checkpoints`` (names of damaged checkpoints passed
    over).

    Raises :class:`~lenslib.train.config.ConfigError` for a config that cannot run (checked before anything is
    created or loaded: :func:`~lenslib.train.config.validate`, :func:`~lenslib.train.config.check_paths`),
    :class:`~lenslib.train.config.ResumeMismatchError` (a ``ConfigError``) when the run folder's checkpoint
    belongs to another config, and :class:`~lenslib.train.checkpoint.DamagedCheckpointError` when no intact
    checkpoint is left to resume.
    """
    if not isinstance(cfg, TrainConfig):
        cfg = load_config(cfg, overrides)
    elif overrides:
        raise ValueError("pass overrides only together with a config name or path")
    # Every check before a process group, a folder, a model or an encoder exists: a bad config changes
    # nothing.
    validate(cfg, int(os.environ.get("WORLD_SIZE", "1")), for_training=True)
    check_paths(cfg)
    preflight_resume(cfg)
    info = init_distributed(cfg.dist.strategy, cfg.dist.backend, cfg.dist.timeout_s, cfg.dist.precision)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        return _train(cfg, info, on_log, judge)
    finally:
        torch.use_deterministic_algorithms(deterministic)  # leave a notebook's global state as it was
        shutdown()


def _adamw_kernels(device: torch.device) -> dict:
    """AdamW's implementation: on CUDA one fused kernel over all parameters (torch's ``fused=True``: no launch
    per parameter, one pass over memory); elsewhere torch's default per-parameter loop, which keeps CPU runs
    bit-identical to runs made before (the fused kernel rounds the last bit differently, and on two shared CPU
    cores a cached 10M-parameter step took 432 ms with it against 422 ms without). A resumed run keeps the
    setting its checkpoint was trained with (the optimizer's saved settings), so resume stays bit-exact."""
    return {"fused": True} if device.type == "cuda" else {}


def _train(cfg: TrainConfig, info, on_log=None, judge=None) -> dict:
    validate(cfg, info.world_size, for_training=True)
    if "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ:
        die_with_parent()  # a SIGKILLed torchrun must not leave orphaned workers training
    rank, world = info.rank, info.world_size
    run_dir = run_dir_of(cfg)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / PREEMPTED_FILE).unlink(missing_ok=True)
        for stale in ckpt.remove_stale_tmp(run_dir):  # a killed job's half-written files
            print(f"removed {stale}, left by an interrupted job", file=sys.stderr, flush=True)
    barrier()
    # Which checkpoint to continue, verified and identity-checked before any model or encoder is built.
    resume_from, resume_state, allowed_changes, damaged = resume_point(cfg, run_dir, info)
    _seed_everything(mix_seed(cfg.run.seed, rank))
    if cfg.run.deterministic and info.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    source, codec, text_encoder = build_source(cfg, device=info.device)
    model = build_model(cfg, codec, text_encoder)
    n_params = sum(p.numel() for p in model.parameters())
    model_config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(model.config).items()}
    if resume_state is not None and "model_config" in resume_state:  # e.g. a preset whose definition changed
        check_model_config(resume_state["model_config"], model_config, resume_from, init_defaults(model))
    model.train()
    model = wrap_model(
        model,
        info,
        cfg.model.activation_checkpointing,
        cfg.dist.reshard_after_forward,
        compile=cfg.model.compile,
    )
    ema = EMA(model, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params,
        lr=lr_at(cfg, 0),
        betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
        **_adamw_kernels(info.device),
    )

    # -- resume ------------------------------------------------------------------------------------
    start = 0
    if resume_from is not None:
        state = ckpt.load_checkpoint(resume_from, model, opt, ema, verify=False)  # verified by _resume_point
        start = int(state["step"])
    if info.is_main:
        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
    logger = RunLogger(cfg, run_dir, start, info.is_main, on_log)
    for note in logger.dropped if info.is_main else []:
        logger.event(f"WARNING: {note}")
    if resume_from is not None:
        logger.event(f"resumed from {resume_from} at step {start}")
        if allowed_changes:
            logger.event(
                "changed since the checkpoint (allowed on resume, RESUMABLE_KEYS): "
                + ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in allowed_changes)
            )
    logger.event(
        f"{cfg.run.name}: {n_params / 1e6:.2f}M parameters, world size {world}, strategy {info.strategy}, "
        f"{info.dtype}, device {info.device}{', torch.compile' if cfg.model.compile else ''}, "
        f"steps {start}->{cfg.run.steps}"
    )

    accum = cfg.grad_accum(world)
    step_buckets = training_buckets(cfg.data, None if cfg.data.buckets else cfg.optim.micro_batch * accum)
    buckets = [b for b, _ in step_buckets]
    handler = PreemptionHandler()
    last_loss = float("nan")
    saved = resume_from
    preempted = False
    t_start = time.time()
    step = start
    # Resume is the stream's start: every step's batches are a function of (seed, step, rank).
    stream = BatchStream(
        source,
        seed=cfg.run.seed,
        rank=rank,
        world_size=world,
        buckets=step_buckets,
        micro_batch=None if cfg.data.buckets else cfg.optim.micro_batch,
        start=start,
        stop=cfg.run.steps,
        device=info.device,
        workers=cfg.data.num_workers,
    )

    def trainer_state(step: int) -> dict:
        return {
            "samples_seen": step * (cfg.optim.global_batch or 0),
            "data": {"position": "step", "step": step},
            "config": to_dict(cfg),
            "run_name": cfg.run.name,
            "model_config": model_config,
        }

    try:
        for batches in stream:
            t0 = time.time()
            step = batches.step
            lr = lr_at(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            loss_sum = torch.zeros((), device=info.device)
            t_bins = torch.zeros(len(T_BIN_EDGES) + 1, 2, device=info.device)  # (loss sum, count) per t-bin
            n_samples = 0
            for micro, batch in enumerate(batches):  # with workers: built while the previous one trained
                h, w = batch.grid
                gen = torch.Generator(device=info.device).manual_seed(
                    mix_seed(cfg.run.seed, step, rank, micro, 1)
                )
                mu = training_mu(cfg.flow.mu_schedule, h * w, cfg.flow.mu)
                t = sample_timesteps(len(batch), mu, cfg.flow.logit_normal_scale, gen, info.device)
                noise = torch.randn(batch.tokens.shape, generator=gen, device=info.device)
                text, mask, _ = drop_captions(batch.text, batch.text_mask, cfg.flow.caption_dropout, gen)
                sync = micro == accum - 1
                if info.strategy == "fsdp":
                    model.set_requires_gradient_sync(sync)
                ctx = model.no_sync() if (info.strategy == "ddp" and not sync) else nullcontext()
                with ctx:
                    with autocast(info):
                        loss, per_sample = flow_matching_loss(
                            model,
                            batch.tokens,
                            t,
                            noise,
                            cfg.flow.prediction,
                            encoder_hidden_states=text,
                            encoder_hidden_states_mask=mask,
                            img_shapes=[(1, h, w)],
                        )
                    (loss / accum).backward()
                loss_sum += loss.detach()
                t_bins.index_add_(
                    0,
                    torch.bucketize(t, T_BIN_EDGES.to(t.device)),
                    torch.stack(
                        [per_sample.detach().float(), torch.ones_like(per_sample, dtype=torch.float32)], 1
                    ),
                )
                n_samples += len(batch)
            if cfg.optim.grad_clip > 0:
                gn = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            else:
                gn = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            if hasattr(gn, "full_tensor"):
                gn = gn.full_tensor()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if ema is not None and step % cfg.ema.every == 0:
                ema.update(model, step)

            data_time = batches.wait_s  # time this step waited for its batches
            loss_mean = all_reduce_mean(loss_sum / accum)
            samples = all_reduce_mean(torch.tensor(float(n_samples), device=info.device)) * world
            last_loss = float(loss_mean)
            dt = time.time() - t0
            rec = {
                "step": step,
                "loss": last_loss,
                "grad_norm": float(gn),
                "lr": lr,
                "samples": int(samples),
                "step_time_s": dt,
                "data_time_s": data_time,
                "samples_per_s": float(samples) / max(dt, 1e-9),
                "tokens": h * w,
                "elapsed_s": time.time() - t_start,
                "loss_by_t": [round(float(a / n), 6) if n else None for a, n in t_bins.cpu().tolist()],
            }
            if len(buckets) > 1 and world > 1:  # mixed-resolution step: every rank's token count
                rec["rank_tokens"] = _gather_ints(h * w, info)
            logger.log(rec)
            if not math.isfinite(last_loss):
                raise FloatingPointError(
                    f"loss became {last_loss} at step {step}; lower optim.lr or check the data."
                )

            if cfg.eval.every and step % cfg.eval.every == 0:
                stream.drain()  # the evaluation uses the data source too
                evaluate(model, ema, source, cfg, info, run_dir, step, logger, buckets[0], judge)

            preempted = handler.should_stop()
            if preempted or (cfg.run.save_every and step % cfg.run.save_every == 0) or step == cfg.run.steps:
                saved = ckpt.save_checkpoint(
                    run_dir, step, model, opt, ema, trainer_state(step), cfg.run.keep_last
                )
                logger.event(f"saved {saved}")
            if preempted:
                if info.is_main:
                    write_json_atomic(
                        run_dir / PREEMPTED_FILE,
                        {
                            "step": step,
                            "signal": handler.signal_name,
                            "checkpoint": str(saved),
                            "exit_code": REQUEUE_EXIT_CODE,
                        },
                    )
                logger.event(
                    f"preempted by {handler.signal_name}: saved step {step}; exit code {REQUEUE_EXIT_CODE} "
                    "asks for a requeue"
                )
                break
        barrier()
    finally:
        stream.close()
        handler.close()
        logger.close()
    if step == start and info.is_main:  # resumed at its last step: the loss is the run's, not NaN
        last_loss = run_totals(run_dir)["final_loss"]
    return {
        "run_dir": str(run_dir),
        "start_step": start,
        "step": step,
        "final_loss": last_loss,
        "checkpoint": str(saved) if saved else None,
        "preempted": preempted,
        "seconds": time.time() - t_start,
        "params": n_params,
        "world_size": world,
        "damaged_checkpoints": damaged,
    }


def _gather_ints(value: int, info) -> list[int]:
    out = [torch.zeros(1, dtype=torch.long, device=info.device) for _ in range(info.world_size)]
    dist.all_gather(out, torch.tensor([value], dtype=torch.long, device=info.device))
    return [int(x) for x in out]
