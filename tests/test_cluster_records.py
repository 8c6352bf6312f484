"""A finished run folder becomes a book page: summary in front of the executed notebook, never re-executed."""

from __future__ import annotations

import json
import shutil
import subprocess

import nbformat
import pytest
from conftest import REPO_ROOT

from lenslib.cluster.notebook import run_notebook
from lenslib.cluster.records import read_run, record_to_page, write_record_page

TRAIN_NB = REPO_ROOT / "lenslib" / "cluster" / "templates" / "train_run.md"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("records") / "tiny"
    result = run_notebook(
        TRAIN_NB, run_dir, {"preset": "cpu-tiny", "steps": 2, "save_every": 0}, log_output=False
    )
    assert result.status == "completed", result.error
    return run_dir


def test_page_summarises_the_run_from_its_files(finished_run):
    metrics = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    page = record_to_page(finished_run, title="tiny")
    summary = page.cells[0].source
    assert summary.startswith("# Run record: tiny")
    assert "| status | **completed** |" in summary
    assert "| steps | 2 |" in summary
    assert f"{metrics[0]['loss']:.4f} → {metrics[-1]['loss']:.4f}" in summary
    assert "| `steps` | `2` |" in summary
    assert page.metadata["mystnb"] == {"execution_mode": "off"}
    # the executed notebook follows, outputs included, its title demoted below the page title
    record = nbformat.read(finished_run / "run.ipynb", as_version=4)
    assert [c.source for c in page.cells[-len(record.cells) :]][1:] == [c.source for c in record.cells][1:]
    assert page.cells[-len(record.cells)].source.startswith("## Headless training run")
    assert any("final step 2" in o.get("text", "") for c in page.cells for o in c.get("outputs", []))
    html = [o for c in page.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert html and "Plotly.newPlot" in html[0]["data"]["text/html"]


def test_a_note_follows_the_summary_and_cannot_go_missing(finished_run, tmp_path, capsys):
    from lenslib.cli import main

    page = record_to_page(finished_run, title="tiny", note="Ran on two cores.\n\n# Resumed once")
    assert page.cells[1].source.startswith("## Notes on this run\n\nRan on two cores.")
    assert "\n## Resumed once" in page.cells[1].source  # its headings sit below the page title
    assert record_to_page(finished_run, title="tiny").cells[1].source != page.cells[1].source

    out = tmp_path / "page.ipynb"
    assert main(["record", str(finished_run), str(out), "--note", str(tmp_path / "missing.md")]) == 2
    assert "--note" in capsys.readouterr().err and not out.exists()
    (tmp_path / "note.md").write_text("Arms ran side by side.")
    assert main(["record", str(finished_run), str(out), "--note", str(tmp_path / "note.md")]) == 0
    assert "Arms ran side by side." in nbformat.read(out, as_version=4).cells[1].source


# Deletes the module's run folder: keep it after every test that reads it.
def test_record_page_builds_into_the_book_without_rerunning(finished_run, tmp_path):
    book = tmp_path / "book"
    (book / "book").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "_config.yml", book / "_config.yml")
    if (REPO_ROOT / "book" / "_ext").is_dir():  # the book's local Sphinx extensions
        shutil.copytree(REPO_ROOT / "book" / "_ext", book / "book" / "_ext")
    (book / "_toc.yml").write_text("format: jb-book\nroot: book/tiny_run\n")
    write_record_page(finished_run, book / "book" / "tiny_run.ipynb", title="tiny")
    shutil.rmtree(finished_run)  # re-executing the page now would fail: the run folder is gone
    out = subprocess.run(
        ["make", "-C", str(REPO_ROOT), "book-build", f"BOOK_ROOT={book}"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert not finished_run.exists(), "the build re-executed the record (it recreated the run folder)"
    html = (book / "_build" / "html" / "book" / "tiny_run.html").read_text()
    assert "Run record: tiny" in html and "final step 2" in html and "Plotly.newPlot" in html


def test_a_run_folder_without_a_record_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="run.json"):
        read_run(tmp_path)
    with pytest.raises(ValueError, match=".ipynb"):
        write_record_page(tmp_path, tmp_path / "page.md")


def test_a_torn_metrics_line_does_not_stop_a_record(tmp_path, caplog):
    """A job killed while writing metrics.jsonl leaves half a line: the record is read without it (and says
    so)."""
    from lenslib.cluster.records import read_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"record": "run.ipynb", "status": "preempted"}))
    nbformat.write(nbformat.v4.new_notebook(), run / "run.ipynb")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    with caplog.at_level("WARNING", logger="lenslib.cluster.records"):
        got = read_run(run)
    assert [m["step"] for m in got["metrics"]] == [1, 2]
    assert "cut short" in caplog.text
