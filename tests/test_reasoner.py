"""The prompt reasoner: reads GenEval prompts exactly and expands them without dropping what they state."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import REPO_ROOT

from lenslib.reasoner import RuleReasoner, prompt_to_metadata
from lenslib.world.caption_reading import RELATION_PATTERNS
from lenslib.world.wording import number_word

CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
SUITE = [
    json.loads(row)
    for row in (REPO_ROOT / "data" / "suites" / "shapes_geneval.jsonl").read_text().splitlines()
]


def _facts(line: dict) -> Counter:
    inc = line["include"]
    out = Counter()
    for c in inc:
        target = inc[c["position"][1]]["class"] if "position" in c else None
        out[
            (
                c["class"],
                c.get("count", 1),
                c.get("color"),
                c["position"][0] if "position" in c else None,
                target,
            )
        ] += 1
    return out


@pytest.mark.parametrize(
    "tag", ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
)
def test_every_suite_prompt_reads_back_as_its_metadata(tag):
    lines = [x for x in SUITE if x["tag"] == tag]
    assert lines
    for line in lines:
        parsed = prompt_to_metadata(line["prompt"], "shapes")
        assert parsed is not None, line["prompt"]
        assert _facts(parsed) == _facts(line), line["prompt"]


def test_rewrite_keeps_every_stated_fact_and_adds_detail():
    reasoner = RuleReasoner("shapes")
    for i, line in enumerate(SUITE[::7]):
        text = reasoner.rewrite(line["prompt"], seed=i)
        low = text.lower()
        assert len(text.split()) > 2 * len(line["prompt"].split()), (line["prompt"], text)
        for clause in line["include"]:
            name = clause["class"]
            assert name in low, (line["prompt"], text)
            if clause.get("color"):
                assert f"{clause['color']} {name}" in low or f"{clause['color']} " in low, (
                    line["prompt"],
                    text,
                )
            if clause.get("count", 1) > 1:
                assert number_word(clause["count"]) in low, (line["prompt"], text)
            if "position" in clause:
                rel = clause["position"][0]  # stated either way round: "A left of B" or "B right of A"
                said = {r for p, r in RELATION_PATTERNS if p.search(low)}
                assert said & {rel, CONVERSE[rel]}, (line["prompt"], text)


def test_rewrite_is_deterministic_and_leaves_unknown_prompts_alone():
    reasoner = RuleReasoner("shapes")
    assert reasoner(["a photo of a red circle"], seed=3) == reasoner(["a photo of a red circle"], seed=3)
    assert reasoner.rewrite("a photo of a dog") == "a photo of a dog"  # no shape in it
    assert (
        reasoner.rewrite("a photo of nine circles") == "a photo of nine circles"
    )  # beyond the world's limits
