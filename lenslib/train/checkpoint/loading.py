"""Loading a checkpoint into built (and wrapped) objects, or reading its tensors without a process group.

Works at any world size for model, optimizer and EMA (DCP reshards); RNG states are restored when the world
size matches. Every file is checked against ``SHA256SUMS`` first (:mod:`.integrity`), and a model whose tensor
names differ from the checkpoint's is refused: ``dcp.load`` reads only the tensors it is asked for, so a model
with fewer blocks would load silently.

Used by the trainer, ``lens export``, :mod:`lenslib.train.build` and chapter 4's evaluations.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import safe_open

from .integrity import CheckpointCheck, read_trainer_state, verify_checkpoint
from .layout import CHECKSUMS, checkpoint_keys, distributed, flatten_state, rank, unflatten_state
from .rng import set_rng_state

__all__ = ["load_checkpoint", "load_tensors"]


def _verified(path: Path) -> CheckpointCheck:
    check = verify_checkpoint(path).raise_if_damaged()
    if not check.verified:
        warnings.warn(
            f"checkpoint {path} was written without {CHECKSUMS}: loading it unverified", stacklevel=3
        )
    return check


def _check_model_keys(path: Path, prefix: str, names) -> None:
    """Refuse a checkpoint whose ``prefix`` tensors are not exactly the model's: ``dcp.load`` reads only the
    tensors it is asked for, so a model with fewer blocks would load silently."""
    have = {k[len(prefix) + 1 :] for k in checkpoint_keys(path) if k.startswith(prefix + ".")}
    want = set(names)
    if have != want:
        extra, missing = sorted(have - want), sorted(want - have)
        raise ValueError(
            f"checkpoint {path} holds another model than the one built: {len(extra)} of its {prefix} tensors "
            f"are not in the model (e.g. {extra[:3]}), {len(missing)} of the model's are not in it (e.g. "
            f"{missing[:3]}). Build the model of the run that wrote it (its config is in trainer_state.json)."
        )


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema=None,
    restore_rng: bool = True,
    verify: bool = True,
) -> dict:
    """Restore model (+ optimizer, EMA, RNG) from ``path`` into already built/wrapped objects.

    Works at any world size for model/optimizer/EMA. RNG states are restored only when the world size
    matches (there is no meaningful mapping otherwise; the trainer's per-step generators do not depend
    on them). Returns the trainer state (step, data position, config, ...).

    ``verify`` first checks every file against ``SHA256SUMS`` (:class:`DamagedCheckpointError` if one differs;
    the trainer passes False for a checkpoint it has just verified). A model whose tensor names differ from
    the checkpoint's is refused. Used by the trainer and chapter 4's evaluations.
    """
    # lazy: torch.distributed.checkpoint costs 0.6 s on top of torch (python -X importtime); naming, listing
    # and verifying checkpoints need none of it
    import torch.distributed.checkpoint as dcp  # noqa: PLC0415
    from torch.distributed.checkpoint import HuggingFaceStorageReader  # noqa: PLC0415
    from torch.distributed.checkpoint.state_dict import (  # noqa: PLC0415
        StateDictOptions,
        get_model_state_dict,
        get_state_dict,
        set_model_state_dict,
        set_state_dict,
    )

    path = Path(path)
    info = _verified(path).state if verify else read_trainer_state(path)
    if optimizer is not None:
        msd, osd = get_state_dict(model, optimizer)
        # Parameters that never received a gradient (e.g. the last block's text output projection, whose
        # result the model discards) have no AdamW state; load exactly the state that was saved.
        stored = checkpoint_keys(path)
        optim_flat = {k: v for k, v in flatten_state(osd["state"]).items() if f"optim.{k}" in stored}
        state = {"model": msd, "optim": optim_flat}
    else:
        msd = get_model_state_dict(model)
        state = {"model": msd}
    _check_model_keys(path, "model", msd)
    if ema is not None:
        if not info.get("has_ema", False):
            raise ValueError(f"checkpoint {path} has no EMA weights, but the run has ema.enabled=true.")
        state["ema"] = ema.state_dict()
    dcp.load(state, storage_reader=HuggingFaceStorageReader(str(path)), no_dist=not distributed())

    if optimizer is not None:
        groups = []
        for g in info["optimizer_param_groups"]:
            g = dict(g)
            if isinstance(g.get("betas"), list):
                g["betas"] = tuple(g["betas"])
            groups.append(g)
        # dcp.load above already failed on any missing model tensor; strict=False only lets parameters
        # without saved AdamW state stay without state, as they were.
        set_state_dict(
            model,
            optimizer,
            model_state_dict=state["model"],
            optim_state_dict={"state": unflatten_state(state["optim"]), "param_groups": groups},
            options=StateDictOptions(strict=False),
        )
    else:
        set_model_state_dict(model, state["model"])
    if ema is not None:
        ema.load_state_dict(state["ema"])

    world = dist.get_world_size() if distributed() else 1
    rng_file = path / "rng" / f"rank_{rank():05d}.safetensors"
    if restore_rng and world == info.get("world_size", 1) and rng_file.is_file():
        with safe_open(str(rng_file), framework="pt") as f:
            set_rng_state({k: f.get_tensor(k) for k in f.keys()}, f.metadata())
    return info


def load_tensors(
    path: str | Path, prefix: str, like: dict[str, torch.Tensor], verify: bool = True
) -> dict[str, torch.Tensor]:
    """Read the ``prefix`` ("model" or "ema") tensors of a checkpoint into full tensors shaped like ``like``.

    Needs no process group: this is how ``lens export`` and notebooks read any checkpoint, sharded or not.
    ``verify`` checks the files against ``SHA256SUMS`` first, so damaged weights are never exported.
    """
    # lazy: as in load_checkpoint (0.6 s)
    import torch.distributed.checkpoint as dcp  # noqa: PLC0415
    from torch.distributed.checkpoint import HuggingFaceStorageReader  # noqa: PLC0415

    if verify:
        _verified(Path(path))
    _check_model_keys(Path(path), prefix, like)

    state = {prefix: {k: torch.empty_like(v) for k, v in like.items()}}
    dcp.load(state, storage_reader=HuggingFaceStorageReader(str(path)), no_dist=not distributed())
    return state[prefix]
