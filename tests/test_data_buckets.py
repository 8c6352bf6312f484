"""Buckets and the mixed-resolution sampler (paper §2.2)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lenslib.data.buckets import LENS_BUCKETS, assign_buckets, nearest_bucket, resize_center_crop
from lenslib.data.sampler import BucketBatchSampler


def test_27_buckets_match_paper_examples():
    assert len(LENS_BUCKETS) == 27
    sizes = {(b.width, b.height) for b in LENS_BUCKETS}
    # The paper's listed examples: 1:2 and 2:1 for each base area.
    for w, h in [(352, 704), (704, 352), (544, 1088), (1088, 544), (736, 1472), (1472, 736)]:
        assert (w, h) in sizes
    for b in LENS_BUCKETS:
        assert b.width % 32 == 0 and b.height % 32 == 0
        # area within 10% of the base area, aspect within one rounding step of the nominal ratio
        assert abs(b.width * b.height / b.base**2 - 1) < 0.1
        assert abs(math.log(b.aspect) - math.log(b.ratio[0] / b.ratio[1])) < 0.06
    assert {(b.base, b.width, b.height) for b in LENS_BUCKETS if b.ratio == (1, 1)} == {
        (512, 512, 512),
        (768, 768, 768),
        (1024, 1024, 1024),
    }
    assert {b.base: b.batch_size for b in LENS_BUCKETS} == {512: 24, 768: 10, 1024: 6}


def test_nearest_bucket_and_crop():
    b = nearest_bucket(1920, 1080)  # 16:9 photo, large → 1024 base
    assert (b.base, b.ratio) == (1024, (16, 9))
    assert nearest_bucket(600, 1200).ratio == (1, 2)
    assert nearest_bucket(600, 600).base == 512  # 600² reaches 512² but not 768²
    assert nearest_bucket(1, 10000).ratio == (1, 2)  # extreme aspect → the most extreme bucket
    with pytest.raises(ValueError):
        nearest_bucket(0, 10)
    img = Image.new("RGB", (1000, 600))
    img.paste((255, 0, 0), (0, 0, 100, 600))  # red strip on the left edge is cropped away
    out = resize_center_crop(img, nearest_bucket(1000, 600))
    assert out.size == (nearest_bucket(1000, 600).width, nearest_bucket(1000, 600).height)
    arr = np.asarray(out)
    assert arr[:, arr.shape[1] // 2].max() == 0


def _dataset(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(int(w), int(h)) for w, h in zip(rng.integers(400, 2000, n), rng.integers(400, 2000, n))]
    return assign_buckets(sizes)


def test_sampler_disjoint_ranks_and_batch_sizes():
    ids = _dataset()
    world = 4
    samplers = [BucketBatchSampler(ids, rank=r, world_size=world, seed=3) for r in range(world)]
    per_rank = [list(s.batches()) for s in samplers]
    assert len({len(p) for p in per_rank}) == 1 and len(per_rank[0]) > 0  # equal step counts
    seen = set()
    for p in per_rank:
        for bucket, idx in p:
            assert len(idx) == {512: 24, 768: 10, 1024: 6}[bucket.base]
            assert all(LENS_BUCKETS[ids[i]] == bucket for i in idx)  # one bucket per batch
            assert seen.isdisjoint(idx)
            seen.update(idx)
    # mixed resolutions across ranks within at least one step
    assert any(len({per_rank[r][s][0] for r in range(world)}) > 1 for s in range(len(per_rank[0])))


def test_sampler_deterministic_resumable_and_epochs():
    ids = _dataset()
    a = BucketBatchSampler(ids, rank=1, world_size=2, seed=7)
    full = list(a)
    b = BucketBatchSampler(ids, rank=1, world_size=2, seed=7)
    it = iter(b)
    first = [next(it) for _ in range(5)]
    state = b.state_dict()
    c = BucketBatchSampler(ids, rank=1, world_size=2, seed=7)
    c.load_state_dict(state)
    assert first + list(c) == full
    c.set_epoch(1)
    assert list(c) != full
    with pytest.raises(ValueError, match="world_size"):
        BucketBatchSampler(ids, rank=0, world_size=4, seed=7).load_state_dict(state)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4000), st.integers(1, 4000))
def test_any_size_gets_its_nearest_bucket_exactly(w, h):
    b = nearest_bucket(w, h)
    same_base = [c for c in LENS_BUCKETS if c.base == b.base]
    best = min(abs(math.log(w / h) - math.log(c.aspect)) for c in same_base)
    assert abs(math.log(w / h) - math.log(b.aspect)) == pytest.approx(best)
    if w * h <= 64 * 64 * 16:  # resizing is exact for any input shape (checked on small inputs for speed)
        assert resize_center_crop(Image.new("RGB", (w, h)), b).size == (b.width, b.height)


def test_extreme_aspect_crop_is_cheap_and_centred():
    img = Image.new("RGB", (1, 10000), (0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0))  # far outside the centred crop
    img.putpixel((0, 4999), (255, 255, 255))  # the centred 1:2 crop of a 1-px-wide image is rows 4999-5000
    b = nearest_bucket(1, 10000)
    out = np.asarray(resize_center_crop(img, b)).astype(int)  # ~3.7 GB if resized before cropping
    assert out.shape == (b.height, b.width, 3)
    assert out[5].min() > 100 and out[-5].max() < 50  # top half from the white row, bottom from the black
    assert not np.any((out[..., 0] > 100) & (out[..., 1] < 50))  # no red
