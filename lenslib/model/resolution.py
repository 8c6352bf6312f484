"""Official inference resolution buckets (official code: resolution buckets).

``resolve_resolution(base, ratio)`` returns ``(height, width)``. Ratio keys are
**W:H**, so ``"9:16"`` is portrait. The table is authoritative: the source comment's
"round16(1024-value x 1.40625)" rule does not reproduce every 1440 entry (it gives
2064, not 2080, for the 1:2 height), so the values are listed, not computed.
These are the *inference* buckets; the paper's training buckets (bases 512/768/1024)
live in the data pipeline.

Used by the pipeline and ``lens sample`` (chapter 4).
"""

from __future__ import annotations

from .latents import check_divisible

__all__ = [
    "RESOLUTION_BUCKETS",
    "SUPPORTED_BASES",
    "SUPPORTED_RATIOS",
    "resolve_resolution",
    "check_divisible",
]

#: base -> (height, width) of its portrait buckets, W:H 1:2, 9:16, 2:3, 3:4, then the square. The
#: landscape buckets 2:1, 16:9, 3:2, 4:3 are the same sizes turned (the official table is symmetric).
_PORTRAIT = {
    1024: [(1472, 736), (1376, 768), (1248, 832), (1152, 864), (1024, 1024)],
    1440: [(2080, 1040), (1936, 1088), (1760, 1168), (1616, 1216), (1440, 1440)],
}
_RATIOS = ("1:2", "9:16", "2:3", "3:4", "1:1", "4:3", "3:2", "16:9", "2:1")

# base -> {W:H ratio -> (height, width)}
RESOLUTION_BUCKETS: dict[int, dict[str, tuple[int, int]]] = {
    base: dict(zip(_RATIOS, sizes + [(w, h) for h, w in reversed(sizes[:-1])]))
    for base, sizes in _PORTRAIT.items()
}
SUPPORTED_BASES = tuple(RESOLUTION_BUCKETS)
SUPPORTED_RATIOS = tuple(RESOLUTION_BUCKETS[1024])


def resolve_resolution(base_resolution: int, aspect_ratio: str) -> tuple[int, int]:
    """``(height, width)`` of the official bucket; ValueError for an unknown base or ratio."""
    try:
        base = int(base_resolution)
    except (TypeError, ValueError):
        raise ValueError(
            f"base_resolution must be one of {list(SUPPORTED_BASES)}, got {base_resolution!r}."
        ) from None
    if base not in RESOLUTION_BUCKETS:
        raise ValueError(
            f"Unsupported base_resolution {base_resolution!r}; choose one of {list(SUPPORTED_BASES)} "
            "or pass explicit height and width (multiples of 16)."
        )
    ratio = str(aspect_ratio).strip()
    if ratio not in RESOLUTION_BUCKETS[base]:
        raise ValueError(
            f"Unsupported aspect_ratio {aspect_ratio!r} (W:H); choose one of {list(SUPPORTED_RATIOS)} "
            "or pass explicit height and width (multiples of 16)."
        )
    return RESOLUTION_BUCKETS[base][ratio]
