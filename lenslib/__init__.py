"""lenslib: the Lens text-to-image model, its data recipe, trainer and evaluation, as one package.

The book (``book/``) imports only this package; every figure and number in it comes from here.
Heavy submodules (torch, diffusers) load lazily so ``import lenslib`` and ``lens --help`` stay fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access (PEP 562).
_LAZY = {
    "LensTransformer2DModel": "lenslib.model.transformer",
    "LensPipeline": "lenslib.model.pipeline",
    "book_setup": "lenslib.book",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lenslib' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
