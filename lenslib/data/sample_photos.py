"""Real photographs that ship inside scikit-image and scikit-learn (offline), as PIL images.

The book's funnel demo needs real photographs, and these are the ones every machine with the
environment has: no download. Used in chapter 1.
"""

from __future__ import annotations

import io

import numpy as np
import skimage.data as D
from PIL import Image, ImageEnhance, ImageFilter

# scikit-image sample images that are photographs or scans (not synthetic test patterns)
SKIMAGE_PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "coins",
    "moon",
    "brick",
    "grass",
    "gravel",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "horse",
    "page",
    "text",
    "clock",
    "colorwheel",
    "logo",
)


def sample_photographs(include: tuple = SKIMAGE_PHOTOS) -> dict:
    """{name: PIL image}: the scikit-image images in ``include`` plus scikit-learn's china and flower."""
    # lazy: sklearn.datasets costs 1.8 s (python -X importtime); only these two photographs need it
    from sklearn.datasets import load_sample_images  # noqa: PLC0415

    out = {}
    for name in include:
        a = getattr(D, name)()
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        out[name] = Image.fromarray(a)
    sk = load_sample_images()
    for fname, a in zip(sk.filenames, sk.images):
        out[fname.rsplit("/", 1)[-1].split(".")[0]] = Image.fromarray(a)
    return out


# What funnel_demo_inputs does to make each damaged copy (shown in chapter 1).
DAMAGE = {
    "rocket_blurred": "rocket, Gaussian blur of radius 5 px",
    "china_dark": "china at 7 % brightness",
    "flower_blown_out": "flower at 20× brightness (clipped to white)",
    "camera_two_tone": "camera thresholded at 200: black and white only",
    "astronaut_tiny": "astronaut resized to 128×128",
    "coffee_copy": "coffee resized to 540×360 and re-encoded as JPEG (quality 85)",
    "flat_grey": "a uniform grey 640×480 image",
    "empty_file": "a 0-byte file",
    "truncated_jpeg": "china as JPEG, cut after 5,000 bytes",
}


def encode(image, fmt: str = "PNG", **kw) -> bytes:
    """PIL image → encoded bytes (what a shard stores)."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def funnel_demo_inputs(photos: dict | None = None) -> dict:
    """{name: bytes}: the sample photographs as PNG plus the damaged copies described in :data:`DAMAGE`,
    one for each cleaning step to catch. Used in chapter 1."""
    p = sample_photographs() if photos is None else photos
    data = {name: encode(im) for name, im in p.items()}
    data["rocket_blurred"] = encode(p["rocket"].filter(ImageFilter.GaussianBlur(5)))
    data["china_dark"] = encode(ImageEnhance.Brightness(p["china"]).enhance(0.07))
    data["flower_blown_out"] = encode(ImageEnhance.Brightness(p["flower"]).enhance(20))
    data["camera_two_tone"] = encode(p["camera"].point(lambda v: 255 if v > 200 else 0))
    data["astronaut_tiny"] = encode(p["astronaut"].resize((128, 128)))
    data["coffee_copy"] = encode(p["coffee"].resize((540, 360)), "JPEG", quality=85)
    data["flat_grey"] = encode(Image.new("RGB", (640, 480), (128, 128, 128)))
    data["empty_file"] = b""
    data["truncated_jpeg"] = encode(p["china"], "JPEG")[:5000]
    return data
