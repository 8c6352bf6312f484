"""The exact judge: GenEval's scoring rules applied to objects read back by inverting the renderer.

GenEval (``evaluation/evaluate_images.py``) detects objects with Mask2Former, names their colours
with CLIP and then applies simple rules to a metadata line (read by
``lenslib.world.metadata.MetadataLine``). Here the detector is
``lenslib.eval.parse.parse``, which is exact on the synthetic world, and the rules are GenEval's:

- every ``include`` clause needs at least ``count`` objects of its class (of its ``color`` if
  given); a ``position: [relation, j]`` clause needs each of those objects to stand in that
  relation (GenEval's centre-offset rule, in pixels, ``lenslib.world.position.relation``) to every
  object matched by include clause ``j``, and fails with "no target" when clause ``j`` failed;
- every ``exclude`` clause fails when ``count`` or more objects of its class are present;
- an image is correct only if every clause holds; ``reason`` lists the failures in GenEval's words.

One deliberate difference: GenEval colours only the ``count`` most confident detections of a class
and asks that enough of *those* have the colour, so a correct object can be hidden by a confident
wrong one. Our parse has no confidence worth ranking on, so a colour clause counts the objects of
the class that have the colour (pass ``top_k_colors=True`` for GenEval's variant, ranking by match
score then area).

Operating limits and tolerance. Inside the limits of ``lenslib.world.spec`` (image side >= 64 px
for shapes, >= 128 px for emoji, aspect <= 2:1, at most 6 non-touching objects, ...) the parse of
a render equals its spec: ``tests/test_eval_judge.py`` checks >= 2,000 fresh random scenes per
vocabulary each run. Generated images are never as crisp, so the parse is also tested to stay exact
(classes, colours and counts; boxes within 2 px) under each of these perturbations:

- Gaussian blur: sigma <= 0.6 px for shapes at 64 px (about 1 % of the image side); for emoji at
  128 px, sigma <= 0.5 px, or <= 0.3 px when white objects are present (white fill beside a black
  outline blurs to the grey of the background, so white emoji lose their inner drawing first);
- additive Gaussian noise: std <= 10 (0-255 scale);
- colour jitter: per-channel gain and offset, each up to +-4 % (offset as a fraction of 255).

Outside these, the judge still answers, but its answers are no longer guaranteed: ``Verdict``
records ``within_limits`` for the image size. Used in chapter 5.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from typing import Any, Sequence

import numpy as np

from lenslib.eval.parse import Detection, parse
from lenslib.world.metadata import MetadataLine
from lenslib.world.position import relation
from lenslib.world.spec import Scene, within_limits
from lenslib.world.vocab import COLORS

__all__ = [
    "ClauseResult",
    "Verdict",
    "judge",
    "match_scene",
    "score_scene_images",
    "MAX_OBJECTS_PER_CLASS",
    "BLUR_TOLERANCE",
    "NOISE_TOLERANCE",
    "JITTER_TOLERANCE",
]

MAX_OBJECTS_PER_CLASS = 16  # GenEval keeps at most 16 detections per class
# Documented tolerance of the parse (see the module docstring; tested in tests/test_eval_judge.py).
# vocab -> (image side, max Gaussian sigma in px, max sigma when white objects are present)
BLUR_TOLERANCE = {"shapes": (64, 0.6, 0.6), "emoji": (128, 0.5, 0.3)}
NOISE_TOLERANCE = 10.0  # std of additive Gaussian noise, 0-255 scale
JITTER_TOLERANCE = 0.04  # per-channel gain and offset (fraction of 255)


@dataclasses.dataclass(frozen=True)
class ClauseResult:
    """The outcome of one metadata clause: ``kind`` is "include" or "exclude"."""

    kind: str
    index: int
    clause: dict
    ok: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "index": self.index,
            "clause": self.clause,
            "ok": self.ok,
            "reason": self.reason,
        }


@dataclasses.dataclass(frozen=True)
class Verdict:
    """GenEval-style result for one image: ``correct``, a readable ``reason`` (one line per failed
    clause, empty when correct), the parsed ``detections`` and the ``per_clause`` results."""

    correct: bool
    reason: str
    detections: tuple[Detection, ...]
    per_clause: tuple[ClauseResult, ...]
    within_limits: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "correct": self.correct,
            "reason": self.reason,
            "detections": [d.to_dict() for d in self.detections],
            "per_clause": [c.to_dict() for c in self.per_clause],
            "within_limits": self.within_limits,
        }


def _image_size(image) -> tuple[int, int]:
    if hasattr(image, "size") and not isinstance(image, np.ndarray):
        return image.size
    arr = np.asarray(image)
    return arr.shape[1], arr.shape[0]


def _px(det: Detection, width: int, height: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = det.box
    return (x0 * width, y0 * height, x1 * width, y1 * height)


def judge(
    image,
    metadata_line: dict | MetadataLine,
    vocab: str = "shapes",
    *,
    top_k_colors: bool = False,
    detections: Sequence[Detection] | None = None,
) -> Verdict:
    """Score one image against one GenEval metadata line with GenEval's rules (see module doc).

    ``image`` is a PIL image or an H x W x 3 uint8 array; ``detections`` may be passed to reuse a
    parse. The line is read by ``lenslib.world.metadata.MetadataLine.from_dict``, which raises
    ``ValueError`` naming the clause for an unknown class, colour or relation.
    """
    line = MetadataLine.from_dict(metadata_line, vocab)
    width, height = _image_size(image)
    inside = within_limits(vocab, width, height)
    if not inside:
        warnings.warn(
            f"a {width} x {height} image is outside the judge's operating limits for {vocab!r} "
            "(see lenslib.world.spec); its verdict is not guaranteed exact",
            stacklevel=2,
        )
    dets = list(parse(image, vocab) if detections is None else detections)
    objects: dict[str, list[Detection]] = {}
    for d in dets:  # already ordered by match score, then area (GenEval: by confidence)
        objects.setdefault(d.cls, []).append(d)
    objects = {k: v[:MAX_OBJECTS_PER_CLASS] for k, v in objects.items()}

    results: list[ClauseResult] = []
    matched_groups: list[list[Detection] | None] = []
    for i, req in enumerate(line.include):
        cls, count = req.cls, req.count
        found = objects.get(cls, [])
        reason, ok = "", True
        if len(found) < count:
            ok, reason = False, f"expected {cls}>={count}, found {len(found)}"
        elif req.color is not None:
            color = req.color
            pool = found[:count] if top_k_colors else found
            colors = [d.color for d in pool]
            if colors.count(color) < count:
                ok = False
                reason = (
                    f"expected {color} {cls}>={count}, found {colors.count(color)} {color}; and "
                    + ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                )
            else:
                found = [d for d in pool if d.color == color]
        found = found[:count]
        if ok and req.position is not None:
            expected_rel, target = req.position
            if matched_groups[target] is None:
                ok, reason = False, f"no target for {cls} to be {expected_rel}"
            else:
                for obj in found:
                    for tgt in matched_groups[target]:
                        true_rels = relation(_px(obj, width, height), _px(tgt, width, height))
                        if expected_rel not in true_rels:
                            ok = False
                            reason = (
                                f"expected {cls} {expected_rel} target, found "
                                f"{' and '.join(sorted(true_rels))} target"
                            )
                            break
                    if not ok:
                        break
        matched_groups.append(found if ok else None)
        results.append(ClauseResult("include", i, req.to_dict(), ok, reason))
    for i, req in enumerate(line.exclude):
        n = len(objects.get(req.cls, []))
        ok = n < req.count
        reason = "" if ok else f"expected {req.cls}<{req.count}, found {n}"
        results.append(ClauseResult("exclude", i, req.to_dict(), ok, reason))
    correct = all(r.ok for r in results)
    return Verdict(
        correct, "\n".join(r.reason for r in results if not r.ok), tuple(dets), tuple(results), inside
    )


# --- comparing a parse with its scene ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SceneMatch:
    """How a parse compares with the scene that was (supposed to be) drawn."""

    exact: bool  # same objects (class, colour), boxes within tolerance
    true_positives: int
    missing: tuple[str, ...]
    extra: tuple[str, ...]

    @property
    def precision(self) -> float:
        n = self.true_positives + len(self.extra)
        return self.true_positives / n if n else 1.0

    @property
    def recall(self) -> float:
        n = self.true_positives + len(self.missing)
        return self.true_positives / n if n else 1.0


def match_scene(
    detections: Sequence[Detection], scene: Scene, width: int, height: int, box_tol_px: float = 2.0
) -> SceneMatch:
    """Match detections to the scene's objects one-to-one (same class and colour, nearest box).

    ``exact`` also requires every matched box to lie within ``box_tol_px`` of the spec's box.
    """
    # lazy: scipy.optimize adds 0.09 s to importing the judge (python -X importtime); only this needs it
    from scipy.optimize import linear_sum_assignment  # noqa: PLC0415

    objs = list(scene.objects)
    dets = list(detections)
    scale = np.array([width, height, width, height], float)
    if objs and dets:
        ob = np.array([o.box for o in objs]) * scale
        db = np.array([d.box for d in dets]) * scale
        dist = np.abs(ob[:, None] - db[None]).max(-1)
        same = np.array([[o.cls == d.cls and o.color == d.color for d in dets] for o in objs])
        rows, cols = linear_sum_assignment(np.where(same, dist, 1e6))
        pairs = [(r, c) for r, c in zip(rows, cols) if same[r, c]]
    else:
        pairs, dist = [], None
    used_o, used_d = {r for r, _ in pairs}, {c for _, c in pairs}
    missing = tuple(f"{objs[i].color} {objs[i].cls}" for i in range(len(objs)) if i not in used_o)
    extra = tuple(f"{dets[j].color} {dets[j].cls}" for j in range(len(dets)) if j not in used_d)
    boxes_ok = all(dist[r, c] <= box_tol_px for r, c in pairs)
    return SceneMatch(not missing and not extra and boxes_ok, len(pairs), missing, extra)


def score_scene_images(images, scenes: Sequence[Scene]) -> dict[str, float]:
    """Scene-level exact scores of generated images against the scenes they were asked to show.

    ``images``: a float tensor/array (B, 3, H, W) in [-1, 1] (a pipeline's output), or a list of
    PIL images / uint8 arrays. Returns the fraction of images whose parse matches the scene exactly
    (objects, colours, boxes within 2 px), and object precision and recall. Used while training.
    """
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1] == 3:
        arrs = list(np.clip(np.rint((images + 1) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))
    else:
        arrs = [np.asarray(im.convert("RGB")) if hasattr(im, "convert") else np.asarray(im) for im in images]
    if len(arrs) != len(scenes):
        raise ValueError(f"got {len(arrs)} images for {len(scenes)} scenes")
    matches = []
    for arr, scene in zip(arrs, scenes):
        h, w = arr.shape[:2]
        matches.append(match_scene(parse(arr, scene.vocab), scene, w, h))
    n = max(1, len(matches))
    return {
        "n": len(matches),
        "scene_exact": sum(m.exact for m in matches) / n,
        "object_precision": float(np.mean([m.precision for m in matches])) if matches else 1.0,
        "object_recall": float(np.mean([m.recall for m in matches])) if matches else 1.0,
    }


def verdict_json(verdict: Verdict) -> str:
    """One JSON line for a verdict (GenEval writes ``correct`` and ``reason`` per image)."""
    return json.dumps(verdict.to_dict())
