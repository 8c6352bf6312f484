"""The recaptioning pipeline in one process: funnel counts, bad input per sample, captions with
provenance, idempotent re-runs, resume after an interruption, config pinning, parquet output."""

import json

import pytest
from data_inputs import EXPECTED, make_inputs

from lenslib.data.pipeline import PipelineConfig, run_pipeline
from lenslib.data.shards import read_output
from lenslib.recaption.local_server import LocalChatServer

KEY = "k-pipeline"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    make_inputs(d)
    return d


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("LENS_TEST_KEY", KEY)
    with LocalChatServer(api_key=KEY) as srv:
        yield srv


def config(server, **kw):
    return PipelineConfig(
        captioners=["openai:gpt-4.1"],
        funnel={"embedder": "pixels-16"},
        batch_size=4,
        captioner_options={
            "base_url": server.base_url,
            "api_key_env": "LENS_TEST_KEY",
            "max_retries": 0,
            "backoff_s": 0.01,
            "max_concurrency": 2,
        },
        **kw,
    )


def records(out):
    m = json.loads((out / "manifest.json").read_text())
    return {r["key"]: r for s in m["shards"] for r in read_output(out / s["output"])}


def test_pipeline_counts_bad_input_and_captions(inputs, server, tmp_path):
    out = tmp_path / "out"
    m = run_pipeline(str(inputs), str(out), config(server), progress=False)
    steps = {s["name"]: s for s in m["funnel"]}
    assert m["n_in"] == EXPECTED["n_in"] and m["n_out"] == EXPECTED["n_out"]
    for name in ("corrupt", "size", "blur", "entropy", "exposure", "near_dup"):
        assert steps[name]["dropped"] == EXPECTED[name], name
    assert steps["nsfw"]["skipped"] and steps["caption"]["dropped"] == 0
    assert sum(s["n"] for s in m["shards"]) == m["n_out"] == server.n_requests
    report = json.loads((out / "funnel.json").read_text())
    assert {e["key"] for e in report["steps"][0]["examples"]} == {"zero", "garbage"}
    assert report["steps"][-2]["examples"][0]["duplicate_of"].endswith("/p1")
    recs = records(out)
    assert set(recs) == {f"p{i}" for i in range(10)} | {"cmyk", "rgba", "i16", "nonutf8"}
    r = recs["p3"]
    assert r["captions"]["alt_text"] == {"text": "photo number 3", "kind": "alt_text", "source": "input"}
    d = r["captions"]["detailed"]
    assert d["source"] == "openai:gpt-4.1" and d["prompt_version"] == "lens-detailed-v1"
    assert "400 by 400" in d["text"] and d["input_tokens"] > 0
    assert set(r["scores"]) == {"size", "blur", "entropy", "exposure"}
    assert recs["cmyk"]["meta"]["mode"] == "CMYK" and recs["i16"]["meta"]["mode"].startswith("I")
    assert "\ufffd" in recs["nonutf8"]["captions"]["alt_text"]["text"]
    assert any("UTF-8" in v[0] for k, v in m["input_issues"].items() if k.endswith("/nonutf8"))
    assert m["caption_kinds"] == ["alt_text", "detailed"]
    assert m["usage"]["captions"] == 14 and m["usage"]["input_tokens"] > 0


def test_rerun_is_a_noop_and_config_is_pinned(inputs, server, tmp_path):
    out = tmp_path / "out"
    run_pipeline(str(inputs), str(out), config(server), progress=False)
    n = server.n_requests
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    m2 = run_pipeline(str(inputs), str(out), config(server), progress=False)
    assert server.n_requests == n
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == stamps
    assert m2["n_out"] == EXPECTED["n_out"]
    other = config(server)
    other.captioners = ["brief=openai:gpt-4.1"]
    with pytest.raises(ValueError, match="different input or configuration"):
        run_pipeline(str(inputs), str(out), other, progress=False)


def test_interrupted_run_resumes_without_redoing_finished_shards(inputs, server, tmp_path):
    out = tmp_path / "out"
    first_shard = 5  # input-000000 keeps p0..p3 and cmyk
    server.script.extend([None] * first_shard + [500] * 50)
    with pytest.raises(RuntimeError, match="captions failed"):
        run_pipeline(str(inputs), str(out), config(server), progress=False)
    done = sorted(p.name for p in (out / "reports").glob("*.json"))
    assert done == ["input-000000.json"]
    stamp = (out / "shards" / "input-000000.tar").stat().st_mtime_ns
    server.script.clear()
    server.received.clear()
    m = run_pipeline(str(inputs), str(out), config(server), progress=False)
    assert (out / "shards" / "input-000000.tar").stat().st_mtime_ns == stamp
    assert len(server.received) == EXPECTED["n_out"] - first_shard  # only the unfinished shards
    assert m["n_out"] == EXPECTED["n_out"]


