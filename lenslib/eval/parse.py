"""Parse an image of the synthetic world back into objects by inverting the renderer.

GenEval reads images with a learned detector (Mask2Former) and a learned colour classifier (CLIP),
so its judge has an error rate of its own. In the synthetic world we wrote the renderer, so the
reader can be exact: every step below undoes one step of ``lenslib.world.render``.

1. *Palette quantisation* (``lenslib.eval.palette``). Each pixel is snapped to the nearest of
   {background, 10 palette colours} in CIELAB, with background distances weighted by
   ``BACKGROUND_BIAS`` so that blurred thin parts stay in the silhouette. The background colour is
   the median of the image border (scenes keep off the border), so grey backgrounds and their
   textures all read as background.
2. *Connected components* (scikit-image ``label``, 8-connected) of the non-background pixels; specks
   of a few pixels (noise) are dropped, and components whose boxes lie closer than ``MERGE`` of the
   image along both axes are merged (an emoji may be drawn in separate strokes; distinct objects are
   at least ``GAP`` apart). Groups thinner than ``MIN_DETECTION_SIDE`` are text or noise, not objects.
3. *Coverage.* Around each group, every pixel is unmixed into background, the object's colour and
   the black outline (``pixel = bg + a_fill (colour - bg) + a_ink (black - bg)``), using the colours
   the palette entries actually have in this image. Coverage is linear in the image, so blur moves
   it around but keeps its total (the object's area) and its centroid.
4. *Template matching.* For every class, a box with the class's aspect ratio is fitted to that area
   and centroid, the renderer's own sprite is drawn into it and compared with the coverage by soft
   IoU; the boxes of the closest classes are then refined pixel by pixel and the best one wins.
   A clean render matches its class with score 1. White objects are the exception: on grey, white
   fill and black outline blur into background grey, so they are matched on their projection on
   the white axis (fill +1, outline about -1) after a light smoothing of both sides.
5. *Colour* (``lenslib.eval.palette.vote_color``). The majority palette colour over the matched
   sprite's fill pixels (black wins only when no other colour reaches ``FILL_COLOR_SHARE`` of them,
   since the outline is black).

Within the operating limits of ``lenslib.world.spec`` the parse of a render equals its spec
(``tests/test_eval_judge.py`` checks thousands of fresh random scenes per vocabulary), and it still
does under the perturbations documented in ``lenslib.eval.judge``. Used in chapter 5.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from scipy.ndimage import binary_dilation, binary_fill_holes, gaussian_filter
from skimage.measure import label, regionprops

from lenslib.eval.palette import (
    background_color,
    core_pixels,
    observed_palette,
    quantize,
    to_array,
    vote_color,
)
from lenslib.world.spec import COLORS, GAP, MIN_SHORT_SIDE, vocab_classes
from lenslib.world.sprites import master as sprite_master
from lenslib.world.sprites import sprite, sprite_aspect

__all__ = ["Detection", "parse", "MERGE", "MIN_DETECTION_SIDE"]

MERGE = GAP / 2  # parts closer than this (fraction of the image, along both axes) are one object
MIN_DETECTION_SIDE = 0.095  # thinner groups are text or noise (objects are >= MIN_SHORT_SIDE thick)
ASPECT_PENALTY = 0.3  # per unit of |log(class aspect / silhouette box aspect)|, when choosing a class
MIN_SCORE = 0.5  # groups that match no sprite this well are not objects
REFINE_MARGIN = 0.05  # classes this close to the best coarse fit are refined before one is chosen
FILL_COLOR_SHARE = 0.3  # share of a sprite's fill pixels a colour needs to beat the black outline
assert MIN_DETECTION_SIDE < MIN_SHORT_SIDE


@dataclasses.dataclass(frozen=True, eq=False)
class Detection:
    """One parsed object. ``box`` is in fractions of the image (like ``SceneObject.box``),
    ``box_px`` in pixels (end-exclusive), ``mask`` the boolean (H, W) pixels of its silhouette,
    ``score`` the match score (1.0 for a clean render of the class, below ``MIN_SCORE`` = not an
    object)."""

    cls: str
    color: str
    box: tuple[float, float, float, float]
    box_px: tuple[int, int, int, int]
    mask: np.ndarray = dataclasses.field(repr=False)
    score: float = 1.0

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def to_dict(self) -> dict:
        return {
            "class": self.cls,
            "color": self.color,
            "box": [round(v, 4) for v in self.box],
            "box_px": list(self.box_px),
            "score": round(self.score, 4),
        }


def _groups(fg: np.ndarray, H: int, W: int) -> list[list]:
    """Connected components of ``fg`` (specks removed), merged when their boxes are near."""
    lab = label(fg, connectivity=2)
    speck = max(2, round(3 * H * W / 4096))
    regions = [r for r in regionprops(lab) if r.area > speck]
    mx, my = MERGE * W, MERGE * H
    parent = list(range(len(regions)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    boxes = [r.bbox for r in regions]  # (y0, x0, y1, x1)
    for i in range(len(regions)):
        for j in range(i + 1, len(regions)):
            a, b = boxes[i], boxes[j]
            gx = max(a[1], b[1]) - min(a[3], b[3])
            gy = max(a[0], b[0]) - min(a[2], b[2])
            if gx < mx and gy < my:
                parent[find(i)] = find(j)
    out: dict[int, list] = {}
    for i, r in enumerate(regions):
        out.setdefault(find(i), []).append(r)
    return list(out.values())


@functools.lru_cache(maxsize=4096)
def _template(vocab: str, cls: str, w: int, h: int, filled: bool) -> np.ndarray:
    """The sprite's coverage at w x h; ``filled`` closes its holes (used for white objects)."""
    alpha = sprite(vocab, cls, w, h)[0]
    if filled:
        alpha = np.maximum(alpha, binary_fill_holes(alpha >= 0.5).astype(np.float32))
    return alpha


