"""Aspect-ratio buckets for mixed-resolution training (paper §2.2, stage 2).

Lens trains stage 2 on 27 buckets: 3 base areas (512², 768², 1024²) × 9 aspect ratios from 1:2 to 2:1,
sides multiples of 32. The paper lists three examples per area (352×704, 544×1088, 736×1472 for 1:2);
they pin down the rounding rule: the *short* side is sqrt(area / long_over_short) rounded to the nearest
multiple of 32, and the long side is the short side times the ratio, again rounded to 32. (Rounding the two
sides independently would give 352×736 for 512² at 1:2, which the paper does not list.)

Every image goes to the bucket whose aspect ratio is nearest in log space within its base area, then is
resized so it covers the bucket and centre-cropped; nothing is padded. :func:`training_buckets` is a run's
table of (bucket, per-rank batch) pairs, which :func:`lenslib.data.order.plan` draws from. Used in chapter 1,
by :mod:`lenslib.data.sampler` and by the trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

# (width, height) ratio terms, portrait to landscape, as in the paper: 1:2 … 2:1.
ASPECT_RATIOS: tuple[tuple[int, int], ...] = (
    (1, 2),
    (9, 16),
    (2, 3),
    (3, 4),
    (1, 1),
    (4, 3),
    (3, 2),
    (16, 9),
    (2, 1),
)
BASE_SIDES: tuple[int, ...] = (512, 768, 1024)
# Per-GPU batch sizes per base area (paper §2.2): equal wall-clock per step across ranks.
BATCH_SIZES: dict[int, int] = {512: 24, 768: 10, 1024: 6}
MULTIPLE = 32


@dataclass(frozen=True)
class Bucket:
    """One training resolution. ``base`` is the side of the square base area (512, 768 or 1024)."""

    width: int
    height: int
    base: int
    ratio: tuple[int, int]

    @property
    def name(self) -> str:
        return f"{self.base}/{self.ratio[0]}:{self.ratio[1]}/{self.width}x{self.height}"

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def batch_size(self) -> int:
        return BATCH_SIZES.get(self.base, 1)


def _round(x: float, multiple: int) -> int:
    return max(multiple, int(math.floor(x / multiple + 0.5)) * multiple)


def bucket_size(base: int, ratio: tuple[int, int], multiple: int = MULTIPLE) -> tuple[int, int]:
    """(width, height) for a base side and a w:h ratio: short side first, long side = short × ratio."""
    w, h = ratio
    r = Fraction(max(w, h), min(w, h))
    short = _round(math.sqrt(base * base / float(r)), multiple)
    long = _round(short * float(r), multiple)
    return (short, long) if w <= h else (long, short)


def make_buckets(bases=BASE_SIDES, ratios=ASPECT_RATIOS, multiple: int = MULTIPLE) -> list[Bucket]:
    """The paper's 27 buckets by default (ordered by base area, then portrait → landscape)."""
    out = []
    for b in bases:
        for r in ratios:
            w, h = bucket_size(b, r, multiple)
            out.append(Bucket(w, h, b, tuple(r)))
    return out


LENS_BUCKETS: tuple[Bucket, ...] = tuple(make_buckets())


def nearest_bucket(width: int, height: int, buckets=LENS_BUCKETS, base: int | None = None) -> Bucket:
    """The bucket with the nearest aspect ratio (|log(w/h) - log(bw/bh)|).

    ``base`` picks the base area; by default the largest base area whose pixel count the image reaches,
    so small images are not upsampled to 1024² (the smallest base if none is reached).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    bases = sorted({b.base for b in buckets})
    if base is None:
        reached = [b for b in bases if width * height >= b * b]
        base = reached[-1] if reached else bases[0]
    cands = [b for b in buckets if b.base == base]
    if not cands:
        raise ValueError(f"no bucket with base {base}; bases are {bases}")
    la = math.log(width / height)
    return min(cands, key=lambda b: (abs(la - math.log(b.aspect)), b.width))


def resize_center_crop(image, bucket: Bucket):
    """Resize a PIL image so it covers ``bucket`` (keeping its aspect ratio), then centre-crop.

    Done in one resampling step on the centred crop box (``Image.resize(box=...)``), which is the same
    picture as resize-then-crop but never materialises the oversized intermediate (a 1×10000 image
    covering a 352×704 bucket would otherwise be resized to 352×3,520,000 first). Lanczos for
    downsampling, bicubic when enlarging. Returns a new PIL image of exactly the bucket size.
    """
    # lazy: PIL costs 0.17 s (python -X importtime); run configs import the bucket table
    from PIL import Image  # noqa: PLC0415

    W, H = image.size
    a = bucket.width / bucket.height
    cw, ch = (H * a, float(H)) if W / H > a else (float(W), W / a)
    left, top = (W - cw) / 2, (H - ch) / 2
    resample = Image.Resampling.LANCZOS if bucket.width < cw else Image.Resampling.BICUBIC
    return image.resize((bucket.width, bucket.height), resample, box=(left, top, left + cw, top + ch))


def assign_buckets(sizes, buckets=LENS_BUCKETS, base: int | None = None) -> list[int]:
    """Bucket index (into ``buckets``) for each (width, height) in ``sizes``."""
    buckets = list(buckets)
    index = {b: i for i, b in enumerate(buckets)}
    return [index[nearest_bucket(w, h, buckets, base)] for w, h in sizes]


def training_buckets(data, per_rank_batch: int | None = None) -> list[tuple[Bucket, int]]:
    """A run's resolutions and each one's per-rank batch, from its ``data`` section (a ``DataConfig``).

    Stage 1 (no ``data.buckets``): one square bucket of ``data.image_size`` with ``per_rank_batch`` (the
    rank's share of the global batch). Stage 2: the table of ``data.buckets`` (bases × ratios), each bucket
    with the batch of its base area (``data.buckets.batches``), the same on every rank.
    """
    if data.buckets is None:
        s = data.image_size
        return [(Bucket(s, s, s, (1, 1)), int(per_rank_batch or 0))]
    bk = data.buckets
    ratios = [tuple(int(x) for x in str(r).split(":")) for r in bk.ratios]
    table = make_buckets(bases=tuple(bk.bases), ratios=ratios, multiple=bk.multiple)
    return [(b, int(bk.batches[list(bk.bases).index(b.base)])) for b in table]
