"""`make course`: chapters become course notebooks with trimmed prose, no outputs, and blank answers."""

from __future__ import annotations

import jupytext
import nbformat

from lenslib.course import _blank_answers, _trim, chapters, course_notebook, write_course


def test_trim_keeps_headings_lists_and_first_sentences():
    md = "## Title\n\nFirst sentence. Second sentence is gone.\n\n- a list item\n- another"
    out = _trim(md)
    assert "## Title" in out and "First sentence." in out and "- another" in out
    assert "Second sentence" not in out


def test_course_variant_of_every_chapter(tmp_path):
    written = write_course(tmp_path / "course")
    assert [p.stem for p in written] == [c.stem for c in chapters()]
    for chapter, path in zip(chapters(), written):
        nb = nbformat.read(path, as_version=4)
        original = jupytext.read(chapter)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
        code_in = sum(c.cell_type == "code" for c in original.cells)
        assert sum(c.cell_type == "code" for c in nb.cells) == code_in  # no code cell lost
        prose_in = sum(len(c.source) for c in original.cells if c.cell_type == "markdown")
        prose_out = sum(len(c.source) for c in nb.cells if c.cell_type == "markdown")
        assert prose_out < prose_in
        text = "\n".join(c.source for c in nb.cells)
        assert "## Exercises" in text
        exercises = text.split("## Exercises", 1)[1]
        assert "assert" in exercises, f"{chapter.name}: exercises need self-check cells"


def test_answers_are_blanked_but_checks_kept():
    nb = course_notebook(chapters()[0])
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    assert any("answer_1 = None  # your answer" in s for s in sources)
    assert not any("answer_1 = ablation" in s for s in sources)
    assert any(s.startswith("# self-check") and "assert" in s for s in sources)


def test_blanking_keeps_the_setup_lines_of_an_answer_cell():
    cell = 'answer_2 = {"left of",\n            "above"}\ncircle = make(1)\n'
    assert _blank_answers(cell) == "answer_2 = None  # your answer\ncircle = make(1)"
    assert _blank_answers("x = 1") is None
