"""Plotly figures for the data chapter: the funnel, dropped examples, image grids, caption lengths.

Kept in the library so chapters stay short and import only ``lenslib`` (plus plotly for showing).
Used in chapter 1.
"""

from __future__ import annotations

import base64
import io

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def _uri(image, side: int = 160) -> str:
    im = image.convert("RGB").copy()
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def funnel_figure(report, title: str = "Cleaning funnel"):
    """Images kept after each step (skipped steps greyed and labelled)."""
    steps = report.steps
    labels = [f"{s.name} (skipped)" if s.skipped else s.name for s in steps]
    colours = ["#bbbbbb" if s.skipped else "#4c78a8" for s in steps]
    fig = go.Figure(
        go.Funnel(
            y=["input"] + labels,
            x=[report.n_in] + [s.kept for s in steps],
            textinfo="value+percent initial",
            marker={"color": ["#72b7b2"] + colours},
        )
    )
    fig.update_layout(title=title, height=120 + 40 * len(steps), margin=dict(l=160, r=20, t=50, b=20))
    return fig


def image_grid(items: list[tuple[str, object]], cols: int = 5, side: int = 160, title: str | None = None):
    """A grid of (title, PIL image or base64 PNG) pairs."""
    if not items:
        fig = go.Figure()
        fig.update_layout(title=(title or "") + " (none)", height=80)
        return fig
    rows = -(-len(items) // cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[t for t, _ in items],
        horizontal_spacing=0.02,
        vertical_spacing=0.12 / max(1, rows),
    )
    for i, (_, im) in enumerate(items):
        src = ("data:image/png;base64," + im) if isinstance(im, str) else _uri(im, side)
        fig.add_trace(go.Image(source=src), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=10)
    fig.update_layout(title=title, height=60 + 190 * rows, margin=dict(l=10, r=10, t=60, b=10))
    return fig


def dropped_examples_figure(report, per_step: int = 4, cols: int = 5):
    """Thumbnails of dropped images, titled with the step, key and score."""
    items = []
    for s in report.steps:
        for e in s.examples[:per_step]:
            if e.get("thumb"):
                score = "" if e.get("score") is None else f" {e['score']:.3g}"
                items.append((f"{s.name}: {e['key']}{score}", e["thumb"]))
    return image_grid(items, cols=cols, title="Dropped examples (step: image score)")
