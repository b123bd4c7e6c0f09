"""The built site as a reader meets it: faults that a build without warnings still ships.

Each check reads the HTML (or the figures) of ``docs/_build/html`` (built by
:func:`docs_site.built_site` when missing) and looks for one class of fault, on every page:

- a field list that shows prose as a TYPE (napoleon reading "text: more text" as "TYPE: text");
- a dash typeset before an option name ("–quick" for ``--quick``: the copied command fails);
- a table column whose every cell is "n/a" (a column that says nothing);
- a figure panel left empty (axes drawn, nothing in them);
- a page that loads a script, style sheet, font or image from off the machine;
- a link to an anchor that the target page does not have.

Each check is also run on a small page made with its fault, which it must report.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from docs_site import built_site

pytestmark = pytest.mark.slow  # the first of them builds the site (a few minutes)

# ------------------------------------------------------------------------------------ the checks

TYPE_FIELD = re.compile(
    r'<dt class="field-\w+">Type<span class="colon">:</span></dt>\s*'
    r'<dd class="field-\w+">(.*?)</dd>',
    re.S,
)
TYPE_WORDS = {"or", "of", "and", "optional", "default"}  # "int or None", "list of int"


def text_of(fragment: str) -> str:
    """The visible text of an HTML fragment."""
    fragment = re.sub(r"<(script|style)\b.*?</\1>", " ", fragment, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def prose_types(page: str) -> list[str]:
    """The TYPE fields that read as prose: two ordinary words in a row, or a sentence's marks."""
    found = []
    for match in TYPE_FIELD.finditer(page):
        text = text_of(match.group(1))
        bare = re.sub(r"(['\"]).*?\1", "''", text)  # Literal['a b'] is a type
        words = re.findall(r"[A-Za-z_][\w.]*(?: [A-Za-z_][\w.]*)+", bare)
        pairs = [w for w in words if not set(w.split()[1:-1] + w.split()) & TYPE_WORDS]
        if pairs or re.search(r"[;(]\s*[a-z]+ [a-z]+", bare):
            found.append(text)
    return found


OPTION_DASH = re.compile(r"(?:^|(?<=[\s(\[\"'`]))[\u2013\u2014][A-Za-z][\w-]*")


def dashed_options(page: str) -> list[str]:
    """Option names typeset with an en or em dash instead of ``--`` (a minus sign before a
    letter is mathematics: ``−inf``, ``−ELBO``)."""
    return OPTION_DASH.findall(text_of(page))


