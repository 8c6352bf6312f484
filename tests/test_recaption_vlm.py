"""VLM captioner end to end: a tiny LLaVA built from config, saved, loaded back, batched generation."""

import json

import numpy as np
import pytest
from PIL import Image

from lenslib.recaption.base import CaptionError
from lenslib.recaption.tiny_vlm import build_tiny_vlm
from lenslib.recaption.vlm import VLMCaptioner


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny-llava")


def imgs(n):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 60, 3), dtype=np.uint8)) for i in range(n)]


def test_tiny_vlm_captions_batched(tiny_vlm):
    assert json.loads((tiny_vlm / "config.json").read_text())["model_type"] == "llava"
    c = VLMCaptioner(str(tiny_vlm), batch_size=2, max_new_tokens=8)
    out = c.caption(imgs(3))
    assert len(out) == 3
    for o in out:
        assert isinstance(o.text, str) and o.source == "vlm:llava:tiny-llava"
        assert o.prompt_version == "lens-detailed-v1" and 1 <= o.output_tokens <= 8
        assert o.input_tokens > 10 and o.latency_s > 0
    # batching does not change greedy results: the same image alone gives the same caption
    single = VLMCaptioner(str(tiny_vlm), batch_size=1, max_new_tokens=8).caption(imgs(3)[2:])
    assert single[0].text == out[2].text


def test_vlm_brief_kind_and_bad_folder(tiny_vlm, tmp_path):
    c = VLMCaptioner(str(tiny_vlm), kind="brief", max_new_tokens=4)
    assert c.caption(imgs(1))[0].kind == "brief" and c.prompt_version == "lens-brief-v1"
    with pytest.raises(CaptionError, match="no config.json"):
        VLMCaptioner(str(tmp_path))


def test_vlm_captioner_in_the_pipeline(tiny_vlm, tmp_path):
    """`vlm:PATH` through the pipeline: two caption kinds from the same local model, batched."""
    from data_inputs import EXPECTED, make_inputs

    from lenslib.data.pipeline import PipelineConfig, run_pipeline
    from lenslib.data.shards import read_output

    make_inputs(tmp_path / "in")
    cfg = PipelineConfig(
        captioners=[f"vlm:{tiny_vlm}", f"brief=vlm:{tiny_vlm}"],
        funnel={"embedder": "pixels-16"},
        batch_size=4,
        captioner_options={"max_new_tokens": 4, "device": "cpu"},
    )
    m = run_pipeline(str(tmp_path / "in"), str(tmp_path / "out"), cfg, progress=False)
    assert m["n_out"] == EXPECTED["n_out"] and m["caption_kinds"] == ["alt_text", "brief", "detailed"]
    rec = read_output(tmp_path / "out" / m["shards"][0]["output"])[0]
    assert rec["captions"]["detailed"]["source"] == "vlm:llava:tiny-llava"
    assert rec["captions"]["brief"]["prompt_version"] == "lens-brief-v1"
    assert m["usage"]["captions"] == 2 * EXPECTED["n_out"]
