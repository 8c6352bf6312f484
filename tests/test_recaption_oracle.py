"""The oracle captioner wraps the world's exact captions; several caption kinds per image."""
import pytest

from lenslib.recaption.base import CaptionError
from lenslib.recaption.oracle import OracleCaptioner
from lenslib.world import captions as W
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
        recall = {k: W.coverage(s, got[k][i].text).recall for k in got}
        assert recall["detailed"] > recall["brief"] and recall["detailed"] >= 0.8
    # a Scene object and a dict work too
    assert OracleCaptioner("brief").caption(images[:1], [{"spec": scenes[0], "seed": 10}])[0].text == got["brief"][0].text


def test_oracle_refuses_images_without_spec():
    with pytest.raises(CaptionError, match="scene spec"):
        OracleCaptioner().caption([render(sample_scene(0), 64)], [{}])
    with pytest.raises(ValueError, match="unknown oracle caption kind"):
        OracleCaptioner("poem")
