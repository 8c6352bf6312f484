"""Setup shared by every chapter of the book, and the book <-> package version pin.

Every chapter starts with ``lenslib.book_setup()``. It makes plotly figures survive into the built HTML
offline (plotly's default renderer emits a mime type jupyter-book drops; the ``notebook`` renderer
inlines plotly.js into the page), fixes the thread count, and quiets noisy library warnings.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from lenslib import __version__
from lenslib.paths import REPO_ROOT

PIN_FILE = REPO_ROOT / "book" / "requirements.txt"


def book_setup(threads: int | None = None, quiet: bool = True) -> dict:
    """Configure plotly, torch threads and warnings for a chapter; returns what was set.

    Used at the top of every chapter.
    """
    import plotly.io as pio

    pio.renderers.default = "notebook"  # inlines plotly.js: figures render offline in the built book
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if quiet:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*TqdmWarning.*")
    import torch

    threads = threads or min(2, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return {"plotly_renderer": pio.renderers.default, "torch_threads": threads, "lenslib": __version__}


def pinned_version(pin_file: Path = PIN_FILE) -> str:
    """The lenslib version the book is written against (``book/requirements.txt``)."""
    match = re.search(r"^lenslib==(\S+)\s*$", pin_file.read_text(), flags=re.M)
    if match is None:
        raise ValueError(f"{pin_file} must contain a line 'lenslib==<version>'")
    return match.group(1)


def check_version_pin(pin_file: Path = PIN_FILE) -> str:
    """Fail loudly when the installed lenslib is not the one the book was written for.

    A book and a library that drift apart is d2l's most reported reader problem; chapter 0 calls this.
    """
    pinned = pinned_version(pin_file)
    if pinned != __version__:
        raise RuntimeError(
            f"This book is pinned to lenslib=={pinned} but lenslib {__version__} is installed. "
            f"Run `pip install -e .` from the repository that holds this book, or check out the book "
            f"version that matches lenslib {__version__}."
        )
    return pinned
