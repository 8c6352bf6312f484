"""What differs between two configs: the one comparison of nested settings, as ``(key, before, after)``.

A checkpoint continues only the run that wrote it (:func:`lenslib.train.config.check_resume`), and a
cache serves only the build it was made for (:class:`~lenslib.data.world_cache.WorldCache`,
:mod:`lenslib.data.feature_cache`): each compares what it was made with against what is asked for and
names every key that differs. It sits on the data floor, the lowest that compares configs, so data and
everything above it (the trainer, the cluster's notebook runs) use the same comparison.

Used in chapter 4 (a resumed run) and chapter 1 (caches).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["UNSET", "config_diff", "flatten_config"]


class _Unset:
    """A key one side of a comparison does not have (shown as ``(unset)``)."""

    def __repr__(self) -> str:
        return "(unset)"


#: The value :func:`config_diff` reports for a key one side lacks, unless told otherwise.
UNSET: Any = _Unset()


def flatten_config(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{dotted key: leaf}``; an empty mapping has no leaves (like a missing one)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_config(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(
    before: Mapping, after: Mapping, *, missing: Any = UNSET, nested: bool = True
) -> list[tuple[str, Any, Any]]:
    """``[(key, before's value, after's value)]`` for every key whose value differs, sorted by key.

    ``nested`` compares leaves under dotted keys (``optim.lr``; :func:`flatten_config`); otherwise the
    top-level values are compared whole. A key only one side has compares as ``missing`` on the other
    (:data:`UNSET`, shown as ``(unset)``; ``None`` makes an absent key equal to one set to None).
    """
    a = flatten_config(before) if nested else dict(before)
    b = flatten_config(after) if nested else dict(after)
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key, missing), b.get(key, missing)
        if x != y:
            out.append((key, x, y))
    return out
