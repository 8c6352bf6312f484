"""The caption ablation runner: arms differ only in caption kind, paired bootstrap, summaries, end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lenslib.eval import stats
from lenslib.experiments import caption_report, caption_results, caption_runs
from lenslib.experiments import captions as cap


def _rows(cells, kind="detailed", mode="detailed", step=1):
    """Result rows from {(index, seed): [correct, ...]} with index -> tag by the key's third element."""
    out = []
    for (index, seed, tag), images in cells.items():
        for k, c in enumerate(images):
            out.append(
                {
                    "kind": kind,
                    "mode": mode,
                    "step": step,
                    "index": index,
                    "seed": seed,
                    "k": k,
                    "tag": tag,
                    "correct": bool(c),
                    "reason": "",
                }
            )
    return out


def test_arms_differ_only_in_caption_kind(tmp_path):
    cfgs = cap.arm_configs("reduced", tmp_path)
    assert set(cfgs) == {(k, s) for k in cap.KINDS for s in (0, 1, 2)}
    base = cfgs[("detailed", 0)]
    for (kind, seed), cfg in cfgs.items():
        diff = cap.config_differences(base, cfg)
        expected = ([] if kind == "detailed" else ["data.caption_kind"]) + ([] if seed == 0 else ["run.seed"])
        assert diff == sorted(expected), (kind, seed, diff)
        assert cfg.data.caption_kind == kind and cfg.run.seed == seed
        assert cfg.run.steps == cap.PRESETS["reduced"].steps
    # same seed -> the same training images, different captions
    from lenslib.data.sources import WorldSource

    a = WorldSource(0, "shapes", "brief").examples(range(3), (64, 64))
    b = WorldSource(0, "shapes", "detailed").examples(range(3), (64, 64))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        assert x.caption != y.caption and len(y.caption.split()) > len(x.caption.split())


def test_bad_arguments_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        cap.get_preset("lens-stage9")
    with pytest.raises(ValueError, match="caption kinds"):
        cap.arm_configs("micro", tmp_path, kinds=("verbose",))
    with pytest.raises(ValueError, match="repeat"):
        cap.arm_configs("micro", tmp_path, seeds=(1, 1))
    with pytest.raises(ValueError, match="prompt modes"):
        caption_runs.run_captions("micro", tmp_path, modes=("shouted",))
    with pytest.raises(ValueError, match="curve_modes"):
        caption_runs.run_captions(dataclasses.replace(cap.PRESETS["micro"], curve_modes=("loud",)), tmp_path)
    assert not (tmp_path / "runs").exists()


def test_paired_difference_hand_computed():
    # One tag, two prompts, one seed: differences 1-0=1 and 0-0=0. Point estimate 0.5. The bootstrap
    # mean of two draws is 0 (p 1/4), 0.5 (p 1/2) or 1 (p 1/4): the 95 % interval is [0, 1] and the
    # share of replicates <= 0 is about 1/4.
    a = _rows({(0, 0, "colors"): [1], (1, 0, "colors"): [0]})
    b = _rows({(0, 0, "colors"): [0], (1, 0, "colors"): [0]})
    d = stats.paired_difference(a, b, n_boot=4000, seed=1)
    assert d["diff"] == pytest.approx(0.5)
    assert d["ci95"] == (0.0, 1.0)
    assert d["p_le_zero"] == pytest.approx(0.25, abs=0.03)
    # Overall is the unweighted mean of tags: tag A has two prompts with difference +1 (two seeds, two
    # images each), tag B one prompt with difference 0 -> (1 + 0) / 2 = 0.5, not the pooled 2/3; every
    # replicate gives the same, so the interval is the point.
    a = _rows(
        {
            (0, 0, "colors"): [1, 1],
            (0, 1, "colors"): [1, 1],
            (1, 0, "colors"): [1, 1],
            (1, 1, "colors"): [1, 1],
            (2, 0, "counting"): [1, 0],
            (2, 1, "counting"): [0, 0],
        }
    )
    b = _rows(
        {
            (0, 0, "colors"): [0, 0],
            (0, 1, "colors"): [0, 0],
            (1, 0, "colors"): [0, 0],
            (1, 1, "colors"): [0, 0],
            (2, 0, "counting"): [0, 1],
            (2, 1, "counting"): [0, 0],
        }
    )
    d = stats.paired_difference(a, b, n_boot=500)
    assert d["diff"] == pytest.approx(0.5) and d["ci95"] == pytest.approx((0.5, 0.5))
    assert (d["n_prompts"], d["n_seeds"]) == (3, 2)
    # Pairing matters: equal arms with large prompt-to-prompt spread give exactly zero, interval [0, 0].
    same = _rows({(i, s, "colors"): [i % 2] for i in range(6) for s in range(2)})
    d = stats.paired_difference(same, same, n_boot=300)
    assert d["diff"] == 0 and d["ci95"] == (0.0, 0.0)
    with pytest.raises(ValueError, match="same"):
        stats.paired_difference(a, same)