def test_parquet_output_loads_with_datasets(inputs, server, tmp_path):
    import datasets

    out = tmp_path / "pq"
    m = run_pipeline(str(inputs), str(out), config(server, output_format="parquet"), progress=False)
    files = [str(out / s["output"]) for s in m["shards"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == EXPECTED["n_out"]
    row = ds[0]
    assert (
        row["image"].size == (400, 400)
        and row["detailed"]
        and "detailed" in json.loads(row["json"])["captions"]
    )


def test_bad_config_fails_before_work(inputs, tmp_path):
    with pytest.raises(ValueError, match="bad captioner spec"):
        PipelineConfig(captioners=["gpt4:whatever"])
    with pytest.raises(ValueError, match="unknown thresholds"):
        PipelineConfig(funnel={"thresholds": {"blurr": 3}})
    with pytest.raises(ValueError, match="min_value < max_value"):
        PipelineConfig(funnel={"thresholds": {"exposure_min": 0.9, "exposure_max": 0.1}})
    with pytest.raises(FileNotFoundError):
        run_pipeline(str(tmp_path / "nothing*.tar"), str(tmp_path / "o"), PipelineConfig(), progress=False)


def test_changed_inputs_refused_and_empty_shard_completes(server, tmp_path):
    import shutil

    from lenslib.data.shards import images_to_shards

    src = tmp_path / "in"
    images_to_shards({"a": b"", "b": b"not an image"}, src, per_shard=2)  # every sample is bad
    m = run_pipeline(str(src), str(tmp_path / "out"), config(server), progress=False)
    assert (m["n_in"], m["n_out"]) == (2, 0) and server.n_requests == 0
    assert read_output(tmp_path / "out" / m["shards"][0]["output"]) == []
    shutil.copy(src / "input-000000.tar", src / "input-000001.tar")
    with pytest.raises(ValueError, match="input shards changed"):
        run_pipeline(str(src), str(tmp_path / "out"), config(server), progress=False)


def test_hf_datasets_folder_input(tmp_path):
    """A `save_to_disk` folder (Arrow files) is read shard by shard, caption and spec columns included."""
    from lenslib.world.dataset import make_dataset

    make_dataset(6, size=64, out=tmp_path / "world")  # HF datasets folder, no tar shards
    cfg = PipelineConfig(
        captioners=["oracle:brief"],
        funnel={"embedder": "pixels-16", "thresholds": {"min_area": 0, "entropy": 0.0}},
    )
    m = run_pipeline(str(tmp_path / "world"), str(tmp_path / "out"), cfg, progress=False)
    assert m["n_in"] == 6 and m["n_out"] == 6
    assert m["shards"][0]["input"].endswith(".arrow")
    assert m["caption_kinds"] == ["alt_text", "brief", "detailed", "mixed"]
    recs = records(tmp_path / "out")
    r = next(iter(recs.values()))
    assert r["captions"]["brief"]["source"] == "oracle:world:brief"
    assert r["captions"]["detailed"]["source"] == "input" and r["meta"]["spec"]


def test_learned_scorers_from_local_folders_run_in_the_pipeline(inputs, server, tmp_path):
    """An image classifier folder plugged in as the NSFW and aesthetic steps: scored, not skipped."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    for name, labels in (("nsfw", ["safe", "nsfw"]), ("aes", ["score"])):
        cfg = ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
        torch.manual_seed(0)
        ViTForImageClassification(cfg).save_pretrained(tmp_path / name)
        ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path / name)
    c = config(server)
    c.funnel.update(
        nsfw=str(tmp_path / "nsfw"), aesthetic=str(tmp_path / "aes"), thresholds={"aesthetic": -1e9}
    )
    m = run_pipeline(str(inputs), str(tmp_path / "out"), c, progress=False)
    steps = {s["name"]: s for s in m["funnel"]}
    assert (
        not steps["nsfw"]["skipped"] and not steps["aesthetic"]["skipped"] and steps["watermark"]["skipped"]
    )
    assert steps["aesthetic"]["dropped"] == 0  # threshold below any score
    recs = records(tmp_path / "out")
    assert recs and all(0 < r["scores"]["nsfw"] < 0.5 for r in recs.values())  # kept means nsfw < 0.5
    assert steps["nsfw"]["dropped"] + steps["nsfw"]["kept"] == steps["nsfw"]["n_in"]
