"""Reading a caption back: which facts of a scene it states, found by parsing its words.

:func:`coverage` parses a caption for the world's vocabulary (classes, colours, numbers, relation
phrases, background and texture names, quoted text) and sets what it states beside the facts of
the scene's spec (:func:`scene_facts`). It never looks at how a caption was generated, so it can
score any caption, a model's or a person's; the captions themselves are written by
``lenslib.world.captions``. :func:`read_mentions` (the noun phrases of a sentence) and
``RELATION_PATTERNS`` (the relation phrases) also read prompts for the rule reasoner
(``lenslib.reasoner``). Used in chapters 1, 5 and 6.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass

from lenslib.world.captions import group_relations, object_groups
from lenslib.world.position import relation
from lenslib.world.spec import BACKGROUNDS, COLORS, TEXTURES, Scene, vocab_classes
from lenslib.world.wording import WORD_NUMBERS, plural

__all__ = ["Coverage", "Mention", "RELATION_PATTERNS", "coverage", "read_mentions", "scene_facts"]


def _name(color: str, cls: str) -> str:
    return f"{color} {cls}"


@dataclass(frozen=True)
class Coverage:
    """Which facts of a scene a caption states.

    ``facts``: every fact of the spec (``class:circle``, ``color:red circle``,
    ``count:red circle=2``, ``count:circle=3`` for a class seen in several colours,
    ``relation:blue square|red circle``, ``background:gray``,
    ``texture:stripes``, ``text:LENS``); ``stated``: those the caption states correctly;
    ``wrong``: statements that contradict the spec (a class or colour that is not there, a wrong
    count or relation, a wrong background); ``recall`` = len(stated) / len(facts).
    """

    facts: tuple[str, ...]
    stated: tuple[str, ...]
    recall: float
    wrong: tuple[str, ...] = ()


def scene_facts(scene: Scene) -> list[str]:
    """Every checkable fact of a scene, in a stable order (see :class:`Coverage`)."""
    groups = object_groups(scene)
    facts = [f"class:{c}" for c in dict.fromkeys(o.cls for o in scene.objects)]
    facts += [f"color:{_name(*k)}" for k, _ in groups]
    facts += [f"count:{_name(*k)}={len(v)}" for k, v in groups]
    totals = Counter(o.cls for o in scene.objects)
    facts += [f"count:{c}={totals[c]}" for c in totals if sum(k[1] == c for k, _ in groups) > 1]
    for i, (ka, a) in enumerate(groups):
        for kb, b in groups[i + 1 :]:
            if group_relations(a, b):
                facts.append(f"relation:{_pair_key(ka, kb)}")
    facts.append(f"background:{scene.background}")
    if scene.texture is not None:
        facts.append(f"texture:{scene.texture}")
    facts += [f"text:{t}" for t in dict.fromkeys(t.text for t in scene.texts)]
    return facts


def _pair_key(a: tuple[str, str], b: tuple[str, str]) -> str:
    return "|".join(sorted((_name(*a), _name(*b))))


_SIZE_WORDS = {"small", "medium", "large", "big", "tiny", "sized", "medium-sized"}
_COUNT_WORDS = {"a": 1, "an": 1, **{w: n for w, n in WORD_NUMBERS.items() if n > 0}}
# The phrases that state GenEval's four relations, as (compiled pattern, relation).
RELATION_PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(p), rel)
    for p, rel in (
        (r"\bleft(?: side)? of\b", "left of"),
        (r"\bright(?: side)? of\b", "right of"),
        (r"\babove\b", "above"),
        (r"\b(?:below|beneath|underneath|under)\b", "below"),
    )
]
_TEXTURE_WORDS = {
    "checker": ("checker", "checkered", "checkerboard"),
    "stripes": ("stripes", "striped"),
    "gradient": ("gradient",),
    "noise": ("noise", "noisy", "grainy"),
}
_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z]+)*")


@dataclass
class Mention:
    """A noun phrase naming a class: its colour and count when stated, and where it is in the sentence."""

    cls: str
    color: str | None
    count: int | None
    plural: bool
    start: int  # character offsets in the sentence
    end: int


@functools.lru_cache(maxsize=None)
def _class_forms(vocab: str) -> dict[str, list[tuple[tuple[str, ...], str, bool | None]]]:
    """First word -> [(tokens, class, is_plural)] for every class name and its plural, longest first
    (``is_plural`` None for names whose plural is the same word)."""
    forms: dict[str, list] = {}
    for cls in vocab_classes(vocab):
        same = plural(cls) == cls  # "sheep", "skis": number shows only in the count word
        for text, is_plural in ((cls, None if same else False), (plural(cls), True)):
            if same and is_plural:
                continue
            toks = tuple(text.split())
            forms.setdefault(toks[0], []).append((toks, cls, is_plural))
    for options in forms.values():
        options.sort(key=lambda f: -len(f[0]))
    return forms


_DETERMINERS = {"the", "this", "that", "each", "every", "another", *(_c for _c in COLORS)}


def read_mentions(sentence: str, vocab: str) -> list[Mention]:
    """Noun phrases naming a class of ``vocab`` in a sentence: [count] [size] [colour] class.

    A word that is both a colour and a class (emoji's "orange") is the colour when a class follows
    it, and the class only when plural or introduced by an article, number or determiner
    ("an orange", "the orange"); "orange letters" and "in orange" name no object."""
    toks = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(sentence.lower())]
    words = [t for t, _, _ in toks]
    forms = _class_forms(vocab)

    def class_at(j):
        for form, cls, is_plural in forms.get(words[j], ()) if j < len(words) else ():
            if tuple(words[j : j + len(form)]) == form:
                return cls, is_plural, j + len(form)
        return None

    out, i = [], 0
    while i < len(words):
        j, count = i, None
        if words[j] in _COUNT_WORDS:
            count = _COUNT_WORDS[words[j]]
            j += 1
        elif words[j].isdigit():
            count = int(words[j])
            j += 1
        while j < len(words) and words[j] in _SIZE_WORDS:
            j += 1
        color = None
        if j < len(words) and words[j] in COLORS:
            k = j + 1
            while k < len(words) and words[k] in _SIZE_WORDS:
                k += 1
            if class_at(k):
                color, j = words[j], k
        hit = class_at(j)
        if hit is None:
            i += 1
            continue
        cls, is_plural, end = hit
        if color is None and cls in COLORS and is_plural is False:
            k = j - 1
            while k >= 0 and words[k] in _SIZE_WORDS:
                k -= 1
            if k < 0 or not (words[k] in _COUNT_WORDS or words[k] in _DETERMINERS or words[k].isdigit()):
                i = max(i + 1, j)  # a bare colour word, not the class
                continue
        if count is not None and is_plural is not None and (count == 1) == is_plural:
            count = None  # "a ... circles" / "two ... circle": not a count statement
        out.append(Mention(cls, color, count, is_plural, toks[i][1], toks[end - 1][2]))
        i = end
    return out


def coverage(scene: Scene, caption_text: str) -> Coverage:
    """Which facts of ``scene`` the caption states, by parsing its words (see :class:`Coverage`).

    Colour binds to the class right after it ("a red circle"); a count is an article or number
    word before the phrase ("two red circles"); a relation is "<phrase> ... left of/right of/
    above/below/beneath/under ... <phrase>" within one sentence (the subject is the sentence's
    first noun phrase); a background name counts when it appears, the texture by its keywords,
    and text when the exact string appears. Used in chapters 1 and 5 to compare caption kinds.
    """
    facts = scene_facts(scene)
    factset = set(facts)
    groups = dict(object_groups(scene))
    by_class: dict[str, list[tuple[str, str]]] = {}
    for key in groups:
        by_class.setdefault(key[1], []).append(key)
    stated, wrong = set(), set()

    def resolve(m: Mention):
        if m.color is not None:
            return (m.color, m.cls) if (m.color, m.cls) in groups else None
        keys = by_class.get(m.cls, [])
        return keys[0] if len(keys) == 1 else None

    for sentence in re.split(r"(?<=[.!?;:])\s+|\n+", caption_text):
        mentions = read_mentions(sentence, scene.vocab)
        for m in mentions:
            (stated if f"class:{m.cls}" in factset else wrong).add(f"class:{m.cls}")
            if m.color is not None:
                fact = f"color:{_name(m.color, m.cls)}"
                (stated if fact in factset else wrong).add(fact)
            key = resolve(m)
            if m.count is not None and key is not None:
                fact = f"count:{_name(*key)}={len(groups[key])}"
                (stated if m.count == len(groups[key]) else wrong).add(
                    fact if m.count == len(groups[key]) else f"count:{_name(*key)}={m.count}"
                )
            elif m.count is not None and m.color is None and len(by_class.get(m.cls, [])) > 1:
                total = sum(len(groups[k]) for k in by_class[m.cls])  # "two rings" of two colours
                (stated if m.count == total else wrong).add(f"count:{m.cls}={m.count}")
        if not mentions:
            continue
        low = sentence.lower()
        subject = mentions[0]
        for pattern, rel in RELATION_PATTERNS:
            for hit in pattern.finditer(low):
                if hit.start() < subject.end:
                    continue
                after = [m for m in mentions if m.start >= hit.end()]
                if not after:
                    continue
                a, b = resolve(subject), resolve(after[0])
                if a is None or b is None or a == b:
                    continue
                holds = group_relations(groups[a], groups[b])
                fact = f"relation:{_pair_key(a, b)}"
                if rel in holds and fact in factset:
                    stated.add(fact)
                elif not any(rel in relation(x, y) for x in groups[a] for y in groups[b]):
                    wrong.add(f"relation:{_name(*a)} {rel} {_name(*b)}")

    low = caption_text.lower()
    named = [
        bg
        for bg in sorted(BACKGROUNDS, key=len, reverse=True)
        if re.search(rf"(?<![a-z]){re.escape(bg)}(?![a-z])", low)
    ]
    named = [bg for bg in named if not any(bg != o and bg in o for o in named)]  # "gray" inside "warm gray"
    for bg in named:
        (stated if bg == scene.background else wrong).add(f"background:{bg}")
    for texture in TEXTURES:
        if any(re.search(rf"\b{w}\b", low) for w in _TEXTURE_WORDS[texture]):
            (stated if texture == scene.texture else wrong).add(f"texture:{texture}")
    for t in scene.texts:
        if re.search(rf"(?<!\w){re.escape(t.text)}(?!\w)", caption_text):
            stated.add(f"text:{t.text}")

    stated_facts = tuple(f for f in facts if f in stated)
    return Coverage(
        tuple(facts), stated_facts, len(stated_facts) / len(facts) if facts else 1.0, tuple(sorted(wrong))
    )
