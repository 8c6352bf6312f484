"""The same pipeline on a local Ray instance (2 CPUs) gives the same records as one process.

One Ray session for the whole module (Ray start is slow)."""

import json
import os

import pytest
from data_inputs import EXPECTED, make_inputs

from lenslib.data.pipeline import PipelineConfig, run_pipeline
from lenslib.data.shards import read_output
from lenslib.recaption.local_server import LocalChatServer

KEY = "k-ray"


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    ray = pytest.importorskip("ray")
    os.environ["LENS_TEST_KEY"] = KEY  # actors inherit the environment of the Ray instance
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = tmp_path_factory.mktemp("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 << 20,
        _temp_dir=str(tmp),
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()  # stops only this session's processes (`ray stop` would also stop other users' Ray)


def records(out):
    m = json.loads((out / "manifest.json").read_text())
    recs = {}
    for s in m["shards"]:
        for r in read_output(out / s["output"]):
            for c in r["captions"].values():
                c.pop("latency_s", None)  # wall time differs between runs
            recs[r["key"]] = r
    return m, recs


def test_ray_equals_single_process(ray_session, tmp_path):
    inputs = tmp_path / "in"
    make_inputs(inputs)
    with LocalChatServer(api_key=KEY) as srv:
        cfg = PipelineConfig(
            captioners=["openai:gpt-4.1"],
            funnel={"embedder": "pixels-16"},
            batch_size=4,
            captioner_options={"base_url": srv.base_url, "api_key_env": "LENS_TEST_KEY", "max_retries": 0},
        )
        run_pipeline(str(inputs), str(tmp_path / "one"), cfg, progress=False)
        n_single = srv.n_requests
        run_pipeline(str(inputs), str(tmp_path / "ray"), cfg, ray_address="local", progress=False)
        assert srv.n_requests == 2 * n_single
        m1, r1 = records(tmp_path / "one")
        m2, r2 = records(tmp_path / "ray")
        assert r1 == r2 and len(r1) == EXPECTED["n_out"]
        assert m1["funnel"] == m2["funnel"] and m1["fingerprint"] == m2["fingerprint"]
        # a second Ray run on the finished output does nothing
        run_pipeline(str(inputs), str(tmp_path / "ray"), cfg, ray_address="local", progress=False)
        assert srv.n_requests == 2 * n_single
