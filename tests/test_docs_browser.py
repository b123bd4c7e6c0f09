"""The built documentation in a real browser: the mathematics is typeset, offline, without errors.

Key pages of ``docs/_build/html`` are opened from disk (``file://``) in Debian's headless Chromium,
driven by Playwright. For each page: MathJax (shipped in the site, ``docs/_static/mathjax``)
finishes typesetting; every math element holds a typeset ``mjx-container`` and no TeX error; no
raw TeX (``\\nabla``, ``$$``, ``\\(``) is left in the visible text outside code; the console shows
no error or warning, no script throws, and no request leaves the machine. A screenshot of the
theory page goes to ``docs/_build/screenshots/theory.png``.

Needs the ``playwright`` package (in the ``test`` extra) and ``/usr/bin/chromium`` (``apt-get
install chromium``, the one thing pip cannot install); without Chromium the tests are skipped,
naming it, except under CI (``CI`` set), where they fail: ``.ci/run`` provides it. The site is
built first when ``docs/_build/html`` is not there (:func:`docs_site.built_site`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from docs_site import BUILT, built_site

pytestmark = pytest.mark.slow  # a browser per module, and the site built if it is not

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "_build" / "screenshots"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
# page -> the least number of typeset formulas it must show (its math is not optional)
PAGES = {
    "theory.html": 40,
    "index.html": 1,
    "getting_started.html": 0,
    "choosing.html": 0,
    "stochastic_graphs.html": 10,
    "api/score.html": 4,
    "api/rl.html": 10,
    "auto_examples/blackbox_search.html": 3,
}
RAW_TEX = ("\\nabla", "\\mathbb", "\\frac", "$$", "\\(", "\\[", "\\begin{")
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:")

# The visible text with code, scripts and typeset math removed: what a reader sees as prose.
PROSE_JS = """() => {
  const body = document.body.cloneNode(true);
  body.querySelectorAll('pre, code, script, style, mjx-container, .highlight')
      .forEach(e => e.remove());
  return body.innerText;
}"""
# Math elements that Sphinx wrote, and how many of them MathJax replaced with typeset output.
MATH_JS = """() => {
  const math = [...document.querySelectorAll('span.math, div.math')];
  return {
    math: math.length,
    typeset: math.filter(e => e.querySelector('mjx-container')).length,
    containers: document.querySelectorAll('mjx-container').length,
    errors: [...document.querySelectorAll('mjx-merror')].map(e => e.textContent),
  };
}"""


def require(condition: bool, why: str) -> None:
    """Skip when a prerequisite is missing, except under CI, where that is a failure."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI must provide it: see .ci/run)")
        pytest.skip(why)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium()
    require(executable is not None, "no chromium on PATH (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed (pip install -e '.[test]')")
    built_site()
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


class Problems(list[str]):
    """What a page reports that a reader should never meet: console errors and warnings,
    uncaught exceptions, failed loads, and any request that would leave the machine."""

    def console(self, message: Any) -> None:
        if message.type in ("error", "warning", "assert"):
            self.append(f"console {message.type}: {message.text}")

    def uncaught(self, error: Any) -> None:
        self.append(f"uncaught: {error}")

    def failed(self, request: Any) -> None:
        self.append(f"failed request: {request.url} {request.failure}")

    def request(self, request: Any) -> None:
        if not request.url.startswith(LOCAL_SCHEMES):
            self.append(f"network request: {request.url}")


def open_page(browser: Any, url: str) -> tuple[Any, Problems]:
    """Load ``url`` and wait until MathJax (if the page loads it) and the fonts are done."""
    problems = Problems()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", problems.console)
    page.on("pageerror", problems.uncaught)
    page.on("requestfailed", problems.failed)
    page.on("request", problems.request)
    page.goto(url, wait_until="load")
    if page.locator("script[src*='mathjax']").count():  # Sphinx loads MathJax where math is
        page.wait_for_function("() => window.MathJax?.startup?.promise !== undefined")
        page.evaluate("() => MathJax.startup.promise")
    page.evaluate("() => document.fonts.ready.then(() => true)")
    return page, problems


def inspect_page(page: Any) -> tuple[dict[str, Any], list[str]]:
    """The math census of the page and the raw TeX left in its prose."""
    math, prose = page.evaluate(MATH_JS), page.evaluate(PROSE_JS)
    return math, [tex for tex in RAW_TEX if tex in prose]


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_typesets_its_math_offline_without_errors(browser: Any, name: str) -> None:
    require((BUILT / name).is_file(), f"{name} is not in the built site")
    page, problems = open_page(browser, (BUILT / name).as_uri())
    try:
        math, raw = inspect_page(page)
        if name == "theory.html":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "theory.png"), full_page=True)
    finally:
        page.close()
    assert math["typeset"] == math["math"], f"{name}: math elements left untypeset: {math}"
    assert math["containers"] >= PAGES[name], f"{name}: too few typeset formulas: {math}"
    assert not math["errors"], f"{name}: TeX errors: {math['errors']}"
    assert not raw, f"{name}: raw TeX in the visible text: {raw}"
    assert not problems, f"{name}: " + "\n".join(problems)


def test_the_checks_catch_a_broken_page(browser: Any, tmp_path: Path) -> None:
    """A page with each fault the test looks for: every check must report its fault."""
    mathjax = (ROOT / "docs" / "_static" / "mathjax" / "tex-chtml-full.js").as_uri()
    page_file = tmp_path / "broken.html"
    page_file.write_text(
        "<html><body>"
        '<p>fine: <span class="math">\\(\\nabla f\\)</span></p>'
        '<p>TeX error: <span class="math">\\(\\frac{1}\\)</span></p>'
        '<p>never typeset: <span class="math">\\nabla p</span></p>'
        "<p>raw: $$ x $ and \\mathbb{E}</p>"
        '<script>console.error("boom")</script>'
        '<img src="https://example.invalid/x.png">'
        f'<script defer src="{mathjax}"></script>'
        "</body></html>"
    )
    page, problems = open_page(browser, page_file.as_uri())
    try:
        math, raw = inspect_page(page)
    finally:
        page.close()
    assert math["math"] == 3 and math["typeset"] == 2, math
    assert len(math["errors"]) == 1, math
    assert {"\\nabla", "\\mathbb", "$$"} <= set(raw), raw
    assert any("console error: boom" in p for p in problems), problems
    assert any("network request: https://example.invalid" in p for p in problems), problems
