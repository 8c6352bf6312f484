"""The built book in a real browser (headless Debian chromium): pages load cleanly, figures render,
navigation works.

Screenshots of every page are kept in _build/screenshots as test artifacts.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from book_utils import REPO_ROOT, build_from_executed, toc_files

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = REPO_ROOT / "_build" / "screenshots"
MAX_FIGURES = 25  # the most plotly figures any chapter draws (chapter 4 once stored 156 redraws of one curve)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = build_from_executed(out)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out / "_build" / "html"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"chromium not found at {CHROMIUM}: run `make system-deps` (Debian: apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on(
        "console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"requestfailed: {r.url}"))
    page.goto(url, wait_until="load")
    page.wait_for_timeout(500)
    return page, problems


@pytest.mark.slow
def test_every_page_loads_without_console_errors(site, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for doc in toc_files():
        html = site / f"{doc}.html"
        assert html.exists(), f"{doc} was not built"
        page, problems = _open(browser, html.as_uri())
        page.screenshot(path=str(SCREENSHOTS / f"{Path(doc).name}.png"), full_page=False)
        assert not problems, f"{doc}: {problems}"
        figures = page.locator(".plotly-graph-div").count()
        # a live figure whose every redraw was stored as its own output shows up as repeats of one title
        titles = [t for t in page.locator(".plotly-graph-div .gtitle").all_text_contents() if t.strip()]
        assert len(titles) == len(set(titles)), f"{doc}: figures repeated on the page: {sorted(titles)}"
        assert figures <= MAX_FIGURES, f"{doc}: {figures} plotly figures (at most {MAX_FIGURES} expected)"
        if figures:
            # plotly draws each figure into an SVG: present only if plotly.js ran offline
            page.wait_for_selector(".plotly-graph-div svg.main-svg", timeout=10_000)
            assert page.locator(".plotly-graph-div svg.main-svg").count() >= figures
        page.close()


@pytest.mark.slow
def test_chapter_zero_renders_its_figures(site, browser):
    page, problems = _open(browser, (site / "book" / "00_lens_in_one_page.html").as_uri())
    assert page.locator(".plotly-graph-div").count() >= 3
    page.wait_for_selector(".plotly-graph-div svg.main-svg", timeout=10_000)
    assert page.locator(".plotly-graph-div .scatterlayer .point").count() > 5  # the score-vs-size points
    page.close()


@pytest.mark.slow
def test_next_links_walk_the_table_of_contents(site, browser):
    def where(page) -> str:
        path = Path(unquote(urlparse(page.url).path))
        return path.relative_to(site).with_suffix("").as_posix()

    page, _ = _open(browser, (site / "index.html").as_uri())  # redirects to the root document
    page.wait_for_load_state("load")
    visited = [where(page)]
    for _ in range(len(toc_files()) - 1):
        page.click("a.right-next")
        page.wait_for_load_state("load")
        visited.append(where(page))
    assert visited == toc_files()
    assert page.locator("a.right-next").count() == 0  # the last page has no "next"
    page.close()
