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

Used in chapter 4, by ``lens train`` and ``torchrun -m lenslib.train``.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from lenslib.data.buckets import training_buckets
from lenslib.data.order import mix_seed
from lenslib.data.stream import BatchStream
from lenslib.flow import (
    drop_captions,
    euler_sample,
    flow_matching_loss,
    predict_velocity,
    sample_timesteps,
    training_mu,
)
from lenslib.paths import cache_dir

from . import checkpoint as ckpt
from .build import build_model
from .config import (
    ResumeMismatchError,
    TrainConfig,
    check_paths,
    check_resume,
    load_config,
    to_dict,
    to_yaml,
    validate,
)
from .data import Batch, build_source
from .distributed import all_reduce_mean, autocast, barrier, init_distributed, shutdown, wrap_model
from .ema import EMA
from .signals import REQUEUE_EXIT_CODE, PreemptionHandler, die_with_parent

__all__ = ["train", "run_dir_of", "lr_at", "read_metrics", "preflight_resume", "PREEMPTED_FILE"]

PREEMPTED_FILE = "PREEMPTED"
# Edges of the t-bins the loss is logged in (``loss_by_t``, this rank's samples): where in the noise range a model
# still errs. Layout is decided near t = 1 and fine detail near t = 0 (minRF logs its loss the same way).
T_BIN_EDGES = torch.tensor([0.25, 0.5, 0.75, 0.9])
METRICS_FILE = "metrics.jsonl"


def run_dir_of(cfg: TrainConfig) -> Path:
    """The run folder: ``run.out_dir`` or ``<cache>/runs/<run.name>``."""
    if cfg.run.out_dir:
        return Path(cfg.run.out_dir)
    return cache_dir() / "runs" / cfg.run.name


