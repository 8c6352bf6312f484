"""Captions of a scene at every level of detail, written from the scene's spec.

Lens recaptions its 800M training images with GPT-4.1: one English paragraph per image (about 109
words on average) naming the salient objects with their attributes, counts, positions, the
background and any visible text. Its caption ablation compares *Brief* captions ("a photo of a
cat"), *Detailed* captions and a 50/50 *Mixed* arm, and finds Detailed best on GenEval. Raw web
alt-text, which the paper calls noisy, had no arm. In the synthetic world the spec is the truth,
so all four kinds can be written exactly from it:

- ``alt_text``: what web alt-text looks like: often a filename or boilerplate, otherwise a short
  phrase naming one object of several, with a colour that is sometimes wrong (``ALT_TEXT_RATES``).
- ``brief``: the main subject only (the group of the largest object): "a photo of a red circle".
- ``detailed``: a Lens-style paragraph: every object with colour, count, size and place, relative
  positions (GenEval's rule), the background and texture, visible text in quotes; phrasing varies
  with the seed and the length grows with the scene.
- ``mixed``: brief or detailed, 50/50 by seed, as in the paper's ablation.

Every caption is a pure function of ``(scene, seed)``. Reading a caption back against the spec
(which facts it states) is ``lenslib.world.caption_reading``. Used in chapters 1, 5 and 6.
"""

from __future__ import annotations

import random

import numpy as np

from lenslib.world.position import relation
from lenslib.world.spec import COLORS, Scene, sample_scene, size_name
from lenslib.world.wording import counted, number_word, plural, with_article

CAPTION_KINDS = ("alt_text", "brief", "detailed", "mixed")

# How the alt-text model behaves, as fractions of all alt-texts (they sum to 1). These rates are a
# modelling choice, not a measurement: they give the qualitative shape of crawled alt-text (a
# sizeable share is a file name, boilerplate or unrelated page text that says nothing about the
# image; the rest is a short keyword phrase about one thing in it, sometimes wrong). Change them
# to model cleaner or noisier web data; tests check the generator follows whatever they say.
ALT_TEXT_RATES = {
    "filename": 0.12,  # "IMG_2291.jpg"
    "boilerplate": 0.13,  # "stock image", "Untitled"
    "irrelevant": 0.05,  # page text that has nothing to do with the image
    "partial": 0.70,  # one object of the scene (the main subject or another one)
}
ALT_TEXT_COLOR_SHOWN = 0.6  # a partial alt-text names the object's colour this often ...
ALT_TEXT_COLOR_WRONG = 0.25  # ... and, when it does, names a wrong colour this often
# So a wrong colour appears in 0.70 x 0.6 x 0.25 = 10.5 % of all alt-texts.
ALT_TEXT_WRONG_COLOR_RATE = ALT_TEXT_RATES["partial"] * ALT_TEXT_COLOR_SHOWN * ALT_TEXT_COLOR_WRONG
ALT_TEXT_OTHER_OBJECT = 0.5  # a partial alt-text names a random object instead of the main one
ALT_TEXT_TEXT_SHOWN = 0.3  # when the scene has text, a partial alt-text quotes it this often

_FILENAMES = (
    "IMG_{n}.jpg",
    "DSC_{n}.JPG",
    "image-{n}.png",
    "photo ({k}).jpeg",
    "untitled-{k}.png",
    "download ({k}).png",
    "{n}_orig.jpg",
    "Screenshot_{n}.png",
    "asset-{n}-1024x768.webp",
)
_BOILERPLATE = (
    "stock image",
    "image",
    "Untitled",
    "clipart",
    "thumbnail",
    "placeholder",
    "free vector graphics",
    "royalty free illustration",
    "Image may contain: graphic",
    "picture",
)
_IRRELEVANT = (
    "Click here to download",
    "Home | About us | Contact",
    "Best deals of the season",
    "Subscribe to our newsletter",
    "Read more",
    "product photo 3 of 7",
    "Terms and conditions apply",
)
_ALT_PARTIAL = (
    "{np}",
    "{np} icon",
    "{np} clipart",
    "{np} - stock illustration",
    "simple {np} vector",
    "{np} png",
    "{np} on {bg} background",
    "{np} isolated",
)


# --------------------------------------------------------------------------- helpers
def _rng(kind: str, seed: int) -> random.Random:
    """One RNG per (kind, seed); str seeds hash with SHA-512, so this is stable across runs."""
    return random.Random(f"lens-caption:{kind}:{int(seed)}")


