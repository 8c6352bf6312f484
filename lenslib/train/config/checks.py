"""Checks of a run config before anything runs: ranges, names, batch and image arithmetic, inputs and paths.

Everything is checked before any model is built: impossible combinations (a global batch that the world size
and micro-batch do not divide, buckets together with a fixed global batch, ...), names that do not exist
(model preset, vocabulary, caption kind, text encoder), and inputs that are missing on this machine raise
:class:`~lenslib.train.config.schema.ConfigError`, whose message names the key and the fix.

Used in chapter 4 and by ``lens train`` and ``lens submit``.
"""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path
from typing import Any

from lenslib.data.buckets import training_buckets
from lenslib.model.presets import get_config
from lenslib.paths import cache_dir
from lenslib.world.captions import CAPTION_KINDS
from lenslib.world.spec import MIN_SHORT_SIDE, VOCAB_MIN_SIDE, sample_scene

from .schema import ConfigError, TrainConfig, to_dict

__all__ = [
    "validate",
    "bucket_table",
    "bucket_batch",
    "check_inputs",
    "check_paths",
    "check_run_name",
]

_CHOICES = {
    "run.resume": None,  # free-form (auto | never | path)
    "run.progress": ("auto", "bar", "log"),
    "data.source": ("world", "hf", "webdataset", "features"),
    "data.codec": ("pixel", "latent"),
    "flow.mu_schedule": ("constant", "tokens"),
    "flow.prediction": ("velocity", "x"),
    "optim.decay_type": ("linear", "sqrt", "cosine"),
    "dist.strategy": ("auto", "none", "ddp", "fsdp"),
    "dist.backend": ("auto", "gloo", "nccl"),
    "dist.precision": ("auto", "fp32", "bf16"),
}


def bucket_table(cfg: TrainConfig) -> list:
    """The training resolutions: ``lenslib.data.buckets.Bucket`` objects (one square bucket in stage 1)."""
    return [b for b, _ in training_buckets(cfg.data)]


def bucket_batch(cfg: TrainConfig, bucket) -> int:
    """Per-rank batch for ``bucket`` (micro-batch in stage 1, the base area's batch in stage 2)."""
    if cfg.data.buckets is None:
        return cfg.optim.micro_batch
    return dict(training_buckets(cfg.data))[bucket]


def check_run_name(name: str) -> None:
    """``run.name`` names the run folder ``<cache>/runs/<run.name>``: it must be one plain folder name.

    A name with ``/``, ``..`` or a control character would put the run (its checkpoints, metrics and samples)
    outside the runs folder or break the log lines that name it. Chapter 4 names its run through the
    config."""
    bad = (
        not name.strip()
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    )
    if bad:
        raise ConfigError(
            f"run.name={name!r} must be a single folder name (no '/', '\\', '..' or control "
            "characters): the run folder is <cache>/runs/<run.name>. Give a plain name such as "
            "run.name=my-run, or set run.out_dir=<folder> to put the run elsewhere."
        )


