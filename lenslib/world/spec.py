"""Scene specs: the ground truth of the synthetic world.

A :class:`Scene` lists objects (class, colour, box) on a neutral background, plus optional text
strings. The renderer (``lenslib.world.render``) draws a scene at any size; the judge
(``lenslib.eval.judge``) reads a rendered or generated image back into objects and scores it with
GenEval's rules. Because the world is ours, the truth of every image is known, and the judge can be
exact instead of a learned detector. The colours, relations and classes a scene may use are
``lenslib.world.vocab``'s; GenEval's relative-position rule is ``lenslib.world.position``; a GenEval
metadata line is read by ``lenslib.world.metadata``. Used in chapters 3 and 5.

Coordinates are fractions of the image, ``box = (x0, y0, x1, y1)`` with y pointing down, so one
scene renders at any size; a non-square render stretches it like resizing a photo.

Operating limits (the judge is exact inside them; :func:`sample_scene` and
:func:`scene_from_metadata` generate only inside them):

- image: shorter side >= ``VOCAB_MIN_SIDE[vocab]`` (64 px for shapes, 128 px for emoji: an emoji
  drawing needs ~25 px to be told from 55 others), aspect ratio between 1:2 and 2:1;
- objects: at most ``MAX_OBJECTS`` = 6; the longer side of a box is ``OBJECT_SIDE`` = 0.20-0.38 of
  the image side (>= 12.8 px at 64 px), the shorter side >= ``MIN_SHORT_SIDE`` = 0.12 (>= 7.7 px),
  and every box has its class's natural aspect ratio (sprites are stretched only by non-square
  renders);
- no overlap or occlusion: any two boxes (objects or texts) are at least ``GAP`` = 0.08 of the image
  apart along x or y (>= 5 px at 64 px), and ``EDGE`` = 0.03 away from the image border;
- relative positions are unambiguous: for every pair of objects, GenEval's normalised offsets are
  at least ``RELATION_MARGIN`` = 0.08 away from the +-0.5 decision thresholds (at square renders
  for :func:`sample_scene`; at every aspect ratio from 1:2 to 2:1 for :func:`scene_from_metadata`);
- background: one of ``BACKGROUNDS`` (neutral greys, far from every palette colour, so black and
  white objects stay visible), optionally with one of ``TEXTURES`` (amplitude <= 10/255);
- texts: height ``TEXT_HEIGHT`` = 0.04-0.07 of the image, well below the thinnest object, so the
  judge never mistakes a word for an object.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Sequence

import numpy as np

from lenslib.world.metadata import MetadataLine
from lenslib.world.position import POSITION_THRESHOLD, relation, relation_offsets
from lenslib.world.sprites import sprite_aspect
from lenslib.world.vocab import (
    COLORS,
    EMOJI_ATTRIBUTION,
    EMOJI_LEFT_OUT,
    RELATIONS,
    VOCABS,
    vocab_classes,
)

__all__ = [
    "COLORS",
    "RELATIONS",
    "VOCABS",
    "BACKGROUNDS",
    "TEXTURES",
    "EMOJI_ATTRIBUTION",
    "EMOJI_LEFT_OUT",
    "MIN_IMAGE_SIDE",
    "VOCAB_MIN_SIDE",
    "MAX_OBJECTS",
    "OBJECT_SIDE",
    "MIN_SHORT_SIDE",
    "GAP",
    "EDGE",
    "RELATION_MARGIN",
    "TEXT_HEIGHT",
    "POSITION_THRESHOLD",
    "SceneObject",
    "TextItem",
    "Scene",
    "vocab_classes",
    "size_name",
    "relation",
    "relation_offsets",
    "sample_scene",
    "scene_from_metadata",
    "within_limits",
    "class_aspect",
]

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "warm gray": (138, 128, 118),
    "cool gray": (118, 128, 140),
}
TEXTURES: tuple[str, ...] = ("checker", "stripes", "gradient", "noise")
TEXT_WORDS: tuple[str, ...] = ("LENS", "hello", "OPEN", "2026", "Zoe", "MMDiT", "sale")

MIN_IMAGE_SIDE = 64  # the smallest image any vocabulary supports
VOCAB_MIN_SIDE: dict[str, int] = {"shapes": 64, "emoji": 128}  # per vocabulary
MAX_ASPECT = 2.0
MAX_OBJECTS = 6
OBJECT_SIDE = (0.20, 0.38)
MIN_SHORT_SIDE = 0.12
GAP = 0.08
EDGE = 0.03
RELATION_MARGIN = 0.08
TEXT_HEIGHT = (0.04, 0.07)

Box = tuple[float, float, float, float]


def within_limits(vocab: str, width: int, height: int) -> bool:
    """Whether a ``width`` x ``height`` image of ``vocab`` is inside the judge's operating limits."""
    short, long_ = min(width, height), max(width, height)
    return short >= VOCAB_MIN_SIDE[vocab] and long_ <= MAX_ASPECT * short


