"""`make book`'s build step on a one-chapter book: plotly figures survive, execution times are reported, a
broken cell fails the build."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap

import pytest
from conftest import REPO_ROOT

HEADER = (REPO_ROOT / "book" / "00_lens_in_one_page.md").read_text().split("# 0.")[0]


def _mini_book(tmp_path, chapter_name: str, chapter_text: str):
    (tmp_path / "book").mkdir()
    shutil.copy(REPO_ROOT / "_config.yml", tmp_path / "_config.yml")
    shutil.copytree(REPO_ROOT / "book" / "_ext", tmp_path / "book" / "_ext")
    (tmp_path / "_toc.yml").write_text(f"format: jb-book\nroot: book/{chapter_name}\n")
    (tmp_path / "book" / f"{chapter_name}.md").write_text(chapter_text)
    return subprocess.run(
        ["make", "-C", str(REPO_ROOT), "book-build", f"BOOK_ROOT={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_built_page_contains_plotly_figure_and_library(tmp_path):
    chapter = (REPO_ROOT / "book" / "00_lens_in_one_page.md").read_text()
    result = _mini_book(tmp_path, "00_lens_in_one_page", chapter)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = (tmp_path / "_build" / "html" / "book" / "00_lens_in_one_page.html").read_text()
    assert (tmp_path / "_build" / "html" / "index.html").exists()
    assert "Plotly.newPlot" in html  # the figure's JSON is handed to plotly
    assert '"type":"scatter"' in html.replace(" ", "")  # ... the score-vs-size scatter
    assert "plotly.js v" in html  # plotly.js itself is inlined: renders offline
    assert "cdn.plot.ly/plotly" not in html
    # make book reports what the chapter cost to execute, on screen and in a file
    assert "chapter execution times" in result.stdout + result.stderr
    times = json.loads((tmp_path / "_build" / "html" / "execution_times.json").read_text())
    assert set(times["chapters"]) == {"book/00_lens_in_one_page"}
    assert times["chapters"]["book/00_lens_in_one_page"]["succeeded"] is True
    assert times["chapters"]["book/00_lens_in_one_page"]["seconds"] > 0


@pytest.mark.slow
def test_broken_cell_fails_the_build(tmp_path):
    broken = HEADER + textwrap.dedent("""
        # Broken

        ```{code-cell} ipython3
        raise RuntimeError("deliberately broken cell")
        ```
        """)
    result = _mini_book(tmp_path, "broken", broken)
    assert result.returncode != 0
    assert "deliberately broken cell" in result.stdout + result.stderr