@functools.lru_cache(maxsize=None)
def _template_stats(vocab: str, cls: str, filled: bool) -> tuple[float, float, float]:
    """(mean coverage, centroid x, centroid y) of a class's sprite, as fractions of its box."""
    alpha, _ = sprite_master(vocab, cls)
    if filled:
        alpha = np.maximum(alpha, binary_fill_holes(alpha >= 0.5).astype(np.float32))
    h, w = alpha.shape
    mass = float(alpha.sum())
    cx = float((alpha.sum(0) * (np.arange(w) + 0.5)).sum() / mass / w)
    cy = float((alpha.sum(1) * (np.arange(h) + 0.5)).sum() / mass / h)
    return mass / (w * h), cx, cy


def _unmix(diff: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """How far each pixel's offset from the background goes along ``direction`` (0 where the colour *is* the
    background: an image outside the world, e.g. a flat palette colour, has no such object)."""
    norm2 = float(direction @ direction)
    return diff @ (direction / norm2) if norm2 > 1e-6 else np.zeros(diff.shape[:-1], np.float32)


def _coverage(
    arr: np.ndarray, bg: tuple[int, int, int], color: str, palette: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """Per-pixel coverage of an object painted ``color`` with a black outline over ``bg``.

    Each pixel is unmixed linearly as ``bg + a_fill (colour - bg) + a_ink (black - bg)``; the
    coverage ``a_fill + a_ink`` is linear in the image, so blur moves it around without changing
    its total (the object's area) or its centroid.
    """
    palette = palette if palette is not None else {k: np.asarray(v, np.float32) for k, v in COLORS.items()}
    b = np.asarray(bg, np.float32)
    diff = arr.astype(np.float32) - b
    ink = palette["black"] - b
    a_ink = _unmix(diff, ink)
    if color == "black":
        return a_ink
    fill = palette[color] - b
    a_fill = _unmix(diff, fill)
    cos = float(fill @ ink) / (np.linalg.norm(fill) * np.linalg.norm(ink) + 1e-6)
    if cos < -0.9:
        # white on grey: fill and ink lie on one line through the background, so a pixel can be
        # unmixed only by its side of the background (a blurred fill/ink edge reads as background)
        return np.where(a_fill > 0, a_fill, a_ink)
    coef = diff @ np.linalg.pinv(np.stack([fill, ink], 1)).T  # (..., 2): fill and ink fractions
    return coef.sum(-1)


def _soft_iou(tmpl: np.ndarray, pos: np.ndarray, total_pos: float, X0: int, Y0: int) -> float:
    """Soft IoU (sum of minima / sum of maxima) of a template placed at (X0, Y0) and a coverage crop."""
    th, tw = tmpl.shape
    ch, cw = pos.shape
    ax0, ay0, ax1, ay1 = max(X0, 0), max(Y0, 0), min(X0 + tw, cw), min(Y0 + th, ch)
    if ax1 <= ax0 or ay1 <= ay0:
        return 0.0
    inter = float(np.minimum(pos[ay0:ay1, ax0:ax1], tmpl[ay0 - Y0 : ay1 - Y0, ax0 - X0 : ax1 - X0]).sum())
    return inter / (total_pos + float(tmpl.sum()) - inter)


def _refine(score_fn, box: list[int], score: float, steps=(-1, 1)) -> tuple[list[int], float]:
    """Move each edge of an integer box by ``steps`` pixels while the score improves."""
    improved = True
    while improved:
        improved = False
        for k in range(4):
            for step in steps:
                cand = list(box)
                cand[k] += step
                if cand[2] - cand[0] < 1 or cand[3] - cand[1] < 1:
                    continue
                sc = score_fn(*cand)
                if sc > score + 1e-9:
                    box, score, improved = cand, sc, True
    return box, score


@functools.lru_cache(maxsize=4096)
def _signed_template(vocab: str, cls: str, w: int, h: int, ink: float, smooth: bool = True) -> np.ndarray:
    """Expected signed projection of a white object's pixels on the white axis: fill +1, ink ``ink``
    (smoothed and padded by SMOOTH_PAD when ``smooth``)."""
    alpha, paint = sprite(vocab, cls, w, h)
    t = paint + (alpha - paint) * ink
    return _smooth(np.pad(t, SMOOTH_PAD)) if smooth else t


SMOOTH_SIGMA = 0.7  # px; white objects are compared after both sides are smoothed, so that a
SMOOTH_PAD = 2  # slightly blurred image still matches its crisp template


def _smooth(a: np.ndarray) -> np.ndarray:
    return gaussian_filter(a, SMOOTH_SIGMA, mode="constant")


def _synth_score(tmpl: np.ndarray, obs: np.ndarray, total_obs: float, X0: int, Y0: int) -> float:
    """1 - L1(observed - template) / (L1(observed) + L1(template)): 1 when they agree exactly."""
    th, tw = tmpl.shape
    ch, cw = obs.shape
    ax0, ay0, ax1, ay1 = max(X0, 0), max(Y0, 0), min(X0 + tw, cw), min(Y0 + th, ch)
    total_t = float(np.abs(tmpl).sum())
    if ax1 <= ax0 or ay1 <= ay0:
        return 0.0
    o = obs[ay0:ay1, ax0:ax1]
    t = tmpl[ay0 - Y0 : ay1 - Y0, ax0 - X0 : ax1 - X0]
    # |o - t| inside the overlap, |o| elsewhere in the crop, |t| for the template outside the crop
    num = total_obs - float(np.abs(o).sum()) + float(np.abs(o - t).sum()) + total_t - float(np.abs(t).sum())
    return 1.0 - num / (total_obs + total_t)


def _classify(
    vocab: str,
    classes: list[str],
    cov: np.ndarray,
    obs_box: tuple[int, int, int, int],
    W: int,
    H: int,
    filled: bool = False,
    signed: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> tuple[str, float, tuple[int, int, int, int]]:
    """Best class for a coverage crop, its match score and its box (integer crop coordinates).

    For each class the box is fitted from the coverage's total and centroid (both blur-invariant)
    and the class's aspect ratio; the class's sprite is drawn into that box and compared with the
    coverage by soft IoU (sum of minima over sum of maxima). The boxes of the classes within
    ``REFINE_MARGIN`` of the best fit are then refined pixel by pixel, and the best refined match
    wins (similar sprites, a tie and a book, can swap places before refinement). For white objects
    (``signed`` = observed projection on the white axis, raw and smoothed, and the ink's value on
    it) the comparison is with the predicted fill/outline pattern instead: smoothed to choose the
    class, raw for the final pixel refinement of its box.
    """
    ch, cw = cov.shape
    mass = float(cov.sum())
    if mass <= 0:
        return classes[0], 0.0, (0, 0, cw, ch)
    obs_w, obs_h = obs_box[2] - obs_box[0], obs_box[3] - obs_box[1]
    cx = float((cov.sum(0) * (np.arange(cw) + 0.5)).sum() / mass)
    cy = float((cov.sum(1) * (np.arange(ch) + 0.5)).sum() / mass)
    pos = np.clip(cov, 0.0, 1.0)
    total_pos = float(pos.sum())
    if signed is not None:
        raw, obs, ink = signed
        total_obs = float(np.abs(obs).sum())

    def score_fn(cls, X0, Y0, X1, Y1):
        if signed is None:
            return _soft_iou(_template(vocab, cls, X1 - X0, Y1 - Y0, filled), pos, total_pos, X0, Y0)
        return _synth_score(
            _signed_template(vocab, cls, X1 - X0, Y1 - Y0, ink),
            obs,
            total_obs,
            X0 - SMOOTH_PAD,
            Y0 - SMOOTH_PAD,
        )

    candidates = []  # (score - penalty, class, score, box, penalty)
    for cls in classes:
        aspect = sprite_aspect(vocab, cls) * W / H
        if abs(math.log(aspect * obs_h / obs_w)) > 0.5:
            continue  # far from the observed aspect ratio
        m, tx, ty = _template_stats(vocab, cls, filled)
        h = math.sqrt(mass / (m * aspect))
        w = aspect * h
        if abs(math.log(w / obs_w)) > 0.4 or abs(math.log(h / obs_h)) > 0.4:
            continue  # the class's box would not fit the observed silhouette at all
        x0, y0 = cx - tx * w, cy - ty * h
        X0, Y0 = int(round(x0)), int(round(y0))
        X1, Y1 = max(X0 + 1, int(round(x0 + w))), max(Y0 + 1, int(round(y0 + h)))
        score = score_fn(cls, X0, Y0, X1, Y1)
        # a class whose shape needs a box unlike the silhouette's own box loses a little
        penalty = ASPECT_PENALTY * abs(math.log(aspect * obs_h / obs_w))
        candidates.append((score - penalty, cls, score, [X0, Y0, X1, Y1], penalty))
    candidates.sort(key=lambda c: -c[0])
    best_cls, best_score, best_box, best_chosen = classes[0], -1.0, [0, 0, cw, ch], -math.inf
    for chosen, cls, score, box, penalty in candidates:
        if chosen < candidates[0][0] - REFINE_MARGIN:
            break
        if score <= 0:
            continue
        # refine each close contender from the better of its fitted box and the silhouette's own
        # box, and choose on the refined scores (a coarse fit can favour a similar class)
        seed_score = score_fn(cls, *obs_box)
        if seed_score > score:
            box, score = list(obs_box), seed_score
        box, score = _refine(lambda *b, c=cls: score_fn(c, *b), box, score)
        if score - penalty > best_chosen:
            best_cls, best_score, best_box, best_chosen = cls, score, box, score - penalty
    if best_score > 0:
        if signed is not None:
            total_raw = float(np.abs(raw).sum())

            def raw_fn(X0, Y0, X1, Y1):
                return _synth_score(
                    _signed_template(vocab, best_cls, X1 - X0, Y1 - Y0, ink, False), raw, total_raw, X0, Y0
                )

            raw_box = max([best_box, list(obs_box)], key=lambda b: raw_fn(*b))
            best_box, _ = _refine(raw_fn, raw_box, raw_fn(*raw_box), steps=(-2, -1, 1, 2))
    return best_cls, best_score, tuple(best_box)


def _color(vocab: str, cls: str, idx_crop: np.ndarray, pure: np.ndarray) -> str:
    """Colour vote over the sprite's fill pixels; black only if no colour reaches FILL_COLOR_SHARE."""
    h, w = idx_crop.shape
    alpha, paint = sprite(vocab, cls, w, h)
    fill = (alpha >= 0.9) & (paint >= 0.8 * alpha)
    if not fill.any():
        fill = alpha >= 0.5
    return vote_color(np.where(fill, idx_crop, 0), pure & fill, FILL_COLOR_SHARE)


def parse(image, vocab: str = "shapes") -> list[Detection]:
    """Read a synthetic-world image (PIL image or H x W x 3 uint8 array) back into objects.

    Returns detections ordered by match score, then area (GenEval orders by detector confidence).
    Exact inside the operating limits of ``lenslib.world.spec``. Used in chapter 5.
    """
    classes = vocab_classes(vocab)
    arr = to_array(image)
    H, W = arr.shape[:2]
    bg = background_color(arr)
    idx = quantize(arr, bg)
    core = core_pixels(idx)
    palette = observed_palette(arr, idx, core)
    pad = 2
    dets: list[Detection] = []
    for group in _groups(idx != 0, H, W):
        y0 = min(r.bbox[0] for r in group)
        x0 = min(r.bbox[1] for r in group)
        y1 = max(r.bbox[2] for r in group)
        x1 = max(r.bbox[3] for r in group)
        if (x1 - x0) / W < MIN_DETECTION_SIDE or (y1 - y0) / H < MIN_DETECTION_SIDE:
            continue  # text or noise
        mask = np.zeros((H, W), bool)
        for r in group:
            ry0, rx0, ry1, rx1 = r.bbox
            mask[ry0:ry1, rx0:rx1] |= r.image
        # a crop around the group, its mask grown by `pad` px to catch blurred edges
        cy0, cx0, cy1, cx1 = max(0, y0 - pad), max(0, x0 - pad), min(H, y1 + pad), min(W, x1 + pad)
        near = binary_dilation(mask[cy0:cy1, cx0:cx1], np.ones((2 * pad + 1, 2 * pad + 1), bool))
        idx_crop = idx[cy0:cy1, cx0:cx1]
        # a first guess of the colour (before the class is known)
        rough = vote_color(np.where(mask[cy0:cy1, cx0:cx1], idx_crop, 0), core[cy0:cy1, cx0:cx1], 0.15)
        cov = _coverage(arr[cy0:cy1, cx0:cx1], bg, rough, palette) * near
        cov = np.clip(cov, -0.5, 1.5)
        filled = rough == "white" and vocab == "emoji"
        if filled:
            # white fill beside black outline blurs to grey, i.e. to background: read the inside of
            # a white emoji as solid and match it against hole-free sprites
            inside = binary_fill_holes(mask[cy0:cy1, cx0:cx1])
            cov = np.where(inside, np.maximum(cov, 1.0), cov)
        signed = None
        if filled:
            white = palette["white"] - np.asarray(bg, np.float32)
            ink = float((palette["black"] - np.asarray(bg, np.float32)) @ white / (white @ white))
            obs = (arr[cy0:cy1, cx0:cx1].astype(np.float32) - np.asarray(bg, np.float32)) @ (
                white / (white @ white)
            )
            raw = np.clip(obs, -1.5, 1.5) * near
            signed = (raw, _smooth(raw), round(ink, 2))
        obs_box = (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)
        cls, score, (fx0, fy0, fx1, fy1) = _classify(vocab, classes, cov, obs_box, W, H, filled, signed)
        if score < MIN_SCORE:
            continue  # a blob that no class explains: not an object of this vocabulary
        bx0, by0, bx1, by1 = fx0 + cx0, fy0 + cy0, fx1 + cx0, fy1 + cy0
        # colour from the sprite's fill pixels, placed at the fitted box
        sx0, sy0, sx1, sy1 = max(bx0, 0), max(by0, 0), min(bx1, W), min(by1, H)
        full = np.zeros((by1 - by0, bx1 - bx0), np.int8)
        full[sy0 - by0 : sy1 - by0, sx0 - bx0 : sx1 - bx0] = np.where(
            mask[sy0:sy1, sx0:sx1], idx[sy0:sy1, sx0:sx1], 0
        )
        pure = np.zeros(full.shape, bool)
        pure[sy0 - by0 : sy1 - by0, sx0 - bx0 : sx1 - bx0] = core[sy0:sy1, sx0:sx1]
        color = _color(vocab, cls, full, pure)
        dets.append(
            Detection(cls, color, (bx0 / W, by0 / H, bx1 / W, by1 / H), (bx0, by0, bx1, by1), mask, score)
        )
    dets.sort(key=lambda d: (-round(d.score, 6), -d.area, d.box_px))
    return dets
