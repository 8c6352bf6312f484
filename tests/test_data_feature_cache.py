"""Feature cache: stored features equal a fresh encode; a cache from another encoder is refused."""

import numpy as np
import pytest
import torch
from PIL import Image

from lenslib.data.buckets import make_buckets
from lenslib.data.feature_cache import CacheMismatchError, FeatureCache, build_feature_cache
from lenslib.data.sampler import BucketBatchSampler
from lenslib.model.text_encoders.registry import get_text_encoder
from lenslib.model.vae import PixelCodec

BUCKETS = make_buckets(bases=(64,), multiple=16)


@pytest.fixture(scope="module")
def encoder():
    return get_text_encoder("tiny-gpt-oss")


def recs(n=6):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        w, h = (96, 48) if i % 2 else (64, 64)
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        words = " ".join(["red circle"] * (i + 1))
        out.append(
            {
                "key": f"k{i}",
                "image": im,
                "captions": {"detailed": {"text": f"a {words}"}, "brief": {"text": "a shape"}},
            }
        )
    return out


def test_cache_roundtrip_and_refusal(tmp_path, encoder):
    codec = PixelCodec(patch_size=4)
    records = recs()
    doc = build_feature_cache(
        records,
        tmp_path / "c",
        encoder,
        codec,
        kinds=("detailed", "brief"),
        buckets=BUCKETS,
        shard_size=4,
        batch_size=3,
    )
    assert doc["n"] == 6 and len(doc["shards"]) == 2
    cache = FeatureCache(tmp_path / "c", text_encoder=encoder.name, codec=codec.name)
    assert len(cache) == 6
    # text features equal a fresh encode of the same caption, valid tokens only
    feats, mask = encoder.encode([records[3]["captions"]["detailed"]["text"]])
    item = cache[3]
    assert len(item["text"]) == encoder.num_layers
    for li in range(encoder.num_layers):
        torch.testing.assert_close(item["text"][li], feats[li][0][mask[0]], rtol=1e-4, atol=1e-5)
    # latents decode back to the bucket-cropped image (PixelCodec is exact)
    wide = [b for b in BUCKETS if b.ratio == (2, 1)][0]
    assert cache.bucket_ids[1] == BUCKETS.index(wide)
    img = codec.decode(cache[1]["latent"][None], *cache[1]["hw"])
    assert img.shape == (1, 3, wide.height, wide.width)
    # a bucket sampler batch collates to the TextEncoder contract
    sampler = BucketBatchSampler(cache.bucket_ids, BUCKETS, batch_sizes={64: 2}, seed=0)
    batch = FeatureCache.collate([cache[i] for i in next(iter(sampler))])
    assert batch["mask"].shape == batch["text"][0].shape[:2] and batch["latents"].shape[0] == 2
    assert FeatureCache(tmp_path / "c", kind="brief")[0]["text"][0].shape[0] < item["text"][0].shape[0]
    # another encoder or codec: refused, with the fix in the message
    with pytest.raises(CacheMismatchError, match="rebuild the cache"):
        FeatureCache(tmp_path / "c", text_encoder="minilm:all-MiniLM-L6-v2", codec=codec.name)
    with pytest.raises(CacheMismatchError, match="codec"):
        FeatureCache(tmp_path / "c", text_encoder=encoder.name, codec="pixel:p2")
    with pytest.raises(CacheMismatchError):
        build_feature_cache(records, tmp_path / "c", encoder, PixelCodec(patch_size=2), buckets=BUCKETS)


def test_cache_resumes_and_checks_captions(tmp_path, encoder):
    codec = PixelCodec(patch_size=4)
    records = recs(4)
    build_feature_cache(records, tmp_path / "c", encoder, codec, buckets=BUCKETS, shard_size=2)
    first = tmp_path / "c" / "features-000000.safetensors"
    stamp = first.stat().st_mtime_ns
    (tmp_path / "c" / "features-000001.safetensors").unlink()  # as if interrupted
    build_feature_cache(records, tmp_path / "c", encoder, codec, buckets=BUCKETS, shard_size=2)
    assert first.stat().st_mtime_ns == stamp and len(FeatureCache(tmp_path / "c")) == 4
    with pytest.raises(ValueError, match="no \\['mixed'\\] caption"):
        build_feature_cache(records, tmp_path / "d", encoder, codec, kinds=("mixed",), buckets=BUCKETS)