def object_groups(scene: Scene) -> list[tuple[tuple[str, str], list]]:
    """Objects grouped by (colour, class), in order of first appearance."""
    groups: dict[tuple[str, str], list] = {}
    for obj in scene.objects:
        groups.setdefault((obj.color, obj.cls), []).append(obj)
    return list(groups.items())


def _area(obj) -> float:
    x0, y0, x1, y1 = obj.box
    return (x1 - x0) * (y1 - y0)


def main_subject(scene: Scene):
    """The main subject: the largest object (the first one on ties). None for an empty scene."""
    if not scene.objects:
        return None
    return max(scene.objects, key=_area)


def _name(color: str, cls: str) -> str:
    return f"{color} {cls}"


def region(box) -> tuple[str, str]:
    """The ninth of the frame a box's centre is in, ``(vertical, horizontal)``: what a detailed caption's
    place words ("near the top edge") name. Chapter 4 checks samples against it (``lenslib.eval.words``)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "center"
    v = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
    return v, h


def _where(obj, rng: random.Random) -> str:
    """Where an object sits in the frame, in words that contain no relation phrase."""
    phrases = {
        ("top", "left"): ("in the upper-left area", "near the top-left corner"),
        ("top", "center"): ("near the top edge", "in the upper middle"),
        ("top", "right"): ("in the upper-right area", "near the top-right corner"),
        ("middle", "left"): ("toward the left edge", "at the left side"),
        ("middle", "center"): ("near the center", "in the middle of the image"),
        ("middle", "right"): ("toward the right edge", "at the right side"),
        ("bottom", "left"): ("in the lower-left area", "near the bottom-left corner"),
        ("bottom", "center"): ("near the bottom edge", "in the lower middle"),
        ("bottom", "right"): ("in the lower-right area", "near the bottom-right corner"),
    }
    return rng.choice(phrases[region(obj.box)])


_REL_PHRASES = {
    "left of": ("to the left of", "left of", "on the left side of"),
    "right of": ("to the right of", "right of", "on the right side of"),
    "above": ("above", "directly above", "higher up, above"),
    "below": ("below", "beneath", "underneath", "under"),
}
_TEXTURE_PHRASES = {
    "checker": ("a faint checkerboard pattern", "a subtle checkered pattern"),
    "stripes": ("faint stripes", "a subtle striped pattern"),
    "gradient": ("a soft gradient", "a gentle gradient"),
    "noise": ("a fine grainy noise", "a slightly noisy, grainy texture"),
}


def group_relations(a_objs, b_objs) -> frozenset[str]:
    """Relations that hold between every member of group A and every member of group B."""
    sets = [relation(a, b) for a in a_objs for b in b_objs]
    return frozenset.intersection(*sets) if sets else frozenset()


# --------------------------------------------------------------------------- the four kinds
def alt_text(scene: Scene, seed: int = 0) -> str:
    """Web-like alt-text: a filename, boilerplate, unrelated page text, or a short phrase about one
    object (sometimes not the main one; colour shown 60 % of the time and then wrong 25 % of the
    time). Rates in ``ALT_TEXT_RATES``; a wrong colour appears in 10.5 % of alt-texts."""
    rng = _rng("alt_text", seed)
    u = rng.random()
    cut = np.cumsum(list(ALT_TEXT_RATES.values()))
    mode = list(ALT_TEXT_RATES)[int(np.searchsorted(cut, u, side="right"))] if u < cut[-1] else "partial"
    if mode == "filename" or (mode == "partial" and not scene.objects):
        return rng.choice(_FILENAMES).format(n=rng.randint(1000, 9999), k=rng.randint(1, 30))
    if mode == "boilerplate":
        return rng.choice(_BOILERPLATE)
    if mode == "irrelevant":
        return rng.choice(_IRRELEVANT)
    obj = rng.choice(scene.objects) if rng.random() < ALT_TEXT_OTHER_OBJECT else main_subject(scene)
    np_ = obj.cls
    if rng.random() < ALT_TEXT_COLOR_SHOWN:
        color = obj.color
        if rng.random() < ALT_TEXT_COLOR_WRONG:
            # a colour that no object of this class has, so the phrase is really wrong
            used = {o.color for o in scene.objects if o.cls == obj.cls}
            color = rng.choice([c for c in COLORS if c not in used])
        np_ = f"{color} {obj.cls}"
    text = rng.choice(_ALT_PARTIAL).format(np=np_, bg=scene.background)
    if scene.texts and rng.random() < ALT_TEXT_TEXT_SHOWN:
        text += f" {rng.choice(scene.texts).text}"
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text


def brief(scene: Scene, seed: int = 0) -> str:
    """The main subject only, GenEval-style: "a photo of a red circle" ("two red circles" when the
    largest object's colour-and-class group has two members). Nothing else of the scene."""
    rng = _rng("brief", seed)
    obj = main_subject(scene)
    if obj is None:
        return rng.choice(("a photo of an empty background", "an empty gray background"))
    n = sum(1 for o in scene.objects if (o.color, o.cls) == (obj.color, obj.cls))
    template = rng.choice(("a photo of {}", "a picture of {}", "an image of {}", "{}"))
    return template.format(counted(n, _name(obj.color, obj.cls)))


def detailed(scene: Scene, seed: int = 0) -> str:
    """A Lens-style paragraph: every object (colour, count, size, place in the frame), relative
    positions between the groups (GenEval's rule; only relations that hold for every member),
    background and texture, and any visible text in quotes. Phrasing varies with ``seed``;
    length grows with the number of objects, relations and texts."""
    rng = _rng("detailed", seed)
    groups = object_groups(scene)
    kind_word = "shape" if scene.vocab == "shapes" else "emoji"
    bg = scene.background
    sentences: list[str] = []

    # 1. overview: every group with its count (and size for single objects)
    def listed(key, objs):
        color, cls = key
        if len(objs) == 1:
            return with_article(f"{size_name(objs[0])} {color} {cls}")
        return f"{number_word(len(objs))} {color} {plural(cls)}"

    items = []  # one item per class; a class in several colours gets its total first
    for cls in dict.fromkeys(o.cls for o in scene.objects):
        parts = [listed(k, objs) for k, objs in groups if k[1] == cls]
        if len(parts) == 1:
            items.append(parts[0])
        else:
            total = sum(len(objs) for k, objs in groups if k[1] == cls)
            items.append(f"{number_word(total)} {plural(cls)} ({', '.join(parts[:-1])} and {parts[-1]})")
    if not items:
        sentences.append(
            rng.choice(
                (
                    f"The image shows an empty {bg} background with no objects on it.",
                    f"This picture is an empty, plain {bg} background.",
                )
            )
        )
    else:
        listing = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
        n = len(scene.objects)
        options = [
            f"The image shows {listing} on a {bg} background.",
            f"This is a simple illustration of {listing}, set against a {bg} backdrop.",
            f"A plain {bg} background holds {listing}.",
        ]
        if n > 1:
            options.append(
                f"{number_word(n).capitalize()} {kind_word}{'s' if kind_word == 'shape' else ''} "
                f"are arranged on a {bg} background: {listing}."
            )
        sentences.append(rng.choice(options))
    if scene.texture is not None:
        sentences.append(
            rng.choice(
                (
                    f"The background is not completely flat: it carries "
                    f"{rng.choice(_TEXTURE_PHRASES[scene.texture])}.",
                    f"Across the {bg} backdrop runs {rng.choice(_TEXTURE_PHRASES[scene.texture])}.",
                )
            )
        )

    # 2. every object's place and size
    for (color, cls), objs in groups:
        if len(objs) == 1:
            o = objs[0]
            verb = rng.choice(("sits", "is placed", "appears", "is located"))
            sentences.append(f"The {size_name(o)} {color} {cls} {verb} {_where(o, rng)}.")
        else:
            places = [_where(o, rng) for o in objs]
            ordinal = ("the second", "the third", "the fourth", "the fifth", "the sixth")
            parts = [f"one of them is {places[0]}"] + [f"{ordinal[i]} {p}" for i, p in enumerate(places[1:])]
            sizes = sorted({size_name(o) for o in objs})
            size_text = (
                f"{'both' if len(objs) == 2 else 'all'} {sizes[0]}"
                if len(sizes) == 1
                else "in different sizes"
            )
            sentences.append(
                f"The {number_word(len(objs))} {color} {plural(cls)} are {size_text}: "
                + ", ".join(parts[:-1])
                + " and "
                + parts[-1]
                + "."
            )

    # 3. relative positions between groups: all pairs for small scenes, else a chain plus the
    # main subject, so that every group is placed relative to another one.
    keys = [k for k, _ in groups]
    members = dict(groups)
    pairs = [(i, j) for i in range(len(keys)) for j in range(i)]
    if len(keys) > 3:
        main = main_subject(scene)
        m = keys.index((main.color, main.cls))
        pairs = sorted(
            {(i, i - 1) for i in range(1, len(keys))}
            | {(max(i, m), min(i, m)) for i in range(len(keys)) if i != m}
        )
    for i, j in pairs:
        a, b = keys[i], keys[j]
        if rng.random() < 0.5:
            a, b = b, a
        rels = sorted(group_relations(members[a], members[b]))
        if not rels:
            continue
        phrase = " and ".join(rng.choice(_REL_PHRASES[r]) for r in rels)
        na, nb = len(members[a]), len(members[b])
        subject = f"the {_name(*a)}" if na == 1 else f"the {number_word(na)} {a[0]} {plural(a[1])}"
        target = f"the {_name(*b)}" if nb == 1 else f"the {number_word(nb)} {b[0]} {plural(b[1])}"
        verb = "is" if na == 1 else "are"
        if na > 1 and rng.random() < 0.5:
            verb = "are both" if na == 2 else "are all"
        sentences.append(f"{subject[0].upper()}{subject[1:]} {verb} {phrase} {target}.")

    # 4. visible text, quoted exactly
    for t in scene.texts:
        where = _where(t, rng)
        sentences.append(
            rng.choice(
                (
                    f'The word "{t.text}" is written in small {t.color} letters {where}.',
                    f'A short {t.color} label reading "{t.text}" appears {where}.',
                    f'Small {t.color} text {where} reads "{t.text}".',
                )
            )
        )

    # 5. a closing remark on style, as dense captions often end
    if rng.random() < 0.7:
        sentences.append(
            rng.choice(
                (
                    f"Each {kind_word} is drawn as a flat silhouette in a single color, "
                    "with no shading or shadows.",
                    "The composition is simple and uncluttered, with crisp edges and even lighting.",
                    f"The {kind_word}{'s' if kind_word == 'shape' and len(scene.objects) != 1 else ''} "
                    f"{'are' if len(scene.objects) != 1 else 'is'} rendered flat, "
                    "like a clean vector graphic.",
                )
            )
        )
    return " ".join(sentences)


def mixed(scene: Scene, seed: int = 0) -> str:
    """Brief or detailed, 50/50 by seed: the paper's *Mixed* caption arm."""
    return brief(scene, seed) if _rng("mixed", seed).random() < 0.5 else detailed(scene, seed)


_KINDS = {"alt_text": alt_text, "brief": brief, "detailed": detailed, "mixed": mixed}


def caption(scene: Scene, kind: str, seed: int = 0) -> str:
    """The caption of ``kind`` (one of ``CAPTION_KINDS``) for ``scene``, pure in (scene, seed)."""
    if kind not in _KINDS:
        raise ValueError(f"unknown caption kind {kind!r}; choose one of {CAPTION_KINDS}")
    return _KINDS[kind](scene, seed)


# --------------------------------------------------------------------------- statistics
def word_count(text: str) -> int:
    """Words as the paper counts them: whitespace-separated tokens."""
    return len(text.split())


def word_count_stats(
    kind: str = "detailed", n: int = 1000, vocab: str = "shapes", seed: int = 0, **scene_kwargs
) -> dict:
    """Distribution of caption lengths over ``n`` random scenes (``sample_scene(seed + i)``).

    Returns mean, std, min, percentiles and max, the mean per object count, and the raw counts,
    so chapter 1 can set our detailed captions beside Lens's ~109-word mean.
    """
    counts, per_n = [], {}
    for i in range(n):
        scene = sample_scene(seed + i, vocab, **scene_kwargs)
        words = word_count(caption(scene, kind, seed + i))
        counts.append(words)
        per_n.setdefault(len(scene.objects), []).append(words)
    arr = np.array(counts)
    p = np.percentile(arr, [10, 50, 90])
    return {
        "kind": kind,
        "vocab": vocab,
        "n": n,
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "min": int(arr.min()),
        "p10": float(p[0]),
        "median": float(p[1]),
        "p90": float(p[2]),
        "max": int(arr.max()),
        "mean_by_objects": {k: float(np.mean(v)) for k, v in sorted(per_n.items())},
        "counts": counts,
    }


def caption_all(scene: Scene, seed: int = 0) -> dict[str, str]:
    """Every caption kind of a scene (the dataset's caption columns)."""
    return {kind: caption(scene, kind, seed) for kind in CAPTION_KINDS}


__all__ = [
    "CAPTION_KINDS",
    "ALT_TEXT_RATES",
    "ALT_TEXT_WRONG_COLOR_RATE",
    "alt_text",
    "brief",
    "detailed",
    "mixed",
    "caption",
    "caption_all",
    "object_groups",
    "group_relations",
    "main_subject",
    "region",
    "word_count",
    "word_count_stats",
]