def _check_box(box: Sequence[float], what: str) -> Box:
    if len(box) != 4:
        raise ValueError(f"{what}: box must be (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ValueError(
            f"{what}: box {box!r} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 "
            "(fractions of the image, y down)"
        )
    return (x0, y0, x1, y1)


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object: its class, colour name and box (fractions of the image, y down)."""

    cls: str
    color: str
    box: Box

    def __post_init__(self):
        if self.color not in COLORS:
            raise ValueError(f"unknown colour {self.color!r}; choose one of {list(COLORS)}")
        object.__setattr__(self, "box", _check_box(self.box, f"object {self.cls!r}"))

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2, (y0 + y1) / 2)

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.cls, "color": self.color, "box": list(self.box)}


@dataclasses.dataclass(frozen=True)
class TextItem:
    """A text string drawn inside ``box`` in a palette colour (rendered text, not an object)."""

    text: str
    box: Box
    color: str = "black"

    def __post_init__(self):
        if not self.text:
            raise ValueError("TextItem.text must be a non-empty string")
        if self.color not in COLORS:
            raise ValueError(f"unknown text colour {self.color!r}; choose one of {list(COLORS)}")
        object.__setattr__(self, "box", _check_box(self.box, f"text {self.text!r}"))

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "box": list(self.box), "color": self.color}


@dataclasses.dataclass(frozen=True)
class Scene:
    """A whole scene: vocabulary, objects, background colour name, optional texture and texts."""

    vocab: str
    objects: tuple[SceneObject, ...]
    background: str = "gray"
    texture: str | None = None
    texts: tuple[TextItem, ...] = ()

    def __post_init__(self):
        classes = set(vocab_classes(self.vocab))
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "texts", tuple(self.texts))
        for obj in self.objects:
            if obj.cls not in classes:
                raise ValueError(f"unknown {self.vocab} class {obj.cls!r}; choose one of {sorted(classes)}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; choose one of {list(BACKGROUNDS)}")
        if self.texture is not None and self.texture not in TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}; choose None or one of {TEXTURES}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocab": self.vocab,
            "background": self.background,
            "texture": self.texture,
            "objects": [o.to_dict() for o in self.objects],
            "texts": [t.to_dict() for t in self.texts],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scene":
        return cls(
            vocab=d["vocab"],
            objects=tuple(SceneObject(o["class"], o["color"], tuple(o["box"])) for o in d.get("objects", ())),
            background=d.get("background", "gray"),
            texture=d.get("texture"),
            texts=tuple(
                TextItem(t["text"], tuple(t["box"]), t.get("color", "black")) for t in d.get("texts", ())
            ),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "Scene":
        return cls.from_dict(json.loads(s))


def size_name(obj: SceneObject) -> str:
    """'small', 'medium' or 'large' from the longer side of the box (thirds of ``OBJECT_SIDE``)."""
    x0, y0, x1, y1 = obj.box
    side = max(x1 - x0, y1 - y0)
    lo, hi = OBJECT_SIDE
    if side < lo + (hi - lo) / 3:
        return "small"
    if side < lo + 2 * (hi - lo) / 3:
        return "medium"
    return "large"


# --- relative position (the rule itself: lenslib.world.position) -------------------------------


def _unambiguous(a: Box, b: Box, sizes: Iterable[tuple[float, float]]) -> bool:
    """Whether GenEval's offsets of ``a`` and ``b`` stay ``RELATION_MARGIN`` clear of the +-0.5
    thresholds at every image ``size`` (width, height)."""
    for size in sizes:
        d = relation_offsets(a, b, size)
        if d is not None and any(abs(abs(v) - 0.5) < RELATION_MARGIN for v in d):
            return False
    return True


# --- sampling ----------------------------------------------------------------------------------


def _rng(seed_or_rng) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)


def _apart(a: Box, b: Box, gap: float = GAP) -> bool:
    """True when boxes are at least ``gap`` apart along x or y."""
    return (max(a[0], b[0]) - min(a[2], b[2]) >= gap) or (max(a[1], b[1]) - min(a[3], b[3]) >= gap)


def class_aspect(vocab: str, cls: str) -> float:
    """Natural width/height of a class's sprite (boxes are sampled with it; renders stretch to it)."""
    return sprite_aspect(vocab, cls)


