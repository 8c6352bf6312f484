"""Helpers shared by the book tests: execute a chapter once, keep the executed notebook, build HTML from
it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import jupytext
import nbclient
import nbformat
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BOOK = REPO_ROOT / "book"
EXECUTED = REPO_ROOT / "_build" / "executed"

# Chapters are the MyST notebooks (front matter with a kernelspec); plain pages such as intro.md are not run.
CHAPTERS = sorted(p for p in BOOK.glob("*.md") if "kernelspec:" in p.read_text()[:500])


def toc_files() -> list[str]:
    """Every document in _toc.yml, in reading order (root first)."""
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for entry in toc.get("chapters", []):
        files.append(entry["file"])
        files.extend(section["file"] for section in entry.get("sections", []))
    return files


def execute_chapter(chapter: Path) -> float:
    """Execute a chapter with its default parameters; keep the result in _build/executed; return seconds."""
    nb = jupytext.read(chapter)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=900, resources={"metadata": {"path": str(BOOK)}}
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    EXECUTED.mkdir(parents=True, exist_ok=True)
    tmp = EXECUTED / f".{chapter.stem}.ipynb.tmp"
    nbformat.write(nb, tmp)
    os.replace(tmp, EXECUTED / f"{chapter.stem}.ipynb")
    return seconds


def build_from_executed(out: Path) -> subprocess.CompletedProcess:
    """Build the book's HTML from already executed notebooks (no second execution) into ``out``."""
    for chapter in CHAPTERS:
        if not (EXECUTED / f"{chapter.stem}.ipynb").exists() or (
            (EXECUTED / f"{chapter.stem}.ipynb").stat().st_mtime < chapter.stat().st_mtime
        ):
            execute_chapter(chapter)
    (out / "book").mkdir(parents=True)
    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    config["sphinx"]["local_extensions"] = {"lens_book": str(BOOK / "_ext")}
    (out / "_config.yml").write_text(yaml.safe_dump(config))
    shutil.copy(REPO_ROOT / "_toc.yml", out / "_toc.yml")
    for doc in toc_files():
        source = REPO_ROOT / f"{doc}.md"
        executed = EXECUTED / f"{Path(doc).name}.ipynb"
        record = REPO_ROOT / f"{doc}.ipynb"  # a run record page: already executed, shown as stored
        (out / doc).parent.mkdir(parents=True, exist_ok=True)
        if source in CHAPTERS:
            shutil.copy(executed, out / f"{doc}.ipynb")
        elif record.is_file():
            shutil.copy(record, out / f"{doc}.ipynb")
        else:
            shutil.copy(source, out / f"{doc}.md")
    return subprocess.run(
        [str(Path(os.sys.executable).parent / "jupyter-book"), "build", str(out), "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=900,
    )