class Tables(HTMLParser):
    """The tables of a page as lists of body rows of cell texts (header rows left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self._in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr" and self.tables and not self._in_head:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables and not self._in_head:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None:
            if self.tables[-1]:
                self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


MISSING = {"n/a", "na", "nan", "none", "?", "-", "\u2014"}


def empty_columns(page: str) -> list[tuple[int, int]]:
    """``(table, column)`` of every column of two or more rows whose cells all say nothing."""
    parser = Tables()
    parser.feed(page)
    found = []
    for t, rows in enumerate(parser.tables):
        rows = [r for r in rows if r]
        width = min((len(r) for r in rows), default=0)
        for c in range(width):
            if len(rows) >= 2 and all(r[c].lower() in MISSING for r in rows):
                found.append((t, c))
    return found


def empty_panels(png: Path) -> list[tuple[int, int, int, int]]:
    """``(top, bottom, left, right)`` of each axes box in the image with nothing drawn in it.

    An axes box is found by its frame: two long dark horizontal lines with the same ends. Its
    inside (a few pixels in from the frame) is empty when almost no pixel differs from the
    background, light grey grid lines aside.
    """
    import matplotlib.image

    rgb = matplotlib.image.imread(str(png))[..., :3].astype(float)
    if rgb.max() > 1.0:
        rgb /= 255.0
    dark = (rgb.mean(-1) < 0.35) & (np.ptp(rgb, axis=-1) < 0.1)  # black or grey, not a colour map
    height, width = dark.shape
    least = max(30, width // 12)
    segments: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for y in range(height):
        padded = np.concatenate([[0], dark[y].astype(int), [0]])
        starts, ends = np.flatnonzero(np.diff(padded) == 1), np.flatnonzero(np.diff(padded) == -1)
        for x0, x1 in zip(starts.tolist(), ends.tolist(), strict=True):
            if x1 - x0 >= least:  # a tick mark may lengthen it by a few pixels: keys are coarse
                segments.setdefault((x0 // 8, x1 // 8), []).append((y, x0, x1))
    found = []
    for rows in segments.values():
        lines = [r for i, r in enumerate(rows) if i == 0 or r[0] - rows[i - 1][0] > 2]
        for (top, x0, x1), (bottom, _, _) in zip(lines[::2], lines[1::2], strict=False):
            inside = rgb[top + 6 : bottom - 5, x0 + 12 : x1 - 6]
            sides = dark[top:bottom, x0 : x0 + 10].any(-1)  # a left spine joins the two lines
            if bottom - top < 30 or inside.size == 0 or sides.mean() < 0.9:
                continue
            background = np.median(inside.reshape(-1, 3), axis=0)
            differs = np.abs(inside - background).max(-1) > 0.1
            grey = (np.ptp(inside, axis=-1) < 0.05) & (inside.mean(-1) > 0.6)  # grid lines
            if (differs & ~grey).mean() < 0.002:
                found.append((top, bottom, x0, x1))
    return found


REMOTE = re.compile(
    r"<(?:script|link|img|iframe|source|video|audio|embed|object)\b[^>]*?"
    r"\b(?:src|href|data|srcset)=[\"']\s*((?:https?:)?//[^\"']+)",
    re.I,
)
CSS_REMOTE = re.compile(r"(?:@import\s+|url\()\s*[\"']?((?:https?:)?//[^\"')]+)", re.I)


def remote_loads(page: str) -> list[str]:
    """What the page would fetch from off the machine (links a reader clicks are not loads)."""
    return REMOTE.findall(page) + CSS_REMOTE.findall(page)


def ids_of(page: str) -> set[str]:
    return set(re.findall(r'\b(?:id|name)="([^"]+)"', page))


def broken_anchors(path: Path, page: str, ids: dict[Path, set[str]]) -> list[str]:
    """Links of ``page`` to a file of the site that is missing or has no such anchor."""
    broken = []
    for href in re.findall(r'<a\b[^>]*\bhref="([^"]+)"', page):
        parts = urlsplit(html.unescape(href))
        if parts.scheme or parts.netloc:
            continue
        target = (path.parent / unquote(parts.path)).resolve() if parts.path else path.resolve()
        if not target.exists():
            broken.append(f"{href} (no such file)")
        elif parts.fragment and target.suffix == ".html":
            if target not in ids:
                ids[target] = ids_of(target.read_text(errors="replace"))
            if unquote(parts.fragment) not in ids[target]:
                broken.append(f"{href} (no such anchor)")
    return broken


# ------------------------------------------------------------------------------ the built site


def site_pages() -> dict[str, tuple[Path, str]]:
    """Every page of the built site (built now if it is not): name -> (path, HTML)."""
    site = built_site()
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 30, f"the built site has only {len(pages)} pages"
    return {str(p.relative_to(site)): (p, p.read_text(errors="replace")) for p in pages}


def faults(check: Callable[[str], list[Any]]) -> dict[str, list[Any]]:
    """``check(page)`` on every page's HTML: the pages where it found anything, and what."""
    found = {name: check(page) for name, (_, page) in site_pages().items()}
    return {name: result for name, result in found.items() if result}


def test_no_prose_typeset_as_a_type() -> None:
    assert not faults(prose_types), "prose shown as a TYPE"


def test_no_dash_typeset_before_an_option() -> None:
    assert not faults(dashed_options), "dashes before option names"


# pages allowed an all-n/a column (none: the chooser's cost columns come from a run now); a page
# listed here whose columns are filled fails the test, so that the entry is not forgotten
KNOWN_EMPTY_COLUMNS: set[str] = set()


def test_no_table_column_without_values() -> None:
    found = faults(empty_columns)
    assert not {k: v for k, v in found.items() if k not in KNOWN_EMPTY_COLUMNS}, found
    filled = KNOWN_EMPTY_COLUMNS - set(found)
    assert not filled, f"{filled}: columns filled now; remove them from KNOWN_EMPTY_COLUMNS"


def test_nothing_is_loaded_from_off_the_machine() -> None:
    assert not faults(remote_loads), "pages load from the network"


