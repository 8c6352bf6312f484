"""Which words a sample follows (lenslib.eval.words): true renders follow every word; renders with one word
changed fail exactly that word; images without objects follow none."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lenslib.eval.words import WORDS, asks_one_object, word_following
from lenslib.experiments.captions import suite_lines
from lenslib.world.render import render
from lenslib.world.spec import BACKGROUNDS, COLORS, class_aspect, vocab_classes
from lenslib.world.suites import detailed_scene

LINES = suite_lines(20)  # the shapes suite: 10 single_object, 20 colors and 4 x 20 multi-object lines


def _renders(change=None):
    """One 64-px render per line of the scene its detailed prompt describes, the object changed by
    ``change(obj)``; rows as score_checkpoint returns them."""
    rows, images = [], []
    for i, line in enumerate(LINES):
        scene = detailed_scene(line, 0)
        if change is not None and asks_one_object(line):
            scene = dataclasses.replace(scene, objects=tuple(change(o) for o in scene.objects))
        rows.append({"index": i, "k": 0})
        images.append(np.asarray(render(scene, 64)))
    return rows, images


def _shares(rows, images):
    return {r["word"]: r for r in word_following(LINES, rows, images)}


def test_true_renders_follow_every_word():
    shares = _shares(*_renders())
    assert set(shares) == set(WORDS)
    assert shares["one object"]["n"] == sum(asks_one_object(x) for x in LINES) == 30
    for word in WORDS:
        assert shares[word]["share"] == 1.0, word
        assert shares[word]["ci95"] == (1.0, 1.0)
    assert shares["class"]["chance"] == pytest.approx(1 / len(vocab_classes("shapes")))
    assert shares["colour"]["chance"] == pytest.approx(1 / len(COLORS))


def _other_class(obj):
    """The next class of the vocabulary, in a box of its own aspect with the same centre and height."""
    classes = vocab_classes("shapes")
    cls = classes[(classes.index(obj.cls) + 1) % len(classes)]
    x0, y0, x1, y1 = obj.box
    half = (y1 - y0) * class_aspect("shapes", cls) / 2
    cx = (x0 + x1) / 2
    return dataclasses.replace(obj, cls=cls, box=(cx - half, y0, cx + half, y1))


def test_a_changed_word_fails_only_that_word():
    changed = _shares(*_renders(_other_class))
    assert changed["class"]["share"] == 0.0
    assert changed["one object"]["share"] == changed["colour"]["share"] == 1.0
    # a re-fitted box whose centre is within a pixel of a ninth's border may be read one pixel over
    assert changed["place"]["share"] >= 0.9

    recoloured = _shares(
        *_renders(
            lambda o: dataclasses.replace(o, color=next(c for c in COLORS if c not in (o.color, "white")))
        )
    )
    assert recoloured["colour"]["share"] == 0.0
    assert recoloured["class"]["share"] == recoloured["place"]["share"] == 1.0

    moved = _shares(*_renders(lambda o: dataclasses.replace(o, box=_mirrored(o.box))))
    assert (
        moved["place"]["share"] < 1.0
    )  # a mirrored object leaves its ninth unless it is in the middle column
    assert moved["class"]["share"] == moved["colour"]["share"] == 1.0


def _mirrored(box):
    x0, y0, x1, y1 = box
    return (1 - x1, y0, 1 - x0, y1)


def test_images_without_objects_follow_nothing():
    rows, images = _renders()
    flat = [np.full_like(images[0], BACKGROUNDS["gray"]) for _ in images]
    shares = _shares(rows, flat)
    assert shares["one object"]["share"] == 0.0
    for word in ("colour", "class", "place"):
        assert shares[word]["n"] == 0 and np.isnan(shares[word]["share"])


def test_bad_input_is_refused():
    rows, images = _renders()
    with pytest.raises(ValueError, match="rows but"):
        word_following(LINES, rows, images[:-1])
    multi = [i for i, x in enumerate(LINES) if not asks_one_object(x)]
    with pytest.raises(ValueError, match="asks for one object"):
        word_following(LINES, [rows[i] for i in multi], [images[i] for i in multi])
