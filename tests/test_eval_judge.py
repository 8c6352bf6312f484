"""The exact judge: parse(render(spec)) == spec on fresh random scenes, robustness, GenEval's rules."""

from __future__ import annotations

import itertools
import secrets
import time
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from scipy.optimize import linear_sum_assignment

from lenslib.eval.judge import (
    BLUR_TOLERANCE,
    JITTER_TOLERANCE,
    NOISE_TOLERANCE,
    judge,
    match_scene,
    score_scene_images,
)
from lenslib.eval.parse import parse
from lenslib.world import spec
from lenslib.world.render import render
from lenslib.world.spec import Scene, SceneObject, relation, sample_scene, scene_from_metadata

N_PROPERTY = 2000
SIDE = {"shapes": 64, "emoji": 128}  # the smallest image side each vocabulary supports


def _expected_px(obj: SceneObject, w: int, h: int) -> np.ndarray:
    x0, y0, x1, y1 = obj.box
    return np.array([round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)], float)


def _compare(scene: Scene, image, w: int, h: int, box_tol: float, check_relations: bool) -> str:
    """'' when the parse equals the spec, else what differs."""
    dets = parse(image, scene.vocab)
    want = Counter((o.cls, o.color) for o in scene.objects)
    got = Counter((d.cls, d.color) for d in dets)
    if want != got:
        return f"objects differ: missing {dict(want - got)}, extra {dict(got - want)}"
    if not dets:
        return ""
    exp = np.array([_expected_px(o, w, h) for o in scene.objects])
    det = np.array([d.box for d in dets]) * [w, h, w, h]
    same = np.array([[(o.cls, o.color) == (d.cls, d.color) for d in dets] for o in scene.objects])
    cost = np.where(same, np.abs(exp[:, None] - det[None]).max(-1), 1e6)
    rows, cols = linear_sum_assignment(cost)
    if cost[rows, cols].max() > box_tol:
        return f"box off by {cost[rows, cols].max():.2f} px"
    if check_relations:
        match = dict(zip(rows, cols))
        for i, j in itertools.combinations(range(len(scene.objects)), 2):
            want_rel = relation(scene.objects[i], scene.objects[j], (w, h))
            got_rel = relation(det[match[i]], det[match[j]])
            if want_rel != got_rel:
                return f"relation of objects {i},{j}: spec {set(want_rel)}, parsed {set(got_rel)}"
    return ""


