"""Degrade ground-truth renders to find where the exact judge stops being exact.

A generator's images are not clean renders: edges blur, pixels are noisy, colours drift, objects
are cut by others. The judge is exact inside the world's operating limits
(``lenslib.world.spec``); these functions push images out of them, one kind of damage at a time,
while the *truth* stays fixed (a blurred red circle is still a red circle). The accuracy of the
judge on degraded ground truth, per level, shows where it breaks and why the suites are generated
only inside its limits. Used in chapter 5.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from lenslib.atomic import atomic_output_dir
from lenslib.eval.judge import judge
from lenslib.world.render import render
from lenslib.world.spec import BACKGROUNDS, scene_from_metadata

DEGRADATIONS = ("blur", "noise", "color_jitter", "occlusion")
# Levels chapter 5 sweeps (units in each function's docstring); 0 is the clean render.
DEFAULT_LEVELS = {
    "blur": (0.0, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0),
    "noise": (0.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0),
    "color_jitter": (0.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0),
    "occlusion": (0.0, 0.05, 0.1, 0.2, 0.3, 0.4),
}


def blur(image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur, ``sigma`` in pixels (of a 64 px image, objects are >= 8 px thick)."""
    return image if sigma <= 0 else image.filter(ImageFilter.GaussianBlur(radius=sigma))


def noise(image: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    """Additive Gaussian pixel noise, standard deviation ``sigma`` in 0-255 units."""
    if sigma <= 0:
        return image
    arr = np.asarray(image.convert("RGB"), np.float32)
    arr = arr + np.random.default_rng(seed).normal(0.0, sigma, arr.shape)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def color_jitter(image: Image.Image, amount: float, seed: int = 0) -> Image.Image:
    """A colour cast: each RGB channel of the whole image shifted by U(-amount, amount) (0-255)."""
    if amount <= 0:
        return image
    arr = np.asarray(image.convert("RGB"), np.float32)
    shift = np.random.default_rng(seed).uniform(-amount, amount, 3).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(arr + shift), 0, 255).astype(np.uint8))


def occlusion(image: Image.Image, scene, fraction: float, seed: int = 0) -> Image.Image:
    """Cover ``fraction`` of each object's box with a background-coloured rectangle at a random
    corner, as when one object hides part of another (the world never draws that)."""
    if fraction <= 0:
        return image
    rng = np.random.default_rng(seed)
    out = np.asarray(image.convert("RGB")).copy()
    H, W = out.shape[:2]
    color = np.array(BACKGROUNDS[scene.background], np.uint8)
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box[0] * W, obj.box[1] * H, obj.box[2] * W, obj.box[3] * H
        side = np.sqrt(fraction)  # a rectangle with the box's proportions and `fraction` of its area
        w, h = (x1 - x0) * side, (y1 - y0) * side
        left, top = rng.integers(2), rng.integers(2)
        cx0 = x0 if left else x1 - w
        cy0 = y0 if top else y1 - h
        out[int(round(cy0)) : int(round(cy0 + h)), int(round(cx0)) : int(round(cx0 + w))] = color
    return Image.fromarray(out)


def degrade(image: Image.Image, kind: str, level: float, scene=None, seed: int = 0) -> Image.Image:
    """Apply one degradation of ``DEGRADATIONS`` at ``level`` (``scene`` is needed for occlusion)."""
    if kind == "blur":
        return blur(image, level)
    if kind == "noise":
        return noise(image, level, seed)
    if kind == "color_jitter":
        return color_jitter(image, level, seed)
    if kind == "occlusion":
        if scene is None:
            raise ValueError("occlusion needs the scene (it covers part of each object's box)")
        return occlusion(image, scene, level, seed)
    raise ValueError(f"unknown degradation {kind!r}; choose one of {DEGRADATIONS}")


def degrade_folder(src, out, kind: str, level: float, seed: int = 0, overwrite: bool = False):
    """Copy a GenEval-layout folder with every sample degraded (a stand-in for a worse generator).

    Occlusion needs each image's scene, which a folder does not keep, so it is not offered here.
    Written atomically; refuses a non-empty ``out`` unless ``overwrite``. Returns ``out``.
    """
    if kind == "occlusion":
        raise ValueError("occlusion needs the scenes; use degrade() on renders you made from scenes")
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"image folder {src} does not exist")
    with atomic_output_dir(out, overwrite) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        for i, png in enumerate(sorted(tmp.glob("*/samples/*.png"))):
            with Image.open(png) as im:
                image = im.convert("RGB")
            degrade(image, kind, level, seed=seed * 1_000_003 + i).save(png)
    return Path(out)


def degradation_sweep(
    lines: list[dict],
    kinds=DEGRADATIONS,
    levels: dict | None = None,
    vocab: str = "shapes",
    size: int = 64,
    per_prompt: int = 1,
    seed: int = 0,
) -> list[dict]:
    """Judge accuracy on degraded ground-truth renders of ``lines``, per kind, level and tag.

    Each line is laid out ``per_prompt`` times (``scene_from_metadata``), rendered at ``size``,
    degraded, and judged against its own line. Returns rows ``{kind, level, tag, accuracy, n}``.
    """
    levels = levels or DEFAULT_LEVELS
    renders = []
    for i, line in enumerate(lines):
        for k in range(per_prompt):
            scene = scene_from_metadata(
                line, vocab, int(np.random.SeedSequence([seed, i, k]).generate_state(1)[0])
            )
            renders.append((line, scene, render(scene, size, size), 1000 * i + k))
    rows = []
    for kind in kinds:
        for level in levels[kind]:
            hits: dict[str, list[bool]] = {}
            for line, scene, image, s in renders:
                verdict = judge(degrade(image, kind, level, scene, seed=s), line, vocab)
                hits.setdefault(line["tag"], []).append(bool(verdict.correct))
            for tag, h in hits.items():
                rows.append(
                    {
                        "kind": kind,
                        "level": float(level),
                        "tag": tag,
                        "accuracy": float(np.mean(h)),
                        "n": len(h),
                    }
                )
    return rows


def breaking_level(rows: list[dict], kind: str) -> float | None:
    """The smallest level of ``kind`` at which any tag drops below 100 %, or None if none does."""
    bad = sorted(r["level"] for r in rows if r["kind"] == kind and r["accuracy"] < 1.0)
    return bad[0] if bad else None


__all__ = [
    "DEGRADATIONS",
    "DEFAULT_LEVELS",
    "blur",
    "noise",
    "color_jitter",
    "occlusion",
    "degrade",
    "degrade_folder",
    "degradation_sweep",
    "breaking_level",
]