def test_conclusion_follows_the_numbers():
    base = {"n_prompts": 10, "n_seeds": 3}
    assert "detailed captions scores higher than brief captions" in caption_report.conclusion(
        dict(base, diff=0.2, ci95=(0.1, 0.3))
    )
    assert "brief captions scores higher than detailed captions" in caption_report.conclusion(
        dict(base, diff=-0.2, ci95=(-0.3, -0.1))
    )
    text = caption_report.conclusion(dict(base, diff=0.05, ci95=(-0.1, 0.2)))
    assert "does not show a difference" in text and "favours detailed captions" in text
    assert "cannot tell them apart" in caption_report.conclusion(dict(base, diff=0.0, ci95=(0.0, 0.0)))


def test_summary_per_tag_and_overall():
    # two seeds, one image each: seeds count as images of the same prompt
    rows = _rows(
        {(0, 0, "colors"): [1], (0, 1, "colors"): [0], (1, 0, "counting"): [1], (1, 1, "counting"): [1]}
    )
    s = caption_results.summarize_rows(rows, n_boot=200)
    assert s["tags"]["colors"]["accuracy"] == 0.5 and s["tags"]["counting"]["accuracy"] == 1.0
    assert s["overall"]["score"] == pytest.approx(0.75)
    assert s["tags"]["colors"]["n_images"] == 2
    lo, hi = s["overall"]["ci95"]
    assert lo <= 0.75 <= hi


#: Two steps of batch 2, scored at both, on one suite line per tag: the smallest run that goes end to end.
TWO_STEPS = cap.Preset(
    steps=2,
    eval_at=(1, 2),
    seeds=(0,),
    lines_per_tag=1,
    per_prompt=1,
    sample_steps=2,
    overrides=(*cap.WORLD_64, "optim.global_batch=2", "optim.micro_batch=2", "optim.warmup_steps=1"),
)


@pytest.mark.slow
def test_runner_micro_end_to_end(tmp_path):
    p = TWO_STEPS
    res = caption_runs.run_captions(p, tmp_path, kinds=("brief", "detailed"), progress=lambda *_: None)
    n = 2 * 2 * len(cap.MODES) * 6  # kinds x checkpoints x modes x lines
    assert len(res.rows) == n
    assert {(r["kind"], r["step"], r["mode"]) for r in res.rows} == {
        (k, s, m) for k in ("brief", "detailed") for s in (1, 2) for m in cap.MODES
    }
    table = res.table(n_boot=100)
    assert len(table) == 2 * len(cap.MODES) and set(cap.GENEVAL_TAGS) <= set(table.columns)
    assert all(lo - 1e-3 <= v <= hi + 1e-3 for v, (lo, hi) in zip(table.colors, table.colors_ci95))
    d = res.difference("detailed", "brief", "detailed", n_boot=100)
    assert d["ci95"][0] <= d["diff"] <= d["ci95"][1]
    curves = res.curves()
    assert sorted(curves.step.unique()) == [1, 2]
    # the reasoner mode really rewrote the prompts; the cache is reused without training
    arms = sorted((tmp_path / "arms").glob("*.json"))
    assert [a.name for a in arms] == ["brief-s0.json", "detailed-s0.json"]
    again = caption_runs.run_captions(p, tmp_path, kinds=("brief", "detailed"), progress=lambda *_: None)
    assert again.rows == res.rows
    # results.json keeps every verdict: read back, it gives the same tables, intervals and findings
    loaded = caption_results.load_results(tmp_path / caption_results.RESULTS_NAME)

    def strip(rows):
        return sorted(
            tuple(sorted((k, v) for k, v in r.items() if k not in ("reason", "failures"))) for r in rows
        )

    assert (
        strip(loaded.rows) == strip(res.rows) and loaded.preset == p and loaded.kinds == ("brief", "detailed")
    )
    assert loaded.table(n_boot=100).equals(res.table(n_boot=100))
    s1, s2 = loaded.summary("detailed", "detailed", n_boot=10), res.summary("detailed", "detailed", n_boot=10)
    assert [v["failures"] for v in s1["tags"].values()] == [v["failures"] for v in s2["tags"].values()]
    assert sum(sum(v["failures"].values()) for v in s2["tags"].values()) > 0  # 2 steps: failures to keep
    assert loaded.findings(n_boot=100) == res.findings(n_boot=100) and len(res.findings(n_boot=100)) == 4
    assert set(loaded.meta) == {("brief", 0), ("detailed", 0)}
    # a changed config retrains from scratch: the old run folder is set aside, not resumed
    p2 = dataclasses.replace(p, steps=3, eval_at=(3,))
    third = caption_runs.run_captions(p2, tmp_path, kinds=("brief",), progress=lambda *_: None)
    assert {r["step"] for r in third.rows} == {3}
    assert len(list((tmp_path / "stale").iterdir())) == 1
    # curve_modes: earlier checkpoints are scored in those modes only, the last in every mode
    p3 = dataclasses.replace(p, curve_modes=("detailed",))
    fourth = caption_runs.run_captions(p3, tmp_path / "curve", kinds=("brief",), progress=lambda *_: None)
    assert {(r["step"], r["mode"]) for r in fourth.rows} == {(1, "detailed")} | {(2, m) for m in cap.MODES}
    c = fourth.curves()
    assert sorted(c[c.prompted == "detailed"].step) == [1, 2] and list(c[c.prompted == "brief"].step) == [2]