def test_every_link_has_its_target() -> None:
    ids: dict[Path, set[str]] = {}
    broken = {
        name: found
        for name, (path, page) in site_pages().items()
        if (found := broken_anchors(path, page, ids))
    }
    assert not broken, "broken links"


def test_no_style_sheet_loads_from_off_the_machine() -> None:
    css = [p for p in built_site().joinpath("_static").rglob("*.css")]
    assert css, "the site has no style sheets"
    remote = {str(p): CSS_REMOTE.findall(p.read_text(errors="replace")) for p in css}
    assert not {k: v for k, v in remote.items() if v}, remote


def test_no_figure_has_an_empty_panel() -> None:
    site = built_site()
    figures = [p for p in site.joinpath("_images").glob("*.png") if "_thumb" not in p.name]
    assert len(figures) >= 6, f"expected the gallery's and pages' figures, found {figures}"
    empty = {p.name: empty_panels(p) for p in figures}
    assert not {k: v for k, v in empty.items() if v}, f"figures with empty panels: {empty}"


def test_pages_show_what_their_code_prints() -> None:
    """The guides' code cells ran in the build and their output is on the page."""
    site = built_site()
    page = (site / "choosing.html").read_text()
    outputs = page.split('class="cell_output')[1:]
    assert outputs, "choosing.html shows no cell output"
    assert any("var×evals" in text_of(out[:5000]) for out in outputs), "no comparison table shown"


# ------------------------------------------------------------------ each check on its own fault


def test_the_checks_find_each_fault_class(tmp_path: Path) -> None:
    bad_type = (
        '<dl class="field-list simple"><dt class="field-odd">Type<span class="colon">:</span>'
        '</dt><dd class="field-odd"><p>Adam learning rate (of the policy and critic; npg</p>'
        "</dd></dl>"
    )
    good_types = "".join(
        '<dt class="field-odd">Type<span class="colon">:</span></dt>'
        f'<dd class="field-odd"><p>{t}</p></dd>'
        for t in ("int | None", "tuple[int, ...]", "Literal['mean', 'a b']", "int or None")
    )
    assert prose_types(bad_type) == ["Adam learning rate (of the policy and critic; npg"]
    assert prose_types(good_types) == []
    assert dashed_options("<p>Run: python x.py (\u2013quick: one seed)</p>") == ["\u2013quick"]
    assert dashed_options("<p>0.9\u20130.95, a \u2013 b, <code>--quick</code></p>") == []
    table = (
        "<table><thead><tr><th>a</th><th>cost</th></tr></thead><tbody>"
        "<tr><td>x</td><td>n/a</td></tr><tr><td>y</td><td>n/a</td></tr></tbody></table>"
    )
    assert empty_columns(table) == [(0, 1)]
    assert empty_columns(table.replace("n/a</td></tr><tr>", "1.5</td></tr><tr>")) == []
    page = (
        '<script src="https://cdn.example/x.js"></script><link rel="stylesheet" '
        'href="//cdn.example/y.css"><a href="https://github.com/x">a link</a>'
        "<style>@import url('https://fonts.example/f.css');</style>"
    )
    assert remote_loads(page) == [
        "https://cdn.example/x.js",
        "//cdn.example/y.css",
        "https://fonts.example/f.css",
    ]
    (tmp_path / "b.html").write_text('<p id="here">x</p>')
    links = '<a href="b.html#here">ok</a><a href="b.html#gone">x</a><a href="c.html">y</a>'
    assert broken_anchors(tmp_path / "a.html", links, {}) == [
        "b.html#gone (no such anchor)",
        "c.html (no such file)",
    ]


def test_empty_panel_check_finds_an_empty_axes(tmp_path: Path) -> None:
    """A figure with a drawn panel, an empty one and one with a white line on white."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.5))
    axes[0].plot([0, 1, 2], [1, 3, 2])
    axes[0].grid(True)
    axes[1].set(title="nothing here", xlim=(0, 1))
    axes[2].plot([0, 1], [0, 1], "w.-")
    axes[2].grid(True)
    fig.savefig(tmp_path / "f.png", dpi=110)
    plt.close(fig)
    empty = empty_panels(tmp_path / "f.png")
    assert len(empty) == 2, empty
    assert all(left > 300 for _, _, left, _ in empty), empty  # the second and third panels
