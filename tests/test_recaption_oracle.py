"""The oracle captioner wraps the world's exact captions; several caption kinds per image."""

import pytest

from lenslib.recaption.base import CaptionError
from lenslib.recaption.oracle import OracleCaptioner
from lenslib.world import captions as W
from lenslib.world.caption_reading import coverage
from lenslib.world.render import render
from lenslib.world.spec import sample_scene


def test_oracle_kinds_from_spec_json():
    scenes = [sample_scene(i, min_objects=3) for i in range(4)]
    images = [render(s, 64) for s in scenes]
    metas = [{"spec": s.to_json(), "seed": 10 + i} for i, s in enumerate(scenes)]
    got = {k: OracleCaptioner(k).caption(images, metas) for k in ("alt_text", "brief", "detailed")}
    for i, s in enumerate(scenes):
        for k, caps in got.items():
            c = caps[i]
            assert c.text == W.caption(s, k, 10 + i)  # same seed as the world dataset stores
            assert c.source == f"oracle:world:{k}" and c.kind == k and c.output_tokens == len(c.text.split())
        recall = {k: coverage(s, got[k][i].text).recall for k in got}
        assert recall["detailed"] > recall["brief"] and recall["detailed"] >= 0.8
    # a Scene object and a dict work too
    assert (
        OracleCaptioner("brief").caption(images[:1], [{"spec": scenes[0], "seed": 10}])[0].text
        == got["brief"][0].text
    )


def test_oracle_refuses_images_without_spec():
    with pytest.raises(CaptionError, match="scene spec"):
        OracleCaptioner().caption([render(sample_scene(0), 64)], [{}])
    with pytest.raises(ValueError, match="unknown oracle caption kind"):
        OracleCaptioner("poem")


def test_oracle_captions_world_shards_through_the_pipeline(tmp_path):
    """World datasets (png + spec.json + caption txts per sample) go through the same pipeline."""
    from lenslib.data.pipeline import PipelineConfig, run_pipeline
    from lenslib.data.shards import read_output
    from lenslib.world.dataset import make_dataset
    from lenslib.world.spec import Scene

    make_dataset(8, size=64, out=tmp_path / "world", shards=True, shard_size=4)
    cfg = PipelineConfig(
        captioners=["oracle:detailed"],
        funnel={"embedder": "pixels-16", "thresholds": {"min_area": 0, "entropy": 0.0}},
    )
    m = run_pipeline(str(tmp_path / "world" / "shards"), str(tmp_path / "out"), cfg, progress=False)
    assert m["n_out"] == 8 and "detailed" in m["caption_kinds"] and "alt_text" in m["caption_kinds"]
    for s in m["shards"]:
        for r in read_output(tmp_path / "out" / s["output"]):
            scene = Scene.from_json(r["meta"]["spec"])
            assert r["captions"]["detailed"]["text"] == W.caption(scene, "detailed", r["meta"]["seed"])
            assert r["captions"]["detailed"]["source"] == "oracle:world:detailed"
            assert r["captions"]["alt_text"]["source"] == "input"
