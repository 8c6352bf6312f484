"""The funnel (counts add up, skipped steps reported) and near-duplicate detection with faiss."""

import io
import logging

import numpy as np
import pytest
from PIL import Image, ImageFilter

from lenslib.data.dedup import HFImageEmbedder, PixelEmbedder, dedup_keep_mask, near_duplicate_pairs
from lenslib.data.filters import FunctionScorer, default_filters
from lenslib.data.funnel import Funnel, FunnelReport, Sample


def enc(im, fmt="PNG", **kw):
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(seed, w=512, h=512):
    rng = np.random.default_rng(seed)
    low = np.asarray(
        Image.fromarray(rng.integers(0, 256, (h // 32, w // 32, 3), dtype=np.uint8)).resize(
            (w, h), Image.Resampling.BICUBIC
        ),
        dtype=np.float64,
    )
    return Image.fromarray(np.clip(low * 0.7 + rng.normal(0, 25, (h, w, 3)) + 30, 0, 255).astype(np.uint8))


def test_planted_near_duplicates_found_by_pixel_embedder():
    ims = [photo(i, 256, 256) for i in range(30)]
    planted = {}
    for j, src in [(3, 0), (7, 5), (12, 11)]:  # resized + JPEG re-encoded copies
        copy = Image.open(io.BytesIO(enc(ims[src].resize((200, 200)), "JPEG", quality=80))).convert("RGB")
        ims.append(copy)
        planted[len(ims) - 1] = src
    emb = PixelEmbedder(16)(ims)
    assert emb.shape == (33, 768) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    keep, dup_of = dedup_keep_mask(emb, 0.985)
    assert dup_of == planted
    assert keep.sum() == 30


def test_faiss_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 64)).astype(np.float32)
    x[100] = x[7] + 0.05 * rng.normal(size=64)
    x[200] = x[7] + 0.05 * rng.normal(size=64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    brute = {(i, j) for i, j in zip(*np.nonzero(np.triu(sim, 1) > 0.985))}
    got = {(i, j) for i, j, _ in near_duplicate_pairs(x, 0.985)}
    assert got == brute and {(7, 100), (7, 200)} <= got
    keep, dup_of = dedup_keep_mask(x, 0.985)
    assert dup_of == {100: 7, 200: 7}  # 200 is compared with the kept 7, not the dropped 100


def test_hf_image_embedder_from_local_clip_folder(tmp_path):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
        ),
        vision_config=dict(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(tmp_path)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path
    )
    emb = HFImageEmbedder(str(tmp_path))
    a = emb([photo(0, 64, 64), photo(0, 64, 64), photo(1, 64, 64)])
    assert a.shape == (3, 16) and emb.dim == 16
    assert a[0] @ a[1] == pytest.approx(1.0, abs=1e-5)


def test_funnel_counts_add_up_and_skips_are_reported(caplog):
    photos = [photo(i) for i in range(6)]
    rng = np.random.default_rng(0)
    dots = np.full((512, 512, 3), 128, np.uint8)
    dots[rng.random((512, 512)) < 0.02] = 0
    dots = Image.fromarray(dots)
    dark = Image.fromarray(np.repeat(rng.choice([0, 6, 12], (512, 512, 1)), 3, axis=2).astype(np.uint8))
    samples = [Sample(f"p{i}", enc(im)) for i, im in enumerate(photos)]
    samples += [
        Sample("empty", b""),
        Sample("garbage", b"\x00\x01 not an image"),
        Sample("small", enc(photo(9, 200, 200))),
        Sample("tall", enc(Image.new("RGB", (1, 10000), (128, 128, 128)))),
        Sample("blurry", enc(photo(10).filter(ImageFilter.GaussianBlur(6)))),
        Sample("dots", enc(dots)),  # sharp but almost a single grey level
        Sample("dark", enc(dark)),  # sharp, varied, but nearly black
        Sample("dup", enc(photos[2], "JPEG", quality=90)),
        Sample("cmyk", enc(photo(11).convert("CMYK"), "JPEG")),
    ]
    with caplog.at_level(logging.WARNING):
        kept, report = Funnel(default_filters(), embedder=PixelEmbedder()).run(samples)
    report.check()
    got = {s.name: (s.n_in, s.dropped, s.kept) for s in report.steps}
    assert got["corrupt"] == (15, 2, 13)
    assert got["size"] == (13, 2, 11)
    for step, key in [("blur", "blurry"), ("entropy", "dots"), ("exposure", "dark")]:
        assert [e["key"] for e in report.step(step).examples] == [key]
    for name in ("nsfw", "aesthetic", "watermark"):
        assert report.step(name).skipped and report.step(name).dropped == 0
    assert "nsfw" in caplog.text and "skipped" in caplog.text
    assert got["near_dup"] == (8, 1, 7)
    assert [e["duplicate_of"] for e in report.step("near_dup").examples] == ["p2"]
    assert sorted(s.key for s in kept) == sorted([f"p{i}" for i in range(6)] + ["cmyk"])
    assert report.step("blur").examples[0]["key"] == "blurry" and report.step("blur").examples[0]["thumb"]
    assert "SKIPPED" in report.table()


def test_reports_merge_and_roundtrip(tmp_path):
    f = Funnel(default_filters(aesthetic=FunctionScorer(lambda ims: [5.0] * len(ims), "five")), dedup=False)
    a = f.run([Sample("a", enc(photo(0))), Sample("b", b"")])[1]
    b = f.run([Sample("c", enc(photo(1, 100, 100)))])[1]
    m = FunnelReport.merge([a, b])
    m.check()
    assert (m.n_in, m.n_kept) == (3, 1)
    assert not m.step("aesthetic").skipped and m.step("nsfw").skipped
    m.save(tmp_path / "r.json")
    assert FunnelReport.load(tmp_path / "r.json").to_dict() == m.to_dict()


def test_chapter_demo_inputs_are_caught_by_the_intended_steps():
    """Each damaged copy of the shipped photographs is dropped by the step chapter 1 says drops it."""
    from lenslib.data.sample_photos import DAMAGE, funnel_demo_inputs

    data = funnel_demo_inputs()
    assert set(DAMAGE) <= set(data)
    kept, report = Funnel(default_filters(), embedder=PixelEmbedder(16), max_examples=50).run(
        [Sample(k, v) for k, v in data.items()]
    )
    dropped_by = {e["key"]: s.name for s in report.steps for e in s.examples}
    expected = {
        "empty_file": "corrupt",
        "truncated_jpeg": "corrupt",
        "astronaut_tiny": "size",
        "rocket_blurred": "blur",
        "flat_grey": "blur",
        "camera_two_tone": "entropy",
        "china_dark": "exposure",
        "flower_blown_out": "exposure",
        "coffee_copy": "near_dup",
    }
    assert {k: dropped_by.get(k) for k in expected} == expected
    assert {"astronaut", "coffee", "china", "flower", "rocket"} <= {s.key for s in kept}
