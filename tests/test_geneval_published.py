"""GenEval's own published suite (data/geneval): its class names, rendering and judging it in the emoji
world, lines the world cannot draw, and the refusals (--strict, empty file, wrong vocabulary)."""

import contextlib
import io
import json
import shutil
from collections import Counter

import pytest

from lenslib.cli import main
from lenslib.eval.geneval import NOT_DRAWN
from lenslib.paths import REPO_ROOT
from lenslib.world.suites import generate_geneval_suite, geneval_metadata_path, read_metadata
from lenslib.world.vocab import (
    EMOJI_CLASSES,
    EMOJI_LEFT_OUT,
    GENEVAL_CLASSES,
    GENEVAL_RENAMED,
    GENEVAL_TO_EMOJI,
    known_class,
    why_not_drawn,
    world_class,
)

GENEVAL = REPO_ROOT / "data" / "geneval"
PUBLISHED = [json.loads(x) for x in (GENEVAL / "evaluation_metadata.jsonl").read_text().splitlines()]
OBJECT_NAMES = (GENEVAL / "object_names.txt").read_text().splitlines()


def _classes(line):
    return [c["class"] for c in line["include"] + line.get("exclude", [])]


def _drawable(line):
    return all(GENEVAL_TO_EMOJI[c] is not None for c in _classes(line))


N_DRAWABLE = sum(map(_drawable, PUBLISHED))


