"""Setup shared by every chapter of the book, and the book <-> package version pin.

Every chapter starts with ``lenslib.book_setup()``. It makes plotly figures survive into the built HTML
offline (plotly's default renderer emits a mime type jupyter-book drops; ours inlines plotly.js into
the page once and leaves MathJax to the book), fixes the thread count, and quiets noisy library warnings.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import plotly.io as pio
from IPython.display import display
from plotly.io._base_renderers import NotebookRenderer

from lenslib import __version__
from lenslib.paths import REPO_ROOT

PIN_FILE = REPO_ROOT / "book" / "requirements.txt"


def book_setup(threads: int | None = None, quiet: bool = True) -> dict:
    """Configure plotly, torch threads and warnings for a chapter; returns what was set.

    Used at the top of every chapter.
    """
    pio.renderers.default = _register_plotly_renderer()  # inlines plotly.js: figures render offline
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if quiet:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*TqdmWarning.*")
    # lazy: torch costs 1.8 s (python -X importtime); the version pin (chapter 0, tests) needs none of it
    import torch  # noqa: PLC0415

    threads = threads or min(2, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return {"plotly_renderer": pio.renderers.default, "torch_threads": threads, "lenslib": __version__}


def pinned_version(pin_file: Path = PIN_FILE) -> str:
    """The lenslib version the book is written against (``book/requirements.txt``)."""
    match = re.search(r"^lenslib==(\S+)\s*$", pin_file.read_text(), flags=re.M)
    if match is None:
        raise ValueError(f"{pin_file} must contain a line 'lenslib==<version>'")
    return match.group(1)


def check_version_pin(pin_file: Path = PIN_FILE) -> str:
    """Fail loudly when the installed lenslib is not the one the book was written for.

    A book and a library that drift apart is d2l's most reported reader problem; chapter 0 calls this.
    """
    pinned = pinned_version(pin_file)
    if pinned != __version__:
        raise RuntimeError(
            f"This book is pinned to lenslib=={pinned} but lenslib {__version__} is installed. "
            f"Run `pip install -e .` from the repository that holds this book, or check out the book "
            f"version that matches lenslib {__version__}."
        )
    return pinned


def explorer(fn, **controls):
    """Sliders for ``fn``: its first view is ordinary cell output, later views redraw under the controls.

    ``controls`` maps each keyword of ``fn`` to an ipywidgets control. ``fn`` runs once with the controls'
    values while the cell executes, so a headless run (papermill, nbclient, the book build) records that view
    as plain output and the built HTML shows it. Moving a control re-runs ``fn`` into an ``Output`` widget
    below the controls. ``ipywidgets.interactive`` would instead capture the first view into its ``Output``
    widget while the cell runs, and a headless executor sometimes never sees that cell finish
    (jupyter/nbclient#312): nothing is captured here until a reader moves a control. Used in chapters 1 and 3.
    """
    # lazy: ipywidgets costs 0.15 s (python -X importtime); only the sliders of chapters 1 and 3 need it
    import ipywidgets as widgets  # noqa: PLC0415

    out = widgets.Output()

    def values() -> dict:
        return {name: control.value for name, control in controls.items()}

    def redraw(_change=None):
        with out:
            out.clear_output(wait=True)
            fn(**values())

    for control in controls.values():
        control.observe(redraw, names="value")
    fn(**values())
    display(widgets.VBox([widgets.HBox(list(controls.values())), out]))


class LiveFigure:
    """A plotly figure redrawn in place while a cell runs (chapter 4's live loss curve).

    ``display(fig)`` of a plotly figure always emits a *new* output (plotly's ``_ipython_display_`` ignores
    display ids), so redrawing that way stacks every half-drawn state in the saved notebook and the built
    page. Here the figure's mime bundle is displayed once under a display id and each :meth:`update`
    replaces that output: a live kernel shows the curve growing, and an executed notebook (the built
    book, papermill) keeps one output holding the final figure.
    """

    def __init__(self, fig):
        self.fig = fig
        self.handle = display(self._bundle(), raw=True, display_id=True)

    def _bundle(self) -> dict:
        return self.fig._repr_mimebundle_(include=None, exclude=None)  # the current default renderer's bundle

    def update(self) -> None:
        """Replace the displayed figure with the current state of ``fig``."""
        self.handle.update(self._bundle(), raw=True)


#: plotly.js is inlined into this kernel's output once (BookRenderer.activate).
_PLOTLY_ACTIVATED: list[bool] = []


def _register_plotly_renderer() -> str:
    """A plotly renderer for the built book: plotly.js inlined once per page, MathJax left to the book.

    plotly's ``notebook`` renderer adds a MathJax ``<script>`` from a CDN to every figure, which fails
    offline (a console error on every page); the book ships its own MathJax (``book/_ext``).
    """

    class BookRenderer(NotebookRenderer):
        def activate(self):
            # plotly activates a renderer named in a figure's _repr_mimebundle_ on every call, and each
            # activation inlines plotly.js (4.8 MB) again: a redrawn figure (LiveFigure) would repeat it.
            # Once per kernel.
            if not _PLOTLY_ACTIVATED:
                _PLOTLY_ACTIVATED.append(True)
                super().activate()

        def to_mimebundle(self, fig_dict):
            html = pio.to_html(
                fig_dict,
                config=self.config,
                include_plotlyjs=False,
                include_mathjax=False,
                full_html=False,
                default_width="100%",
                default_height=525,
                validate=False,
            )
            return {"text/html": html}

    pio.renderers["lens_book"] = BookRenderer()
    return "lens_book"
