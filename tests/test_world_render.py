"""Renderer: determinism, sizes, flat colours, recoloured emoji, backgrounds and texts."""

from __future__ import annotations

import numpy as np
import pytest

from lenslib.world import spec
from lenslib.world.render import TEXTURE_AMPLITUDE, pixel_box, render
from lenslib.world.spec import BACKGROUNDS, COLORS, Scene, SceneObject, TextItem, sample_scene


@pytest.mark.parametrize("vocab", spec.VOCABS)
@pytest.mark.parametrize("size", [(64, 64), (96, 48), (50, 100), (257, 129)])
def test_render_is_deterministic_at_any_size(vocab, size):
    scene = sample_scene(11, vocab, max_objects=5, text_prob=1.0, texture_prob=1.0)
    a, b = render(scene, *size), render(scene, *size)
    assert a.size == size and a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    other = sample_scene(12, vocab, max_objects=5)
    assert render(other, *size).tobytes() != a.tobytes()


def test_render_defaults_to_square_and_rejects_bad_sizes():
    scene = sample_scene(0, "shapes")
    assert render(scene, 80).size == (80, 80)
    for bad in [(0, 10), (10, -1), (10.5, 10)]:
        with pytest.raises(ValueError, match="positive integers"):
            render(scene, *bad)


@pytest.mark.parametrize("color", list(COLORS))
def test_shapes_are_flat_fills_of_the_exact_palette_colour(color):
    scene = Scene("shapes", (SceneObject("square", color, (0.25, 0.25, 0.75, 0.75)),), background="gray")
    img = np.asarray(render(scene, 64)).astype(int)
    assert (img[17:47, 17:47] == COLORS[color]).all()  # inside the 16..48 px box, one pixel in
    assert (img[:10] == BACKGROUNDS["gray"]).all()
    assert (img[:, :10] == BACKGROUNDS["gray"]).all()


def _unmix(pixels: np.ndarray, bg, color) -> np.ndarray:
    """Least-squares residual of pixel = bg + a (color - bg) + b (black - bg)."""
    b = np.asarray(bg, float)
    m = np.stack([np.asarray(color, float) - b, -b], 1)
    d = pixels.reshape(-1, 3).astype(float) - b
    coef, *_ = np.linalg.lstsq(m, d.T, rcond=None)
    return np.abs(m @ coef - d.T).max(0)


@pytest.mark.parametrize("cls", ["apple", "bus", "cat", "umbrella"])
@pytest.mark.parametrize("color", ["red", "blue", "yellow"])
def test_emoji_are_recoloured_black_outline_plus_object_colour(cls, color):
    box = (
        0.2,
        0.2,
        0.2 + 0.5 * min(1, spec.class_aspect("emoji", cls)),
        0.2 + 0.5 / max(1, spec.class_aspect("emoji", cls)),
    )
    scene = Scene("emoji", (SceneObject(cls, color, box),), background="cool gray")
    img = np.asarray(render(scene, 256))
    x0, y0, x1, y1 = pixel_box(box, 256, 256)
    region = img[y0:y1, x0:x1]
    # every pixel is a mix of background, the object's colour and black: the glyph's own colours are gone
    assert _unmix(region, BACKGROUNDS["cool gray"], COLORS[color]).max() < 4
    exact_fill = (np.abs(region.astype(int) - COLORS[color]).max(-1) <= 2).mean()
    outline = (region.max(-1) <= 8).mean()
    assert exact_fill > 0.15 and outline > 0.05


def test_colour_is_never_implied_by_the_class():
    def silhouette(color):
        scene = Scene("emoji", (SceneObject("banana", color, (0.1, 0.1, 0.5, 0.55)),))
        img = np.asarray(render(scene, 128)).astype(int)
        return (np.abs(img - BACKGROUNDS["gray"]).max(-1) > 0), img

    sil_red, red = silhouette("red")
    for color in ["green", "purple", "white", "black"]:
        sil, img = silhouette(color)
        assert (sil == sil_red).all()
        assert not (img == red).all()


@pytest.mark.parametrize("texture", spec.TEXTURES)
@pytest.mark.parametrize("background", list(BACKGROUNDS))
def test_backgrounds_are_neutral_and_textures_subtle(texture, background):
    img = np.asarray(render(Scene("shapes", (), background, texture), 96, 64)).astype(float)
    dev = img - np.asarray(BACKGROUNDS[background], float)
    assert np.abs(dev).max() <= TEXTURE_AMPLITUDE + 0.5
    assert img.std(axis=(0, 1)).max() > 1.0  # it is a texture, not a flat colour
    assert np.allclose(dev[..., 0], dev[..., 1], atol=1) and np.allclose(dev[..., 1], dev[..., 2], atol=1)
    plain = np.asarray(render(Scene("shapes", (), background), 96, 64)).astype(int)
    assert (plain == BACKGROUNDS[background]).all()


def test_text_is_drawn_inside_its_box_in_its_colour():
    box = (0.1, 0.45, 0.6, 0.52)
    scene = Scene("shapes", (), texts=(TextItem("LENS", box, "yellow"),))
    img = np.asarray(render(scene, 256)).astype(int)
    changed = np.abs(img - BACKGROUNDS["gray"]).max(-1) > 0
    x0, y0, x1, y1 = pixel_box(box, 256, 256)
    assert changed.sum() > 50
    assert not changed[:y0].any() and not changed[y1:].any()
    assert not changed[:, :x0].any() and not changed[:, x1:].any()
    assert (np.abs(img[changed] - COLORS["yellow"]).max(-1) <= 2).sum() > 10


def test_pixel_box_rounds_and_keeps_one_pixel():
    assert pixel_box((0.1, 0.2, 0.5, 0.6), 100, 50) == (10, 10, 50, 30)
    assert pixel_box((0.5, 0.5, 0.501, 0.501), 10, 10) == (5, 5, 6, 6)
