"""GenEval-format prompt suites: format, GenEval's procedure, shipped files, validation."""

import json
import re
from collections import Counter

import pytest

from lenslib.paths import REPO_ROOT
from lenslib.world.caption_reading import read_mentions
from lenslib.world.long_suite import generate_long_suite
from lenslib.world.spec import Scene, relation, vocab_classes
from lenslib.world.suites import (
    GENEVAL_TAGS,
    SUITE_FILES,
    detailed_prompt,
    dumps_suite,
    generate_geneval_suite,
    generate_suite,
    read_metadata,
    validate_line,
)
from lenslib.world.vocab import COCO_CLASSES, EMOJI_LEFT_OUT

GENEVAL_COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]
GENEVAL_RELATIONS = ["left of", "right of", "above", "below"]
NUMBERS = {2: "two", 3: "three", 4: "four"}


def a(word):
    return ("an " if word[0] in "aeiou" else "a ") + word


def test_coco_classes_reproduce_genevals_published_suite_sizes():
    # GenEval's prompts/evaluation_metadata.jsonl: 553 prompts, per tag as in its paper and repo.
    suite = generate_geneval_suite("emoji", classes=list(COCO_CLASSES))
    assert len(suite) == 553
    assert Counter(line["tag"] for line in suite) == {
        "single_object": 80,
        "two_object": 99,
        "counting": 80,
        "colors": 94,
        "position": 100,
        "color_attr": 100,
    }
    assert suite[0] == {
        "tag": "single_object",
        "include": [{"class": "bench", "count": 1}],
        "prompt": "a photo of a bench",
    }


@pytest.mark.parametrize("vocab", ["shapes", "emoji"])
def test_geneval_suite_follows_genevals_templates(vocab):
    classes = vocab_classes(vocab)
    suite = generate_geneval_suite(vocab)
    tags = Counter(line["tag"] for line in suite)
    assert set(tags) == set(GENEVAL_TAGS)
    assert tags["single_object"] == len(classes)
    assert all(tags[t] <= 100 for t in GENEVAL_TAGS)
    assert len({json.dumps(line, sort_keys=True) for line in suite}) == len(suite)  # no duplicates
    assert {line["include"][0]["class"] for line in suite if line["tag"] == "single_object"} == set(classes)
    for line in suite:
        inc = line["include"]
        assert set(line) <= {"tag", "include", "exclude", "prompt"}
        assert all(c["class"] in classes for c in inc + line.get("exclude", []))
        tag = line["tag"]
        if tag == "single_object":
            assert line["prompt"] == f"a photo of {a(inc[0]['class'])}"
        elif tag == "two_object":
            assert inc[0]["class"] != inc[1]["class"]
            assert line["prompt"] == f"a photo of {a(inc[0]['class'])} and {a(inc[1]['class'])}"
        elif tag == "counting":
            n = inc[0]["count"]
            assert n in (2, 3, 4)
            assert line["exclude"] == [{"class": inc[0]["class"], "count": n + 1}]
            assert line["prompt"].startswith(f"a photo of {NUMBERS[n]} ")
        elif tag == "colors":
            assert inc[0]["color"] in GENEVAL_COLORS and inc[0]["class"] != "person"
            assert line["prompt"] == f"a photo of {a(inc[0]['color'])} {inc[0]['class']}"
        elif tag == "position":
            rel, target = inc[1]["position"]
            assert rel in GENEVAL_RELATIONS and target == 0 and "position" not in inc[0]
            assert line["prompt"] == f"a photo of {a(inc[1]['class'])} {rel} {a(inc[0]['class'])}"
        elif tag == "color_attr":
            assert inc[0]["color"] != inc[1]["color"] and inc[0]["class"] != inc[1]["class"]
            assert line["prompt"] == (
                f"a photo of {a(inc[0]['color'])} {inc[0]['class']} and "
                f"{a(inc[1]['color'])} {inc[1]['class']}"
            )


def test_suites_are_deterministic_per_seed():
    assert generate_geneval_suite("shapes", seed=5) == generate_geneval_suite("shapes", seed=5)
    assert generate_geneval_suite("shapes", seed=5) != generate_geneval_suite("shapes", seed=6)
    assert generate_long_suite("shapes", n=3, seed=1) == generate_long_suite("shapes", n=3, seed=1)


@pytest.mark.parametrize("name", sorted(SUITE_FILES))
def test_shipped_suite_equals_a_fresh_generation(name):
    shipped = (REPO_ROOT / "data" / "suites" / name).read_text()
    assert shipped == dumps_suite(generate_suite(name)), (
        f"data/suites/{name} is stale: regenerate with `lens world suites`"
    )
    assert len(shipped.splitlines()) <= 560


def test_long_suite_questions_are_true_of_their_scene_and_well_formed():
    lines = [
        json.loads(x) for x in (REPO_ROOT / "data" / "suites" / "shapes_long.jsonl").read_text().splitlines()
    ]
    categories = Counter()
    for line in lines:
        assert validate_line(line, "shapes") == []
        scene = Scene.from_dict(line["scene"])
        objs = scene.objects
        ids = [q["id"] for q in line["questions"]]
        assert ids == list(range(1, len(ids) + 1))
        for q in line["questions"]:
            categories[q["category"]] += 1
            assert all(d == 0 or d < q["id"] for d in q["dependency"])
            inc = q["include"]
            if q["category"] == "entity":
                assert q["dependency"] == [0] and any(o.cls == inc[0]["class"] for o in objs)
            elif q["category"] == "count":
                assert sum(o.cls == inc[0]["class"] for o in objs) == inc[0]["count"]
                assert q["exclude"][0]["count"] == inc[0]["count"] + 1
            elif q["category"] == "attribute":
                assert (
                    sum((o.cls, o.color) == (inc[0]["class"], inc[0]["color"]) for o in objs)
                    == inc[0]["count"]
                )
            elif q["category"] == "relation":
                (b,) = [o for o in objs if (o.cls, o.color) == (inc[0]["class"], inc[0]["color"])]
                (x,) = [o for o in objs if (o.cls, o.color) == (inc[1]["class"], inc[1]["color"])]
                assert inc[1]["position"][0] in relation(x, b)
            else:
                raise AssertionError(q["category"])
    assert set(categories) == {"entity", "count", "attribute", "relation"}
    assert len(lines) >= 50