def _non_finite(value: Any, key: str) -> tuple[str, float] | None:
    """The first NaN or infinite number in a config value (nested mappings and lists included), with its
    key."""
    if isinstance(value, float) and not math.isfinite(value):
        return key, value
    if isinstance(value, dict):
        items = ((f"{key}.{k}", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    return next((bad for k, v in items if (bad := _non_finite(v, k)) is not None), None)


def _check_names(cfg: TrainConfig) -> None:
    """The names a config picks from a registry exist: model preset and keys, world vocabulary, caption kind
    and scene options (the text encoder's name is checked by :func:`check_inputs`, whose registry imports
    torch)."""
    if not cfg.model.init_from:
        try:
            get_config(cfg.model.preset, **cfg.model.kwargs)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"model.preset / model.kwargs: {err}") from None
    if cfg.data.source != "world":
        return
    d = cfg.data
    if d.vocab not in VOCAB_MIN_SIDE:
        raise ConfigError(
            f"data.vocab={d.vocab!r} is not a world vocabulary: choose one of {', '.join(VOCAB_MIN_SIDE)}."
        )
    if d.caption_kind not in CAPTION_KINDS:
        raise ConfigError(
            f"data.caption_kind={d.caption_kind!r} is not a world caption kind: choose one of "
            f"{', '.join(CAPTION_KINDS)}."
        )
    try:
        # one scene (no rendering): unknown keys and bad values show here
        sample_scene(0, d.vocab, **d.world_kwargs)
    except TypeError as err:
        valid = [n for n, p in inspect.signature(sample_scene).parameters.items() if p.kind is p.KEYWORD_ONLY]
        raise ConfigError(f"data.world_kwargs: {err}; valid keys: {', '.join(valid)}.") from None
    except ValueError as err:
        raise ConfigError(f"data.world_kwargs: {err}.") from None
    smallest = math.ceil(1 / MIN_SHORT_SIDE)
    step = d.patch if d.codec == "pixel" else 16
    smallest = -(-smallest // step) * step  # also a multiple of the patch (pixel) or of 16 (latent)
    short = min(min(b.height, b.width) for b in bucket_table(cfg))
    if short < smallest:
        what = (
            f"data.image_size={short}"
            if d.buckets is None
            else f"data.buckets has a bucket side of {short} px"
        )
        fix = (
            f"data.image_size >= {smallest}"
            if d.buckets is None
            else "larger data.buckets.bases (or fewer extreme data.buckets.ratios), so every side is >= "
            f"{smallest}"
        )
        raise ConfigError(
            f"{what}: the world draws its thinnest objects {MIN_SHORT_SIDE:g} of the side wide, under one "
            f"pixel at {short} px, so they vanish from the image but not from the caption. Use {fix} (the "
            f"{d.vocab} judge is exact from {VOCAB_MIN_SIDE[d.vocab]} px)."
        )


def _check_folder(key: str, value: str, what: str, marker: str | None = None) -> None:
    path = Path(value)
    if not path.exists():
        raise ConfigError(f"{key}={value}: no such folder. Give {what}.")
    if not path.is_dir():
        raise ConfigError(f"{key}={value} is a file, not a folder. Give {what}.")
    if marker is not None and not (path / marker).is_file():
        raise ConfigError(f"{key}={value} has no {marker}: it is not {what}.")


def _check_run_folder(cfg: TrainConfig) -> None:
    """The run folder is a folder, or can be created: no file in its place or on its path, writable."""
    run_dir = Path(cfg.run.out_dir) if cfg.run.out_dir else cache_dir(create=False) / "runs" / cfg.run.name
    key = f"run.out_dir={cfg.run.out_dir}" if cfg.run.out_dir else f"the run folder {run_dir}"
    for p in (run_dir, *run_dir.parents):
        if not p.exists():
            continue
        if not p.is_dir():
            what = "is a file" if p == run_dir else f"cannot be created: {p} is a file"
            raise ConfigError(f"{key} {what}. Set run.out_dir to a folder (existing or new).")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{key} cannot be written: {p} is not writable. Set run.out_dir to a folder you can write."
            )
        break


def check_inputs(cfg: TrainConfig) -> None:
    """The inputs a run needs must be given (the paper configs leave data paths to the user) and the text
    encoder must exist; :func:`check_paths` checks that the given paths are there. ``validate(...,
    for_training=True)`` calls it (``lens train``, the trainer and ``lens submit`` before anything is created
    or queued)."""
    d = cfg.data
    # what must be given (the paper configs leave these to the user) ...
    if d.source != "world" and not d.path:
        raise ConfigError(
            f"data.source={d.source!r} needs data.path (a dataset folder, shard pattern or cache)."
        )
    if d.codec == "latent" and not d.vae:
        raise ConfigError("data.codec='latent' needs data.vae=<folder of the FLUX.2 VAE> (e.g. <lens>/vae).")
    # lazy: the registry imports torch (1.2 s, python -X importtime); loading a config needs none
    from lenslib.model.text_encoders.registry import available_text_encoders  # noqa: PLC0415

    if d.text_encoder not in available_text_encoders():
        raise ConfigError(
            f"data.text_encoder={d.text_encoder!r} is not a text encoder: choose one of "
            f"{', '.join(available_text_encoders())}."
        )
    if d.text_encoder == "gpt-oss" and "path" not in d.text_encoder_kwargs:
        raise ConfigError(
            "data.text_encoder='gpt-oss' needs data.text_encoder_kwargs.path=<lens>/text_encoder "
            "(and tokenizer_path=<lens>/tokenizer)."
        )


def check_paths(cfg: TrainConfig) -> None:
    """What a run reads must be there on this machine, and its run folder must be creatable: data, VAE, text
    encoder and tokenizer folders, ``model.init_from``, a ``run.resume`` checkpoint folder, and no file in the
    place of (or on the way to) the run folder. ``lens train``, each torchrun worker and
    :func:`~lenslib.train.trainer.train` call it before creating or loading anything (chapter 4); a job script
    prepared elsewhere (``lens submit``, chapter 7) is checked for presence only (:func:`check_inputs`), since
    its paths may exist only on the compute nodes."""
    d = cfg.data
    if d.source in ("hf", "features"):
        what = (
            "a datasets folder written by save_to_disk"
            if d.source == "hf"
            else "a feature cache folder built by `lens data cache`"
        )
        _check_folder("data.path", d.path, what)
    elif (
        d.source == "webdataset"
        and not any(c in d.path for c in "{*?[")
        and "://" not in d.path
        and not d.path.startswith("pipe:")
        and not Path(d.path).exists()
    ):
        raise ConfigError(
            f"data.path={d.path}: no such shard file or folder. Give tar shards as a file, folder, glob "
            "or {a..b} pattern."
        )
    elif d.source == "world" and d.path and Path(d.path).exists() and not Path(d.path).is_dir():
        raise ConfigError(f"data.path={d.path} is a file: for the world it is the folder world caches go to.")
    if d.codec == "latent":
        _check_folder("data.vae", d.vae, "the FLUX.2 VAE folder (e.g. <lens>/vae)")
    for name in ("path", "tokenizer_path"):
        if d.text_encoder_kwargs.get(name):
            _check_folder(
                f"data.text_encoder_kwargs.{name}",
                str(d.text_encoder_kwargs[name]),
                "the local folder of the text encoder" if name == "path" else "the local tokenizer folder",
            )
    if cfg.model.init_from:
        _check_folder(
            "model.init_from",
            cfg.model.init_from,
            "a transformer/ folder (e.g. a stage-1 export)",
            "config.json",
        )
    if cfg.run.resume not in ("auto", "never"):
        _check_folder(
            "run.resume",
            cfg.run.resume,
            "a checkpoint folder (RUN/checkpoints/step_XXXXXXX), or "
            "run.resume=auto (the run folder's newest checkpoint) or never",
            "trainer_state.json",
        )
    _check_run_folder(cfg)


def validate(cfg: TrainConfig, world_size: int | None = None, for_training: bool = False) -> TrainConfig:
    """Reject impossible combinations, naming the key(s) and the fix. Returns ``cfg``.

    Checked: every number is finite and in range, every name exists (preset, model keys, vocabulary, caption
    kind, scene options), ``run.name`` is one folder name, and the batch and image arithmetic works.
    ``for_training`` also requires the inputs a run reads to be given and its text encoder to exist
    (:func:`check_inputs`; that the paths are there is :func:`check_paths`'s). Used by chapter 4's configs,
    ``lens train`` and ``lens submit``.
    """
    d = to_dict(cfg)
    for section, values in d.items():
        bad = _non_finite(values, section)
        if bad is not None:
            raise ConfigError(
                f"{bad[0]}={bad[1]} is not a finite number: give a real value (the shipped configs "
                "show typical ones, lens train --print-config the current one)."
            )
    for key, choices in _CHOICES.items():
        if choices is None:
            continue
        section, name = key.split(".")
        value = d[section][name]
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}.")

    def positive(key, value, allow_zero=False):
        if value < 0 or (value == 0 and not allow_zero):
            raise ConfigError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value}.")

    check_run_name(cfg.run.name)
    positive("run.steps", cfg.run.steps)
    positive("run.log_every", cfg.run.log_every)
    positive("run.save_every", cfg.run.save_every, allow_zero=True)
    positive("run.keep_last", cfg.run.keep_last, allow_zero=True)
    positive("optim.lr", cfg.optim.lr)
    positive("optim.micro_batch", cfg.optim.micro_batch)
    positive("optim.warmup_steps", cfg.optim.warmup_steps, allow_zero=True)
    positive("optim.grad_clip", cfg.optim.grad_clip, allow_zero=True)
    if not (0.0 <= cfg.optim.decay_ratio <= 1.0 and 0.0 <= cfg.optim.min_lr_factor <= 1.0):
        raise ConfigError(
            f"optim.decay_ratio and optim.min_lr_factor are fractions in [0, 1], got "
            f"{cfg.optim.decay_ratio} and {cfg.optim.min_lr_factor}."
        )
    positive("optim.weight_decay", cfg.optim.weight_decay, allow_zero=True)
    positive("flow.logit_normal_scale", cfg.flow.logit_normal_scale)
    positive("eval.every", cfg.eval.every, allow_zero=True)
    positive("data.num_workers", cfg.data.num_workers, allow_zero=True)
    positive("data.text_pad_multiple", cfg.data.text_pad_multiple, allow_zero=True)
    positive("data.max_text_tokens", cfg.data.max_text_tokens)
    positive("data.patch", cfg.data.patch)
    positive("optim.eps", cfg.optim.eps)
    positive("eval.num_images", cfg.eval.num_images)
    positive("eval.num_steps", cfg.eval.num_steps)
    if cfg.data.num_scenes is not None:
        positive("data.num_scenes", cfg.data.num_scenes)
        if (
            cfg.data.source != "world"
            or cfg.data.buckets is not None
            or "num_scenes" in cfg.data.world_kwargs
        ):
            raise ConfigError(
                "data.num_scenes (a cached finite world pool) needs data.source=world at one image size "
                "(no data.buckets) and no data.world_kwargs.num_scenes: remove one of them."
            )
    positive("dist.timeout_s", cfg.dist.timeout_s)
    for i, b in enumerate(cfg.optim.betas):
        if not 0.0 <= b < 1.0:
            raise ConfigError(f"optim.betas[{i}]={b} must be in [0, 1).")
    if not 0.0 <= cfg.flow.caption_dropout < 1.0:
        raise ConfigError(f"flow.caption_dropout={cfg.flow.caption_dropout} must be in [0, 1).")
    if not 0.0 < cfg.ema.decay < 1.0:
        raise ConfigError(f"ema.decay={cfg.ema.decay} must be in (0, 1).")
    if cfg.ema.every < 1:
        raise ConfigError(f"ema.every={cfg.ema.every} must be >= 1.")

    if cfg.data.buckets is not None:
        if cfg.optim.global_batch is not None:
            raise ConfigError(
                "data.buckets and optim.global_batch are both set: with buckets every rank uses its "
                "bucket's batch, so the global batch varies per step. Set optim.global_batch=null."
            )
        bk = cfg.data.buckets
        if not bk.bases or len(bk.bases) != len(bk.batches):
            raise ConfigError(
                f"data.buckets.bases ({bk.bases}) and data.buckets.batches ({bk.batches}) must be non-empty "
                "and of equal length: one per-rank batch per base area."
            )
        if min(bk.bases) < 1 or min(bk.batches) < 1 or bk.multiple < 1:
            raise ConfigError("data.buckets.bases, .batches and .multiple must be positive.")
        for r in bk.ratios:
            parts = str(r).split(":")
            if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
                raise ConfigError(f"data.buckets.ratios entry {r!r} must look like 'W:H', e.g. '16:9'.")
    else:
        if cfg.optim.global_batch is None:
            raise ConfigError("optim.global_batch is null but data.buckets is not set: give a global batch.")
        positive("optim.global_batch", cfg.optim.global_batch)
        positive("data.image_size", cfg.data.image_size)
        if cfg.optim.global_batch % cfg.optim.micro_batch:
            raise ConfigError(
                f"optim.global_batch={cfg.optim.global_batch} is not divisible by optim.micro_batch="
                f"{cfg.optim.micro_batch}. Choose a micro-batch that divides the global batch."
            )
        if world_size is not None and cfg.optim.global_batch % (world_size * cfg.optim.micro_batch):
            raise ConfigError(
                f"optim.global_batch={cfg.optim.global_batch} is not divisible by world size {world_size} × "
                f"optim.micro_batch={cfg.optim.micro_batch} = {world_size * cfg.optim.micro_batch}. Change "
                f"optim.global_batch to a multiple of {world_size * cfg.optim.micro_batch}, or "
                "optim.micro_batch "
                f"so that world size × micro-batch divides it."
            )
    sizes = [(b.height, b.width) for b in bucket_table(cfg)]
    if cfg.data.codec == "pixel":
        for h, w in sizes:
            if h % cfg.data.patch or w % cfg.data.patch:
                raise ConfigError(
                    f"image size {h}x{w} is not divisible by data.patch={cfg.data.patch}: pick sizes that "
                    "are multiples of the patch."
                )
    else:
        for h, w in sizes:
            if h % 16 or w % 16:
                raise ConfigError(
                    f"image size {h}x{w}: the latent codec needs multiples of 16 (VAE ×8, then 2×2 packing)."
                )
    _check_names(cfg)
    if for_training:
        check_inputs(cfg)
    if cfg.dist.strategy == "none" and world_size is not None and world_size > 1:
        raise ConfigError(
            f"dist.strategy='none' but the job has {world_size} processes: use dist.strategy=ddp or fsdp "
            "(or launch one process)."
        )
    return cfg