def test_a_run_stopped_while_scoring_keeps_the_checkpoints_it_scored(tmp_path, monkeypatch):
    import json

    import lenslib.eval.generate as generate

    p = TWO_STEPS
    first = caption_runs.run_captions(
        p, tmp_path, kinds=("brief",), modes=("brief",), progress=lambda *_: None
    )
    scores = tmp_path / "runs" / "brief-s0" / caption_runs.SCORES_DIR
    assert sorted(f.name for f in scores.iterdir()) == ["step_0000001.json", "step_0000002.json"]
    calls = []
    real = generate.score_checkpoint
    monkeypatch.setattr(
        generate,
        "score_checkpoint",
        lambda cfg, path, *a, **k: calls.append(path.name) or real(cfg, path, *a, **k),
    )
    # stopped after scoring step 2 but before the arm's file was written: nothing is sampled again, and
    # the arm keeps the training time and loss of its 2 steps (the job that resumed at step 2 trained none)
    arm = tmp_path / "arms" / "brief-s0.json"
    was = json.loads(arm.read_text())
    arm.unlink()
    again = caption_runs.run_captions(
        p, tmp_path, kinds=("brief",), modes=("brief",), progress=lambda *_: None
    )
    assert calls == [] and again.rows == first.rows
    now = json.loads(arm.read_text())
    metrics = [
        json.loads(x) for x in (tmp_path / "runs" / "brief-s0" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["step"] for m in metrics] == [1, 2]
    assert now["final_loss"] == was["final_loss"] == metrics[-1]["loss"]
    assert (
        now["train_seconds"]
        == was["train_seconds"]
        == pytest.approx(metrics[0]["step_time_s"] + metrics[1]["step_time_s"])
    )
    assert again.meta[("brief", 0)]["train_seconds"] == now["train_seconds"]
    # stopped before step 2 was scored: only step 2 is sampled, and the rows are the same
    (tmp_path / "arms" / "brief-s0.json").unlink()
    (scores / "step_0000002.json").unlink()
    again = caption_runs.run_captions(
        p, tmp_path, kinds=("brief",), modes=("brief",), progress=lambda *_: None
    )
    assert calls == ["step_0000002"] and again.rows == first.rows
    # a kept file from other sampler settings is not trusted
    (tmp_path / "arms" / "brief-s0.json").unlink()
    doc = json.loads((scores / "step_0000001.json").read_text())
    doc["key"]["sampler"]["num_steps"] = 50
    (scores / "step_0000001.json").write_text(json.dumps(doc))
    again = caption_runs.run_captions(
        p, tmp_path, kinds=("brief",), modes=("brief",), progress=lambda *_: None
    )
    assert calls == ["step_0000002", "step_0000001"] and again.rows == first.rows


def test_a_run_folder_moved_elsewhere_keeps_its_finished_arms(tmp_path, monkeypatch):
    """Arms are cached by config, not by where the run folder lives: a folder copied from cluster scratch
    (or only its arms/) is reused without training or sampling; a changed config still retrains."""
    import shutil

    import lenslib.eval.generate as generate
    import lenslib.train as train_pkg

    p = dataclasses.replace(TWO_STEPS, eval_at=(2,))
    first = caption_runs.run_captions(
        p, tmp_path / "scratch", kinds=("brief",), modes=("brief",), progress=lambda *_: None
    )
    shutil.copytree(tmp_path / "scratch" / "arms", tmp_path / "home" / "arms")

    class Trains(Exception):
        pass

    def no_training(cfg):
        raise Trains(cfg.run.out_dir)

    monkeypatch.setattr(train_pkg, "train", no_training)
    monkeypatch.setattr(
        generate, "score_checkpoint", lambda *a, **k: pytest.fail("sampled a cached arm again")
    )
    moved = caption_runs.run_captions(
        p, tmp_path / "home", kinds=("brief",), modes=("brief",), progress=lambda *_: None
    )
    assert moved.rows == first.rows and moved.meta == first.meta
    with pytest.raises(Trains, match="home"):  # another config is not taken from the copied arm
        caption_runs.run_captions(
            dataclasses.replace(p, sample_steps=3),
            tmp_path / "home",
            kinds=("brief",),
            modes=("brief",),
            progress=lambda *_: None,
        )


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
CHAPTER = "book/06_captions_matter.md"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"preset": "lens-stage9"}, "preset='lens-stage9'"),
        ({"seeds": 3}, "seeds=3"),
        ({"seeds": [0, 0]}, "repeat"),
        ({"presett": "full"}, "did you mean preset"),
        ({"n_boot": "many"}, "n_boot"),
    ],
)
def test_chapter_bad_parameters_fail_before_execution(tmp_path, params, message):

    from lenslib.cluster.notebook import prepare
    from lenslib.cluster.params import ParameterError

    with pytest.raises(ParameterError, match=message):
        prepare(ROOT / CHAPTER, tmp_path / "run", params)
    assert not (tmp_path / "run" / "run.ipynb").exists()


