"""Sphinx extension for the Lens companion's book: built pages must work offline.

- MathJax is served from the book's own ``_static`` folder (copied from the pinned
  ``django-static-mathjax`` package) instead of a CDN, so formulas render with no network.
- jupyter-book 1.0.4 registers sphinx-thebe's configuration script twice, which makes every page
  raise ``Identifier 'THEBE_JS_URL' has already been declared``; duplicates are dropped here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

MATHJAX_FILE = "tex-svg-full.js"  # all TeX extensions bundled: nothing is fetched on demand


def _mathjax_source() -> Path:
    import mathjax  # django-static-mathjax

    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / MATHJAX_FILE


def _use_local_mathjax(app, config):
    config.mathjax_path = f"mathjax/{MATHJAX_FILE}"


def _copy_mathjax(app, exception):
    if exception is None and app.builder.format == "html":
        target = Path(app.outdir) / "_static" / "mathjax" / MATHJAX_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_mathjax_source(), target)


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", None) or "", repr(sorted(getattr(script, "attributes", {}).items())))
        if key in seen:
            continue
        seen.add(key)
        unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("config-inited", _use_local_mathjax, priority=900)
    app.connect("build-finished", _copy_mathjax)
    app.connect("html-page-context", _drop_duplicate_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
