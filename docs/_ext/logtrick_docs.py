"""The documentation's own Sphinx extension: the estimator table and the gallery's hooks.

- ``.. estimator-table::`` (``{estimator-table}`` in MyST) writes the table of every estimator in
  ``logtrick.ESTIMATORS`` from the classes' own metadata at build time, so the table cannot fall
  behind the code. A column whose attribute a class does not define shows "n/a".
- :func:`example_argv` and :func:`saved_figures` let sphinx-gallery run ``examples/`` as the
  scripts they are: with ``--quick`` unless ``LOGTRICK_DOCS_EXAMPLES=full``, and with the figure
  each script saves (it closes its figures, so matplotlib's own scraper sees none).
- :func:`function_docstring`: the API entry of a module that is also its function
  (``logtrick.scores``) shows the function's docstring.
"""

from __future__ import annotations

import ast
import inspect
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

BUILD_STARTED = time.time()

# Columns of the estimator table: heading, the class attribute that fills it, what it means.
# The attributes are the estimators' metadata; a class without one shows MISSING.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("unbiased", "unbiased", "whether its expectation is the exact gradient"),
    ("requires", "requires", "what the distribution and f must provide"),
    ("max order", "max_order", "highest derivative order it estimates without bias"),
    ("f evaluations", "f_evals_per_sample", "evaluations of f per drawn sample, counted in a run"),
    ("relative cost", "relative_cost", "time per estimate against the score function, same run"),
)
MEASURED = {"f_evals_per_sample", "relative_cost"}
"""Columns filled at build time from :func:`logtrick.chooser.estimator_costs` (a run), not from
class attributes."""
MISSING = "n/a"


def _cell(value: object) -> str:
    """One metadata value as text: booleans as yes/no, orders, collections joined."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):  # a derivative order: math.inf for "any order"
        return "any" if math.isinf(value) else f"{value:g}"
    if isinstance(value, (tuple, list, set, frozenset)):
        return ", ".join(sorted(map(str, value))) or "nothing"
    return str(value)


def _summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return " ".join(doc.split("\n\n")[0].split()) or MISSING


def _text(text: str) -> nodes.paragraph:
    """A paragraph of docstring text: ``code`` and :math:`x` as in the docstrings."""
    para = nodes.paragraph()
    for part in re.split(r"(``.+?``|:math:`.+?`)", text):
        if part.startswith("``") and part.endswith("``") and len(part) > 4:
            para += nodes.literal(text=part[2:-2])
        elif part.startswith(":math:`"):
            para += nodes.math(text=part[len(":math:`") : -1])
        elif part:
            para += nodes.Text(part)
    return para


def _estimator_cell(short: str, cls: type) -> nodes.paragraph:
    """The class, linked to its API entry, and the short name ``expectation`` accepts."""
    ref = addnodes.pending_xref(
        "", refdomain="py", reftype="class", reftarget=f"logtrick.{cls.__name__}"
    )
    ref += nodes.literal(text=cls.__name__, classes=["xref", "py", "py-class"])
    return nodes.paragraph("", "", ref, nodes.Text(" "), nodes.literal(text=f'"{short}"'))


def _measured(cost: object, attr: str) -> str:
    if cost is None:
        return MISSING
    value = getattr(cost, attr)
    where = f" ({cost.problem})" if attr == "relative_cost" else ""  # type: ignore[attr-defined]
    return f"{value:.2f}{where}" if attr == "relative_cost" else f"{value:g}"


def estimator_rows(
    estimators: dict[str, type], measured: dict[str, object] | None = None
) -> list[list[nodes.Node]]:
    """One row per registered estimator: class and short name, summary, the metadata columns
    (the :data:`MEASURED` ones from ``measured``, name -> ``EstimatorCost``)."""
    measured = measured or {}
    rows = []
    for short, cls in sorted(estimators.items()):
        meta = [
            _text(
                _measured(measured.get(short), attr)
                if attr in MEASURED
                else _cell(getattr(cls, attr, None))
            )
            for _, attr, _ in COLUMNS
        ]
        rows.append([_estimator_cell(short, cls), _text(_summary(cls)), *meta])
    return rows


def _table(header: list[str], rows: list[list[nodes.Node]]) -> nodes.table:
    """A docutils table (built as nodes, so it reads the same in reST and MyST pages)."""
    group = nodes.tgroup(cols=len(header))
    group += [nodes.colspec(colwidth=1) for _ in header]
    head, body = nodes.thead(), nodes.tbody()
    head += nodes.row("", *(nodes.entry("", nodes.paragraph(text=h)) for h in header))
    body += [nodes.row("", *(nodes.entry("", cell) for cell in row)) for row in rows]
    group += [head, body]
    return nodes.table("", group, classes=["estimator-table"])


class EstimatorTable(SphinxDirective):
    """``.. estimator-table::``: every entry of ``logtrick.ESTIMATORS`` and its metadata."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        import logtrick

        header = ["estimator", "what it is", *(heading for heading, _, _ in COLUMNS)]
        legend = nodes.bullet_list()
        for heading, attr, meaning in COLUMNS:
            item = _text(f"{heading} (``{attr}``): {meaning}")
            legend += nodes.list_item("", item)
        from logtrick.chooser import estimator_costs

        measured = dict(estimator_costs())
        return [_table(header, estimator_rows(logtrick.ESTIMATORS, measured)), legend]


