"""GenEval's rule for where one object is relative to another: left of, right of, above, below.

GenEval (``evaluation/evaluate_images.py``, ``relative_position``) shrinks the offset between two
box centres by a margin proportional to the boxes' sizes and reads the direction of what is left.
The scene sampler and builder (``lenslib.world.spec``) keep every pair of objects clear of the
rule's thresholds, the captioner (``lenslib.world.captions``) states the relations it gives and the
judge (``lenslib.eval.judge``) checks positions with it, in pixels. Used in chapters 3 and 5.
"""

from __future__ import annotations

import numpy as np

__all__ = ["POSITION_THRESHOLD", "relation_offsets", "relation"]

POSITION_THRESHOLD = 0.1  # GenEval's size margin for relative positions


def _as_box(x) -> np.ndarray:
    """A box as floats: ``x`` is a box or has one (a ``SceneObject``, a ``Detection``)."""
    return np.asarray(getattr(x, "box", x), dtype=np.float64)


def relation_offsets(a, b, size: tuple[float, float] | None = None) -> tuple[float, float] | None:
    """GenEval's normalised offset ``(dx, dy)`` of ``a`` relative to ``b``, or None when both shrunk
    offsets vanish. Boxes are scaled by ``size = (width, height)`` first (GenEval works in pixels)."""
    sx, sy = size if size is not None else (1.0, 1.0)
    scale = np.array([sx, sy, sx, sy])
    boxes = np.stack([_as_box(a) * scale, _as_box(b) * scale]).reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return None
    dx, dy = revised / np.linalg.norm(offset)
    return float(dx), float(dy)


def relation(a, b, size: tuple[float, float] | None = None) -> frozenset[str]:
    """Where ``a`` is relative to ``b``: a set of ``RELATIONS`` (empty, one, or two for diagonals).

    Exactly GenEval's rule: the centre offset is shrunk by 0.1 x (sum of the two box sizes) per
    axis, divided by the length of the unshrunk offset, and a component below -0.5 / above 0.5
    means left of / right of (x) or above / below (y, pointing down). ``a`` and ``b`` are
    :class:`SceneObject` or boxes; pass the image ``size`` to decide in pixels like GenEval does.
    """
    d = relation_offsets(a, b, size)
    if d is None:
        return frozenset()
    dx, dy = d
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return frozenset(rels)
