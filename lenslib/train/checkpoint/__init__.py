"""Checkpoints that lose nothing: atomic, sharded, resumable at another world size, pickle-free.

A checkpoint is a folder ``<run>/checkpoints/step_0000100/`` holding everything a resumed run needs to
continue bit for bit (k-diffusion's completeness, DCP's sharding):

* ``*.safetensors`` — model, EMA and AdamW state, written by ``torch.distributed.checkpoint`` (DCP) with
  its Hugging Face safetensors writer: every rank writes its own shard file, and any number of ranks (or one
  plain process) can load them. Loading never unpickles anything;
* ``rng/rank_00000.safetensors`` — every RNG of every rank (torch CPU, CUDA, numpy; Python's in the
  metadata);
* ``trainer_state.json`` — step, data position, optimizer hyper-parameters, world size, and the resolved
  run config (what :func:`lenslib.train.config.check_resume` compares a resuming run with);
* ``SHA256SUMS`` — the SHA-256 of every other file, in ``sha256sum`` format.

This package module is the checkpoints' public face (import from here); its parts, one idea each:

- ``layout``: names of the folder, its files and tensors, ``latest``, the run's list of checkpoints;
- ``saving``: the atomic save (``.tmp`` folder, rename, ``latest`` pointer, rotation);
- ``loading``: into built model/optimizer/EMA at any world size, or plain tensors for ``lens export``;
- ``integrity``: ``SHA256SUMS``, :func:`verify_checkpoint`, :func:`find_intact_checkpoint`;
- ``rng``: every RNG state of a process, pickle-free.

Used by the trainer, ``lens export``, chapter 4's stop-and-resume and chapter 7's multi-process runs.
"""

from __future__ import annotations

from .integrity import (
    CheckpointCheck,
    DamagedCheckpointError,
    checkpoint_files,
    find_intact_checkpoint,
    read_trainer_state,
    set_aside_damaged,
    verify_checkpoint,
)
from .layout import (
    CHECKPOINT_DIR,
    CHECKSUMS,
    DAMAGED_DIR,
    checkpoint_keys,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    remove_stale_tmp,
)
from .loading import load_checkpoint, load_tensors
from .rng import rng_state, set_rng_state
from .saving import save_checkpoint

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKSUMS",
    "DAMAGED_DIR",
    "DamagedCheckpointError",
    "CheckpointCheck",
    "verify_checkpoint",
    "find_intact_checkpoint",
    "set_aside_damaged",
    "remove_stale_tmp",
    "checkpoint_name",
    "checkpoint_files",
    "checkpoint_keys",
    "latest_checkpoint",
    "list_checkpoints",
    "save_checkpoint",
    "load_checkpoint",
    "read_trainer_state",
    "load_tensors",
    "rng_state",
    "set_rng_state",
]
