"""The world cache: a finite pool of scenes rendered and text-encoded once, read back as the same batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lenslib.data.sources import CachedWorldBatcher, TokenBatcher, WorldSource, build_source
from lenslib.data.world_cache import WorldCache, WorldCacheMismatch, cache_key
from lenslib.model.vae import PixelCodec
from lenslib.train.config import ConfigError, load_config


@pytest.fixture(scope="module")
def minilm():
    from lenslib.model.text_encoders import get_text_encoder

    return get_text_encoder("minilm", max_length=16)


def _pair(minilm, root, n=12, kind="brief", seed=3):
    cached = CachedWorldBatcher(
        WorldSource(seed, caption_kind=kind, num_scenes=n),
        PixelCodec(8),
        minilm,
        16,
        8,
        64,
        root,
        progress=False,
    )
    live = TokenBatcher(WorldSource(seed, caption_kind=kind, num_scenes=n), PixelCodec(8), minilm, 16, 8)
    return cached, live


def test_cached_and_rendered_pools_give_the_same_examples_in_the_same_order(minilm, tmp_path):
    cached, live = _pair(minilm, tmp_path)
    indices = [0, 5, 11, 12, 17, 30]  # past the pool: scene i % 12, with the same caption
    a, b = cached.batch(indices, (64, 64)), live.batch(indices, (64, 64))
    assert a.captions == b.captions and a.indices == b.indices
    assert a.captions[0] == a.captions[3] and a.captions[1] == a.captions[4]
    assert torch.equal(a.tokens, b.tokens)  # the renders are stored exactly (uint8)
    assert torch.equal(a.text_mask, b.text_mask)
    for x, y in zip(a.text, b.text):  # features are stored as float16
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, atol=2e-3 * float(y.abs().max()), rtol=1e-2)
        assert torch.count_nonzero(x[~a.text_mask]) == 0
    held_out = cached.batch([-1, -2], (64, 64))  # previews: rendered on the fly, never from the pool
    assert held_out.captions == live.batch([-1, -2], (64, 64)).captions


def test_a_cache_is_built_once_and_shared(minilm, tmp_path):
    first, _ = _pair(minilm, tmp_path)
    stamp = (first.cache.path / "images.npy").stat().st_mtime_ns
    second, _ = _pair(minilm, tmp_path)
    assert second.cache.path == first.cache.path
    assert (second.cache.path / "images.npy").stat().st_mtime_ns == stamp
    other, _ = _pair(minilm, tmp_path, kind="detailed")  # another caption kind: another cache
    assert other.cache.path != first.cache.path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.cache.path.name, other.cache.path.name]
    )


def test_a_cache_for_another_world_or_encoder_is_refused_by_name(minilm, tmp_path):
    cached, _ = _pair(minilm, tmp_path)
    wanted = dict(cached.cache.identity, caption_kind="detailed", text_encoder="another-encoder")
    with pytest.raises(WorldCacheMismatch) as err:
        WorldCache(cached.cache.path, wanted)
    assert (
        "caption_kind" in str(err.value)
        and "text_encoder" in str(err.value)
        and "num_scenes" not in str(err.value)
    )
    assert cache_key(wanted) != cached.cache.path.name


def test_an_interrupted_build_leaves_nothing_a_run_could_read(minilm, tmp_path):
    source = WorldSource(0, caption_kind="brief", num_scenes=8)
    identity = {"num_scenes": 8, "max_text_tokens": 16, "num_layers": 3, "hidden_size": 384, "size": 64}

    def render(i):
        if i == 5:
            raise KeyboardInterrupt  # the user stops the build half way
        e = source.examples([i], (64, 64))[0]
        return e.image, e.caption

    with pytest.raises(KeyboardInterrupt):
        WorldCache.open_or_build(tmp_path, identity, render, minilm.encode, batch_size=4, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="not a world cache"):
        WorldCache(tmp_path / cache_key(identity))


def test_num_scenes_in_a_config_reads_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LENS_CACHE", str(tmp_path))
    cfg = load_config(
        "cpu-tiny", ["data.num_scenes=6", "data.caption_kind=brief", "data.text_encoder_kwargs.max_length=16"]
    )
    batcher, _, _ = build_source(cfg, progress=False)
    assert isinstance(batcher, CachedWorldBatcher) and len(batcher.cache) == 6
    meta = json.loads((batcher.cache.path / "cache.json").read_text())["identity"]
    assert (
        meta["caption_kind"] == "brief"
        and meta["size"] == 64
        and meta["text_encoder"] == batcher.text_encoder.name
    )
    assert batcher.cache.path.parent == tmp_path / "world"
    b = batcher.batch(list(range(8)), (64, 64))
    assert b.tokens.shape == (8, 256, 48) and np.array_equal(b.captions[:2], b.captions[6:])
    for bad in (["data.num_scenes=0"], ["data.num_scenes=4", "data.world_kwargs.num_scenes=4"]):
        with pytest.raises(ConfigError, match="num_scenes"):
            load_config("cpu-tiny", bad)


KILLED_BUILD = """
import sys, time
from lenslib.data.world_cache import WorldCache
from lenslib.model.text_encoders import get_text_encoder
from lenslib.data.sources import WorldSource

root = sys.argv[1]
identity = {"num_scenes": 64, "max_text_tokens": 16, "num_layers": 3, "hidden_size": 384, "size": 64}
source = WorldSource(0, caption_kind="brief", num_scenes=64)
minilm = get_text_encoder("minilm", max_length=16)

def render(i):
    if i == 8:
        print("building", flush=True)
        time.sleep(600)  # killed here, half way through the images
    e = source.examples([i], (64, 64))[0]
    return e.image, e.caption

WorldCache.open_or_build(root, identity, render, minilm.encode, batch_size=4, progress=False)
"""


def test_a_build_killed_mid_write_leaves_no_cache_and_the_next_build_clears_its_remains(minilm, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert proc.stdout.readline().strip() == "building"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    identity = {"num_scenes": 64, "max_text_tokens": 16, "num_layers": 3, "hidden_size": 384, "size": 64}
    left = [p.name for p in tmp_path.iterdir()]
    assert left == [f"{cache_key(identity)}.tmp{proc.pid}"]  # only the killed build's temp folder
    with pytest.raises(FileNotFoundError, match="not a world cache"):
        WorldCache(tmp_path / cache_key(identity))
    source = WorldSource(0, caption_kind="brief", num_scenes=64)

    def render(i):
        e = source.examples([i], (64, 64))[0]
        return e.image, e.caption

    cache = WorldCache.open_or_build(tmp_path, identity, render, minilm.encode, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [cache_key(identity)] and len(cache) == 64