def _metric_lines(path: Path) -> tuple[list[tuple[str, dict]], list[str]]:
    """``([(line, record)], notes)`` of a JSONL file; lines that are not a JSON object are dropped and noted."""
    if not path.is_file():
        return [], []
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    kept, notes = [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            where = "its last line, cut short by an interrupted write" if i == last else f"line {i + 1}"
            notes.append(f"{path.name}: dropped {where} ({len(line)} characters: {line[:40]!r}...)")
            continue
        kept.append((line, rec))
    return kept, notes


def read_metrics(run_dir: str | Path) -> tuple[list[dict], list[str]]:
    """``(records, notes)`` of a run's ``metrics.jsonl``, tolerating what a killed job leaves: a torn last line
    (or any unreadable one) is dropped and described in ``notes`` instead of failing the reader. The
    trainer's resume, :func:`run_totals` and chapter 4's loss curves read metrics this way."""
    kept, notes = _metric_lines(Path(run_dir) / METRICS_FILE)
    return [rec for _, rec in kept], notes


def run_totals(run_dir: str | Path) -> dict:
    """``{"steps", "train_seconds", "final_loss"}`` of a run folder, read from its metrics across resumptions.

    A resumed run keeps only the metrics its checkpoint covers (:class:`_Logger`), so every step is counted
    once: ``train_seconds`` is the time spent in the steps that made the current weights (with the saves and
    evaluations between them, without start-up; steps lost to an interruption count once). ``final_loss`` is the
    last step's, also when a job resumes at its last step and trains nothing. Chapter 6's caption
    experiment reports each arm's training time with it.
    """
    recs, _ = read_metrics(run_dir)
    recs = [r for r in recs if "step_time_s" in r]  # training steps only (not evaluations)
    return {
        "steps": recs[-1]["step"] if recs else 0,
        "train_seconds": sum(r["step_time_s"] for r in recs),
        "final_loss": recs[-1]["loss"] if recs else None,
    }


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Warmup-stable-decay (torchtitan's schedule): linear warmup over ``optim.warmup_steps``, constant (the
    paper's LR), then over the last ``optim.decay_ratio`` of ``run.steps`` (never before the warmup ends) a decay
    to ``optim.min_lr_factor`` times the LR. A short run ends at a low LR, where the weights settle instead of circling a minimum
    (chapter 4's recipe; ``benchmarks/learning_ablation.py`` measures it)."""
    o = cfg.optim
    if o.warmup_steps > 0 and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    start = max(
        o.warmup_steps, cfg.run.steps - round(o.decay_ratio * cfg.run.steps)
    )  # a short run: after warmup
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
# Logging
# ------------------------------------------------------------------------------------------------


class _Logger:
    """JSONL metrics (+ optional tensorboard) on rank 0; a tqdm bar only on a terminal, else log lines."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, start: int, is_main: bool, on_log=None):
        self.is_main, self.every, self.on_log = is_main, cfg.run.log_every, on_log
        self.bar = self.tb = self.file = None
        if not is_main:
            return
        path = run_dir / METRICS_FILE
        self.dropped: list[str] = []
        if path.exists():  # keep only the steps the checkpoint covers: the curve continues seamlessly
            lines, self.dropped = _metric_lines(
                path
            )  # a torn last line (a kill mid-write) is dropped, not fatal
            kept = [ln for ln, rec in lines if rec.get("step", 0) <= start]
            ckpt.write_text_atomic(path, "".join(ln + "\n" for ln in kept))
        self.file = open(path, "a")
        interactive = cfg.run.progress == "bar" or (cfg.run.progress == "auto" and sys.stderr.isatty())
        if interactive:
            from tqdm.auto import tqdm  # only on a terminal

            self.bar = tqdm(total=cfg.run.steps, initial=start, desc=cfg.run.name, dynamic_ncols=True)
        if cfg.run.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # optional: only with run.tensorboard

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, rec: dict) -> None:
        if not self.is_main:
            return
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        if self.on_log is not None:
            self.on_log(rec)
        if self.tb is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, rec["step"])
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}")
        elif rec["step"] % self.every == 0:
            print(
                f"step {rec['step']:>7d}  loss {rec['loss']:.4f}  grad {rec['grad_norm']:.3f}  lr {rec['lr']:.2e}  "
                f"{rec['samples_per_s']:.1f} samples/s",
                flush=True,
            )

    def event(self, text: str) -> None:
        if not self.is_main:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        for x in (self.bar, self.tb, self.file):
            if x is not None:
                x.close()


# ------------------------------------------------------------------------------------------------
# Evaluation: preview samples (and judge scores when lenslib.eval provides a judge)
# ------------------------------------------------------------------------------------------------


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
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(grid).save(tmp)
    os.replace(tmp, path)


def _judge(images: torch.Tensor, batch: Batch, source, judge) -> dict | None:
    """Scores of world samples by ``judge(images, scenes)`` (``lens train`` passes the exact judge of
    :mod:`lenslib.eval.judge`), or None without a judge or a world to read the scenes from."""
    world = getattr(getattr(source, "source", None), "scene", None)
    if judge is None or world is None:
        return None
    scenes = [world(i) for i in batch.indices]
    return judge(images, scenes)


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
    ``seconds``, ``params``, ``world_size``, ``damaged_checkpoints`` (names of damaged checkpoints passed over).

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
    # Every check before a process group, a folder, a model or an encoder exists: a bad config changes nothing.
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
    resume_from, resume_state, allowed_changes, damaged = _resume_point(cfg, run_dir, info)
    _seed_everything(mix_seed(cfg.run.seed, rank))
    if cfg.run.deterministic and info.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    source, codec, text_encoder = build_source(cfg, device=info.device)
    model = build_model(cfg, codec, text_encoder)
    n_params = sum(p.numel() for p in model.parameters())
    model_config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(model.config).items()}
    if resume_state is not None and "model_config" in resume_state:  # e.g. a preset whose definition changed
        _check_model_config(resume_state["model_config"], model_config, resume_from, _init_defaults(model))
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
        ckpt.write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
    logger = _Logger(cfg, run_dir, start, info.is_main, on_log)
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
                ctx = model.no_sync() if (info.strategy == "ddp" and not sync) else _null()
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
                _evaluate(model, ema, source, cfg, info, run_dir, step, logger, buckets[0], judge)

            preempted = handler.should_stop()
            if preempted or (cfg.run.save_every and step % cfg.run.save_every == 0) or step == cfg.run.steps:
                saved = ckpt.save_checkpoint(
                    run_dir, step, model, opt, ema, trainer_state(step), cfg.run.keep_last
                )
                logger.event(f"saved {saved}")
            if preempted:
                if info.is_main:
                    ckpt.write_json_atomic(
                        run_dir / PREEMPTED_FILE,
                        {
                            "step": step,
                            "signal": handler.signal_name,
                            "checkpoint": str(saved),
                            "exit_code": REQUEUE_EXIT_CODE,
                        },
                    )
                logger.event(
                    f"preempted by {handler.signal_name}: saved step {step}; exit code {REQUEUE_EXIT_CODE} asks for a requeue"
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


def _loud(text: str, info) -> None:
    """A warning that must not scroll by unnoticed (rank 0, stderr)."""
    if info.is_main:
        print(f"!! WARNING: {text}", file=sys.stderr, flush=True)


def _resume_point(cfg: TrainConfig, run_dir: Path, info):
    """``(checkpoint, its trainer state, allowed config changes, damaged checkpoints passed over)`` to resume
    from, or Nones when the run starts fresh; every rank calls it.

    ``run.resume=auto`` takes the newest *intact* checkpoint: damaged newer ones are reported loudly and moved
    to ``checkpoints/damaged/``. A checkpoint named in ``run.resume`` must itself be intact. Either way the
    checkpoint's config must equal this run's up to :data:`~lenslib.train.config.RESUMABLE_KEYS`
    (:class:`~lenslib.train.config.ResumeMismatchError` otherwise). Chapter 4's stop-and-resume runs through it.
    """
    if cfg.run.resume == "never":
        return None, None, [], []
    damaged: list = []
    if cfg.run.resume == "auto":
        check, damaged = ckpt.find_intact_checkpoint(run_dir)
        for bad in damaged:
            _loud(bad.describe(), info)
        if check is None:
            if damaged:
                raise ckpt.DamagedCheckpointError(
                    f"no intact checkpoint in {run_dir / ckpt.CHECKPOINT_DIR}: every one is damaged (above). Resume "
                    "one of them explicitly only after repairing it, or start over with run.resume=never."
                )
            return None, None, [], []
    else:
        path = Path(cfg.run.resume)
        if not (path / "trainer_state.json").is_file():
            raise FileNotFoundError(
                f"run.resume={cfg.run.resume}: not a checkpoint folder (no trainer_state.json)."
            )
        check = ckpt.verify_checkpoint(
            path
        ).raise_if_damaged()  # a named checkpoint is never swapped for another
    if not check.verified:
        _loud(
            f"checkpoint {check.path} was written without {ckpt.CHECKSUMS}: resuming from it unverified", info
        )
    allowed = check_resume(check.state["config"], cfg, str(check.path)) if "config" in check.state else []
    if damaged:
        barrier()  # every rank has verified before rank 0 moves anything
        if info.is_main:
            moved = ckpt.set_aside_damaged(run_dir, damaged, check.path)
            _loud(
                f"moved {', '.join(p.name for p in moved)} to {run_dir / ckpt.CHECKPOINT_DIR / ckpt.DAMAGED_DIR}; "
                f"resuming from {check.path.name}, the newest intact checkpoint (step {check.state['step']}): "
                "the steps after it are trained again",
                info,
            )
        barrier()
    return check.path, check.state, allowed, [str(c.path.name) for c in damaged]


def _init_defaults(model) -> dict:
    """Constructor defaults of a model class: the value a config key had before the key existed."""
    params = inspect.signature(type(model).__init__).parameters.values()
    return json.loads(
        json.dumps(
            {p.name: p.default for p in params if p.default is not inspect.Parameter.empty},
            default=lambda v: None,
        )
    )


def _check_model_config(saved: dict, built: dict, checkpoint, defaults: dict | None = None) -> None:
    """The model the run builds must have the checkpoint's resulting config (``model_config`` in its trainer
    state), not only the same config keys: a preset or default that changed in the code changes the model too.

    A key the checkpoint does not record (an option added to the model since) compares at its constructor
    default; a key the model no longer has is left to the tensor-name check of ``load_checkpoint``."""
    norm = json.loads(json.dumps(built))
    defaults = defaults or {}
    missing = object()

    def old(k):
        return saved[k] if k in saved else defaults.get(k, missing)

    def show(v):
        return "(unset)" if v is missing else repr(v)

    keys = sorted(k for k in norm if not k.startswith("_") and old(k) != norm[k])
    if keys:
        shown = "; ".join(f"{k}: {show(old(k))} -> {norm[k]!r}" for k in keys)
        raise ResumeMismatchError(
            f"cannot resume {checkpoint}: the model this run builds differs from the checkpoint's in {shown} "
            "(architecture). Give this run a new run.out_dir, or set run.resume=never to start over in this folder."
        )


def preflight_resume(cfg: TrainConfig) -> None:
    """The identity check of :func:`_resume_point` on the checkpoint a run would resume, without hashing or
    building anything: ``lens train --nproc-per-node`` refuses a mismatched run with exit code 2 before it
    starts N processes (chapter 7). A damaged or unreadable checkpoint is left to the trainer."""
    if cfg.run.resume == "never":
        return
    path = ckpt.latest_checkpoint(run_dir_of(cfg)) if cfg.run.resume == "auto" else Path(cfg.run.resume)
    if path is None:
        return
    try:
        state = ckpt.read_trainer_state(path)
    except (OSError, ckpt.DamagedCheckpointError):
        return
    if isinstance(state, dict) and isinstance(state.get("config"), dict):
        check_resume(state["config"], cfg, str(path))


def _gather_ints(value: int, info) -> list[int]:
    out = [torch.zeros(1, dtype=torch.long, device=info.device) for _ in range(info.world_size)]
    dist.all_gather(out, torch.tensor([value], dtype=torch.long, device=info.device))
    return [int(x) for x in out]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _evaluate(
    model, ema, source, cfg, info, run_dir: Path, step: int, logger: _Logger, bucket, judge=None
) -> None:
    """Preview samples with the EMA weights (all ranks take part: FSDP needs every rank in the forward)."""
    model.eval()
    ctx = ema.swapped_in(model) if ema is not None else _null()
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
