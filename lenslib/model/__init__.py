"""The Lens model: the official-weight-compatible DiT and, beside it, the sampling pipeline.

Submodules are imported lazily so that ``import lenslib.model`` stays cheap (no torch or diffusers
until a class is asked for).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "LensTransformer2DModel": "lenslib.model.transformer",
    "LensTransformerBlock": "lenslib.model.block",
    "LensJointAttention": "lenslib.model.attention",
    "LensEmbedRope": "lenslib.model.rope",
    "get_config": "lenslib.model.presets",
    "build_model": "lenslib.model.presets",
    "PRESETS": "lenslib.model.presets",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lenslib.model' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
