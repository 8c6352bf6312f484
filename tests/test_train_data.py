"""Training data sources: world, HF datasets folders and webdataset shards give the same Batch contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lenslib.data.batch import Batch
from lenslib.data.order import mix_seed
from lenslib.data.sources import HFImageSource, TokenBatcher, WebDatasetSource, WorldSource
from lenslib.model.vae import PixelCodec


@pytest.fixture(scope="module")
def minilm():
    from lenslib.model.text_encoders import get_text_encoder

    return get_text_encoder("minilm", max_length=8)


def _images(n, size=20):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)) for _ in range(n)]


def test_world_batches_are_a_pure_function_of_the_indices(minilm):
    src = TokenBatcher(WorldSource(seed=3, caption_kind="brief"), PixelCodec(4), minilm, max_text_tokens=6)
    a = src.batch([5, 6, 7], (16, 24))
    b = src.batch([5, 6, 7], (16, 24))
    assert isinstance(a, Batch) and a.tokens.shape == (3, 4 * 6, 48) and a.grid == (4, 6)
    assert torch.equal(a.tokens, b.tokens) and a.captions == b.captions
    assert len(a.text) == 3 and a.text[0].shape == (3, 6, 384) and a.text_mask.shape == (3, 6)
    assert all(torch.equal(x, y) for x, y in zip(a.text, b.text))
    assert float(a.tokens.min()) >= -1 and float(a.tokens.max()) <= 1
    c = src.batch([8], (16, 24))
    assert not torch.equal(c.tokens[0], a.tokens[0])
    assert mix_seed(1, 2) != mix_seed(2, 1)


def test_batches_pad_text_to_their_longest_caption_and_the_dit_output_is_unchanged():
    from lenslib.model.text_encoders import get_text_encoder
    from lenslib.train.build import build_model
    from lenslib.train.config import load_config

    encoder = get_text_encoder("minilm", max_length=160)
    fixed = TokenBatcher(
        WorldSource(seed=1, caption_kind="brief"), PixelCodec(8), encoder, max_text_tokens=160
    )
    trimmed = TokenBatcher(
        WorldSource(seed=1, caption_kind="brief"),
        PixelCodec(8),
        encoder,
        max_text_tokens=160,
        text_pad_multiple=8,
    )
    a, b = fixed.batch([0, 1, 2, 3], (32, 32)), trimmed.batch([0, 1, 2, 3], (32, 32))
    longest = int(a.text_mask.sum(1).max())
    assert a.text_mask.shape == (4, 160)
    assert b.text_mask.shape[1] % 8 == 0 and longest <= b.text_mask.shape[1] < longest + 8 and longest < 40
    n = b.text_mask.shape[1]
    assert torch.equal(a.text_mask[:, n:], torch.zeros(4, 160 - n, dtype=torch.bool))  # only padding was cut
    assert all(torch.equal(x[:, :n], y) for x, y in zip(a.text, b.text))

    cfg = load_config("cpu-tiny", ["data.image_size=32", "data.patch=8", "model.kwargs.num_layers=2"])
    model = build_model(cfg, PixelCodec(8), encoder)
    for p in model.parameters():  # leave the adaLN-Zero identity init so text reaches the output
        torch.nn.init.normal_(p, std=0.05)
    t = torch.full((4,), 0.5)
    with torch.no_grad():
        out = [
            model(
                hidden_states=x.tokens,
                encoder_hidden_states=x.text,
                encoder_hidden_states_mask=x.text_mask,
                timestep=t,
                img_shapes=[(1, 4, 4)],
            )
            for x in (a, b)
        ]
        other = model(
            hidden_states=a.tokens,
            encoder_hidden_states=[f.roll(1, 0) for f in a.text],
            encoder_hidden_states_mask=a.text_mask.roll(1, 0),
            timestep=t,
            img_shapes=[(1, 4, 4)],
        )
    assert (out[0] - out[1]).abs().max() < 1e-5
    assert (out[0] - other).abs().max() > 1e-3  # the captions do matter to the output


def test_hf_dataset_folder_source(tmp_path):
    from datasets import Dataset, Features, Value
    from datasets import Image as HFImage

    ims = _images(5)
    ds = Dataset.from_dict(
        {"image": ims, "caption": [f"cap {i}" for i in range(5)]},
        features=Features({"image": HFImage(), "caption": Value("string")}),
    )
    ds.save_to_disk(str(tmp_path / "ds"))
    src = HFImageSource(str(tmp_path / "ds"), seed=0)
    epoch0 = [e.caption for e in src.examples(range(5), (16, 16))]
    assert sorted(epoch0) == [f"cap {i}" for i in range(5)]  # one epoch = a permutation of all rows
    assert src.examples([7], (16, 16))[0].image.shape == (16, 16, 3)
    with pytest.raises(ValueError, match="caption_key"):
        HFImageSource(str(tmp_path / "ds"), caption_key="text")


def test_webdataset_source_reads_in_order_and_skips_ahead(tmp_path):
    import webdataset as wds

    for s in range(2):
        with wds.TarWriter(str(tmp_path / f"shard-{s:06d}.tar")) as tw:
            for k, im in enumerate(_images(3)):
                tw.write({"__key__": f"s{s}k{k}", "png": im, "txt": f"shard {s} sample {k}"})
    src = WebDatasetSource(str(tmp_path / "shard-{000000..000001}.tar"))
    got = [e.caption for e in src.examples([0, 1, 4], (16, 16))]
    assert got == ["shard 0 sample 0", "shard 0 sample 1", "shard 1 sample 1"]
    # a fresh reader (as after a resume) starting at a later index gives the same samples
    again = WebDatasetSource(str(tmp_path / "shard-{000000..000001}.tar"))
    assert again.examples([4, 7], (16, 16))[0].caption == "shard 1 sample 1"
    assert again.examples([7], (16, 16))[0].caption == "shard 0 sample 1"  # second epoch


def _world_cache(tmp_path, encoder_name, **encoder_kwargs):
    """A feature cache of world scenes at cpu-tiny's size and codec, built with the public API (what
    `lens data cache` runs)."""
    from PIL import Image as PILImage

    from lenslib.data.buckets import Bucket
    from lenslib.data.feature_cache import build_feature_cache
    from lenslib.model.text_encoders import get_text_encoder
    from lenslib.train.config import load_config

    d = load_config("cpu-tiny").data
    size = d.image_size
    examples = WorldSource(seed=1, **d.world_kwargs).examples(range(6), (size, size))
    records = [
        {"key": f"w{i}", "image": PILImage.fromarray(e.image), "captions": {"detailed": {"text": e.caption}}}
        for i, e in enumerate(examples)
    ]
    out = tmp_path / f"cache-{encoder_name}-{encoder_kwargs.get('max_length')}"
    build_feature_cache(
        records,
        out,
        get_text_encoder(encoder_name, **encoder_kwargs),
        PixelCodec(d.patch),
        buckets=[Bucket(size, size, size, (1, 1))],
    )
    return out


def _features_config(tmp_path, cache):
    from lenslib.train.config import load_config

    return load_config(
        "cpu-tiny",
        [
            "data.source=features",
            f"data.path={cache}",
            "run.steps=2",
            "run.save_every=0",
            "eval.every=0",
            "run.progress=log",
            f"run.out_dir={tmp_path / 'run'}",
        ],
    )


def _cpu_tiny_max_length():
    from lenslib.train.config import load_config

    return load_config("cpu-tiny").data.text_encoder_kwargs["max_length"]


def test_trainer_trains_from_a_feature_cache(tmp_path):
    import json

    from lenslib.train import train

    cfg = _features_config(tmp_path, _world_cache(tmp_path, "minilm", max_length=_cpu_tiny_max_length()))
    summary = train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and summary["step"] == 2
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert (tmp_path / "run" / "checkpoints").is_dir()


def test_trainer_refuses_a_cache_from_another_text_encoder(tmp_path):
    from lenslib.data.feature_cache import CacheMismatchError
    from lenslib.train import train

    cfg = _features_config(tmp_path, _world_cache(tmp_path, "tiny-gpt-oss"))  # the run uses minilm
    with pytest.raises(
        CacheMismatchError,
        match=r"built with text_encoder 'gpt-oss.*this run uses 'minilm.*rebuild the cache",
    ):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before any step
    # same model, other tokenisation length: features differ, so the exact identity refuses it too
    other = _cpu_tiny_max_length() // 2
    cfg = _features_config(tmp_path, _world_cache(tmp_path, "minilm", max_length=other))
    with pytest.raises(CacheMismatchError, match=f"max={other}.*max={_cpu_tiny_max_length()}"):
        train(cfg)