def test_detailed_prompt_restates_every_clause():
    suite = generate_geneval_suite("shapes")
    for line in suite[::7]:
        text = detailed_prompt(line, seed=3)
        assert text == detailed_prompt(line, seed=3)
        assert len(text.split()) > 2 * len(line["prompt"].split())
        mentions = [m for s in re.split(r"(?<=\.)\s+", text) for m in read_mentions(s, "shapes")]
        for clause in line["include"]:
            named = [
                m for m in mentions if m.cls == clause["class"] and clause.get("color") in (None, m.color)
            ]
            assert named, (line["prompt"], text)
        if line["tag"] == "counting":
            n = line["include"][0]["count"]
            assert any(m.count == n for m in mentions) or f"{NUMBERS[n]} " in text.lower()


def _write(tmp_path, lines):
    path = tmp_path / "meta.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_read_metadata_reports_every_bad_line_and_keeps_the_good_ones(tmp_path):
    good = {
        "tag": "colors",
        "include": [{"class": "circle", "count": 1, "color": "red"}],
        "prompt": "a photo of a red circle",
    }
    lines = [
        good,
        {
            "tag": "colors",
            "include": [{"class": "dragon", "count": 1, "color": "red"}],
            "prompt": "a red dragon",
        },
        {
            "tag": "colors",
            "include": [{"class": "circle", "count": 1, "color": "teal"}],
            "prompt": "a teal circle",
        },
        {
            "tag": "position",
            "include": [
                {"class": "circle", "count": 1},
                {"class": "star", "count": 1, "position": ["behind", 0]},
            ],
            "prompt": "p",
        },
        "{not json",
        {
            "tag": "position",
            "include": [{"class": "star", "count": 1, "position": ["above", 0]}],
            "prompt": "p",
        },
        {"tag": "sizes", "include": [{"class": "circle", "count": 1}], "prompt": "a big circle"},
        {"tag": "counting", "include": [{"class": "circle", "count": 0}], "prompt": "no circle"},
        good,
        # a real object the shapes world has no drawing for: a valid line it cannot draw, not an error
        {
            "tag": "single_object",
            "include": [{"class": "refrigerator", "count": 1}],
            "prompt": "a photo of a fridge",
        },
        {"tag": "colors", "include": [{"class": "cat", "count": 1, "color": "teal"}], "prompt": "a teal cat"},
    ]
    report = read_metadata(_write(tmp_path, lines), "shapes")
    assert [i for i, _ in report.lines] == [0, 8]
    kinds = {e["line"]: e["kind"] for e in report.errors}
    assert kinds == {
        1: "unknown_class",
        2: "unknown_color",
        3: "unknown_relation",
        4: "bad_json",
        5: "bad_format",
        6: "unknown_tag",
        7: "bad_format",
        10: "unknown_color",
    }
    assert "dragon" in report.errors[0]["error"] and "circle" in report.errors[0]["error"]
    assert "teal" in report.errors[1]["error"]
    assert [(u["line"], u["classes"]) for u in report.undrawable] == [(9, ["refrigerator"])]
    assert report.n_undrawable == 1 and report.undrawable_classes == {"refrigerator": 1}
    assert report.n_lines == 11


def test_read_metadata_counts_genevals_coco_lines_the_world_cannot_draw(tmp_path):
    coco = generate_geneval_suite("emoji", classes=list(COCO_CLASSES))
    path = _write(tmp_path, coco)
    left_out = set(EMOJI_LEFT_OUT)
    expected = sum(
        any(c["class"] in left_out for c in line["include"] + line.get("exclude", [])) for line in coco
    )
    report = read_metadata(path, "emoji")
    assert report.n_undrawable == expected > 0 and not report.errors
    assert len(report.lines) == 553 - expected
    assert set(report.undrawable_classes) <= left_out
    assert (
        f"{553 - expected} drawable in the emoji world, {expected} not drawable, 0 with errors"
        in report.summary()
    )
    shapes = read_metadata(path, "shapes")
    assert shapes.n_undrawable == 553 and not shapes.lines and not shapes.errors


def test_suites_command_regenerates_the_shipped_files(tmp_path):
    from lenslib.cli import main

    assert main(["world", "suites", "--out", str(tmp_path)]) == 0
    for name in SUITE_FILES:
        assert (tmp_path / name).read_bytes() == (REPO_ROOT / "data" / "suites" / name).read_bytes()


def test_detailed_prompts_vary_across_lines():
    # Each line draws its own scene: single-object lines must not all get seed's first colour and size.
    singles = [line for line in generate_geneval_suite("shapes") if line["tag"] == "single_object"]
    firsts = [
        next(m for m in read_mentions(detailed_prompt(line, seed=0, vocab="shapes"), "shapes"))
        for line in singles
    ]
    assert len({m.color for m in firsts}) >= 3, [m.color for m in firsts]
    assert detailed_prompt(singles[0], seed=0) != detailed_prompt(singles[0], seed=1)
