"""Input shards for the pipeline tests: sharp photos-like images plus every kind of bad input."""

import io

import numpy as np
from PIL import Image, ImageFilter

from lenslib.data.shards import images_to_shards


def photo(seed, w=400, h=400):
    rng = np.random.default_rng(seed)
    low = np.asarray(
        Image.fromarray(rng.integers(0, 256, (max(1, h // 32), max(1, w // 32), 3), dtype=np.uint8)).resize(
            (w, h), Image.Resampling.BICUBIC
        ),
        dtype=np.float64,
    )
    return Image.fromarray(np.clip(low * 0.7 + rng.normal(0, 25, (h, w, 3)) + 30, 0, 255).astype(np.uint8))


def enc(im, fmt="PNG", **kw):
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def make_inputs(folder):
    """3 tar shards (7 + 7 + 5), 19 samples. Expected funnel: corrupt −2 (zero, garbage), size −1 (tall),
    blur −1 (blurry), near_dup −1 (dup_p1 of p1, across shards) → 14 kept."""
    items, caps = {}, {}
    for i in range(4):
        items[f"p{i}"] = enc(photo(i))
        caps[f"p{i}"] = f"photo number {i}"
    items["zero"] = b""
    items["garbage"] = b"GIF89a but not really" * 3
    items["cmyk"] = enc(photo(20).convert("CMYK"), "JPEG", quality=90)
    rgba = photo(21).convert("RGBA")
    rgba.putalpha(200)
    items["rgba"] = enc(rgba)
    for i in range(4, 7):
        items[f"p{i}"] = enc(photo(i))
    items["dup_p1"] = enc(photo(1), "JPEG", quality=92)
    items["tall"] = enc(Image.new("RGB", (1, 10000), (120, 130, 140)))
    g = (np.asarray(photo(22).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    items["i16"] = enc(Image.fromarray(g))
    items["nonutf8"] = enc(photo(23))
    caps["nonutf8"] = b"caf\xe9 au lait \xff"
    for i in range(7, 10):
        items[f"p{i}"] = enc(photo(i))
    items["blurry"] = enc(photo(24).filter(ImageFilter.GaussianBlur(6)))
    return images_to_shards(items, folder, per_shard=7, captions=caps)


EXPECTED = {
    "n_in": 19,
    "corrupt": 2,
    "size": 1,
    "blur": 1,
    "entropy": 0,
    "exposure": 0,
    "near_dup": 1,
    "n_out": 14,
}
