"""Checkpoints that lose nothing: atomic, sharded, resumable at another world size, pickle-free.

A checkpoint is a folder ``<run>/checkpoints/step_0000100/`` holding everything a resumed run needs to
continue bit for bit (k-diffusion's completeness, DCP's sharding):

* ``*.safetensors`` — model, EMA and AdamW state, written by ``torch.distributed.checkpoint`` (DCP) with
  its Hugging Face safetensors writer: every rank writes its own shard file and the shard offsets go into
  the safetensors metadata, so FSDP2's sharded tensors are saved without gathering and can be loaded by
  any number of ranks (or by one plain process). DCP's default format would ``pickle`` its metadata;
  this one is plain safetensors + JSON, so loading never unpickles anything;
* ``rng/rank_00000.safetensors`` — every RNG of every rank (torch CPU, CUDA, numpy; Python's in the
  metadata);
* ``trainer_state.json`` — step, data position, optimizer hyper-parameters, world size, and the resolved
  run config.

Writing is atomic: all ranks write into ``step_XXXXXXX.tmp``, then rank 0 renames it to its final name
and only then replaces the ``latest`` pointer (tmp file + ``os.replace``). A job killed at any moment
leaves either the previous checkpoint or the new one as ``latest``, never a half-written one; stale
``.tmp`` folders are deleted by the next save. Old checkpoints are rotated (keep the last K).

Used by the trainer, ``lens export``, and chapter 4's stop-and-resume.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = [
    "CHECKPOINT_DIR",
    "checkpoint_name",
    "latest_checkpoint",
    "list_checkpoints",
    "save_checkpoint",
    "load_checkpoint",
    "read_trainer_state",
    "load_tensors",
    "rng_state",
    "set_rng_state",
    "write_json_atomic",
]

CHECKPOINT_DIR = "checkpoints"

# Saving/loading in one process without a process group is intended (laptop runs, export).
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
_STATE = "trainer_state.json"
_LATEST = "latest"


def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _dist() else 0


def _barrier() -> None:
    if _dist():
        dist.barrier()


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temporary file, fsync and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
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
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and not p.name.endswith(".tmp") and (p / _STATE).is_file()]
    return sorted(done, key=lambda p: p.name)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``latest`` points to (falling back to the newest complete one), or None."""
    root = Path(run_dir) / CHECKPOINT_DIR
    pointer = root / _LATEST
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        if (target / _STATE).is_file():
            return target
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