@pytest.mark.parametrize("vocab", spec.VOCABS)
def test_parse_of_render_equals_spec_on_fresh_random_scenes(vocab):
    seed = secrets.randbits(32)
    rng = np.random.default_rng(seed)
    side = SIDE[vocab]
    start, failures = time.perf_counter(), []
    for k in range(N_PROPERTY):
        scene = sample_scene(rng, vocab, max_objects=spec.MAX_OBJECTS, text_prob=0.3, texture_prob=0.4)
        square = k % 8 != 0
        w, h = (side, side) if square else ((side * 3 // 2, side) if k % 16 else (side, side * 2))
        problem = _compare(scene, render(scene, w, h), w, h, box_tol=1.0, check_relations=square)
        if problem:
            failures.append(f"scene {k} at {w}x{h}: {problem}\n  {scene.to_json()}")
    elapsed = time.perf_counter() - start
    assert not failures, (
        f"judge error on {len(failures)}/{N_PROPERTY} {vocab} renders "
        f"(reproduce with np.random.default_rng({seed})):\n" + "\n".join(failures[:5])
    )
    print(f"{vocab}: judge error 0 on {N_PROPERTY} renders in {elapsed:.1f}s (seed {seed})")


def _perturb(image: Image.Image, kind: str, rng: np.random.Generator, scene: Scene) -> Image.Image:
    if kind == "blur":
        _, sigma, sigma_white = BLUR_TOLERANCE[scene.vocab]
        return image.filter(
            ImageFilter.GaussianBlur(sigma_white if any(o.color == "white" for o in scene.objects) else sigma)
        )
    if kind == "jitter":
        return _jitter(image, rng.choice([-1, 1], 6))
    a = np.asarray(image).astype(float) + rng.normal(0, NOISE_TOLERANCE, (image.height, image.width, 3))
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def _jitter(image: Image.Image, signs) -> Image.Image:
    """Colour jitter at the documented limit: per-channel gain (signs[:3]) and offset (signs[3:])."""
    signs = np.asarray(signs, float)
    a = (
        np.asarray(image).astype(float) * (1 + JITTER_TOLERANCE * signs[:3])
        + 255 * JITTER_TOLERANCE * signs[3:]
    )
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("kind", ["blur", "noise", "jitter"])
@pytest.mark.parametrize("vocab", spec.VOCABS)
def test_parse_tolerates_documented_perturbations(vocab, kind):
    seed = secrets.randbits(32)
    rng = np.random.default_rng(seed)
    side = BLUR_TOLERANCE[vocab][0]
    failures = []
    for k in range(150):
        scene = sample_scene(rng, vocab, max_objects=spec.MAX_OBJECTS, text_prob=0.3, texture_prob=0.4)
        image = _perturb(render(scene, side), kind, rng, scene)
        problem = _compare(scene, image, side, side, box_tol=2.0, check_relations=False)
        if problem:
            failures.append(f"scene {k}: {problem}\n  {scene.to_json()}")
    assert not failures, (
        f"{kind} broke the parse on {len(failures)}/150 {vocab} scenes "
        f"(reproduce with np.random.default_rng({seed})):\n" + "\n".join(failures[:5])
    )


BOOK_OR_TIE = (
    '{"background": "warm gray", "objects": ['
    '{"box": [0.3334, 0.3868, 0.4589, 0.7138], "class": "person", "color": "blue"}, '
    '{"box": [0.6577, 0.4028, 0.9228, 0.668], "class": "book", "color": "white"}, '
    '{"box": [0.6386, 0.0558, 0.8573, 0.3127], "class": "pizza", "color": "brown"}, '
    '{"box": [0.3057, 0.0835, 0.5096, 0.2477], "class": "suitcase", "color": "black"}, '
    '{"box": [0.046, 0.6027, 0.2523, 0.809], "class": "book", "color": "pink"}], '
    '"texts": [{"box": [0.5073, 0.9069, 0.6353, 0.9649], "color": "black", "text": "Zoe"}], '
    '"texture": "gradient", "vocab": "emoji"}'
)


def test_similar_sprites_are_told_apart_after_refinement():
    # a scene the random tolerance test once found: under one jitter pattern the pink book's coarse
    # box fitted a tie slightly better than a book; every sign pattern of the documented jitter
    scene = Scene.from_json(BOOK_OR_TIE)
    side = BLUR_TOLERANCE["emoji"][0]
    clean = render(scene, side)
    failures = []
    for signs in itertools.product([-1, 1], repeat=6):
        problem = _compare(scene, _jitter(clean, signs), side, side, box_tol=2.0, check_relations=False)
        if problem:
            failures.append(f"signs {signs}: {problem}")
    assert not failures, "\n".join(failures)


def test_strong_blur_is_outside_the_tolerance():
    # the limits are real: far beyond them the parse does fail, so the tolerance test can fail too
    rng = np.random.default_rng(0)
    bad = 0
    for _ in range(40):
        scene = sample_scene(rng, "emoji", min_objects=3, max_objects=6)
        image = render(scene, 128).filter(ImageFilter.GaussianBlur(2.5))
        bad += bool(_compare(scene, image, 128, 128, box_tol=2.0, check_relations=False))
    assert bad > 5


# --- GenEval's rules, on hand-made scenes ------------------------------------------------------------


def _img(*objects, vocab="shapes", size=128):
    return render(Scene(vocab, tuple(SceneObject(*o) for o in objects)), size)


def test_counting_include_and_exclude():
    three = _img(
        ("circle", "red", (0.05, 0.05, 0.3, 0.3)),
        ("circle", "blue", (0.6, 0.05, 0.85, 0.3)),
        ("circle", "red", (0.3, 0.6, 0.55, 0.85)),
    )
    ok = judge(
        three, {"include": [{"class": "circle", "count": 3}], "exclude": [{"class": "circle", "count": 4}]}
    )
    assert ok.correct and ok.reason == "" and len(ok.detections) == 3
    more = judge(three, {"include": [{"class": "circle", "count": 4}]})
    assert not more.correct and more.reason == "expected circle>=4, found 3"
    fewer = judge(
        three, {"include": [{"class": "circle", "count": 2}], "exclude": [{"class": "circle", "count": 3}]}
    )
    assert not fewer.correct and fewer.reason == "expected circle<3, found 3"
    assert [c.ok for c in fewer.per_clause] == [True, False]
    absent = judge(three, {"include": [{"class": "star", "count": 1}]})
    assert absent.reason == "expected star>=1, found 0"


def test_colour_clauses():
    img = _img(("square", "red", (0.05, 0.05, 0.25, 0.25)), ("square", "blue", (0.5, 0.5, 0.9, 0.9)))
    assert judge(img, {"include": [{"class": "square", "count": 1, "color": "red"}]}).correct
    v = judge(img, {"include": [{"class": "square", "count": 1, "color": "green"}]})
    assert v.reason == "expected green square>=1, found 0 green; and 1 red, 1 blue"
    v = judge(img, {"include": [{"class": "square", "count": 2, "color": "red"}]})
    assert v.reason == "expected red square>=2, found 1 red; and 1 red, 1 blue"
    # GenEval's variant only colours the top-`count` detections: the larger (blue) square here
    assert not judge(
        img, {"include": [{"class": "square", "count": 1, "color": "red"}]}, top_k_colors=True
    ).correct
    assert judge(
        img, {"include": [{"class": "square", "count": 1, "color": "blue"}]}, top_k_colors=True
    ).correct


def test_position_clauses():
    img = _img(("circle", "red", (0.05, 0.4, 0.3, 0.65)), ("square", "green", (0.65, 0.4, 0.9, 0.65)))
    line = {
        "include": [
            {"class": "circle", "count": 1},
            {"class": "square", "count": 1, "position": ["right of", 0]},
        ]
    }
    assert judge(img, line).correct
    line["include"][1]["position"] = ["left of", 0]
    v = judge(img, line)
    assert not v.correct and v.reason == "expected square left of target, found right of target"
    v = judge(
        img,
        {
            "include": [
                {"class": "star", "count": 1},
                {"class": "square", "count": 1, "position": ["above", 0]},
            ]
        },
    )
    assert v.reason == "expected star>=1, found 0\nno target for square to be above"


def test_judge_errors_and_limits():
    img = _img(("circle", "red", (0.1, 0.1, 0.4, 0.4)))
    with pytest.raises(ValueError, match=r"include\[0\].*unknown shapes class 'dragon'"):
        judge(img, {"include": [{"class": "dragon", "count": 1}]})
    with pytest.raises(ValueError, match=r"include\[0\].*the shapes world cannot draw 'cat'"):
        judge(img, {"include": [{"class": "cat", "count": 1}]})
    with pytest.raises(ValueError, match=r"include\[1\].*unknown relation"):
        judge(
            img,
            {
                "include": [
                    {"class": "circle", "count": 1},
                    {"class": "star", "count": 1, "position": ["near", 0]},
                ]
            },
        )
    small = render(Scene("emoji", (SceneObject("cat", "red", (0.1, 0.1, 0.5, 0.4)),)), 64)
    with pytest.warns(UserWarning, match="outside the judge's operating limits"):
        v = judge(small, {"include": [{"class": "cat", "count": 1}]}, "emoji")
    assert not v.within_limits


@pytest.mark.parametrize("size", [(128, 128), (256, 256), (256, 128), (128, 256)])
def test_ground_truth_renders_of_geneval_lines_are_judged_correct(size):
    lines = [
        {
            "tag": "counting",
            "include": [{"class": "car", "count": 3}],
            "exclude": [{"class": "car", "count": 4}],
        },
        {
            "tag": "color_attr",
            "include": [
                {"class": "cup", "count": 1, "color": "white"},
                {"class": "book", "count": 1, "color": "black"},
            ],
        },
    ] + [
        {
            "tag": "position",
            "include": [{"class": "bird", "count": 1}, {"class": "chair", "count": 1, "position": [rel, 0]}],
        }
        for rel in spec.RELATIONS
    ]
    for seed, line in enumerate(lines):
        scene = scene_from_metadata(line, "emoji", seed)
        v = judge(render(scene, *size), line, "emoji")
        assert v.correct, (line, v.reason)
    # and a render of another line is not
    wrong = render(scene_from_metadata(lines[2], "emoji", 0), *size)
    assert not judge(wrong, lines[3], "emoji").correct


def test_score_scene_images_on_pipeline_tensors():
    scenes = [sample_scene(s, "shapes", min_objects=2) for s in range(4)]
    arrays = np.stack([np.asarray(render(s, 64)) for s in scenes]).astype(np.float32)
    tensor = torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1
    assert score_scene_images(tensor, scenes) == {
        "n": 4,
        "scene_exact": 1.0,
        "object_precision": 1.0,
        "object_recall": 1.0,
    }
    shuffled = score_scene_images(tensor, scenes[1:] + scenes[:1])
    assert shuffled["scene_exact"] == 0.0 and shuffled["object_recall"] < 1.0
    m = match_scene(parse(render(scenes[0], 64)), scenes[1], 64, 64)
    assert not m.exact and m.missing


@pytest.mark.parametrize("seed", range(5))
def test_ground_truth_renders_of_shape_lines_at_64px(seed):
    rng = np.random.default_rng(seed)
    shapes = spec.vocab_classes("shapes")
    a, b = rng.choice(shapes, 2, replace=False)
    c1, c2 = rng.choice(list(spec.COLORS), 2, replace=False)
    rel = spec.RELATIONS[seed % 4]
    lines = [
        {"tag": "counting", "include": [{"class": a, "count": 4}], "exclude": [{"class": a, "count": 5}]},
        {
            "tag": "color_attr",
            "include": [{"class": a, "count": 1, "color": c1}, {"class": b, "count": 1, "color": c2}],
        },
        {
            "tag": "position",
            "include": [{"class": a, "count": 1}, {"class": b, "count": 1, "position": [rel, 0]}],
        },
    ]
    for line in lines:
        scene = scene_from_metadata(line, "shapes", seed)
        assert judge(render(scene, 64), line, "shapes").correct, line
    # the counting image fails a "three" prompt through its exclude clause, as in GenEval
    four = render(scene_from_metadata(lines[0], "shapes", seed), 64)
    v = judge(four, {"include": [{"class": a, "count": 3}], "exclude": [{"class": a, "count": 4}]}, "shapes")
    assert not v.correct and v.reason == f"expected {a}<4, found 4"
