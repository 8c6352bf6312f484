"""Checksums: every checkpoint carries the SHA-256 of its files, and is checked before anything is loaded.

``SHA256SUMS`` is in ``sha256sum`` format (``cd step_0000100 && sha256sum -c SHA256SUMS`` checks a copy by
hand); each rank hashes a share of the files. :func:`verify_checkpoint` re-hashes every file, so a flipped
bit, a damaged header or a truncated ``trainer_state.json`` is found before anything is loaded; loading
refuses a damaged checkpoint with :class:`DamagedCheckpointError`, and :func:`find_intact_checkpoint` gives
the trainer the newest intact one of a run. Checkpoints written before checksums existed load with a warning
that they are unverified.

Used by the trainer's resume (chapter 4), ``lens export`` and :mod:`lenslib.train.faults`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch.distributed as dist
from safetensors import safe_open

from lenslib.atomic import write_text_atomic
from lenslib.paths import sha256_file

from .layout import (
    CHECKPOINT_DIR,
    CHECKSUMS,
    DAMAGED_DIR,
    LATEST_FILE,
    STATE_FILE,
    distributed,
    fsync_dir,
    list_checkpoints,
    pointer_target,
)

__all__ = [
    "DamagedCheckpointError",
    "CheckpointCheck",
    "checkpoint_files",
    "hash_files",
    "format_sums",
    "verify_checkpoint",
    "find_intact_checkpoint",
    "set_aside_damaged",
    "read_trainer_state",
]


class DamagedCheckpointError(RuntimeError):
    """A checkpoint whose files are not the ones that were written (or no intact checkpoint to fall back
    on)."""

    def __init__(self, message: str, path: Path | None = None, problems: list[str] | None = None):
        super().__init__(message)
        self.path, self.problems = path, list(problems or [])


def checkpoint_files(path: str | Path) -> list[str]:
    """Every file of a checkpoint folder but ``SHA256SUMS``, as sorted POSIX paths relative to it."""
    path = Path(path)
    return sorted(
        p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != CHECKSUMS
    )


def hash_files(folder: Path, names: list[str]) -> dict[str, str]:
    """``{name: sha256 hex}`` (``"error: ..."`` for a file that cannot be read). In a process group every rank
    hashes every world-size-th file and the results are gathered, so all ranks get the whole map; every
    rank must call it with the same names."""

    def one(name: str) -> str:
        try:
            return sha256_file(folder / name)
        except OSError as err:
            return f"error: {err.strerror or err}"

    if not distributed():
        return {n: one(n) for n in names}
    rank, world = dist.get_rank(), dist.get_world_size()
    parts: list = [None] * world
    dist.all_gather_object(parts, {n: one(n) for n in names[rank::world]})
    out: dict[str, str] = {}
    for part in parts:
        out.update(part)
    return out


def format_sums(sums: dict[str, str]) -> str:
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
    """The result of :func:`verify_checkpoint`: ``problems`` is empty for an intact checkpoint; ``verified``
    is False for one written before checksums (readable, but its tensors cannot be checked); ``state`` is its
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
        check.state = json.loads((path / STATE_FILE).read_text())
        if not isinstance(check.state, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        check.problems.append(f"{STATE_FILE} is missing")
    except (OSError, ValueError, UnicodeDecodeError) as err:
        check.state = None
        check.problems.append(f"{STATE_FILE} is unreadable ({type(err).__name__}: {err})")
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
        if n.endswith(".safetensors") or n == STATE_FILE
    ]
    digests = hash_files(path, sorted(set(expected) & have))
    for name, digest in digests.items():
        if digest.startswith("error:"):
            check.problems.append(f"{name}: {digest}")
        elif digest != expected[name]:
            check.problems.append(
                f"{name}: SHA-256 differs from {CHECKSUMS} (the file changed after it was written)"
            )
    return check


def find_intact_checkpoint(run_dir: str | Path) -> tuple[CheckpointCheck | None, list[CheckpointCheck]]:
    """``(newest intact checkpoint, damaged ones passed over)`` of a run: ``latest``'s target first, then
    older checkpoints newest first, each through :func:`verify_checkpoint`. ``(None, [...])`` when none is
    intact.

    This is how the trainer resumes (chapter 4) and ``lens export`` picks a run's weights: a damaged newest
    checkpoint costs the steps since the previous one, never a silent load. Every rank must call it.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    found = list_checkpoints(run_dir)
    target = pointer_target(root)
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
    write_text_atomic(root / LATEST_FILE, Path(keep).name + "\n")
    fsync_dir(root)
    return moved


def read_trainer_state(path: str | Path) -> dict:
    """The parsed ``trainer_state.json`` of a checkpoint (not verified; :func:`verify_checkpoint` does
    that)."""
    path = Path(path)
    try:
        return json.loads((path / STATE_FILE).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DamagedCheckpointError(
            f"checkpoint {path} is damaged: {STATE_FILE} is unreadable ({err})",
            path,
            [f"{STATE_FILE} is unreadable"],
        ) from None
