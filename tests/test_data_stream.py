"""Sample order and the batch stream: one plan for every source, the same examples from a cache and on the
fly."""

from __future__ import annotations

import pytest
import torch

from lenslib.data.buckets import Bucket, make_buckets
from lenslib.data.order import epoch_permutation, plan, pool_index
from lenslib.data.sources import CachedWorldBatcher, TokenBatcher, WorldSource
from lenslib.data.stream import BatchStream
from lenslib.model.vae import PixelCodec

SQUARE = Bucket(64, 64, 64, (1, 1))


@pytest.fixture(scope="module")
def minilm():
    from lenslib.model.text_encoders import get_text_encoder

    return get_text_encoder("minilm", max_length=16)


def test_one_bucket_steps_are_consecutive_blocks_rank_after_rank():
    # global batch 8 on 2 ranks, micro-batches of 2: step 2 covers positions 16..23, rank 1 the second half
    p = plan(0, 2, 1, 2, [(SQUARE, 4)], micro_batch=2)
    assert p.micro == ((20, 21), (22, 23)) and p.size == (64, 64)
    every = [
        i for s in range(3) for r in range(2) for m in plan(5, s, r, 2, [(SQUARE, 4)], 2).micro for i in m
    ]
    assert every == list(range(24))  # nothing skipped, nothing repeated
    with pytest.raises(ValueError, match="rank"):
        plan(0, 0, 2, 2, [(SQUARE, 4)])
    with pytest.raises(ValueError, match="micro_batch"):
        plan(0, 0, 0, 1, [(SQUARE, 4)], micro_batch=3)


def test_mixed_resolution_steps_draw_a_bucket_per_rank_and_never_share_positions():
    table = [(b, {64: 6, 96: 3}[b.base]) for b in make_buckets(bases=(64, 96), multiple=16)]
    seen, sizes = set(), set()
    for step in range(20):
        for rank in range(3):
            p = plan(7, step, rank, 3, table)
            assert p == plan(7, step, rank, 3, table)  # a pure function of (seed, step, rank)
            (idx,) = p.micro
            assert len(idx) == dict(table)[p.bucket] and seen.isdisjoint(idx)
            seen.update(idx)
            sizes.add(p.size)
    assert len(sizes) > 3  # ranks and steps really train different resolutions
    assert [plan(8, s, 0, 3, table).bucket for s in range(20)] != [
        plan(7, s, 0, 3, table).bucket for s in range(20)
    ]


def test_a_finite_pool_is_walked_in_shuffled_passes():
    n = 10
    first = [pool_index(3, i, n) for i in range(n)]
    second = [pool_index(3, i, n, _cache={}) for i in range(n, 2 * n)]
    assert sorted(first) == sorted(second) == list(range(n)) and first != second
    assert first == epoch_permutation(3, 0, n).tolist()
    assert [pool_index(3, i, n, 1) for i in range(n)] != first  # a salt (the bucket) gives its own order


def _streams(minilm, root, **kw):
    world = dict(seed=3, caption_kind="brief", num_scenes=10)
    cached = CachedWorldBatcher(WorldSource(**world), PixelCodec(8), minilm, 16, 8, 64, root, progress=False)
    live = TokenBatcher(WorldSource(**world), PixelCodec(8), minilm, 16, 8)
    args = dict(seed=0, rank=0, world_size=1, buckets=[(SQUARE, 4)], micro_batch=2, stop=6, **kw)
    return BatchStream(cached, **args), BatchStream(live, **args)


def _seen(stream):
    try:
        return [(s.step, m, b) for s in stream for m, b in enumerate(s)]
    finally:
        stream.close()


def test_a_run_from_the_cache_sees_the_examples_of_a_run_rendering_on_the_fly(minilm, tmp_path):
    cached, live = _seen(_streams(minilm, tmp_path)[0]), _seen(_streams(minilm, tmp_path)[1])
    assert [(s, m) for s, m, _ in cached] == [(s, m) for s in range(6) for m in range(2)]
    for (_, _, a), (_, _, b) in zip(cached, live, strict=True):
        assert a.indices == b.indices and a.captions == b.captions
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.text_mask, b.text_mask)
        for x, y in zip(a.text, b.text):  # the cache keeps features in float16
            torch.testing.assert_close(x, y, atol=2e-3 * float(y.abs().max()), rtol=1e-2)
    assert cached[0][2].captions[0] == cached[5][2].captions[0]  # 24 samples of a 10-scene pool: it repeats


def test_a_resumed_or_prefetching_stream_repeats_the_straight_one_bit_for_bit(minilm, tmp_path):
    for straight, resumed, ahead in zip(
        _streams(minilm, tmp_path), _streams(minilm, tmp_path, start=4), _streams(minilm, tmp_path, workers=2)
    ):
        full, tail, prefetched = _seen(straight), _seen(resumed), _seen(ahead)
        assert [(s, m) for s, m, _ in tail] == [(s, m) for s, m, _ in full[8:]]
        for (_, _, a), (_, _, b) in zip(full[8:], tail, strict=True):
            assert a.indices == b.indices and torch.equal(a.tokens, b.tokens)
            assert all(torch.equal(x, y) for x, y in zip(a.text, b.text))
        for (_, _, a), (_, _, b) in zip(full, prefetched, strict=True):
            assert a.indices == b.indices and torch.equal(a.tokens, b.tokens)
            assert all(torch.equal(x, y) for x, y in zip(a.text, b.text))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned, non-blocking copies need a CUDA device")
def test_on_cuda_batches_arrive_on_the_device_from_pinned_memory(minilm, tmp_path):
    stream = _streams(minilm, tmp_path, device="cuda")[0]
    host = stream.build(0, 0)
    assert host.tokens.is_pinned() and all(t.is_pinned() for t in host.text)
    batch = next(iter(next(iter(stream))))
    stream.close()
    assert batch.tokens.is_cuda and torch.equal(batch.tokens.cpu(), host.tokens)


def test_pixel_tokens_made_from_uint8_equal_the_codecs_encoding_of_float_images():
    from lenslib.data.sources import encode_images

    images = torch.randint(0, 256, (3, 16, 24, 3), dtype=torch.uint8).numpy()
    for patch in (2, 4, 8):
        codec = PixelCodec(patch)
        tokens, grid = encode_images(codec, images)
        want, want_grid = codec.encode(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0)
        assert tokens.is_contiguous() and tuple(grid) == tuple(want_grid)
        assert torch.equal(tokens, want)
