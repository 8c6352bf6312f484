"""Captioners from short specs, as ``lens recaption --captioner`` takes them.

``[KIND=]BACKEND:ARG`` where BACKEND is ``openai`` (ARG = model name), ``vlm`` (ARG = local folder) or
``oracle`` (ARG = caption kind; the world's exact captions). KIND (``detailed`` by default, or
``brief``) picks the instruction. Examples: ``openai:gpt-4.1``, ``brief=vlm:/models/qwen2-vl``,
``oracle:alt_text``. Options not used by a backend are ignored. Used by :mod:`lenslib.data.pipeline`.
"""

from __future__ import annotations

import inspect

from .base import Captioner
from .oracle import OracleCaptioner
from .vlm import VLMCaptioner

BACKENDS = ("openai", "vlm", "oracle")


def parse_spec(spec: str) -> tuple[str | None, str, str]:
    """(kind or None, backend, arg)."""
    kind = None
    if "=" in spec.split(":", 1)[0]:
        kind, spec = spec.split("=", 1)
    backend, sep, arg = spec.partition(":")
    if backend not in BACKENDS or not sep or not arg:
        raise ValueError(
            f"bad captioner spec {spec!r}: use [KIND=]BACKEND:ARG with BACKEND in {BACKENDS}, "
            "e.g. openai:gpt-4.1, brief=vlm:/path/to/model, oracle:detailed"
        )
    return kind, backend, arg


def make_captioner(spec: str, **options) -> Captioner:
    kind, backend, arg = parse_spec(spec)
    if backend == "openai":
        # lazy: the openai client costs 0.5 s to import (python -X importtime); only this backend needs it
        from .openai_api import OpenAICaptioner as cls  # noqa: PLC0415

        kw = {"model": arg, "kind": kind or "detailed"}
    elif backend == "vlm":
        cls = VLMCaptioner
        kw = {"path": arg, "kind": kind or "detailed"}
    else:
        cls = OracleCaptioner
        if kind and kind != arg:
            raise ValueError(f"oracle spec {spec!r}: the oracle's kind is its argument ({arg})")
        kw = {"kind": arg}
    accepted = set(inspect.signature(cls.__init__).parameters)
    kw.update({k: v for k, v in options.items() if k in accepted and v is not None and k not in kw})
    return cls(**kw)