def _run(args):
    """``lens ARGS``: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return rc, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------- class names
def test_alias_table_maps_genevals_80_names_to_the_emoji_glyphs():
    assert len(OBJECT_NAMES) == 80 and GENEVAL_CLASSES == tuple(OBJECT_NAMES)
    assert list(GENEVAL_TO_EMOJI) == OBJECT_NAMES
    drawn = {name: cls for name, cls in GENEVAL_TO_EMOJI.items() if cls is not None}
    assert sorted(drawn.values()) == sorted(EMOJI_CLASSES)  # every glyph is reached, each by one name
    # GenEval spells out three COCO names; two of them have a glyph
    assert (
        GENEVAL_TO_EMOJI["computer keyboard"] == "keyboard" and GENEVAL_TO_EMOJI["computer mouse"] == "mouse"
    )
    assert GENEVAL_TO_EMOJI["tv remote"] is None and "no Unicode emoji" in why_not_drawn("tv remote", "emoji")
    for name, cls in GENEVAL_TO_EMOJI.items():
        assert world_class(name, "emoji") == cls
        assert world_class(name, "shapes") is None and why_not_drawn(name, "shapes")
        assert known_class(name)
        if cls is None:  # the reason is the vocabulary's own record of why the class was left out
            assert why_not_drawn(name, "emoji") == EMOJI_LEFT_OUT[GENEVAL_RENAMED.get(name, name)]
        else:
            assert why_not_drawn(name, "emoji") is None
    assert world_class("keyboard", "emoji") == "keyboard" and world_class("circle", "shapes") == "circle"
    assert not known_class("dragon") and why_not_drawn("dragon", "emoji") is None


def test_published_file_is_genevals_procedure_over_its_names():
    assert geneval_metadata_path() == GENEVAL / "evaluation_metadata.jsonl"
    ours = generate_geneval_suite("emoji", classes=list(GENEVAL_CLASSES))
    assert len(PUBLISHED) == len(ours) == 553
    assert Counter(line["tag"] for line in PUBLISHED) == {
        "single_object": 80,
        "two_object": 99,
        "counting": 80,
        "colors": 94,
        "position": 100,
        "color_attr": 100,
    }
    differ = [(a["prompt"], b["prompt"]) for a, b in zip(ours, PUBLISHED) if a != b]
    # same clauses line for line; only GenEval's naive plurals ("two sheeps", "three persons") differ
    assert all({**a, "prompt": ""} == {**b, "prompt": ""} for a, b in zip(ours, PUBLISHED))
    assert len(differ) == 7 and ("a photo of two sheep", "a photo of two sheeps") in differ


def test_published_file_reads_as_drawable_and_undrawable_lines_without_errors():
    report = read_metadata(geneval_metadata_path(), "emoji")
    assert not report.errors and report.n_lines == 553
    assert [i for i, _ in report.lines] == [i for i, line in enumerate(PUBLISHED) if _drawable(line)]
    assert len(report.lines) == N_DRAWABLE == 319 and report.n_undrawable == 553 - N_DRAWABLE == 234
    assert {u["line"]: u["classes"] for u in report.undrawable} == {
        i: [c for c in dict.fromkeys(_classes(line)) if GENEVAL_TO_EMOJI[c] is None]
        for i, line in enumerate(PUBLISHED)
        if not _drawable(line)
    }
    assert report.undrawable_classes["refrigerator"] == 12 and "keyboard" not in str(
        report.undrawable_classes
    )
    assert (
        sum(
            "computer keyboard" in _classes(line) or "computer mouse" in _classes(line)
            for _, line in report.lines
        )
        == 19
    )
    shapes = read_metadata(geneval_metadata_path(), "shapes")
    assert not shapes.errors and not shapes.lines and shapes.n_undrawable == 553


# --------------------------------------------------------------------------- render + judge the whole file
@pytest.fixture(scope="module")
def published_render(tmp_path_factory):
    out = tmp_path_factory.mktemp("published") / "renders"
    rc, printed, err = _run(
        [
            "world",
            "render",
            "--vocab",
            "emoji",
            "--metadata",
            str(geneval_metadata_path()),
            "--out",
            str(out),
            "--per-prompt",
            "1",
        ]
    )
    assert rc == 0 and not err, err
    return out, printed


def test_published_file_renders_its_drawable_lines_and_lists_the_others(published_render):
    out, printed = published_render
    assert f"rendered {N_DRAWABLE} of 553 prompts x 1 images" in printed
    assert f"{553 - N_DRAWABLE} of 553 lines not drawn" in printed and "refrigerator (12)" in printed
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == [
        f"{i:05d}" for i, line in enumerate(PUBLISHED) if _drawable(line)
    ]  # GenEval's numbering
    assert json.loads((out / "00001" / "metadata.jsonl").read_text()) == PUBLISHED[1]  # written as published
    listed = [json.loads(x) for x in (out / NOT_DRAWN).read_text().splitlines()]
    assert [r["index"] for r in listed] == [i for i, line in enumerate(PUBLISHED) if not _drawable(line)]
    assert all(r["metadata"] == PUBLISHED[r["index"]] and r["why"] for r in listed)


@pytest.mark.parametrize("with_metadata", [False, True])
def test_every_rendered_published_line_judges_correct(published_render, tmp_path, with_metadata):
    out, _ = published_render
    scores = tmp_path / "scores"
    rc, printed, err = _run(
        ["eval", "--vocab", "emoji", "--images", str(out), "--out", str(scores), "--n-boot", "50"]
        + (["--metadata", str(geneval_metadata_path())] if with_metadata else [])
    )
    assert rc == 0 and not err, err
    rows = [json.loads(x) for x in (scores / "results.jsonl").read_text().splitlines()]
    images = [r for r in rows if "not_judged" not in r]
    assert len(images) == N_DRAWABLE and all(r["correct"] for r in images), [
        r for r in images if not r["correct"]
    ][:3]
    summary = json.loads((scores / "summary.json").read_text())
    assert summary["overall"]["score"] == 1.0 and summary["n_errors"] == 0
    assert summary["n_lines_not_judged"] == 553 - N_DRAWABLE
    assert summary["not_judged_classes"]["refrigerator"] == 12
    assert {x["index"] for x in summary["lines_not_judged"]} == {
        i for i, line in enumerate(PUBLISHED) if not _drawable(line)
    }
    assert f"{553 - N_DRAWABLE} lines not judged" in printed


def test_a_missing_published_image_is_a_failure_and_counted(published_render, tmp_path):
    out, _ = published_render
    images = tmp_path / "images"
    shutil.copytree(out, images)
    (images / "00001" / "samples" / "0000.png").unlink()
    scores = tmp_path / "scores"
    rc, printed, _ = _run(
        [
            "eval",
            "--vocab",
            "emoji",
            "--metadata",
            str(geneval_metadata_path()),
            "--images",
            str(images),
            "--out",
            str(scores),
            "--n-boot",
            "50",
        ]
    )
    assert rc == 1
    summary = json.loads((scores / "summary.json").read_text())
    assert summary["n_missing"] == 1 and summary["n_scored"] == N_DRAWABLE
    assert summary["pct_correct_images"]["value"] == pytest.approx((N_DRAWABLE - 1) / N_DRAWABLE)
    assert summary["tags"]["single_object"]["accuracy"] < 1.0 and summary["overall"]["score"] < 1.0
    assert "1 missing images are scored as failures" in printed


# --------------------------------------------------------------------------- refusals
def _refused(tmp_path, args, *expected):
    out = tmp_path / "renders"
    rc, printed, err = _run(["world", "render", "--out", str(out)] + args)
    assert rc == 2 and not printed
    assert len(err.strip().splitlines()) == 1 and err.startswith("lens world render: error: "), err
    for text in expected:
        assert text in err, err
    left = [p.name for p in tmp_path.iterdir() if p.name != "meta.jsonl"]
    assert not left  # no output folder, partial or temporary


def test_strict_refuses_the_published_file_in_one_line(tmp_path):
    _refused(
        tmp_path,
        ["--metadata", str(geneval_metadata_path()), "--vocab", "emoji", "--strict"],
        "234 of 553 lines name classes the emoji world cannot draw",
        "refrigerator",
        "drop --strict",
    )


def test_the_shapes_world_draws_none_of_the_published_file(tmp_path):
    _refused(
        tmp_path,
        ["--metadata", str(geneval_metadata_path()), "--vocab", "shapes"],
        "none of its 553 lines can be drawn in the shapes world",
        "--vocab",
    )


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_an_empty_metadata_file_is_refused(tmp_path, text):
    (tmp_path / "meta.jsonl").write_text(text)
    _refused(tmp_path, ["--metadata", str(tmp_path / "meta.jsonl")], "has no lines; nothing to render")


def test_a_misspelt_class_is_an_error_not_an_undrawable_line(tmp_path):
    bad = dict(PUBLISHED[1], include=[{"class": "refridgerator", "count": 1}])
    (tmp_path / "meta.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in [PUBLISHED[1], PUBLISHED[0], bad])
    )
    _refused(
        tmp_path,
        ["--metadata", str(tmp_path / "meta.jsonl"), "--vocab", "emoji"],
        "1 of 3 lines have errors",
        "line 2",
        "'refridgerator'",
    )


def test_eval_strict_refuses_lines_it_cannot_judge(published_render, tmp_path):
    out, _ = published_render
    rc, printed, err = _run(
        ["eval", "--vocab", "emoji", "--images", str(out), "--out", str(tmp_path / "s"), "--strict"]
    )
    assert rc == 2 and not printed and len(err.strip().splitlines()) == 1
    assert "234 lines name classes the emoji world cannot draw" in err and not (tmp_path / "s").exists()


def test_the_judge_reads_genevals_names():
    from lenslib.eval.judge import judge
    from lenslib.world.render import render
    from lenslib.world.spec import scene_from_metadata

    keyboard = next(
        line
        for line in PUBLISHED
        if line["tag"] == "single_object" and line["include"][0]["class"] == "computer keyboard"
    )
    mouse = dict(
        keyboard, include=[{"class": "computer mouse", "count": 1}], prompt="a photo of a computer mouse"
    )
    image = render(scene_from_metadata(keyboard, "emoji", 0), 128, 128)
    assert judge(image, keyboard, "emoji").correct
    verdict = judge(image, mouse, "emoji")
    assert not verdict.correct and "expected mouse>=1, found 0" in verdict.reason
