"""GenEval metadata lines as Clause / MetadataLine: the shipped files round-trip, errors name the clause."""

import json

import pytest

from lenslib.paths import REPO_ROOT
from lenslib.world.metadata import Clause, MetadataError, MetadataLine, clause_problems

FILES = sorted((REPO_ROOT / "data" / "suites").glob("*_geneval.jsonl")) + [
    REPO_ROOT / "data" / "geneval" / "evaluation_metadata.jsonl"
]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_geneval_files_round_trip_to_the_same_bytes(path):
    for raw in path.read_text().splitlines():
        line = MetadataLine.from_dict(json.loads(raw))
        assert json.dumps(line.to_dict()) == raw


def test_long_suite_questions_round_trip():
    for raw in (REPO_ROOT / "data" / "suites" / "shapes_long.jsonl").read_text().splitlines():
        for q in json.loads(raw)["questions"]:
            line = MetadataLine.from_dict(q, "shapes")
            assert [c.to_dict() for c in line.include] == q["include"]
            assert [c.to_dict() for c in line.exclude] == q.get("exclude", [])


def test_world_names_replace_genevals_only_with_a_vocabulary():
    raw = {"include": [{"class": "computer keyboard", "count": 1}]}
    assert MetadataLine.from_dict(raw).include == (Clause("computer keyboard"),)
    assert MetadataLine.from_dict(raw, "emoji").include == (Clause("keyboard"),)


def test_clause_writes_genevals_key_order():
    clause = Clause("circle", 2, "red", ("left of", 0))
    assert list(clause.to_dict()) == ["class", "count", "color", "position"]
    assert clause.to_dict()["position"] == ["left of", 0]


def test_problems_are_all_listed_and_the_first_is_raised():
    include = [
        {"class": "dragon", "count": 0},
        {"class": "circle", "color": "teal", "position": ["behind", 5]},
    ]
    kinds = [
        p.kind for p in clause_problems(include, [{"class": "star", "position": ["above", 0]}], "shapes")
    ]
    assert kinds == [
        "unknown_class",
        "bad_format",
        "unknown_color",
        "unknown_relation",
        "bad_format",
        "bad_format",
    ]
    with pytest.raises(MetadataError, match=r"include\[0\].*unknown shapes class 'dragon'"):
        MetadataLine.from_dict({"include": include}, "shapes")
    with pytest.raises(ValueError, match="must be a JSON object"):
        MetadataLine.from_dict([1, 2], "shapes")
