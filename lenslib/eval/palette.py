"""The palette side of reading an image: which of the world's colours each pixel shows.

The renderer (``lenslib.world.render``) paints every object in one of GenEval's ten colours
(``lenslib.world.vocab.COLORS``) with a black outline on a grey background. These functions undo
that painting for the image parser (``lenslib.eval.parse``): they find the background, snap each
pixel to the nearest palette colour in CIELAB, measure the colours a generated image actually uses,
and vote an object's colour from its pixels. Used in chapter 5.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image
from skimage.color import rgb2lab

from lenslib.world.vocab import COLORS

__all__ = [
    "BACKGROUND_BIAS",
    "PALETTE_NAMES",
    "background_color",
    "core_pixels",
    "observed_palette",
    "quantize",
    "to_array",
    "vote_color",
]

BACKGROUND_BIAS = 1.6  # a pixel is background only if 1.6x closer to it than to any colour, so that
# blurred thin parts stay in the silhouette
PALETTE_NAMES: tuple[str, ...] = ("background",) + tuple(COLORS)


@functools.lru_cache(maxsize=16)
def _palette_lab(bg: tuple[int, int, int]) -> np.ndarray:
    rgb = np.array([bg] + list(COLORS.values()), dtype=np.float64)[None] / 255.0
    return rgb2lab(rgb)[0].astype(np.float32)


def to_array(image) -> np.ndarray:
    """An RGB uint8 array of a PIL image or an H x W x 3 array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (PIL or H x W x 3 array), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return arr


def background_color(arr: np.ndarray) -> tuple[int, int, int]:
    """Median colour of the one-pixel image border (scenes keep objects away from the border)."""
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).reshape(-1, 3)
    return tuple(int(v) for v in np.median(border, axis=0))


@functools.lru_cache(maxsize=64)
def _lut(bg: tuple[int, int, int]) -> np.ndarray:
    """Nearest palette index for every colour on a 32^3 RGB grid (5 bits per channel)."""
    levels = (np.arange(32, dtype=np.float64) * 8 + 4) / 255.0
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(1, -1, 3)
    lab = rgb2lab(grid)[0].astype(np.float32)
    pal = _palette_lab(tuple(bg))
    d = np.sqrt(((lab[:, None, :] - pal[None]) ** 2).sum(-1))
    d[:, 0] *= BACKGROUND_BIAS
    return d.argmin(-1).astype(np.int8)


def quantize(arr: np.ndarray, bg: tuple[int, int, int] | None = None) -> np.ndarray:
    """Index map (H, W): 0 = background, 1..10 = ``COLORS`` in order, nearest in CIELAB
    (background distances weighted by ``BACKGROUND_BIAS``).

    Pixels are looked up on a 5-bit-per-channel grid (a colour moves by at most 4/255 per
    channel, far below the palette's spacing)."""
    bg = background_color(arr) if bg is None else bg
    q = (arr >> 3).astype(np.int32)
    return _lut(tuple(bg))[(q[..., 0] << 10) | (q[..., 1] << 5) | q[..., 2]]


def core_pixels(idx: np.ndarray) -> np.ndarray:
    """Pixels whose four neighbours share their (non-background) index: away from edges, where a
    colour mixes with its surroundings (orange beside a black outline averages to brown)."""
    core = np.zeros(idx.shape, bool)
    c = idx[1:-1, 1:-1]
    core[1:-1, 1:-1] = (
        (c == idx[:-2, 1:-1]) & (c == idx[2:, 1:-1]) & (c == idx[1:-1, :-2]) & (c == idx[1:-1, 2:]) & (c != 0)
    )
    return core


def observed_palette(arr: np.ndarray, idx: np.ndarray, core: np.ndarray) -> dict[str, np.ndarray]:
    """The colour each palette entry actually has in this image (median of its core pixels), so
    that coverage stays right when a generator shifts colours slightly."""
    out = {name: np.asarray(rgb, np.float32) for name, rgb in COLORS.items()}
    flat, codes = arr[core], idx[core]
    for k in np.unique(codes):
        sel = codes == k
        if np.count_nonzero(sel) >= 8:
            out[PALETTE_NAMES[k]] = np.median(flat[sel], axis=0).astype(np.float32)
    return out


def vote_color(idx: np.ndarray, pure: np.ndarray, share: float) -> str:
    """The colour of a set of pixels: the commonest non-black colour among the ``pure`` (core) ones
    (among all, if none is pure), if it covers ``share`` of all non-background pixels; else black.

    Ranking on core pixels keeps edge mixtures out (orange beside a black outline averages to
    brown); the share on all pixels keeps thin fills (white skis) from losing to their outline."""
    n = len(PALETTE_NAMES)
    black = PALETTE_NAMES.index("black")
    votes = np.bincount(idx.ravel().astype(np.int64), minlength=n)
    votes[0] = 0
    ranked = np.bincount(idx[pure].astype(np.int64), minlength=n)
    ranked[0] = ranked[black] = 0
    if ranked.max() == 0:
        ranked = votes.copy()
        ranked[black] = 0
    cand = int(ranked.argmax())
    if votes[cand] > 0 and votes[cand] >= share * votes.sum():
        return PALETTE_NAMES[cand]
    return "black"
