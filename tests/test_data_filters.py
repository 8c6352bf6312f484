"""Each cleaning filter on crafted images that must pass or fail, and decoding of bad input."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from lenslib.data import filters as F


def png(im, **kw):
    buf = io.BytesIO()
    im.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def texture(w=512, h=512, seed=0):
    """A sharp, high-entropy, mid-exposure image: smooth random blobs plus fine noise."""
    rng = np.random.default_rng(seed)
    low = np.asarray(
        Image.fromarray(rng.integers(0, 256, (h // 32, w // 32, 3), dtype=np.uint8)).resize(
            (w, h), Image.Resampling.BICUBIC
        ),
        dtype=np.float64,
    )
    a = np.clip(low * 0.7 + rng.normal(0, 25, (h, w, 3)) + 30, 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def test_decode_bad_and_odd_inputs():
    with pytest.raises(F.DecodeError, match="empty"):
        F.decode_image(b"")
    with pytest.raises(F.DecodeError, match="unreadable"):
        F.decode_image(b"this is not an image at all" * 10)
    jpg = png(texture(64, 64), format="JPEG")
    with pytest.raises(F.DecodeError):
        F.decode_image(jpg[: len(jpg) // 2])  # truncated
    cmyk = F.decode_image(png(Image.new("CMYK", (20, 10), (0, 255, 255, 0)), format="JPEG"))
    assert cmyk.mode == "CMYK" and cmyk.image.mode == "RGB"
    r, g, b = np.asarray(cmyk.image)[5, 10]
    assert r > 200 and g < 60 and b < 60  # C=0, M=Y=255 is red
    a16 = (np.arange(256 * 4, dtype=np.uint16).reshape(4, 256) * 64).astype(np.uint16)
    d16 = F.decode_image(png(Image.fromarray(a16)))
    assert d16.mode.startswith("I") and d16.image.mode == "RGB"
    v = np.asarray(d16.image)[..., 0].astype(int).ravel()  # row-major = increasing 16-bit values
    assert v[0] == 0 and v[-1] >= 250 and np.all(np.diff(v) >= 0)  # rescaled, not clipped to 255
    assert len(np.unique(v)) > 200
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    d = F.decode_image(png(rgba))
    assert d.mode == "RGBA" and np.asarray(d.image).min() == 255  # transparent → white
    tall = F.decode_image(png(Image.new("RGB", (1, 10000), (128, 128, 128))))
    assert (tall.width, tall.height) == (1, 10000)


def test_size_filter():
    f = F.MinAreaFilter()
    s = f.scores([Image.new("RGB", (384, 384)), Image.new("RGB", (383, 384)), Image.new("RGB", (1, 10000))])
    assert [f.keep(x) for x in s] == [True, False, False]


def test_blur_filter():
    f = F.BlurFilter()
    sharp = texture()
    blurred = sharp.filter(ImageFilter.GaussianBlur(6))
    s = f.scores([sharp, blurred])
    assert f.keep(s[0]) and not f.keep(s[1])
    # resolution-free: the same sharp content at twice the size scores about the same
    big = texture(1024, 1024)
    assert f.keep(f.scores([big])[0])


def test_entropy_filter():
    f = F.EntropyFilter()
    flat = Image.new("RGB", (512, 512), (90, 120, 200))
    almost = np.full((512, 512, 3), 100, np.uint8)
    almost[:10] = 101  # two levels, 2% / 98%: ~0.14 bits
    s = f.scores([flat, Image.fromarray(almost), texture()])
    assert s[0] == pytest.approx(0.0, abs=1e-9)
    assert [f.keep(x) for x in s] == [False, False, True]
    half = np.zeros((512, 512), np.uint8)
    half[:, 256:] = 255
    assert F.grey_entropy(Image.fromarray(half).convert("RGB")) == pytest.approx(1.0, abs=0.01)


def test_exposure_filter():
    f = F.ExposureFilter()
    black = Image.new("RGB", (512, 512), (3, 3, 3))
    white = Image.new("RGB", (512, 512), (254, 254, 254))
    s = f.scores([black, white, texture()])
    assert [f.keep(x) for x in s] == [False, False, True]
    # V = max(R, G, B): pure saturated blue is fully "bright" in HSV
    assert F.mean_hsv_value(Image.new("RGB", (4, 4), (0, 0, 255))) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        F.ExposureFilter(0.9, 0.1)


def test_learned_filters_use_scorer_and_skip_without(caplog):
    red = Image.new("RGB", (64, 64), (250, 0, 0))
    grey = Image.new("RGB", (64, 64), (120, 120, 120))
    redness = F.FunctionScorer(lambda ims: [np.asarray(i)[..., 0].mean() / 255 for i in ims], "redness")
    nsfw = F.NSFWFilter(redness)
    s = nsfw.scores([red, grey])
    assert [nsfw.keep(x) for x in s] == [False, True]
    aes = F.AestheticFilter(F.FunctionScorer(lambda ims: [2.9, 3.0], "const"))
    assert [aes.keep(x) for x in aes.scores([red, grey])] == [False, True]
    none = F.WatermarkFilter()
    ok, why = none.available()
    assert not ok and "no watermark classifier" in why
    with pytest.raises(RuntimeError):
        none.scores([red])


def test_hf_image_classifier_scorer_from_local_folder(tmp_path):
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
        id2label={0: "safe", 1: "nsfw"},
        label2id={"safe": 0, "nsfw": 1},
    )
    torch.manual_seed(0)
    ViTForImageClassification(cfg).save_pretrained(tmp_path)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    scorer = F.HFImageClassifierScorer(str(tmp_path), label="nsfw")
    s = scorer([texture(64, 64, i) for i in range(3)])
    assert s.shape == (3,) and np.all((s > 0) & (s < 1))
    assert "vit" in scorer.name
    with pytest.raises(ValueError, match="labels"):
        F.HFImageClassifierScorer(str(tmp_path), label="watermark")
