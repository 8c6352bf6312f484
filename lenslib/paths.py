"""Where the companion finds its shipped data and keeps generated data.

``data/`` at the repository root holds small data the project ships (paper tables, prompt suites);
everything generated or downloaded goes under a git-ignored cache folder. Used by every chapter.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The shipped ``data/`` folder (override with ``LENS_DATA``)."""
    path = Path(os.environ.get("LENS_DATA", REPO_ROOT / "data"))
    if not path.is_dir():
        raise FileNotFoundError(
            f"lenslib data folder not found at {path}. Install lenslib from a clone of the repository "
            "(`pip install -e .`) or point LENS_DATA at the repository's data/ folder."
        )
    return path


def cache_dir(create: bool = True) -> Path:
    """The cache for generated data and runs (override with ``LENS_CACHE``); created on demand.

    ``create=False`` only names it: config checks look at where a run would go without writing anything."""
    path = Path(os.environ.get("LENS_CACHE", REPO_ROOT / ".cache" / "lens"))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes: the checksum of written shards, datasets and checkpoints."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
