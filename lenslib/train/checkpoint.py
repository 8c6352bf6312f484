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
  run config (what :func:`lenslib.train.config.check_resume` compares a resuming run with);
* ``SHA256SUMS`` — the SHA-256 of every other file, in ``sha256sum`` format (``cd step_0000100 &&
  sha256sum -c SHA256SUMS`` checks a copy by hand). Each rank hashes a share of the files.

Writing is atomic: all ranks write into ``step_XXXXXXX.tmp``, then rank 0 renames it to its final name
and only then replaces the ``latest`` pointer (tmp file + ``os.replace``). A job killed at any moment
leaves either the previous checkpoint or the new one as ``latest``, never a half-written one; stale
``.tmp`` folders are deleted by the next save, and a save that fails (a full disk) deletes its own.
Old checkpoints are rotated (keep the last K).

Reading verifies: :func:`verify_checkpoint` re-hashes every file, so a flipped bit, a damaged header or a
truncated ``trainer_state.json`` is found before anything is loaded; :func:`load_checkpoint` and
:func:`load_tensors` (``lens export``) refuse a damaged checkpoint with :class:`DamagedCheckpointError`,
and :func:`find_intact_checkpoint` gives the trainer the newest intact one of a run. Checkpoints written
before checksums existed load with a warning that they are unverified.

Used by the trainer, ``lens export``, chapter 4's stop-and-resume and chapter 7's multi-process runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file

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
    "write_text_atomic",
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
CHECKSUMS = "SHA256SUMS"
DAMAGED_DIR = "damaged"  # checkpoints/damaged/: checkpoints found damaged, moved aside by the trainer, kept for inspection


class DamagedCheckpointError(RuntimeError):
    """A checkpoint whose files are not the ones that were written (or no intact checkpoint to fall back on)."""

    def __init__(self, message: str, path: Path | None = None, problems: list[str] | None = None):
        super().__init__(message)
        self.path, self.problems = path, list(problems or [])


def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _dist() else 0


def _barrier() -> None:
    if _dist():
        dist.barrier()


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file, fsync and ``os.replace``: readers see the old file or
    the new one, never a part. A write that fails (a full disk) deletes its temporary file and re-raises."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (:func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=1))


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
            name = p.name
            if name.endswith(".tmp") or (".tmp" in name and name.rsplit(".tmp", 1)[1].isdigit()):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(
                    missing_ok=True
                )
                removed.append(p)
    return removed


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
    done = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith("step_")
        and not p.name.endswith(".tmp")
        and (p / _STATE).is_file()
    ]
    return sorted(done, key=lambda p: p.name)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``latest`` points to (falling back to the newest complete one), or None.

    Cheap (no hashing): loading it verifies it; :func:`find_intact_checkpoint` also passes over damaged ones.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    target = _pointer_target(root)
    if target is not None and (target / _STATE).is_file():
        return target
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _pointer_target(root: Path) -> Path | None:
    pointer = root / _LATEST
    try:
        return root / pointer.read_text().strip() if pointer.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


# ------------------------------------------------------------------------------------------------
# Integrity: SHA256SUMS, written with the checkpoint, checked before it is used
# ------------------------------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def checkpoint_files(path: str | Path) -> list[str]:
    """Every file of a checkpoint folder but ``SHA256SUMS``, as sorted POSIX paths relative to it."""
    path = Path(path)
    return sorted(
        p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != CHECKSUMS
    )


def _digests(folder: Path, names: list[str]) -> dict[str, str]:
    """``{name: sha256 hex}`` (``"error: ..."`` for a file that cannot be read). In a process group every rank
    hashes every world-size-th file and the results are gathered, so all ranks get the whole map; every
    rank must call it with the same names."""

    def one(name: str) -> str:
        try:
            return file_sha256(folder / name)
        except OSError as err:
            return f"error: {err.strerror or err}"

    if not _dist():
        return {n: one(n) for n in names}
    rank, world = dist.get_rank(), dist.get_world_size()
    parts: list = [None] * world
    dist.all_gather_object(parts, {n: one(n) for n in names[rank::world]})
    out: dict[str, str] = {}
    for part in parts:
        out.update(part)
    return out


def _format_sums(sums: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))


def _parse_sums(text: str) -> dict[str, str]:
    out = {}
    for i, line in enumerate(text.splitlines(), 1):
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 64 or any(c not in "0123456789abcdef" for c in parts[0]):
            raise ValueError(f"line {i} is not '<sha256>  <file>'")
        out[parts[1].lstrip("*")] = parts[0]
    if not out:
        raise ValueError("it lists no files")
    return out


