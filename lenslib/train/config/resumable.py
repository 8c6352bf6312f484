"""Resuming is an identity check: a checkpoint continues only a run of the same model, codec, data and recipe.

What may differ between a checkpoint and the run that resumes it is one explicit list, :data:`RESUMABLE_KEYS`
(run length, LR schedule, logging, evaluation, save cadence, how the job is spread over processes, where files
live); any other difference is refused with :class:`ResumeMismatchError`, naming the keys and the fix. The
comparison itself is :func:`lenslib.data.config_diff.config_diff`.

Used in chapter 4 (a preempted run resumed) and by the trainer.
"""

from __future__ import annotations

from typing import Any

from lenslib.data.config_diff import config_diff

from .loading import merge_config
from .schema import ConfigError, TrainConfig, to_dict

__all__ = ["ResumeMismatchError", "RESUMABLE_KEYS", "resume_differences", "check_resume"]


class ResumeMismatchError(ConfigError):
    """A checkpoint that belongs to another run: resuming it would train a different model or recipe."""


#: The one list of config keys that may differ between a checkpoint and the run that resumes it, with the
#: reason each is safe. A key names itself and everything below it (``eval`` covers ``eval.every``, ...).
#: Every other key (the architecture, codec, text encoder, data shape and content, objective, optimizer and
#: EMA settings, seed) must be equal, or :func:`check_resume` refuses. Chapter 4 resumes a preempted run
#: under it.
RESUMABLE_KEYS: dict[str, str] = {
    "run.name": "a label; the run folder is run.out_dir",
    "run.out_dir": "where the run folder is (a run copied to another machine)",
    "run.resume": "which checkpoint to continue",
    "run.steps": "a longer or shorter run",
    "run.log_every": "logging",
    "run.progress": "logging",
    "run.tensorboard": "logging",
    "run.save_every": "save cadence",
    "run.keep_last": "save cadence",
    "run.deterministic": "kernel choice: exactness of the repetition, not what is trained",
    "optim.lr": "LR schedule",
    "optim.warmup_steps": "LR schedule",
    "optim.decay_ratio": "LR schedule (e.g. a decay added to extend a run)",
    "optim.decay_type": "LR schedule",
    "optim.min_lr_factor": "LR schedule",
    "eval": "preview samples and judge scores read the model, never change it",
    "dist": "how the job is spread over processes: checkpoints load at any world size (chapter 7)",
    "model.activation_checkpointing": "recomputation: the same numbers with less memory",
    "model.compile": "the same model, compiled",
    "model.init_from": "only the weights of step 0; a resumed run loads the checkpoint's",
    "data.num_workers": "prefetch threads build the same batches",
    "data.path": "where the data is on this machine",
    "data.vae": "where the VAE is on this machine",
    "data.text_encoder_kwargs.path": "where the text encoder is on this machine",
    "data.text_encoder_kwargs.tokenizer_path": "where the tokenizer is on this machine",
}

# What a refused key is part of, for the message (first matching prefix wins).
_KINDS = (
    ("model.", "architecture"),
    ("data.codec", "codec"),
    ("data.patch", "codec"),
    ("data.vae", "codec"),
    ("data.text_encoder", "text encoder"),
    ("data.max_text_tokens", "text encoder"),
    ("data.text_pad_multiple", "text encoder"),
    ("data.image_size", "data shape"),
    ("data.buckets", "data shape"),
    ("data.", "data"),
    ("flow.", "objective"),
    ("optim.", "optimizer"),
    ("ema.", "EMA"),
    ("run.seed", "seed"),
)


def _resumable(key: str) -> bool:
    return any(key == r or key.startswith(r + ".") for r in RESUMABLE_KEYS)


def resume_differences(
    saved: dict, cfg: TrainConfig
) -> tuple[list[tuple[str, Any, Any]], list[tuple[str, Any, Any]]]:
    """``(refused, allowed)``: the keys whose value differs between a checkpoint's stored config and ``cfg``,
    each as ``(key, checkpoint value, run value)``; ``allowed`` are those on :data:`RESUMABLE_KEYS`.

    Keys added to the schema after the checkpoint was written compare at their defaults; keys the schema no
    longer has are ignored (they configure nothing).
    """
    schema = {f"{s}.{k}" for s, sec in to_dict(TrainConfig()).items() for k in sec}
    refused, allowed = [], []
    for key, a, b in config_diff(merge_config(to_dict(TrainConfig()), saved), to_dict(cfg)):
        if ".".join(key.split(".")[:2]) in schema:
            (allowed if _resumable(key) else refused).append((key, a, b))
    return refused, allowed


def _kind(key: str) -> str:
    return next((kind for prefix, kind in _KINDS if key.startswith(prefix)), "run")


def check_resume(
    saved: dict, cfg: TrainConfig, checkpoint: str = "the checkpoint"
) -> list[tuple[str, Any, Any]]:
    """Refuse to resume ``checkpoint`` (whose stored config is ``saved``) with ``cfg`` unless they differ only
    in :data:`RESUMABLE_KEYS`; returns those allowed differences (the trainer logs them).

    Without this a run with other layers or patches would load the tensors that happen to fit and train on
    silently (``dcp.load`` ignores tensors it was not asked for), or fail deep inside with a size mismatch.
    The trainer calls it before building the model or loading encoders; chapter 4 resumes through it.
    """
    refused, allowed = resume_differences(saved, cfg)
    if refused:
        shown = "; ".join(f"{k}: {a!r} -> {b!r} ({_kind(k)})" for k, a, b in refused)
        raise ResumeMismatchError(
            f"cannot resume {checkpoint}: it was trained with a different config: {shown}. "
            "A checkpoint continues only the same run; what may change on resume is listed in "
            "lenslib.train.config.RESUMABLE_KEYS (run length, LR schedule, logging, evaluation, save "
            "cadence, dist.*, "
            "file locations). To train this config, give it a new run.out_dir, or set run.resume=never to "
            "start over in this folder (its checkpoints are replaced)."
        )
    return allowed
