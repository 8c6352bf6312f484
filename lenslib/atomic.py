"""Writes that never leave a half-written file or folder: build beside the target, then rename into place.

A checkpoint pointer, a run record, a manifest, a sample image or a whole dataset folder that is half
written (a crash, Ctrl-C, a full disk, a preempted job) must never look like a finished one. Every writer
in the package goes through this module: it writes a temporary sibling (same filesystem, so the final
``os.replace`` is atomic), fsyncs files, and removes the temporary on failure before re-raising.
Readers therefore see the old version or the new one, never a part.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_file",
    "atomic_output_dir",
    "blocking_file",
    "check_output_dir",
    "is_temporary",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]


#: A temporary this module (or a checkpoint writer) leaves when killed: ``x.tmp``, ``x.tmp<pid>``,
#: ``x.png.tmp<pid>.png``.
_TEMPORARY = re.compile(r"\.tmp(\d+(\.\w+)?)?$")


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary left by an interrupted atomic write (cleaned up on resume)."""
    return _TEMPORARY.search(name) is not None


@contextmanager
def atomic_file(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` that replaces it on success and is removed on error.

    For writers that need a file name (``PIL.Image.save``, ``np.save``, ``safetensors``).
    ``keep_suffix`` ends the temporary with ``path``'s suffix, for writers that pick the format from it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}{path.suffix if keep_suffix else ''}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and ``os.replace``."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any, *, indent: int = 1, sort_keys: bool = False) -> None:
    """Write ``data`` as JSON to ``path`` atomically (:func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys))


def blocking_file(out: str | Path) -> Path | None:
    """The file (``out`` itself or a parent) that stops ``out`` from being a folder, or None: the check
    every command that writes a folder makes before any work."""
    above = next((p for p in (Path(out), *Path(out).parents) if p.exists()), None)
    return None if above is None or above.is_dir() else above


def check_output_dir(out: str | Path, overwrite: bool = False) -> Path:
    """Fail early, before any work, when the folder ``out`` cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another output folder")
    if (above := blocking_file(out)) is not None:
        raise NotADirectoryError(f"{out} cannot be created: {above} is a file; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out} is not empty; choose another output folder, or pass overwrite=True "
            "(--overwrite on the command line) to replace it"
        )
    return out


@contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out``, on error it is removed.

    The old ``out`` (only with ``overwrite``) is moved aside first and deleted after the rename, so
    at every moment either the old or the new complete folder is at ``out``'s path, except for the
    instant between the two renames. Used by ``make_dataset`` and ``render_suite`` (chapter 1).
    """
    out = check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should look like any new folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