def _object_size(rng: np.random.Generator, aspect: float, hi: float | None = None) -> tuple[float, float]:
    """(w, h) with the class's aspect, longer side in OBJECT_SIDE, shorter side >= MIN_SHORT_SIDE."""
    lo, hi = OBJECT_SIDE[0], OBJECT_SIDE[1] if hi is None else hi
    lo = max(lo, MIN_SHORT_SIDE * max(aspect, 1 / aspect))  # thin classes are never drawn small
    side = float(rng.uniform(lo, max(lo, hi)))
    return (side, side / aspect) if aspect >= 1 else (side * aspect, side)


def _place(rng: np.random.Generator, w: float, h: float, placed: list[Box], tries: int = 100) -> Box | None:
    for _ in range(tries):
        x0 = float(rng.uniform(EDGE, 1 - EDGE - w))
        y0 = float(rng.uniform(EDGE, 1 - EDGE - h))
        box = (round(x0, 4), round(y0, 4), round(x0 + w, 4), round(y0 + h, 4))
        if all(_apart(box, p) for p in placed):
            return box
    return None


def sample_scene(
    seed_or_rng,
    vocab: str = "shapes",
    *,
    min_objects: int = 1,
    max_objects: int = 4,
    classes: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    backgrounds: Sequence[str] | None = None,
    texture_prob: float = 0.25,
    text_prob: float = 0.2,
    max_texts: int = 2,
) -> Scene:
    """A random scene inside the operating limits, reproducible from ``seed_or_rng``.

    The object count is uniform in ``[min_objects, max_objects]`` (fewer only if the layout cannot
    fit them); classes and colours are uniform over ``classes``/``colors`` (default: all); every
    pair of objects has an unambiguous GenEval relation at square renders. Used in chapters 3 and 5.
    """
    rng = _rng(seed_or_rng)
    all_classes = vocab_classes(vocab)
    classes = list(classes) if classes is not None else all_classes
    for c in classes:
        if c not in all_classes:
            raise ValueError(f"unknown {vocab} class {c!r}; choose from {all_classes}")
    colors = list(colors) if colors is not None else list(COLORS)
    for c in colors:
        if c not in COLORS:
            raise ValueError(f"unknown colour {c!r}; choose from {list(COLORS)}")
    backgrounds = list(backgrounds) if backgrounds is not None else list(BACKGROUNDS)
    if not 0 <= min_objects <= max_objects <= MAX_OBJECTS:
        raise ValueError(
            f"need 0 <= min_objects <= max_objects <= {MAX_OBJECTS}, got {min_objects}, {max_objects}"
        )

    n = int(rng.integers(min_objects, max_objects + 1))
    objects: list[SceneObject] = []
    boxes: list[Box] = []
    for _ in range(n):
        cls = classes[int(rng.integers(len(classes)))]
        color = colors[int(rng.integers(len(colors)))]
        for _attempt in range(20):
            w, h = _object_size(rng, class_aspect(vocab, cls))
            box = _place(rng, w, h, boxes)
            if box is not None and all(_unambiguous(box, b, [(1.0, 1.0)]) for b in boxes):
                break
            box = None
        if box is None:
            break
        boxes.append(box)
        objects.append(SceneObject(cls, color, box))

    background = backgrounds[int(rng.integers(len(backgrounds)))]
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))] if rng.random() < texture_prob else None
    texts: list[TextItem] = []
    if rng.random() < text_prob:
        for _ in range(int(rng.integers(1, max_texts + 1))):
            word = TEXT_WORDS[int(rng.integers(len(TEXT_WORDS)))]
            h = float(rng.uniform(*TEXT_HEIGHT))
            w = min(0.9, h * 0.62 * len(word) + 0.02)
            box = _place(rng, w, h, boxes)
            if box is None:
                break
            boxes.append(box)
            texts.append(TextItem(word, box, colors[int(rng.integers(len(colors)))]))
    return Scene(vocab, tuple(objects), background, texture, tuple(texts))