# ------------------------------------------------------------------------------------------------
# RNG state (pickle-free)
# ------------------------------------------------------------------------------------------------


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All RNG states of this process as (tensors, string metadata) for a safetensors file."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy.keys"] = torch.from_numpy(keys.astype(np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {
        "numpy": json.dumps({"name": name, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}),
        "python": json.dumps({"version": version, "state": list(internal), "gauss_next": gauss_next}),
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    npm = json.loads(meta["numpy"])
    np.random.set_state((npm["name"], tensors["numpy.keys"].numpy().astype(np.uint32), npm["pos"], npm["has_gauss"], npm["cached_gaussian"]))
    py = json.loads(meta["python"])
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))


# ------------------------------------------------------------------------------------------------
# Model / optimizer state dicts
# ------------------------------------------------------------------------------------------------


def _flatten(d: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        elif torch.is_tensor(v):
            out[key] = v
        else:
            raise TypeError(f"checkpoint state {key!r} is a {type(v).__name__}, not a tensor")
    return out


def _unflatten(flat: dict[str, torch.Tensor]) -> dict:
    out: dict = {}
    for key, v in flat.items():
        *parents, leaf = key.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def _model_optim_state(model, optimizer):
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer)
    # Optimizer tensors ({fqn: {step, exp_avg, exp_avg_sq}}) go to safetensors; hyper-parameters to JSON.
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in osd["param_groups"]]
    return msd, _flatten(osd["state"]), groups


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema=None,
    trainer_state: dict | None = None,
    keep_last: int = 0,
) -> Path:
    """Save a complete checkpoint for ``step`` atomically; every rank must call it. Returns its folder."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / checkpoint_name(step)
    tmp = root / (checkpoint_name(step) + ".tmp")
    rank = _rank()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob("*.tmp"):  # left by a job killed while saving
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
        (tmp / "rng").mkdir()
    _barrier()

    msd, optim_tensors, groups = _model_optim_state(model, optimizer)
    state = {"model": msd, "optim": optim_tensors}
    if ema is not None:
        state["ema"] = ema.state_dict()
    dcp.save(state, storage_writer=HuggingFaceStorageWriter(str(tmp), save_distributed=_dist()), no_dist=not _dist())

    tensors, meta = rng_state()
    save_file(tensors, str(tmp / "rng" / f"rank_{rank:05d}.safetensors"), metadata=meta)
    _barrier()

    if rank == 0:
        info = dict(trainer_state or {})
        info.update(
            step=int(step),
            world_size=dist.get_world_size() if _dist() else 1,
            optimizer_param_groups=groups,
            has_ema=ema is not None,
            saved_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        write_json_atomic(tmp / _STATE, info)
        _fsync_dir(tmp)
        if final.exists():  # re-saving a step (e.g. after a resume): swap out the old copy
            old = root / (final.name + ".old.tmp")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
        pointer_tmp = root / (_LATEST + ".tmp")
        pointer_tmp.write_text(final.name + "\n")
        os.replace(pointer_tmp, root / _LATEST)
        _fsync_dir(root)
        if keep_last > 0:
            for old in list_checkpoints(run_dir)[:-keep_last]:
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def read_trainer_state(path: str | Path) -> dict:
    return json.loads((Path(path) / _STATE).read_text())


def checkpoint_keys(path: str | Path) -> set[str]:
    """Names of all tensors stored in a checkpoint folder (from the safetensors headers only)."""
    keys: set[str] = set()
    for f in Path(path).glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as h:
            keys.update(h.keys())
    return keys


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, ema=None,
                    restore_rng: bool = True) -> dict:
    """Restore model (+ optimizer, EMA, RNG) from ``path`` into already built/wrapped objects.

    Works at any world size for model/optimizer/EMA. RNG states are restored only when the world size
    matches (there is no meaningful mapping otherwise; the trainer's per-step generators do not depend
    on them). Returns the trainer state (step, data position, config, ...).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    path = Path(path)
    info = read_trainer_state(path)
    if optimizer is not None:
        msd, osd = get_state_dict(model, optimizer)
        # Parameters that never received a gradient (e.g. the last block's text output projection, whose
        # result the model discards) have no AdamW state; load exactly the state that was saved.
        stored = checkpoint_keys(path)
        optim_flat = {k: v for k, v in _flatten(osd["state"]).items() if f"optim.{k}" in stored}
        state = {"model": msd, "optim": optim_flat}
    else:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        msd = get_model_state_dict(model)
        state = {"model": msd}
    if ema is not None:
        if not info.get("has_ema", False):
            raise ValueError(f"checkpoint {path} has no EMA weights, but the run has ema.enabled=true.")
        state["ema"] = ema.state_dict()
    dcp.load(state, storage_reader=HuggingFaceStorageReader(str(path)), no_dist=not _dist())

    if optimizer is not None:
        groups = []
        for g in info["optimizer_param_groups"]:
            g = dict(g)
            if isinstance(g.get("betas"), list):
                g["betas"] = tuple(g["betas"])
            groups.append(g)
        # dcp.load above already failed on any missing model tensor; strict=False only lets parameters
        # without saved AdamW state stay without state, as they were.
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict={"state": _unflatten(state["optim"]), "param_groups": groups},
                       options=StateDictOptions(strict=False))
    else:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, state["model"])
    if ema is not None:
        ema.load_state_dict(state["ema"])

    world = dist.get_world_size() if _dist() else 1
    rng_file = path / "rng" / f"rank_{_rank():05d}.safetensors"
    if restore_rng and world == info.get("world_size", 1) and rng_file.is_file():
        with safe_open(str(rng_file), framework="pt") as f:
            set_rng_state({k: f.get_tensor(k) for k in f.keys()}, f.metadata())
    return info


def load_tensors(path: str | Path, prefix: str, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Read the ``prefix`` ("model" or "ema") tensors of a checkpoint into full tensors shaped like ``like``.

    Needs no process group: this is how ``lens export`` and notebooks read any checkpoint, sharded or not.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    state = {prefix: {k: torch.empty_like(v) for k, v in like.items()}}
    dcp.load(state, storage_reader=HuggingFaceStorageReader(str(path)), no_dist=not _dist())
    return state[prefix]
