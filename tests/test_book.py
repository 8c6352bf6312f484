"""Every chapter executes on CPU with its default parameters (one test per chapter, wall time recorded)."""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest
from book_utils import CHAPTERS, REPO_ROOT, execute_chapter, toc_files
from conftest import CHAPTER_TIMES


def test_every_chapter_is_in_the_toc():
    listed = set(toc_files())
    missing = [
        c.relative_to(REPO_ROOT).with_suffix("").as_posix()
        for c in CHAPTERS
        if c.relative_to(REPO_ROOT).with_suffix("").as_posix() not in listed
    ]
    assert not missing, f"chapters missing from _toc.yml: {missing}"


def test_every_chapter_has_one_parameters_cell():
    for chapter in CHAPTERS:
        nb = jupytext.read(chapter)
        tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{chapter.name} needs exactly one cell tagged 'parameters' (papermill)"


def test_no_chapter_captures_widget_output_while_it_runs():
    # interact/interactive draw into an Output widget during the cell, which can stall a headless run for the
    # whole cell timeout (jupyter/nbclient#312); lenslib.book.explorer draws the first view as plain output.
    for chapter in CHAPTERS:
        code = "\n".join(c.source for c in jupytext.read(chapter).cells if c.cell_type == "code")
        for pattern in ("interactive(", "interact(", "interact_manual(", "with widgets.Output", "Output()"):
            assert pattern not in code, (
                f"{chapter.name} uses {pattern!r}: draw sliders with lenslib.book.explorer"
            )


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_chapter_executes(chapter: Path, record_property):
    seconds = execute_chapter(chapter)
    CHAPTER_TIMES[chapter.stem] = seconds
    record_property("wall_seconds", round(seconds, 1))
    print(f"{chapter.stem}: {seconds:.1f} s")


def test_every_chapter_has_the_same_structure():
    # objectives, prerequisites, (body), summary, exercises whose answers a self-check cell asserts
    marks = ["**Objectives**", "**Prerequisites:**", "\n## Summary", "\n## Exercises"]
    for chapter in CHAPTERS:
        text = chapter.read_text()
        positions = [text.find(mark) for mark in marks]
        assert -1 not in positions, f"{chapter.name} lacks {marks[positions.index(-1)].strip()!r}"
        assert positions == sorted(positions), f"{chapter.name}: sections out of order, expected {marks}"
        exercises = text[positions[-1] :]
        assert "answer_" in exercises and "assert " in exercises, (
            f"{chapter.name}: exercises need answer_* variables checked by a self-check cell"
        )