def example_argv(gallery_conf: dict[str, Any], script_vars: dict[str, Any]) -> list[str]:
    """Command-line arguments of each example: ``--quick`` unless a full build was asked for.

    sphinx-gallery calls this just before it runs a script, with the script's globals prepared.
    It leaves out ``__file__`` and blanks ``__doc__``; the scripts use both as ``python
    examples/NAME.py`` provides them (their output folder, their ``--help`` text), so they are
    set here to what Python would set.
    """
    src = Path(script_vars["src_file"])
    script_globals = script_vars["example_globals"]
    script_globals["__file__"] = str(src)
    script_globals["__doc__"] = ast.get_docstring(ast.parse(src.read_text()), clean=False) or ""
    return [] if os.environ.get("LOGTRICK_DOCS_EXAMPLES") == "full" else ["--quick"]


def saved_figures(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any]) -> str:
    """Image scraper: the PNG that ``examples/NAME.py`` saved as ``examples/out/NAME.png``.

    A file older than this build is a leftover of an earlier run and is not shown.
    """
    from sphinx_gallery.scrapers import figure_rst

    src = Path(block_vars["src_file"])
    saved = src.parent / "out" / f"{src.stem}.png"
    if not saved.is_file() or saved.stat().st_mtime < BUILD_STARTED:
        return ""
    target = Path(next(block_vars["image_path_iterator"]))
    shutil.copyfile(saved, target)
    return figure_rst([target], gallery_conf["src_dir"])


def example_title(app: Sphinx, docname: str, source: list[str]) -> None:
    """Make the first paragraph of an example's docstring its page title.

    sphinx-gallery takes that paragraph as the title, but the scripts' docstrings (plain
    ``python -m pydoc`` style, shared with ``--help``) do not underline it, so the generated page
    has no reST title: underline it here, as the page is read.
    """
    if not docname.startswith("auto_examples/") or docname.endswith(("/index", "_times")):
        return
    stem = docname.split("/", 1)[1]
    lines = source[0].split("\n")
    label = f".. _sphx_glr_auto_examples_{stem}.py:"
    if label not in lines:
        return
    start = lines.index(label) + 1
    while start < len(lines) and not lines[start].strip():
        start += 1
    end = start
    while end < len(lines) and lines[end].strip():
        end += 1
    title = " ".join(line.strip() for line in lines[start:end])
    if title and end - start >= 1 and not set(lines[end - 1].strip()) <= set("=-~^*#"):
        lines[start:end] = [title, "=" * len(title)]
        source[0] = "\n".join(lines)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("estimator-table", EstimatorTable)
    app.connect("source-read", example_title)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
