"""Sphinx extension for the Lens companion's book: built pages must work offline.

- MathJax is served from the book's own ``_static`` folder (copied from the pinned
  ``django-static-mathjax`` package) instead of a CDN, so formulas render with no network.
- jupyter-book 1.0.4 registers sphinx-thebe's configuration script twice, which makes every page
  raise ``Identifier 'THEBE_JS_URL' has already been declared``; duplicates are dropped here.
- Each chapter's execution time is printed when the build ends and saved to
  ``_build/html/execution_times.json``, so ``make book`` reports what every chapter costs on the
  machine that built it (the page ``book/execution_times`` shows the same figures).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mathjax  # django-static-mathjax
from myst_nb.sphinx_ import NbMetadataCollector
from sphinx.util import logging

logger = logging.getLogger(__name__)

MATHJAX_FILE = "tex-svg-full.js"  # all TeX extensions bundled: nothing is fetched on demand


def _mathjax_source() -> Path:
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
        key = (
            getattr(script, "filename", None) or "",
            repr(sorted(getattr(script, "attributes", {}).items())),
        )
        if key in seen:
            continue
        seen.add(key)
        unique.append(script)
    context["script_files"] = unique


def execution_times(env) -> dict[str, dict]:
    """Per executed document: seconds and success, from MyST-NB's execution metadata."""
    times = {}
    for docname, data in sorted(NbMetadataCollector.get_doc_data(env).items()):
        exec_data = data.get("exec_data")
        if exec_data and exec_data.get("runtime") is not None:
            times[docname] = {"seconds": round(exec_data["runtime"], 1), "succeeded": exec_data["succeeded"]}
    return times


def _report_execution_times(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    times = execution_times(app.env)
    if not times:
        return  # nothing executed in this build (cached or execution off)
    width = max(len(name) for name in times)
    lines = [
        f"  {name:<{width}s} {t['seconds']:8.1f} s{'' if t['succeeded'] else '  FAILED'}"
        for name, t in times.items()
    ]
    total = sum(t["seconds"] for t in times.values())
    lines.append(f"  {'total':<{width}s} {total:8.1f} s")
    logger.info("chapter execution times (this machine):\n" + "\n".join(lines))
    target = Path(app.outdir) / "execution_times.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"chapters": times, "total_seconds": round(total, 1)}, indent=1) + "\n")
    os.replace(tmp, target)


def setup(app):
    app.connect("config-inited", _use_local_mathjax, priority=900)
    app.connect("build-finished", _copy_mathjax)
    app.connect("build-finished", _report_execution_times)
    app.connect("html-page-context", _drop_duplicate_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
