"""An interactive scene composer: pick objects, see the render, its captions and the judge's parse.

The widget is a thin view over :func:`compose`, a pure function, so the same thing can be tested
headlessly and driven from code. It lives with evaluation because it shows the judge's reader at work. Used
in chapter 5.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass

from lenslib.eval.parse import parse
from lenslib.world.caption_reading import coverage
from lenslib.world.captions import CAPTION_KINDS, caption
from lenslib.world.render import render
from lenslib.world.spec import (
    BACKGROUNDS,
    COLORS,
    OBJECT_SIDE,
    TEXTURES,
    Scene,
    SceneObject,
    class_aspect,
    vocab_classes,
)

SLOTS = 3  # objects the composer offers


@dataclass
class Composition:
    """What the composer shows for one scene."""

    scene: Scene
    image: object  # PIL.Image
    captions: dict[str, str]
    recall: dict[str, float]
    detections: list[dict]
    parse_matches_spec: bool

    def _repr_html_(self) -> str:  # shown as image + captions + parse in a notebook
        buf = io.BytesIO()
        self.image.save(buf, format="PNG")
        src = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        side = 3 * self.image.size[0] // 2
        return (
            f'<div style="display:flex;gap:1em"><img src="{src}" width="{side}" '
            f'style="image-rendering:pixelated"/><div>{composition_html(self)}</div></div>'
        )


def box_at(cx: float, cy: float, side: float, aspect: float = 1.0) -> tuple[float, float, float, float]:
    """A box centred at (cx, cy) with longer side ``side`` and width/height ``aspect``, kept inside."""
    w, h = (side, side / aspect) if aspect >= 1 else (side * aspect, side)
    x0, y0 = min(max(cx - w / 2, 0.0), 1 - w), min(max(cy - h / 2, 0.0), 1 - h)
    return (round(x0, 4), round(y0, 4), round(x0 + w, 4), round(y0 + h, 4))


def compose(
    objects: list[dict],
    vocab: str = "shapes",
    background: str = "gray",
    texture: str | None = None,
    size: int = 128,
    seed: int = 0,
) -> Composition:
    """Render ``objects`` (dicts with ``cls``, ``color``, ``cx``, ``cy``, ``side``), caption the scene
    every way, and parse the render back with the exact judge's reader."""

    objs = tuple(
        SceneObject(o["cls"], o["color"], box_at(o["cx"], o["cy"], o["side"], class_aspect(vocab, o["cls"])))
        for o in objects
    )
    scene = Scene(vocab, objs, background, texture)
    image = render(scene, size, size)
    caps = {k: caption(scene, k, seed) for k in CAPTION_KINDS}
    recall = {k: coverage(scene, c).recall for k, c in caps.items()}
    dets = [
        {"class": d.cls, "color": d.color, "box": [round(v, 3) for v in d.box]} for d in parse(image, vocab)
    ]
    truth = sorted((o.cls, o.color) for o in objs)
    return Composition(
        scene, image, caps, recall, dets, sorted((d["class"], d["color"]) for d in dets) == truth
    )


def composition_html(c: Composition) -> str:
    """The composer's text panel as HTML."""
    rows = "".join(
        f"<tr><td><b>{k}</b></td><td>{c.recall[k]:.0%}</td><td>{html.escape(v)}</td></tr>"
        for k, v in c.captions.items()
    )
    dets = ", ".join(f"{d['color']} {d['class']}" for d in c.detections) or "nothing"
    verdict = "matches the spec" if c.parse_matches_spec else "differs from the spec (outside the limits?)"
    return (
        f"<table><tr><th>caption</th><th>recall</th><th>text</th></tr>{rows}</table>"
        f"<p><b>judge's parse:</b> {html.escape(dets)} &mdash; {verdict}</p>"
    )


def scene_composer(vocab: str = "shapes", size: int = 128):
    """An ipywidgets panel: up to ``SLOTS`` objects (class, colour, position, size), background and
    texture; shows the render, the four captions with their coverage recall, and the parse."""
    import ipywidgets as W  # noqa: PLC0415 (lazy: 124 ms, python -X importtime; only this panel needs it)

    classes = vocab_classes(vocab)
    colors = list(COLORS)
    defaults = [
        (classes[0], "red", 0.25, 0.3),
        (classes[1 % len(classes)], "blue", 0.72, 0.3),
        (classes[2 % len(classes)], "yellow", 0.5, 0.75),
    ]
    slots = []
    for i, (cls, color, cx, cy) in enumerate(defaults[:SLOTS]):
        slots.append(
            {
                "on": W.Checkbox(value=i < 2, description=f"object {i + 1}", indent=False),
                "cls": W.Dropdown(options=classes, value=cls, layout=W.Layout(width="130px")),
                "color": W.Dropdown(options=colors, value=color, layout=W.Layout(width="100px")),
                "cx": W.FloatSlider(
                    value=cx, min=0.15, max=0.85, step=0.01, description="x", readout_format=".2f"
                ),
                "cy": W.FloatSlider(
                    value=cy, min=0.15, max=0.85, step=0.01, description="y", readout_format=".2f"
                ),
                "side": W.FloatSlider(
                    value=0.28, min=OBJECT_SIDE[0], max=OBJECT_SIDE[1], step=0.01, description="size"
                ),
            }
        )
    background = W.Dropdown(options=list(BACKGROUNDS), value="gray", description="background")
    texture = W.Dropdown(options=[None, *TEXTURES], value=None, description="texture")
    seed = W.IntSlider(value=0, min=0, max=20, description="seed")
    image = W.Image(format="png", width=size * 2, height=size * 2)
    text = W.HTML()

    def update(*_):
        objects = [
            {k: s[k].value for k in ("cls", "color", "cx", "cy", "side")} for s in slots if s["on"].value
        ]
        try:
            c = compose(objects, vocab, background.value, texture.value, size, seed.value)
        except ValueError as err:
            text.value = f"<p><b>invalid scene:</b> {html.escape(str(err))}</p>"
            return
        buf = io.BytesIO()
        c.image.save(buf, format="PNG")
        image.value = buf.getvalue()
        text.value = composition_html(c)

    for s in slots:
        for w in s.values():
            w.observe(update, names="value")
    for w in (background, texture, seed):
        w.observe(update, names="value")
    update()
    rows = [W.HBox([s["on"], s["cls"], s["color"], s["cx"], s["cy"], s["side"]]) for s in slots]
    return W.VBox([*rows, W.HBox([background, texture, seed]), W.HBox([image, text])])
