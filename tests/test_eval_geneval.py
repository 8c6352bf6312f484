"""GenEval scoring: summary numbers, bootstrap intervals, DPG dependency rule, folder scoring, bad input."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from lenslib.cli import main
from lenslib.eval.dependent import apply_dependencies
from lenslib.eval.geneval import bootstrap_ci, evaluate_folder, render_suite, summarize
from lenslib.paths import REPO_ROOT
from lenslib.world.suites import GENEVAL_TAGS

SUITES = REPO_ROOT / "data" / "suites"


# --------------------------------------------------------------------------- summary + bootstrap
def _rows(tag, index, values):
    return [
        {"index": index, "k": k, "tag": tag, "prompt": "p", "correct": bool(v), "reason": ""}
        for k, v in enumerate(values)
    ]


def test_summary_matches_genevals_definitions():
    rows = (
        _rows("colors", 0, [1, 1, 0, 0])
        + _rows("colors", 1, [1, 1, 1, 1])
        + _rows("position", 2, [0, 0, 0, 0])
        + [{"index": 3, "k": 0, "tag": "position", "prompt": "p", "error": "gone", "kind": "missing_image"}]
    )
    s = summarize(rows, n_boot=200)
    assert s["tags"]["colors"]["accuracy"] == 0.75
    assert s["tags"]["position"]["accuracy"] == 0.0 and s["tags"]["position"]["n_images"] == 5
    assert s["overall"]["score"] == pytest.approx(0.375)  # unweighted mean over tags, not over images
    assert s["pct_correct_images"]["value"] == pytest.approx(6 / 13)  # the missing image is a failure
    assert s["pct_prompts_any_correct"]["value"] == pytest.approx(2 / 4)
    assert s["n_errors"] == 1 and s["errors"] == {"missing_image": 1}
    assert (s["n_judged"], s["n_scored"], s["n_missing"], s["n_unreadable"]) == (12, 13, 1, 0)
    lo, hi = s["overall"]["ci95"]
    assert lo <= 0.375 <= hi


def test_bootstrap_is_seeded_and_degenerate_data_gives_a_point():
    groups = [[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 0]]
    assert bootstrap_ci(groups, seed=3) == bootstrap_ci(groups, seed=3)
    assert bootstrap_ci(groups, seed=3) != bootstrap_ci(groups, seed=4)
    ones = bootstrap_ci([[1, 1], [1, 1, 1]], ["colors", "colors"])
    assert ones["overall"] == (1.0, 1.0) and ones["pct_prompts_any_correct"] == (1.0, 1.0)


def test_bootstrap_intervals_cover_the_truth_at_the_nominal_rate():
    # Prompts differ in difficulty (p_i ~ Beta(2, 1), mean 2/3); 4 images (seeds) per prompt. The
    # target is the population mean 2/3. Resampling prompts gives about 95 % coverage; adding the
    # seeds is a little conservative; resampling seeds alone ignores prompt difficulty and under-covers.
    rng = np.random.default_rng(0)
    trials = 200
    data = []
    for _ in range(trials):
        p = rng.beta(2, 1, size=60)
        data.append(list((rng.random((60, 4)) < p[:, None]).astype(float)))
    coverage, width = {}, {}
    for mode in ("prompts", "both", "seeds"):
        cis = [
            bootstrap_ci(g, ["counting"] * 60, n_boot=300, seed=t, resample=mode)["overall"]
            for t, g in enumerate(data)
        ]
        coverage[mode] = np.mean([lo <= 2 / 3 <= hi for lo, hi in cis])
        width[mode] = np.mean([hi - lo for lo, hi in cis])
    assert 0.90 <= coverage["prompts"] <= 0.99, coverage
    assert coverage["both"] >= 0.93 and width["both"] > width["prompts"], (coverage, width)
    assert coverage["seeds"] < 0.88, coverage


def test_dependency_rule_zeroes_children_of_failed_parents():
    qs = [
        {"id": 1, "dependency": [0]},
        {"id": 2, "dependency": [1]},
        {"id": 3, "dependency": [0]},
        {"id": 4, "dependency": [1, 3]},
    ]
    # the parent (1) says no: its children score 0 even where the judge said yes
    assert apply_dependencies(qs, {1: False, 2: True, 3: True, 4: True}) == {1: 0.0, 2: 0.0, 3: 1.0, 4: 0.0}
    assert apply_dependencies(qs, {1: True, 2: True, 3: True, 4: False}) == {1: 1.0, 2: 1.0, 3: 1.0, 4: 0.0}


# --------------------------------------------------------------------------- with the judge
@pytest.fixture(scope="module")
def shapes_render(tmp_path_factory):
    out = tmp_path_factory.mktemp("render") / "shapes"
    render_suite(SUITES / "shapes_geneval.jsonl", out, per_prompt=2, vocab="shapes", size=64)
    return out


def test_render_suite_writes_genevals_layout(shapes_render):
    lines = (SUITES / "shapes_geneval.jsonl").read_text().splitlines()
    folders = sorted(p.name for p in shapes_render.iterdir())
    assert folders == [f"{i:05d}" for i in range(len(lines))]
    assert json.loads((shapes_render / "00007" / "metadata.jsonl").read_text()) == json.loads(lines[7])
    assert sorted(p.name for p in (shapes_render / "00007" / "samples").iterdir()) == ["0000.png", "0001.png"]
    assert Image.open(shapes_render / "00007" / "samples" / "0001.png").size == (64, 64)


def test_every_shapes_line_renders_correct_and_the_cli_reports_100_percent(shapes_render, tmp_path):
    out = tmp_path / "scores"
    assert (
        main(
            [
                "eval",
                "--metadata",
                str(SUITES / "shapes_geneval.jsonl"),
                "--images",
                str(shapes_render),
                "--out",
                str(out),
                "--n-boot",
                "200",
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len((SUITES / "shapes_geneval.jsonl").read_text().splitlines())
    bad = [r for r in rows if not r.get("correct")]
    assert not bad, bad[:3]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["tags"]) == set(GENEVAL_TAGS)
    assert summary["overall"]["score"] == 1.0 and summary["n_errors"] == 0
    assert all(t["accuracy"] == 1.0 for t in summary["tags"].values())


def test_every_emoji_line_renders_correct(tmp_path):
    out = render_suite(
        SUITES / "emoji_geneval.jsonl", tmp_path / "emoji", per_prompt=1, vocab="emoji", size=128
    )
    assert "CC BY-SA 4.0" in (out / "ATTRIBUTION.md").read_text()
    rows = evaluate_folder(out, SUITES / "emoji_geneval.jsonl", vocab="emoji")
    bad = [r for r in rows if not r.get("correct")]
    assert not bad, bad[:3]


def test_every_long_line_scores_full_marks(tmp_path):
    out = render_suite(SUITES / "shapes_long.jsonl", tmp_path / "long", per_prompt=1, vocab="shapes", size=64)
    rows = evaluate_folder(out, SUITES / "shapes_long.jsonl", vocab="shapes")
    assert rows and all(r.get("score") == 1.0 for r in rows), [r for r in rows if r.get("score") != 1.0][:2]
    long_summary = summarize(rows, n_boot=100)["tags"]["long"]
    assert long_summary["accuracy"] == 1.0
    assert long_summary["categories"] == {"attribute": 1.0, "count": 1.0, "entity": 1.0, "relation": 1.0}


def test_bad_input_gives_per_line_errors_and_the_run_completes(shapes_render, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(shapes_render, images)
    meta = images / "00001" / "metadata.jsonl"
    line = json.loads(meta.read_text())
    line["include"][0]["class"] = "dragon"
    meta.write_text(json.dumps(line))
    (images / "00002" / "samples" / "0001.png").unlink()
    (images / "00003" / "samples" / "0000.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.open(images / "00004" / "samples" / "0000.png").resize((80, 80)).save(
        images / "00004" / "samples" / "0000.png"
    )
    colour_line = json.loads((images / "00005" / "metadata.jsonl").read_text())
    colour_line["include"][0]["color"] = "teal"
    (images / "00005" / "metadata.jsonl").write_text(json.dumps(colour_line))

    out = tmp_path / "scores"
    assert main(["eval", "--images", str(images), "--out", str(out), "--n-boot", "100"]) == 1
    printed = capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    errors = {(r["index"], r["k"]): r["kind"] for r in rows if "error" in r}
    assert errors == {
        (1, 0): "unknown_class",
        (1, 1): "unknown_class",
        (2, 1): "missing_image",
        (3, 0): "corrupt_image",
        (4, 0): "wrong_size",
        (5, 0): "unknown_color",
        (5, 1): "unknown_color",
    }
    assert "dragon" in next(r["error"] for r in rows if r["index"] == 1)
    assert "80x80" in next(r["error"] for r in rows if r["index"] == 4)
    judged = [r for r in rows if "error" not in r]
    assert all(r["correct"] for r in judged)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_errors"] == 7 and summary["n_images"] == len(rows)
    # the missing, corrupt and wrong-size images are failures; the two unreadable lines are not scored
    assert (summary["n_missing"], summary["n_unreadable"]) == (1, 2)
    assert summary["n_scored"] == len(judged) + 3
    assert summary["pct_correct_images"]["value"] == pytest.approx(len(judged) / (len(judged) + 3))
    assert summary["overall"]["score"] < 1.0
    assert "1 missing and 2 unreadable images are scored as failures" in printed
    assert "(1 missing, 2 unreadable: 3 scored as failures)" in printed


def test_suite_mismatch_and_missing_prompt_folders_are_reported(shapes_render, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(shapes_render, images)
    shutil.rmtree(images / "00010")
    (images / "00011" / "metadata.jsonl").write_text(
        json.dumps({"tag": "single_object", "prompt": "x", "include": [{"class": "star", "count": 1}]})
    )
    rows = evaluate_folder(images, SUITES / "shapes_geneval.jsonl", vocab="shapes")
    kinds = {(r["index"], r["k"]): r.get("kind") for r in rows if "error" in r}
    assert kinds == {
        (10, 0): "missing_image",
        (10, 1): "missing_image",
        (11, 0): "metadata_mismatch",
        (11, 1): "metadata_mismatch",
    }


def test_render_refuses_a_non_empty_folder(shapes_render):
    with pytest.raises(FileExistsError, match="not empty"):
        render_suite(SUITES / "shapes_geneval.jsonl", shapes_render, per_prompt=1)
    assert (
        main(
            [
                "world",
                "render",
                "--metadata",
                str(SUITES / "shapes_geneval.jsonl"),
                "--out",
                str(shapes_render),
            ]
        )
        == 2
    )


def test_a_recoloured_object_loses_exactly_its_questions():
    from lenslib.eval.dependent import score_long
    from lenslib.world.render import render
    from lenslib.world.spec import Scene, SceneObject

    lines = [json.loads(x) for x in (SUITES / "shapes_long.jsonl").read_text().splitlines()]
    line = next(x for x in lines if any(q["category"] == "relation" for q in x["questions"]))
    scene = Scene.from_dict(line["scene"])
    rel_q = next(q for q in line["questions"] if q["category"] == "relation")
    target = rel_q["include"][1]  # the placed object of a relation question: alone of its colour and class
    idx = next(
        i for i, o in enumerate(scene.objects) if (o.cls, o.color) == (target["class"], target["color"])
    )
    used = {o.color for o in scene.objects if o.cls == target["class"]}
    new_color = next(
        c
        for c in ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]
        if c not in used
    )
    objs = list(scene.objects)
    objs[idx] = SceneObject(objs[idx].cls, new_color, objs[idx].box)
    image = render(Scene(scene.vocab, tuple(objs), scene.background, scene.texture, scene.texts), 64, 64)
    result = score_long(image, line, "shapes")

    def about_target(q):  # questions that name the recoloured object's old colour and class
        return any(
            c.get("class") == target["class"] and c.get("color") == target["color"] for c in q["include"]
        )

    lost = [q for q in line["questions"] if about_target(q)]
    assert lost and rel_q in lost
    assert result["score"] == pytest.approx(1 - len(lost) / len(line["questions"]))
    assert all(result["answers"][str(q["id"])] is (not about_target(q)) for q in line["questions"])


@pytest.mark.parametrize(
    "line, objects, kinds",
    [
        (
            {
                "tag": "colors",
                "prompt": "a photo of a red circle",
                "include": [{"class": "circle", "count": 1, "color": "red"}],
            },
            [("circle", "blue", (0.3, 0.3, 0.6, 0.6))],
            ["wrong colour"],
        ),
        (
            {
                "tag": "two_object",
                "prompt": "a photo of a circle and a star",
                "include": [{"class": "circle", "count": 1}, {"class": "star", "count": 1}],
            },
            [("circle", "blue", (0.3, 0.3, 0.6, 0.6))],
            ["missing object"],
        ),
        (
            {
                "tag": "position",
                "prompt": "a photo of a circle left of a square",
                "include": [
                    {"class": "square", "count": 1},
                    {"class": "circle", "count": 1, "position": ["left of", 0]},
                ],
            },
            [("square", "red", (0.1, 0.35, 0.35, 0.6)), ("circle", "blue", (0.6, 0.35, 0.85, 0.6))],
            ["wrong position"],
        ),
        (
            {
                "tag": "counting",
                "prompt": "a photo of two circles",
                "include": [{"class": "circle", "count": 2}],
                "exclude": [{"class": "circle", "count": 3}],
            },
            [
                ("circle", "red", (0.05, 0.1, 0.3, 0.35)),
                ("circle", "red", (0.6, 0.1, 0.85, 0.35)),
                ("circle", "red", (0.35, 0.6, 0.6, 0.85)),
            ],
            ["too many objects"],
        ),
    ],
)
def test_failure_kinds_read_the_judges_reasons(line, objects, kinds, tmp_path):
    from lenslib.eval.geneval import failure_kinds
    from lenslib.eval.judge import judge
    from lenslib.world.render import render
    from lenslib.world.spec import Scene, SceneObject

    image = render(Scene("shapes", tuple(SceneObject(*o) for o in objects)), 64, 64)
    verdict = judge(image, line, "shapes")
    assert not verdict.correct
    assert failure_kinds(verdict.reason) == kinds
    rows = [
        {
            "index": 0,
            "k": 0,
            "tag": line["tag"],
            "prompt": line["prompt"],
            "correct": False,
            "reason": verdict.reason,
        }
    ]
    assert summarize(rows, n_boot=10)["tags"][line["tag"]]["failures"] == {kinds[0]: 1}
