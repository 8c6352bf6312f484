"""Every chapter executes on CPU with its default parameters (one test per chapter, wall time recorded)."""

from __future__ import annotations

import time
from pathlib import Path

import jupytext
import nbclient
import pytest
import yaml

from conftest import CHAPTER_TIMES, REPO_ROOT

BOOK = REPO_ROOT / "book"
# Chapters are the MyST notebooks (front matter with a kernelspec); plain pages such as intro.md are not run.
CHAPTERS = sorted(p for p in BOOK.glob("*.md") if "kernelspec:" in p.read_text()[:500])


def _toc_files() -> list[str]:
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for entry in toc.get("chapters", []):
        files.append(entry["file"])
        files.extend(section["file"] for section in entry.get("sections", []))
    return files


def test_every_chapter_is_in_the_toc():
    listed = set(_toc_files())
    missing = [c.relative_to(REPO_ROOT).with_suffix("").as_posix() for c in CHAPTERS
               if c.relative_to(REPO_ROOT).with_suffix("").as_posix() not in listed]
    assert not missing, f"chapters missing from _toc.yml: {missing}"


def test_every_chapter_has_one_parameters_cell():
    for chapter in CHAPTERS:
        nb = jupytext.read(chapter)
        tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{chapter.name} needs exactly one cell tagged 'parameters' (papermill)"


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_chapter_executes(chapter: Path, record_property):
    nb = jupytext.read(chapter)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=900, resources={"metadata": {"path": str(BOOK)}}
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    CHAPTER_TIMES[chapter.stem] = seconds
    record_property("wall_seconds", round(seconds, 1))
    print(f"{chapter.stem}: {seconds:.1f} s")