# --- GenEval metadata -> ground-truth scene ----------------------------------------------------------

_ASPECT_CHECKS = ((1.0, 1.0), (2.0, 1.0), (1.0, 2.0))


def scene_from_metadata(
    line: dict | MetadataLine,
    vocab: str = "shapes",
    seed: int | np.random.Generator = 0,
    *,
    background: str | None = None,
    texture: str | None = None,
) -> Scene:
    """Lay out a GenEval metadata line as a ground-truth scene that satisfies every clause.

    Each include clause adds ``count`` objects of its class (its colour if given, else a random
    one); a ``position: [relation, j]`` clause puts each of its objects in that relation to every
    object of include clause ``j``, unambiguously at aspect ratios 1:2 to 2:1. Exclude clauses are
    checked (their class must stay below their count). Raises ``ValueError`` naming the clause for
    an unknown class, colour or relation, or an unsatisfiable line. Used in chapter 5.
    """
    parsed = MetadataLine.from_dict(line, vocab)
    rng = _rng(seed)
    totals: dict[str, int] = {}
    for cl in parsed.include:
        totals[cl.cls] = totals.get(cl.cls, 0) + cl.count
    for i, cl in enumerate(parsed.exclude):
        if totals.get(cl.cls, 0) >= cl.count:
            raise ValueError(
                f"exclude[{i}] {json.dumps(cl.to_dict())}: the include clauses need "
                f"{totals[cl.cls]} {cl.cls}, which this exclude clause forbids"
            )
    if sum(totals.values()) > MAX_OBJECTS:
        raise ValueError(
            f"metadata line asks for {sum(totals.values())} objects; the world holds at most {MAX_OBJECTS}"
        )

    groups: list[list[int]] = []
    specs: list[tuple[str, str, int, tuple]] = []  # (class, colour, group, position)
    for gi, cl in enumerate(parsed.include):
        groups.append([])
        for _ in range(cl.count):
            color = cl.color or list(COLORS)[int(rng.integers(len(COLORS)))]
            groups[gi].append(len(specs))
            specs.append((cl.cls, color, gi, cl.position or ()))

    for _attempt in range(2000):
        boxes: list[Box] = []
        ok = True
        for k, (cls, color, gi, pos) in enumerate(specs):
            w, h = _object_size(rng, class_aspect(vocab, cls), hi=0.3)
            box = None
            for _try in range(60):
                cand = _place(rng, w, h, boxes, tries=1)
                if cand is None:
                    continue
                if not all(_unambiguous(cand, b, _ASPECT_CHECKS) for b in boxes):
                    continue
                if pos:
                    rel, target = pos
                    if not all(
                        rel in relation(cand, boxes[t], s) for t in groups[target] for s in _ASPECT_CHECKS
                    ):
                        continue
                box = cand
                break
            if box is None:
                ok = False
                break
            boxes.append(box)
        if ok:
            objects = tuple(SceneObject(cls, color, b) for (cls, color, _, _), b in zip(specs, boxes))
            bg = (
                background
                if background is not None
                else list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
            )
            return Scene(vocab, objects, bg, texture)
    raise ValueError(
        f"could not lay out metadata line {json.dumps(line if isinstance(line, dict) else parsed.to_dict())} "
        "within the operating limits"
    )
