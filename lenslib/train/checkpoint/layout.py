"""A checkpoint folder's layout: its name, files, tensor names, the ``latest`` pointer, and the run's list of
them.

``<run>/checkpoints/step_0000100/`` holds ``*.safetensors`` (tensors named ``model.<fqn>``, ``ema.<fqn>``,
``optim.<fqn>/exp_avg``...), ``rng/rank_XXXXX.safetensors``, ``trainer_state.json`` and ``SHA256SUMS``;
``checkpoints/latest`` names the newest complete one. This module knows those names; writing them is
:mod:`.saving`'s, reading :mod:`.loading`'s, checking them :mod:`.integrity`'s.

Used by the trainer, ``lens export`` and chapter 4 (listing a run's checkpoints).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import safe_open

from lenslib.atomic import is_temporary

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKSUMS",
    "DAMAGED_DIR",
    "STATE_FILE",
    "LATEST_FILE",
    "checkpoint_name",
    "list_checkpoints",
    "latest_checkpoint",
    "pointer_target",
    "checkpoint_keys",
    "remove_stale_tmp",
    "fsync_dir",
    "flatten_state",
    "unflatten_state",
]

CHECKPOINT_DIR = "checkpoints"

# Saving/loading in one process without a process group is intended (laptop runs, export).
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
STATE_FILE = "trainer_state.json"
LATEST_FILE = "latest"
CHECKSUMS = "SHA256SUMS"
#: ``checkpoints/damaged/``: checkpoints found damaged, moved aside by the trainer, kept for inspection.
DAMAGED_DIR = "damaged"


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if distributed() else 0


def barrier() -> None:
    if distributed():
        dist.barrier()


def checkpoint_name(step: int) -> str:
    """``step_0000100``: the folder name of a step's checkpoint (sorts by step)."""
    return f"step_{step:07d}"


def remove_stale_tmp(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files and folders a killed job can leave in a run folder (``step_*.tmp``,
    ``config.yaml.tmp``, ``*.tmp<pid>``, ...); returns what was removed. Call only while no job writes there
    (the trainer does at start on rank 0)."""
    run_dir = Path(run_dir)
    removed = []
    for folder in (run_dir, run_dir / CHECKPOINT_DIR):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if not is_temporary(p.name):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every file system lets a folder be fsynced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (``.tmp`` folders are incomplete and skipped)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    done = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith("step_")
        and not p.name.endswith(".tmp")
        and (p / STATE_FILE).is_file()
    ]
    return sorted(done, key=lambda p: p.name)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``latest`` points to (falling back to the newest complete one), or None.

    Cheap (no hashing): loading it verifies it; :func:`find_intact_checkpoint` also passes over damaged ones.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    target = pointer_target(root)
    if target is not None and (target / STATE_FILE).is_file():
        return target
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def pointer_target(root: Path) -> Path | None:
    pointer = root / LATEST_FILE
    try:
        return root / pointer.read_text().strip() if pointer.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


def checkpoint_keys(path: str | Path) -> set[str]:
    """Names of all tensors stored in a checkpoint folder (from the safetensors headers only)."""
    keys: set[str] = set()
    for f in Path(path).glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as h:
            keys.update(h.keys())
    return keys


def flatten_state(d: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_state(v, key + "/"))
        elif torch.is_tensor(v):
            out[key] = v
        else:
            raise TypeError(f"checkpoint state {key!r} is a {type(v).__name__}, not a tensor")
    return out


def unflatten_state(flat: dict[str, torch.Tensor]) -> dict:
    out: dict = {}
    for key, v in flat.items():
        *parents, leaf = key.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out