def test_chapter_full_preset_is_accepted_and_recorded(tmp_path):

    from lenslib.cluster.notebook import prepare

    prep = prepare(ROOT / CHAPTER, tmp_path / "run", {"preset": "full"})
    assert prep.config.run.steps == cap.PRESETS["full"].steps
    assert prep.config.data.caption_kind == "detailed"
    assert prep.merged["preset"] == "full" and prep.merged["run_dir"] == str((tmp_path / "run").resolve())


@pytest.mark.parametrize("preset", list(cap.PRESETS))
def test_every_arm_reads_whole_detailed_captions(tmp_path, preset):
    # The detailed arm must not be cut to cpu-tiny's 32 text tokens: its captions would lose their layout.
    from lenslib.data.sources import WorldSource
    from lenslib.model.text_encoders import get_text_encoder

    cfg = cap.arm_configs(preset, tmp_path, kinds=("detailed",), seeds=(0,))[("detailed", 0)]
    lines = cap.suite_lines(cap.PRESETS[preset].lines_per_tag)  # the preset's suite slice exists
    assert {x["tag"] for x in lines} == set(cap.GENEVAL_TAGS)
    enc = get_text_encoder(cfg.data.text_encoder, **cfg.data.text_encoder_kwargs)
    world = WorldSource(0, "shapes", "detailed", **cfg.data.world_kwargs)
    captions = [e.caption for e in world.examples(range(200), (64, 64))]
    lengths = [len(ids) for ids in enc.tokenizer(captions)["input_ids"]]
    covered = np.mean(
        [n <= min(cfg.data.max_text_tokens, cfg.data.text_encoder_kwargs["max_length"]) for n in lengths]
    )
    assert max(lengths) > 32 and covered >= 0.98, (max(lengths), covered)


def test_a_results_file_of_another_kind_is_refused(tmp_path):
    (tmp_path / "results.json").write_text('{"format": "something-else/2"}')
    with pytest.raises(ValueError, match="not a caption-ablation results file"):
        caption_results.load_results(tmp_path / "results.json")


@pytest.mark.slow
def test_the_chapter_run_headless_is_recorded_and_its_record_renders_in_the_chapter(tmp_path):
    # the acceptance path of the full experiment, at the micro preset: run the chapter headlessly, record it,
    # then run the chapter again pointed at the recorded results: it shows them, recomputed
    import nbformat

    from lenslib.cluster.notebook import run_notebook
    from lenslib.cluster.records import write_record_page

    run_dir = tmp_path / "captions-micro"
    first = run_notebook(
        ROOT / CHAPTER,
        run_dir,
        {"preset": "micro", "n_boot": 100, "full_record": str(tmp_path / "none.json")},
        log_output=False,
    )
    assert first.status == "completed", first.error
    page = write_record_page(run_dir, tmp_path / "book" / "runs" / "captions-micro.ipynb")
    recorded = page.with_suffix(".json")
    assert recorded.is_file() and caption_results.load_results(recorded).preset == cap.PRESETS["micro"]

    second = run_notebook(
        ROOT / CHAPTER,
        tmp_path / "again",
        {"preset": "micro", "n_boot": 100, "full_record": str(recorded)},
        log_output=False,
    )
    assert second.status == "completed", second.error
    text = "\n".join(
        o.get("text", "")
        for c in nbformat.read(second.record, as_version=4).cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "Recorded run: preset 'micro'" in text
    expected = caption_results.load_results(recorded).findings(n_boot=100)[0]
    assert expected in text
    first_text = "\n".join(
        o.get("text", "")
        for c in nbformat.read(first.record, as_version=4).cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "No full-run record" in first_text and "Recorded run" not in first_text