@dataclass
class CheckpointCheck:
    """The result of :func:`verify_checkpoint`: ``problems`` is empty for an intact checkpoint; ``verified`` is
    False for one written before checksums (readable, but its tensors cannot be checked); ``state`` is its
    parsed ``trainer_state.json`` (None when unreadable)."""

    path: Path
    problems: list[str] = field(default_factory=list)
    verified: bool = True
    state: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        return f"checkpoint {self.path} is damaged: " + "; ".join(self.problems)

    def raise_if_damaged(self) -> "CheckpointCheck":
        if self.problems:
            raise DamagedCheckpointError(self.describe(), self.path, self.problems)
        return self


def verify_checkpoint(path: str | Path) -> CheckpointCheck:
    """Check a checkpoint folder against its ``SHA256SUMS`` before anything is loaded from it.

    Finds what loading alone would miss or turn into a raw traceback: a flipped bit in a tensor (safetensors
    and DCP read it silently), a damaged safetensors header, a truncated ``trainer_state.json``, a missing or
    extra shard. Every rank of a process group must call it (the hashing is shared). A checkpoint written
    before checksums gets its JSON and safetensors headers checked only, and ``verified=False``. Used by the
    trainer's resume (chapter 4), :func:`load_checkpoint` and ``lens export``.
    """
    path = Path(path)
    check = CheckpointCheck(path)
    try:
        check.state = json.loads((path / _STATE).read_text())
        if not isinstance(check.state, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        check.problems.append(f"{_STATE} is missing")
    except (OSError, ValueError, UnicodeDecodeError) as err:
        check.state = None
        check.problems.append(f"{_STATE} is unreadable ({type(err).__name__}: {err})")
    present = checkpoint_files(path) if path.is_dir() else []
    sums_file = path / CHECKSUMS
    if not sums_file.is_file():
        if check.state is not None and not check.state.get("checksums"):  # written before checksums existed
            check.verified = False
            for name in (n for n in present if n.endswith(".safetensors")):
                try:
                    with safe_open(str(path / name), framework="pt") as h:
                        h.keys()
                except Exception as err:  # noqa: BLE001 - any failure to parse the header is damage
                    check.problems.append(f"{name}: unreadable safetensors header ({err})")
        elif path.is_dir():
            check.problems.append(f"{CHECKSUMS} is missing")
        return check
    try:
        expected = _parse_sums(sums_file.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        check.problems.append(f"{CHECKSUMS} is unreadable ({err})")
        return check
    have = set(present)
    check.problems += [f"{n}: missing" for n in sorted(set(expected) - have)]
    check.problems += [
        f"{n}: not listed in {CHECKSUMS} (a shard from elsewhere?)"
        for n in sorted(have - set(expected))
        if n.endswith(".safetensors") or n == _STATE
    ]
    digests = _digests(path, sorted(set(expected) & have))
    for name, digest in digests.items():
        if digest.startswith("error:"):
            check.problems.append(f"{name}: {digest}")
        elif digest != expected[name]:
            check.problems.append(
                f"{name}: SHA-256 differs from {CHECKSUMS} (the file changed after it was written)"
            )
    return check


def find_intact_checkpoint(run_dir: str | Path) -> tuple[CheckpointCheck | None, list[CheckpointCheck]]:
    """``(newest intact checkpoint, damaged ones passed over)`` of a run: ``latest``'s target first, then older
    checkpoints newest first, each through :func:`verify_checkpoint`. ``(None, [...])`` when none is intact.

    This is how the trainer resumes (chapter 4) and ``lens export`` picks a run's weights: a damaged newest
    checkpoint costs the steps since the previous one, never a silent load. Every rank must call it.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    found = list_checkpoints(run_dir)
    target = _pointer_target(root)
    if target in found:
        candidates = [target] + [p for p in reversed(found) if p.name < target.name]
    else:
        candidates = list(reversed(found))
    damaged = []
    for path in candidates:
        check = verify_checkpoint(path)
        if check.ok:
            return check, damaged
        damaged.append(check)
    return None, damaged


def set_aside_damaged(run_dir: str | Path, damaged: list[CheckpointCheck], keep: Path) -> list[Path]:
    """Move damaged checkpoints to ``checkpoints/damaged/`` (with a ``DAMAGED.txt`` saying why) and point
    ``latest`` at ``keep``; returns the new places. Rank 0 only. Kept aside rather than deleted, so the
    damage can be inspected; out of the way, so rotation and ``latest`` never pick them again."""
    root = Path(run_dir) / CHECKPOINT_DIR
    aside = root / DAMAGED_DIR
    aside.mkdir(exist_ok=True)
    moved = []
    for check in damaged:
        dest = aside / check.path.name
        if dest.exists():
            dest = aside / f"{check.path.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        os.replace(check.path, dest)
        (dest / "DAMAGED.txt").write_text("\n".join(check.problems) + "\n")
        moved.append(dest)
    write_text_atomic(root / _LATEST, Path(keep).name + "\n")
    _fsync_dir(root)
    return moved


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
        "numpy": json.dumps(
            {"name": name, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}
        ),
        "python": json.dumps({"version": version, "state": list(internal), "gauss_next": gauss_next}),
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        states = [
            tensors[k]
            for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))
        ]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    npm = json.loads(meta["numpy"])
    np.random.set_state(
        (
            npm["name"],
            tensors["numpy.keys"].numpy().astype(np.uint32),
            npm["pos"],
            npm["has_gauss"],
            npm["cached_gaussian"],
        )
    )
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
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in osd["param_groups"]
    ]
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
    """Save a complete checkpoint for ``step`` atomically, with its ``SHA256SUMS``; every rank must call it.

    Returns its folder. A save that fails (an error, a full disk, Ctrl-C) deletes its ``.tmp`` folder and leaves
    the previous checkpoints and ``latest`` as they were; chapter 4's preemption relies on this.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / checkpoint_name(step)
    tmp = root / (checkpoint_name(step) + ".tmp")
    old = root / (final.name + ".old.tmp")
    rank = _rank()
    try:
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
        dcp.save(
            state,
            storage_writer=HuggingFaceStorageWriter(str(tmp), save_distributed=_dist()),
            no_dist=not _dist(),
        )

        tensors, meta = rng_state()
        save_file(tensors, str(tmp / "rng" / f"rank_{rank:05d}.safetensors"), metadata=meta)
        if rank == 0:
            info = dict(trainer_state or {})
            info.update(
                step=int(step),
                world_size=dist.get_world_size() if _dist() else 1,
                optimizer_param_groups=groups,
                has_ema=ema is not None,
                checksums=CHECKSUMS,
                saved_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            write_json_atomic(tmp / _STATE, info)
        _barrier()

        sums = _digests(tmp, checkpoint_files(tmp))  # every rank hashes a share
        if rank == 0:
            unreadable = [f"{n} ({d})" for n, d in sums.items() if d.startswith("error:")]
            if unreadable:
                raise OSError(f"cannot hash the checkpoint files just written: {', '.join(unreadable)}")
            write_text_atomic(tmp / CHECKSUMS, _format_sums(sums))
            _fsync_dir(tmp)
            if final.exists():  # re-saving a step (e.g. after a resume): swap out the old copy
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(root)
            write_text_atomic(root / _LATEST, final.name + "\n")
            _fsync_dir(root)
            if keep_last > 0:
                for stale in list_checkpoints(run_dir)[:-keep_last]:
                    if stale != final:
                        shutil.rmtree(stale, ignore_errors=True)
    except BaseException:
        if rank == 0:  # leave the run folder as it was before this save
            if old.exists() and not final.exists():
                os.replace(old, final)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        raise
    _barrier()
    return final


def read_trainer_state(path: str | Path) -> dict:
    """The parsed ``trainer_state.json`` of a checkpoint (not verified; :func:`verify_checkpoint` does that)."""
    path = Path(path)
    try:
        return json.loads((path / _STATE).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DamagedCheckpointError(
            f"checkpoint {path} is damaged: {_STATE} is unreadable ({err})", path, [f"{_STATE} is unreadable"]
        ) from None


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
            f"checkpoint {path} holds another model than the one built: {len(extra)} of its {prefix} tensors are not "
            f"in the model (e.g. {extra[:3]}), {len(missing)} of the model's are not in it (e.g. {missing[:3]}). "
            "Build the model of the run that wrote it (its config is in trainer_state.json)."
        )


def checkpoint_keys(path: str | Path) -> set[str]:
    """Names of all tensors stored in a checkpoint folder (from the safetensors headers only)."""
    keys: set[str] = set()
    for f in Path(path).glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as h:
            keys.update(h.keys())
    return keys


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
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    path = Path(path)
    info = _verified(path).state if verify else read_trainer_state(path)
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
    _check_model_keys(path, "model", msd)
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
        set_state_dict(
            model,
            optimizer,
            model_state_dict=state["model"],
            optim_state_dict={"state": _unflatten(state["optim"]), "param_groups": groups},
            options=StateDictOptions(strict=False),
        )
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


def load_tensors(
    path: str | Path, prefix: str, like: dict[str, torch.Tensor], verify: bool = True
) -> dict[str, torch.Tensor]:
    """Read the ``prefix`` ("model" or "ema") tensors of a checkpoint into full tensors shaped like ``like``.

    Needs no process group: this is how ``lens export`` and notebooks read any checkpoint, sharded or not.
    ``verify`` checks the files against ``SHA256SUMS`` first, so damaged weights are never exported.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    if verify:
        _verified(Path(path))
    _check_model_keys(Path(path), prefix, like)

    state = {prefix: {k: torch.empty_like(v) for k, v in like.items()}}
    dcp.load(state, storage_reader=HuggingFaceStorageReader(str(path)), no_dist=not _dist())
    return state[prefix]
