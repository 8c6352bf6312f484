"""Saving a checkpoint atomically: all ranks write a ``.tmp`` folder, rank 0 renames it and moves ``latest``.

Model, EMA and AdamW state go through ``torch.distributed.checkpoint`` (DCP) with its Hugging Face safetensors
writer: every rank writes its own shard file and the shard offsets go into the safetensors metadata, so
FSDP2's sharded tensors are saved without gathering and can be loaded by any number of ranks (or by one plain
process). DCP's default format would ``pickle`` its metadata; this one is plain safetensors + JSON.

A job killed at any moment leaves either the previous checkpoint or the new one as ``latest``, never a
half-written one; stale ``.tmp`` folders are deleted by the next save, and a save that fails (a full disk)
deletes its own. Old checkpoints are rotated (keep the last K). :mod:`lenslib.train.faults` kills jobs between
these file operations to show it.

Used by the trainer (chapter 4's stop-and-resume, chapter 7's multi-process runs).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from lenslib.atomic import write_json_atomic, write_text_atomic

from .integrity import checkpoint_files, format_sums, hash_files
from .layout import (
    CHECKPOINT_DIR,
    CHECKSUMS,
    LATEST_FILE,
    STATE_FILE,
    barrier,
    checkpoint_name,
    distributed,
    flatten_state,
    fsync_dir,
    list_checkpoints,
    rank,
)
from .rng import rng_state

__all__ = ["save_checkpoint"]


def _model_optim_state(model, optimizer):
    # lazy: torch.distributed.checkpoint costs 0.6 s on top of torch (python -X importtime); naming, listing
    # and verifying checkpoints need none of it
    from torch.distributed.checkpoint.state_dict import get_state_dict  # noqa: PLC0415

    msd, osd = get_state_dict(model, optimizer)
    # Optimizer tensors ({fqn: {step, exp_avg, exp_avg_sq}}) go to safetensors; hyper-parameters to JSON.
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in osd["param_groups"]
    ]
    return msd, flatten_state(osd["state"]), groups


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema=None,
    trainer_state: dict | None = None,
    keep_last: int = 0,
) -> Path:
    """Save a complete checkpoint for ``step`` atomically, with its ``SHA256SUMS``; every rank must call it.

    Returns its folder. A save that fails (an error, a full disk, Ctrl-C) deletes its ``.tmp`` folder and
    leaves the previous checkpoints and ``latest`` as they were; chapter 4's preemption relies on this.
    """
    # lazy: torch.distributed.checkpoint costs 0.6 s on top of torch (python -X importtime); naming, listing
    # and verifying checkpoints need none of it
    import torch.distributed.checkpoint as dcp  # noqa: PLC0415
    from torch.distributed.checkpoint import HuggingFaceStorageWriter  # noqa: PLC0415

    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / checkpoint_name(step)
    tmp = root / (checkpoint_name(step) + ".tmp")
    old = root / (final.name + ".old.tmp")
    me = rank()
    try:
        if me == 0:
            root.mkdir(parents=True, exist_ok=True)
            for stale in root.glob("*.tmp"):  # left by a job killed while saving
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
            (tmp / "rng").mkdir()
        barrier()

        msd, optim_tensors, groups = _model_optim_state(model, optimizer)
        state = {"model": msd, "optim": optim_tensors}
        if ema is not None:
            state["ema"] = ema.state_dict()
        dcp.save(
            state,
            storage_writer=HuggingFaceStorageWriter(str(tmp), save_distributed=distributed()),
            no_dist=not distributed(),
        )

        tensors, meta = rng_state()
        save_file(tensors, str(tmp / "rng" / f"rank_{me:05d}.safetensors"), metadata=meta)
        if me == 0:
            info = dict(trainer_state or {})
            info.update(
                step=int(step),
                world_size=dist.get_world_size() if distributed() else 1,
                optimizer_param_groups=groups,
                has_ema=ema is not None,
                checksums=CHECKSUMS,
                saved_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            write_json_atomic(tmp / STATE_FILE, info)
        barrier()

        sums = hash_files(tmp, checkpoint_files(tmp))  # every rank hashes a share
        if me == 0:
            unreadable = [f"{n} ({d})" for n, d in sums.items() if d.startswith("error:")]
            if unreadable:
                raise OSError(f"cannot hash the checkpoint files just written: {', '.join(unreadable)}")
            write_text_atomic(tmp / CHECKSUMS, format_sums(sums))
            fsync_dir(tmp)
            if final.exists():  # re-saving a step (e.g. after a resume): swap out the old copy
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            fsync_dir(root)
            write_text_atomic(root / LATEST_FILE, final.name + "\n")
            fsync_dir(root)
            if keep_last > 0:
                for stale in list_checkpoints(run_dir)[:-keep_last]:
                    if stale != final:
                        shutil.rmtree(stale, ignore_errors=True)
    except BaseException:
        if me == 0:  # leave the run folder as it was before this save
            if old.exists() and not final.exists():
                os.replace(old, final)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        raise
    barrier()
    return final