def test_mixed_caption_kinds_per_epoch(tmp_path, encoder):
    codec = PixelCodec(patch_size=16)
    records = recs(40)
    build_feature_cache(
        records,
        tmp_path / "c",
        encoder,
        codec,
        kinds=("detailed", "brief"),
        buckets=BUCKETS,
        shard_size=40,
        batch_size=40,
    )
    mixed = FeatureCache(tmp_path / "c", kind_weights={"detailed": 1, "brief": 1}, seed=1)
    e0 = [mixed.kind_for(i) for i in range(40)]
    assert 10 <= e0.count("brief") <= 30  # 50/50, like the paper's Mixed arm
    assert e0 == [
        FeatureCache(tmp_path / "c", kind_weights={"detailed": 1, "brief": 1}, seed=1).kind_for(i)
        for i in range(40)
    ]
    mixed.set_epoch(1)
    assert [mixed.kind_for(i) for i in range(40)] != e0
    item = mixed[0]
    ref = FeatureCache(tmp_path / "c", kind=item["kind"])[0]
    torch.testing.assert_close(item["text"][0], ref["text"][0])
    only = FeatureCache(tmp_path / "c", kind_weights={"detailed": 1.0, "brief": 0.0})
    assert {only.kind_for(i) for i in range(40)} == {"detailed"}
    with pytest.raises(ValueError, match="kind_weights"):
        FeatureCache(tmp_path / "c", kind_weights={"alt_text": 1})


def test_trainer_reads_the_cache_through_build_source(tmp_path, encoder):
    """`data.source: features` in a training config gives Batches from the cache; a config with another
    text encoder or codec is refused."""
    from lenslib.data.batch import Batch
    from lenslib.data.sources import build_source
    from lenslib.train.config import TrainConfig

    codec = PixelCodec(patch_size=16)
    build_feature_cache(recs(8), tmp_path / "c", encoder, codec, kinds=("detailed", "brief"), buckets=BUCKETS)
    cfg = TrainConfig()
    cfg.data.source, cfg.data.path, cfg.data.patch = "features", str(tmp_path / "c"), 16
    cfg.data.text_encoder, cfg.data.max_text_tokens, cfg.data.caption_kind = "tiny-gpt-oss", 48, "mixed"
    source, _, _ = build_source(cfg)
    source.check(encoder, codec)
    b = source.batch([0, 1, 2, 9], (64, 64))  # indices past the 4 square images wrap into a new epoch
    assert isinstance(b, Batch) and b.tokens.shape == (4, 16, 3 * 16 * 16) and b.grid == (4, 4)
    assert len(b.text) == encoder.num_layers and b.text[0].shape == (4, 48, encoder.hidden_size)
    assert b.text_mask.shape == (4, 48) and all(c for c in b.captions)
    assert b.tokens.equal(source.batch([0, 1, 2, 9], (64, 64)).tokens)  # pure function of the indices
    wide = [x for x in BUCKETS if x.ratio == (2, 1)][0]
    assert source.batch([5], (wide.height, wide.width)).grid == (wide.height // 16, wide.width // 16)
    with pytest.raises(ValueError, match="no images at"):
        source.batch([0], (32, 32))
    cfg.data.text_encoder = "minilm"
    with pytest.raises(CacheMismatchError, match="minilm"):
        build_source(cfg)
    cfg.data.text_encoder, cfg.data.patch = "tiny-gpt-oss", 8
    with pytest.raises(CacheMismatchError, match="codec"):
        build_source(cfg)


class _Interrupting:
    """A text encoder that is stopped (as by Ctrl-C) when it reaches the ``stop_at``-th batch."""

    def __init__(self, encoder, stop_at):
        self.inner, self.stop_at, self.calls = encoder, stop_at, 0
        self.name, self.num_layers, self.hidden_size = encoder.name, encoder.num_layers, encoder.hidden_size

    def encode(self, texts):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.inner.encode(texts)


def test_an_interrupted_build_leaves_no_cache_and_resumes_only_the_same_build(tmp_path, encoder):
    codec = PixelCodec(patch_size=4)
    records = recs(4)
    with pytest.raises(KeyboardInterrupt):
        build_feature_cache(
            records, tmp_path / "c", _Interrupting(encoder, 2), codec, buckets=BUCKETS, shard_size=2
        )
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["features-000000.safetensors"]
    with pytest.raises(FileNotFoundError, match="build the cache first"):
        FeatureCache(tmp_path / "c")
    other = _Interrupting(encoder, 0)
    other.name = "another-encoder"
    with pytest.raises(
        CacheMismatchError, match="text_encoder: shard has"
    ) as err:  # the half-built folder is not reused
        build_feature_cache(records, tmp_path / "c", other, codec, buckets=BUCKETS, shard_size=2)
    assert "another-encoder" in str(err.value) and "codec" not in str(err.value)
    with pytest.raises(CacheMismatchError, match="codec"):
        build_feature_cache(
            records, tmp_path / "c", encoder, PixelCodec(patch_size=8), buckets=BUCKETS, shard_size=2
        )
    with pytest.raises(CacheMismatchError, match="kinds"):
        build_feature_cache(
            records, tmp_path / "c", encoder, codec, kinds=("brief",), buckets=BUCKETS, shard_size=2
        )
    build_feature_cache(records, tmp_path / "c", encoder, codec, buckets=BUCKETS, shard_size=2)
    assert len(FeatureCache(tmp_path / "c", text_encoder=encoder.name, codec=codec.name)) == 4
