"""Write a whole output folder atomically: build it beside the target, then rename it into place.

A dataset or an image folder that is half written (a crash, Ctrl-C, a full disk) must never look
like a finished one, and an existing folder must not be lost by mistake. So writers build into a
temporary sibling folder (same filesystem, so the final ``os.replace`` is atomic) and refuse a
non-empty target unless asked to overwrite it. Used by ``make_dataset`` and ``render_suite``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def check_output_dir(out: str | Path, overwrite: bool = False) -> Path:
    """Fail early, before any work, when ``out`` cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another output folder")
    above = next((p for p in out.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise NotADirectoryError(f"{out} cannot be created: {above} is a file; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out} is not empty; choose another output folder, or pass overwrite=True "
            "(--overwrite on the command line) to replace it"
        )
    return out


@contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False):
    """Yield a temporary folder beside ``out``; on success it replaces ``out``, on error it is removed.

    The old ``out`` (only with ``overwrite``) is moved aside first and deleted after the rename, so
    at every moment either the old or the new complete folder is at ``out``'s path, except for the
    instant between the two renames.
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
