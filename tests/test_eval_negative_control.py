"""Negative controls for the exact judge: images that violate a suite line must score incorrect.

The learning benchmarks and chapters 4 and 6 report the judge's verdicts on generated samples; a judge
that drifted towards accepting would make any model look good. So, for every line of the GenEval-format
suites, the ground-truth render of a minimally changed line (another class, another colour, one object
fewer or one more, the opposite relation) and images with no objects (flat backgrounds, flat palette
colours, pure noise) must all be judged incorrect, while the line's own render stays correct.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from lenslib.eval.judge import judge
from lenslib.paths import data_dir
from lenslib.world.render import render
from lenslib.world.spec import BACKGROUNDS, COLORS, scene_from_metadata, vocab_classes

SIDE = {"shapes": 64, "emoji": 128}
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def _suite(vocab: str) -> list[dict]:
    return [
        json.loads(x) for x in (data_dir() / "suites" / f"{vocab}_geneval.jsonl").read_text().splitlines()
    ]


def violations(line: dict, vocab: str) -> list[tuple[str, dict]]:
    """Lines whose every ground-truth scene breaks ``line``: (what changed, changed line).

    Only changes that break the line whatever else the scene holds: a class no clause names replaces one
    clause's class; a colour clause whose class appears in no other clause gets another colour; a clause
    loses one object; a counting line's excluded count is reached; a relation is flipped (GenEval's
    opposite relations exclude each other)."""
    include = line["include"]
    named = {c["class"] for c in include} | {c["class"] for c in line.get("exclude", [])}
    others = [c for c in vocab_classes(vocab) if c not in named]
    out = []
    for i, clause in enumerate(include):
        if any(c.get("position", [None, None])[1] == i for c in include):
            # the anchor of a relation: changing it leaves the relation's own clause without a target
            continue
        m = copy.deepcopy(line)
        m["include"][i]["class"] = others[i % len(others)]
        m.pop("exclude", None)
        out.append((f"class of clause {i}", m))
    for i, clause in enumerate(include):
        if "color" in clause and sum(c["class"] == clause["class"] for c in include) == 1:
            m = copy.deepcopy(line)
            m["include"][i]["color"] = next(c for c in COLORS if c != clause["color"])
            out.append((f"colour of clause {i}", m))
    for i, clause in enumerate(include):
        if clause.get("count", 1) > 1 and not any(c.get("position", [None, None])[1] == i for c in include):
            m = copy.deepcopy(line)
            m["include"][i]["count"] = clause["count"] - 1
            out.append((f"one {clause['class']} fewer", m))
    for ex in line.get("exclude", []):
        m = copy.deepcopy(line)
        m["exclude"] = []
        target = next(c for c in m["include"] if c["class"] == ex["class"])
        target["count"] = ex["count"]
        out.append((f"{ex['count']} {ex['class']}s", m))
    for i, clause in enumerate(include):
        if "position" in clause:
            m = copy.deepcopy(line)
            m["include"][i]["position"] = [OPPOSITE[clause["position"][0]], clause["position"][1]]
            out.append((f"opposite relation of clause {i}", m))
    return out


def _blank_images(side: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    flats = [
        (f"flat {name}", np.full((side, side, 3), rgb, np.uint8))
        for name, rgb in {**BACKGROUNDS, **COLORS}.items()
    ]
    noise = [
        ("noise", rng.integers(0, 256, (side, side, 3), dtype=np.uint8)),
        ("grey noise", np.clip(rng.normal(128, 40, (side, side, 3)), 0, 255).astype(np.uint8)),
    ]
    return flats + noise


@pytest.mark.parametrize("vocab", ["shapes", "emoji"])
def test_every_suite_line_rejects_images_that_violate_it(vocab):
    side = SIDE[vocab]
    lines = _suite(vocab)
    if vocab == "emoji":
        lines = lines[::3]  # emoji renders cost 4x the pixels; a third of the lines covers every tag
    blanks = _blank_images(side)
    accepted, checked, tags = [], 0, set()
    for n, line in enumerate(lines):
        truth = np.asarray(render(scene_from_metadata(line, vocab, n), side))
        assert judge(truth, line, vocab).correct, (
            f"line {n} {line['prompt']!r}: its own render is judged incorrect"
        )
        for what, changed in violations(line, vocab):
            image = np.asarray(render(scene_from_metadata(changed, vocab, n), side))
            checked += 1
            tags.add(line["tag"])
            if judge(image, line, vocab).correct:
                accepted.append(f"line {n} {line['prompt']!r} accepted a render with the {what}")
        for what, image in (blanks[(n + 5 * k) % len(blanks)] for k in range(3)):  # three blank images a line
            checked += 1
            if judge(image, line, vocab).correct:
                accepted.append(f"line {n} {line['prompt']!r} accepted a {what} image")
    assert not accepted, f"{len(accepted)} of {checked} violating images judged correct:\n" + "\n".join(
        accepted[:20]
    )
    assert tags == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    assert checked >= 3 * len(lines)


def test_violations_cover_every_kind_of_change():
    """The mutations above exist for each tag (a control that generated nothing would pass vacuously)."""
    lines = _suite("shapes")
    kinds = {}
    for line in lines:
        for what, _ in violations(line, "shapes"):
            kinds.setdefault(line["tag"], set()).add(what.split(" of ")[0].split()[0])
    assert {"class", "colour", "opposite"} <= set().union(*kinds.values())
    assert "colour" in kinds["colors"] and "colour" in kinds["color_attr"] and "opposite" in kinds["position"]
    assert any(k.isdigit() or k == "one" for k in kinds["counting"])
